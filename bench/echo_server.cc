// echo_server: the transport's ceiling for bench/run. A bare libuv server on a Unix socket
// that answers every NUL-terminated message with the fixed reply {"parameters":{}}\0,
// without parsing it: the same loop, socket and framing as budgetd, minus all the work.
//
//   echo_server --socket PATH
//
// Replies are written straight from one static buffer of repeated replies, so a read that
// holds k messages costs one write of k replies and no allocation. Like budgetd, it stops
// reading a connection whose unread replies pass 4 MiB until the client drains them.
// SIGINT or SIGTERM stops it and removes the socket.
#include <fmt/core.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view kReply{"{\"parameters\":{}}\0", 18};
constexpr std::size_t kRepliesPerBuf = 4096;
constexpr std::size_t kReadBuf = 65536;
constexpr std::size_t kMaxQueued = 4u << 20;

std::string g_replies;  // kRepliesPerBuf copies of kReply

struct Client {
  uv_pipe_t pipe{};
  bool reading = false;
  char buf[kReadBuf];
};

struct Write {
  uv_write_t req{};
  Client* client = nullptr;
  std::vector<uv_buf_t> bufs;
};

uv_pipe_t g_server;
uv_signal_t g_sigint, g_sigterm;
std::string g_path;

void on_close(uv_handle_t* h) { delete static_cast<Client*>(h->data); }

void alloc(uv_handle_t* h, std::size_t, uv_buf_t* out) {
  auto* c = static_cast<Client*>(h->data);
  *out = uv_buf_init(c->buf, kReadBuf);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

void on_write(uv_write_t* req, int status) {
  auto* w = static_cast<Write*>(req->data);
  Client* c = w->client;
  delete w;
  if (status < 0 || uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->pipe))) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&c->pipe);
  if (!c->reading && uv_stream_get_write_queue_size(stream) < kMaxQueued / 2) {
    uv_read_start(stream, alloc, on_read);
    c->reading = true;
  }
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Client*>(s->data);
  if (n < 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(s), on_close);
    return;
  }
  // Messages may be split anywhere: counting the NULs needs no state between reads.
  std::size_t replies = 0;
  const char* end = buf->base + n;
  for (const char* p = buf->base;
       (p = static_cast<const char*>(std::memchr(p, '\0', static_cast<std::size_t>(end - p)))); ++p)
    ++replies;
  if (replies == 0) return;
  auto* w = new Write;
  w->client = c;
  w->req.data = w;
  while (replies > 0) {
    const std::size_t k = std::min(replies, kRepliesPerBuf);
    w->bufs.push_back(uv_buf_init(g_replies.data(), static_cast<unsigned>(k * kReply.size())));
    replies -= k;
  }
  if (int r = uv_write(&w->req, s, w->bufs.data(), static_cast<unsigned>(w->bufs.size()), on_write);
      r < 0) {
    delete w;
    uv_close(reinterpret_cast<uv_handle_t*>(s), on_close);
    return;
  }
  if (uv_stream_get_write_queue_size(s) >= kMaxQueued) {
    uv_read_stop(s);
    c->reading = false;
  }
}

void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* c = new Client;
  uv_pipe_init(server->loop, &c->pipe, 0);
  c->pipe.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), on_close);
    return;
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe), alloc, on_read);
  c->reading = true;
}

void on_signal(uv_signal_t* h, int) { uv_stop(h->loop); }

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--socket" && i + 1 < argc)
      g_path = argv[++i];
    else if (a.starts_with("--socket="))
      g_path = a.substr(9);
    else {
      fmt::print(stderr, "Usage: echo_server --socket PATH\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (g_path.empty()) {
    fmt::print(stderr, "Usage: echo_server --socket PATH\n");
    return 2;
  }
  for (std::size_t i = 0; i < kRepliesPerBuf; ++i) g_replies += kReply;

  uv_loop_t* loop = uv_default_loop();
  uv_pipe_init(loop, &g_server, 0);
  unlink(g_path.c_str());
  if (int r = uv_pipe_bind(&g_server, g_path.c_str()); r < 0) {
    fmt::print(stderr, "echo_server: bind {}: {}\n", g_path, uv_strerror(r));
    return 1;
  }
  if (int r = uv_listen(reinterpret_cast<uv_stream_t*>(&g_server), 1024, on_connection); r < 0) {
    fmt::print(stderr, "echo_server: listen {}: {}\n", g_path, uv_strerror(r));
    return 1;
  }
  uv_signal_init(loop, &g_sigint);
  uv_signal_start(&g_sigint, on_signal, SIGINT);
  uv_signal_init(loop, &g_sigterm);
  uv_signal_start(&g_sigterm, on_signal, SIGTERM);
  fmt::print(stderr, "echo_server: listening on {}\n", g_path);
  uv_run(loop, UV_RUN_DEFAULT);
  unlink(g_path.c_str());
  return 0;
}
