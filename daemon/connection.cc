#include "daemon/connection.h"

#include <errno.h>
#include <fmt/core.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include "daemon/journal.h"
#include "daemon/procfs.h"

namespace budgetd::daemon {

namespace {
// One read: libuv suggests 64 KiB, as systemd's varlink reads. The buffer is shared by
// every connection of the thread: a read is consumed (fed to a Framer) before the next.
constexpr std::size_t kReadSize = 64 * 1024;
// A spare output buffer bigger than this is not kept between writes.
constexpr std::size_t kRetainedOutput = 64 * 1024;
}  // namespace

std::expected<PeerCredentials, int> read_peer_credentials(int fd) {
  ucred uc{};
  socklen_t len = sizeof uc;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) return std::unexpected(-errno);
  PeerCredentials c;
  c.uid = uc.uid;
  c.gid = uc.gid;
  c.pid = uc.pid;
  // The groups the peer had when it connected (Linux 4.13+), as SO_PEERCRED's ids.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 3; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      c.groups.assign(groups.begin(), groups.end());
      return c;
    }
    if (errno != ERANGE) break;
    groups.resize(std::max<std::size_t>(glen / sizeof(gid_t), groups.size() * 2));
  }
  if (auto g = process_groups(c.pid)) c.groups = std::move(*g);
  return c;
}

bool is_operator(const PeerCredentials& c, std::optional<uint32_t> operator_gid) {
  if (c.uid == 0) return true;
  if (!operator_gid) return false;
  if (c.gid == *operator_gid) return true;
  return std::find(c.groups.begin(), c.groups.end(), *operator_gid) != c.groups.end();
}

struct Connection::WriteRequest {
  uv_write_t req{};
  std::string data;        // data[offset, size()) is what this write carries
  std::size_t offset = 0;  // the prefix uv_try_write already wrote
  Connection* conn = nullptr;
  std::size_t size() const { return data.size() - offset; }
};

// The connections of one loop whose batch replies wait for the end of the I/O phase. The
// check handle is unreferenced (it never keeps the loop running) and closed with the
// loop's last connection, so uv_loop_close finds nothing of ours open.
struct Connection::Flusher {
  uv_loop_t* loop = nullptr;
  uv_check_t check{};
  std::vector<Connection*> pending;
  std::size_t connections = 0;
};

// Loops are few (one in the daemon, one per test); each has its Flusher while it has
// connections.
std::vector<Connection::Flusher*>& Connection::flushers() {
  static thread_local std::vector<Flusher*> all;
  return all;
}

Connection::Connection(uv_loop_t* loop, ConnectionHost& host, ConnectionLimits limits, uint64_t id)
    : host_(host), limits_(limits), id_(id), framer_(limits.framer) {
  uv_pipe_init(loop, &pipe_, 0);  // cannot fail for a pipe
  pipe_.data = this;
  auto& all = flushers();
  auto it = std::find_if(all.begin(), all.end(), [&](Flusher* f) { return f->loop == loop; });
  if (it != all.end()) {
    flusher_ = *it;
  } else {
    flusher_ = new Flusher;
    flusher_->loop = loop;
    uv_check_init(loop, &flusher_->check);
    flusher_->check.data = flusher_;
    uv_check_start(&flusher_->check, on_check);
    uv_unref(reinterpret_cast<uv_handle_t*>(&flusher_->check));
    all.push_back(flusher_);
  }
  ++flusher_->connections;
}

void Connection::flush_after_io() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  flusher_->pending.push_back(this);
}

void Connection::on_check(uv_check_t* check) {
  auto* f = static_cast<Flusher*>(check->data);
  if (f->pending.empty()) return;
  // Swapped out: a flush may resume a connection whose new batch schedules again.
  std::vector<Connection*> due;
  due.swap(f->pending);
  for (Connection* c : due) {
    c->flush_scheduled_ = false;
    c->flush();
    c->after_drain();
  }
  if (f->pending.empty()) {  // keep the capacity
    due.clear();
    f->pending.swap(due);
  }
}

std::expected<void, std::string> Connection::accept(uv_stream_t* server) {
  if (int r = uv_accept(server, stream()); r != 0)
    return std::unexpected(fmt::format("accept: {}", uv_strerror(r)));
  return after_open();
}

std::expected<void, std::string> Connection::open(int fd) {
  if (int r = uv_pipe_open(&pipe_, fd); r != 0)
    return std::unexpected(fmt::format("uv_pipe_open: {}", uv_strerror(r)));
  return after_open();
}

