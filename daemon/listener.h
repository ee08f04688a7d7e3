// The listening socket: taken from systemd (socket activation, sd_listen_fds) when one is
// passed, bound by the daemon otherwise. Binding creates the parent directory, sets the
// socket file's mode and group, and removes a stale socket only when that is safe: the
// path is a socket and nobody answers on it (connect() fails with ECONNREFUSED). A live
// daemon answering there makes startup fail instead of stealing its path.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace budgetd::daemon {

struct ListenSpec {
  std::string path;           // filesystem path of the socket
  uint32_t mode = 0660;       // file mode of the socket
  std::string group;          // group owning the socket ("" = the daemon's); a name or a gid
  bool explicit_path = true;  // configured or --socket, not the default (for a warning)
};

struct ListenSocket {
  int fd = -1;
  std::string path;        // where it listens (from getsockname for an activated socket)
  bool activated = false;  // passed by systemd; the daemon never unlinks it
  bool owns_path = false;  // bound here: unlinked at exit if the file is still this socket
  dev_t dev = 0;           // identity of the socket file we created: device, inode
  ino_t ino = 0;           // (file systems reuse inode numbers at once) and ctime
  timespec ctime{};
  std::vector<std::string> warnings;  // non-fatal problems (an unknown socket group, ...)
};

// A group name or a numeric gid.
std::expected<gid_t, std::string> resolve_group(const std::string& group);

// The socket systemd passed (LISTEN_FDS), nullopt when none was passed, or an error when
// what was passed is not one listening AF_UNIX stream socket.
std::expected<std::optional<int>, std::string> socket_from_systemd();

// Makes `path` free for bind(): nothing there, or a stale socket that is removed.
// Errors: the path exists and is not a socket; a process answers on it ("another daemon is
// listening"); the check itself failed (permissions, ...).
std::expected<void, std::string> remove_stale_socket(const std::string& path);

// mkdir -p of the parent directory (mode 0755), remove_stale_socket, then socket, bind,
// chmod, chgrp and listen. The fd is non-blocking and close-on-exec.
std::expected<ListenSocket, std::string> bind_socket(const ListenSpec& spec, int backlog = 4096);

// systemd's socket when passed, else bind_socket(spec).
std::expected<ListenSocket, std::string> open_listen_socket(const ListenSpec& spec);

// Removes the socket file at exit when we bound it and it is still ours (same device,
// inode and ctime): a newer daemon that replaced it keeps its socket.
void unlink_if_ours(const ListenSocket& s);

// The libuv side: accepts connections on a ListenSocket.
class Listener {
 public:
  // Called once per pending connection; the callee must uv_accept() from `server`.
  using OnConnection = std::function<void(uv_stream_t* server)>;

  explicit Listener(uv_loop_t* loop);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  std::expected<void, std::string> start(ListenSocket socket, OnConnection on_connection);
  // Stops accepting and closes the handle (freed in its close callback, during the next
  // loop iteration); unlinks the socket file if it is ours.
  void close();
  bool listening() const { return started_ && !closing_; }
  bool closed() const { return !started_ || closed_; }
  const ListenSocket& socket() const { return socket_; }

 private:
  static void on_connection_cb(uv_stream_t* server, int status);
  static void on_close_cb(uv_handle_t* h);

  uv_loop_t* loop_;
  uv_pipe_t pipe_{};
  ListenSocket socket_;
  OnConnection on_connection_;
  bool started_ = false;
  bool closing_ = false;
  bool closed_ = false;
};

}  // namespace budgetd::daemon
