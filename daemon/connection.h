// One client connection: credentials from the kernel, varlink framing, pipelined calls,
// and back-pressure.
//
// Reading: every read is fed to the connection's Framer and each complete message is
// handed to the host (the Manager, which calls ipc::Service::handle). Replies of one read
// batch are appended to one output buffer and written with a single write: uv_try_write
// first, which costs one write(2) and nothing else; only what the socket did not take goes
// to a uv_write (libuv re-arms the fd's epoll registration after every queued write, a
// third syscall per message at one call in flight). At most one uv_write is in flight: what
// is produced meanwhile waits in the output buffer and goes out with the next write.
//
// The write of a read batch is not made at once but after the loop's I/O phase (a
// uv_check handle shared by the loop's connections), as Redis writes its replies before it
// sleeps: the replies to every connection that was readable go out in one burst after all
// the reads, so a client with many connections is woken once per burst, not once per reply.
//
// Durability barrier (durability "ack"): hold_output_until(seq) keeps the reply being
// produced, and everything after it on this connection, out of the socket until
// release_output(durable) with durable >= seq. Replies stay in order; held bytes count as
// pending reply bytes, so a client whose replies wait for the disk is paused like one that
// does not read.
//
// Back-pressure (STYLE.md section 4): when the reply bytes not yet written to the socket
// exceed max_pending_reply_bytes, the connection stops reading (uv_read_stop) and leaves
// the remaining messages in its Framer; once uv_write callbacks drain the backlog below
// half the bound, it answers them and starts reading again. A client that pipelines and
// never reads costs at most about the bound, not unbounded memory.
//
// A malformed stream (a message too large or too deep, invalid JSON, not a varlink call)
// is logged and closes the connection.
//
// Deferred destruction: close() starts uv_close; the host frees the object in
// ConnectionHost::closed, called from the close callback, never earlier.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/framer.h"
#include "ipc/service.h"

namespace budgetd::daemon {

// The kernel's word on who is at the other end (SO_PEERCRED, SO_PEERGROUPS).
struct PeerCredentials {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  std::vector<uint32_t> groups;  // supplementary groups at connect time
};

// SO_PEERCRED for uid/gid/pid; SO_PEERGROUPS for the groups, else the "Groups:" line of
// /proc/PID/status. Returns a negative errno when SO_PEERCRED fails.
std::expected<PeerCredentials, int> read_peer_credentials(int fd);

// uid 0, or the primary or a supplementary group is the operator group.
bool is_operator(const PeerCredentials& c, std::optional<uint32_t> operator_gid);

struct ConnectionLimits {
  ipc::FramerLimits framer;
  std::size_t max_pending_reply_bytes = 4 << 20;
};

class Connection;

class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  // Handles one framed message (followed by Framer::kPadding readable bytes) and appends
  // its reply frame to `out`.
  virtual ipc::Service::Outcome dispatch(Connection& c, std::string_view message,
                                         std::string& out) = 0;
  // After the messages of one read were dispatched, before their replies are written.
  virtual void after_batch(Connection& c) = 0;
  // The handle is closed: the host frees the connection now.
  virtual void closed(Connection& c) = 0;
};

class Connection {
 public:
  Connection(uv_loop_t* loop, ConnectionHost& host, ConnectionLimits limits, uint64_t id);
  ~Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Accepts the pending connection of `server` and reads the peer's credentials. On error
  // the connection is to be close()d.
  std::expected<void, std::string> accept(uv_stream_t* server);
  // Adopts a connected socket (tests, socketpair).
  std::expected<void, std::string> open(int fd);
  // Starts reading and answering.
  void start();
  // Idempotent. Unsent replies are dropped; ConnectionHost::closed follows.
  void close();
  // Writes out what is buffered, then closes once every write completed (after EOF).
  void close_after_flush();
  // From inside a dispatch: answer no further message of this batch; once the batch's
  // replies are written, close.
  void close_after_batch() { finish_ = true; }

  // Appends a complete frame (a pushed Watch event). Call flush() after a batch of pushes.
  // false when the backlog is past twice the bound: the client is not reading its events,
  // and the caller should close the connection.
  bool push(std::string_view frame);
  // Writes the buffered replies that are not held (see hold_output_until). Does nothing
  // while a message of this connection is being dispatched: the batch flushes at its end.
  void flush();