std::expected<void, std::string> Connection::after_open() {
  uv_os_fd_t fd = -1;
  if (int r = uv_fileno(reinterpret_cast<uv_handle_t*>(&pipe_), &fd); r != 0)
    return std::unexpected(fmt::format("uv_fileno: {}", uv_strerror(r)));
  auto creds = read_peer_credentials(fd);
  if (!creds)
    return std::unexpected(fmt::format("SO_PEERCRED: {}", strerrorname_np(-creds.error())));
  credentials_ = std::move(*creds);
  peer_.uid = credentials_.uid;
  peer_.gid = credentials_.gid;
  peer_.pid = credentials_.pid;
  peer_.is_operator = credentials_.uid == 0;
  return {};
}

void Connection::start() {
  if (closing_ || reading_) return;
  if (int r = uv_read_start(stream(), on_alloc, on_read); r != 0) {
    log_warning("connection {}: uv_read_start: {}", id_, uv_strerror(r));
    close();
    return;
  }
  reading_ = true;
}

void Connection::pause() {
  if (paused_) return;
  paused_ = true;
  if (reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
  log_debug("connection {} (pid {}): paused, {} reply bytes unread", id_, peer_.pid,
            pending_reply_bytes());
}

void Connection::resume() {
  paused_ = false;
  log_debug("connection {} (pid {}): resumed", id_, peer_.pid);
  // Messages left in the framer when the connection paused come first.
  run_batch();
  if (!closing_ && !paused_ && !close_when_drained_) start();
}

void Connection::close() {
  if (closing_) return;
  closing_ = true;
  if (reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
  // Pending writes are cancelled (their callbacks run first, with UV_ECANCELED).
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), on_close);
}

void Connection::close_after_flush() {
  if (closing_) return;
  close_when_drained_ = true;
  if (reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
  flush();
  // Held replies are still owed: the close waits for their release and write.
  if (!closing_ && in_flight_ == 0 && out_.empty()) close();
}

bool Connection::push(std::string_view frame) {
  if (closing_) return false;
  out_.append(frame);
  return pending_reply_bytes() <= 2 * limits_.max_pending_reply_bytes;
}

void Connection::flush() {
  // One uv_write at a time: on_write flushes what accumulated behind it, in one write.
  if (closing_ || dispatching_ || in_flight_ > 0) return;
  const std::size_t n = writable_bytes();
  if (n == 0) return;
  ++writes_;
  uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(n));
  std::size_t written = 0;
  if (int r = uv_try_write(stream(), &buf, 1); r >= 0) {
    written = static_cast<std::size_t>(r);
  } else if (r != UV_EAGAIN) {
    log_debug("connection {}: write: {}", id_, uv_strerror(r));
    close();
    return;
  }
  if (written < n) {
    // The socket is full: the rest goes to libuv, which writes it when the socket drains.
    auto* w = new WriteRequest;
    w->req.data = w;
    w->conn = this;
    if (n == out_.size()) {
      w->data.swap(out_);
      w->offset = written;
      out_.swap(spare_);  // reuse the buffer of an earlier write, if one came back
      out_.clear();
    } else {
      w->data.assign(out_, written, n - written);
      out_.erase(0, n);
    }
    uv_buf_t rest = uv_buf_init(w->data.data() + w->offset, static_cast<unsigned>(w->size()));
    in_flight_ += w->size();
    if (int r = uv_write(&w->req, stream(), &rest, 1, on_write); r != 0) {
      in_flight_ -= w->size();
      delete w;
      log_debug("connection {}: write: {}", id_, uv_strerror(r));
      close();
      return;
    }
  } else if (n == out_.size()) {
    out_.clear();  // the common case: everything went out at once, the buffer is kept
  } else {
    out_.erase(0, n);
  }
  for (Hold& h : holds_) h.offset -= n;
}

void Connection::hold_output_until(uint64_t seq) {
  if (closing_ || seq <= durable_) return;
  const std::size_t at = dispatching_ ? reply_start_ : out_.size();
  if (!holds_.empty()) {
    Hold& last = holds_.back();
    // What follows `last` waits for last.seq anyway: a smaller seq adds nothing.
    if (seq <= last.seq) return;
    if (at <= last.offset) {  // the same reply asks twice: one region, the later seq
      last.offset = std::min(last.offset, at);
      last.seq = seq;
      return;
    }
  }
  holds_.push_back({at, seq});
}

void Connection::release_output(uint64_t durable_seq) {
  durable_ = std::max(durable_, durable_seq);
  if (closing_) return;
  std::size_t freed = 0;
  while (freed < holds_.size() && holds_[freed].seq <= durable_) ++freed;
  if (freed == 0) return;
  holds_.erase(holds_.begin(), holds_.begin() + static_cast<std::ptrdiff_t>(freed));
  flush();
  after_drain();
}

void Connection::after_drain() {
  if (closing_) return;
  if (close_when_drained_) {
    if (in_flight_ == 0 && out_.empty()) close();
    return;
  }
  // Inside a batch, run_batch itself resumes once it has flushed.
  if (paused_ && !in_batch_ && pending_reply_bytes() < limits_.max_pending_reply_bytes / 2)
    resume();
}

void Connection::run_batch() {
  if (in_batch_) return;
  in_batch_ = true;
  for (;;) {
    while (!closing_ && !broken_ && !finish_) {
      if (pending_reply_bytes() > limits_.max_pending_reply_bytes) {
        flush();  // the socket may take it now; pause only if it does not
        if (closing_) break;
        if (pending_reply_bytes() > limits_.max_pending_reply_bytes) {
          pause();
          break;
        }
      }
      auto frame = framer_.next();
      if (!frame) break;
      if (!*frame) {
        log_warning("connection {} (pid {}, uid {}): {}; closing it", id_, peer_.pid, peer_.uid,
                    ipc::frame_error_name(frame->error()));
        broken_ = true;
        break;
      }
      ++messages_;
      reply_start_ = out_.size();
      dispatching_ = true;
      const auto outcome = host_.dispatch(*this, **frame, out_);
      dispatching_ = false;
      if (outcome == ipc::Service::Outcome::close) {
        log_warning("connection {} (pid {}, uid {}): not a varlink call; closing it", id_,
                    peer_.pid, peer_.uid);
        broken_ = true;
        break;
      }
    }
    if (closing_) break;
    host_.after_batch(*this);
    if (!paused_ && !broken_ && !finish_ && !close_when_drained_) {
      flush_after_io();  // the common case: written with the other connections' replies
      break;
    }
    flush();
    if (closing_ || broken_ || finish_ || close_when_drained_) break;
    // A hold released or the socket drained during the batch: go on instead of waiting for
    // a write callback that may never come (everything may already be written).
    if (!paused_ || pending_reply_bytes() >= limits_.max_pending_reply_bytes / 2) break;
    paused_ = false;
    start();
  }
  in_batch_ = false;
  if (closing_) return;
  if (broken_)
    close();  // replies of the messages before the bad one were handed over above
  else if (finish_)
    close_after_flush();
}

void Connection::on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
  static thread_local std::array<char, kReadSize> storage;
  *buf = uv_buf_init(storage.data(), static_cast<unsigned>(storage.size()));
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(s->data);
  if (nread == 0 || self->closing_) return;  // EAGAIN, or closed meanwhile
  if (nread < 0) {
    if (nread != UV_EOF)
      log_debug("connection {}: read: {}", self->id_, uv_strerror(static_cast<int>(nread)));
    if (nread == UV_EOF)
      self->close_after_flush();
    else
      self->close();
    return;
  }
  (void)self->framer_.feed(buf->base,
                           static_cast<std::size_t>(nread));  // errors come out of next()
  self->run_batch();
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<WriteRequest*>(req->data);
  Connection* self = w->conn;
  self->in_flight_ -= w->size();
  if (self->spare_.capacity() == 0 && w->data.capacity() <= kRetainedOutput) {
    w->data.clear();
    self->spare_.swap(w->data);
  }
  delete w;
  if (self->closing_) return;
  if (status != 0) {
    log_debug("connection {}: write: {}", self->id_, uv_strerror(status));
    self->close();
    return;
  }
  self->flush();  // what was produced while this write was in flight
  self->after_drain();
}

void Connection::on_close(uv_handle_t* h) {
  auto* self = static_cast<Connection*>(h->data);
  Flusher* f = self->flusher_;
  if (self->flush_scheduled_) std::erase(f->pending, self);
  if (--f->connections == 0) {
    std::erase(flushers(), f);
    uv_close(reinterpret_cast<uv_handle_t*>(&f->check),
             [](uv_handle_t* c) { delete static_cast<Flusher*>(c->data); });
  }
  self->host_.closed(*self);  // frees self
}

}  // namespace budgetd::daemon