  // The durability barrier. Inside a dispatch: the reply of the message being dispatched
  // (even if part of it is already written to the buffer) and everything after it on this
  // connection are not written until release_output(d) with d >= seq. Outside a dispatch:
  // everything appended from now on. Holds stack: each held region becomes writable when
  // its own seq and every earlier region's seq are durable, so replies stay in order. A seq
  // already released is no hold at all.
  void hold_output_until(uint64_t seq);
  // Every seq <= durable_seq is on disk: writes the regions this frees (and resumes reading
  // when that drains the backlog). Releasing is monotonic: a smaller seq than an earlier
  // release changes nothing. A no-op on a closing connection, whose held replies are dropped.
  void release_output(uint64_t durable_seq);
  // Reply bytes buffered behind a hold, not writable yet.
  std::size_t held_bytes() const { return holds_.empty() ? 0 : out_.size() - holds_.front().offset; }

  uint64_t id() const { return id_; }
  const PeerCredentials& credentials() const { return credentials_; }
  ipc::Peer& peer() { return peer_; }
  const ipc::Peer& peer() const { return peer_; }
  bool paused() const { return paused_; }
  bool closing() const { return closing_; }
  // Reply bytes buffered or handed to uv_write and not yet written.
  std::size_t pending_reply_bytes() const { return out_.size() + in_flight_; }
  uint64_t messages() const { return messages_; }
  // Writes started: one per read batch with replies (uv_try_write, and a uv_write for what
  // the socket did not take), not one per message.
  uint64_t writes() const { return writes_; }
  void set_max_pending_reply_bytes(std::size_t n) { limits_.max_pending_reply_bytes = n; }

  // Host bookkeeping: counted in the per-uid bound; subscribed to events.
  bool admitted = false;
  std::optional<ipc::WatchFilter> watch;

 private:
  struct WriteRequest;
  struct Flusher;
  static std::vector<Flusher*>& flushers();
  static void on_check(uv_check_t* check);
  // Flushes after this loop iteration's I/O phase (once, however many batches ran).
  void flush_after_io();
  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_close(uv_handle_t* h);

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&pipe_); }
  std::expected<void, std::string> after_open();
  // Dispatches framed messages until none is left, the backlog is over the bound (pause),
  // or the stream is malformed. Then after_batch, flush, and the close or pause decision.
  void run_batch();
  void pause();
  void resume();
  // Bytes at the front of out_ that no hold covers.
  std::size_t writable_bytes() const { return holds_.empty() ? out_.size() : holds_.front().offset; }
  // After a write drained or a hold was released: resume a paused connection, or finish a
  // close_after_flush.
  void after_drain();

  // A held region starts at `offset` in out_ and waits for `seq`. Offsets and seqs strictly
  // increase along holds_ (a later hold with a smaller seq is covered by the earlier one).
  struct Hold {
    std::size_t offset;
    uint64_t seq;
  };

  uv_pipe_t pipe_{};
  ConnectionHost& host_;
  ConnectionLimits limits_;
  uint64_t id_;
  ipc::Framer framer_;
  PeerCredentials credentials_;
  ipc::Peer peer_;
  std::string out_;    // replies not yet written or handed to uv_write
  std::string spare_;  // a recycled buffer for out_
  std::size_t in_flight_ = 0;  // bytes handed to the one uv_write in flight
  std::vector<Hold> holds_;
  uint64_t durable_ = 0;        // the highest seq released
  std::size_t reply_start_ = 0;  // offset in out_ of the reply being dispatched
  bool dispatching_ = false;
  bool in_batch_ = false;
  bool flush_scheduled_ = false;
  Flusher* flusher_;
  uint64_t messages_ = 0;
  uint64_t writes_ = 0;
  bool reading_ = false;
  bool paused_ = false;
  bool closing_ = false;
  bool close_when_drained_ = false;
  bool broken_ = false;  // a malformed stream: close once the batch is handed to uv_write
  bool finish_ = false;  // close_after_batch()
};

}  // namespace budgetd::daemon
