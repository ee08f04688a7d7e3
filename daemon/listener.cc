#include "daemon/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <charconv>
#include <cstring>

#include "daemon/journal.h"

namespace budgetd::daemon {

namespace {

std::string errno_text(int e) {
  const char* name = strerrorname_np(e);
  return fmt::format("{} ({})", name ? name : "E?", strerror(e));
}

std::expected<sockaddr_un, std::string> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return std::unexpected("empty socket path");
  if (path.size() >= sizeof addr.sun_path)
    return std::unexpected(fmt::format("socket path too long ({} bytes, at most {}): {}",
                                       path.size(), sizeof addr.sun_path - 1, path));
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// mkdir -p for the directory that will hold `path`.
std::expected<void, std::string> make_parent_dirs(const std::string& path) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return {};
  std::string dir = path.substr(0, slash);
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    std::string prefix = dir.substr(0, i);
    if (mkdir(prefix.c_str(), 0755) == 0 || errno == EEXIST) continue;
    return std::unexpected(
        fmt::format("cannot create directory {}: {}", prefix, errno_text(errno)));
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return std::unexpected(fmt::format("{} is not a directory", dir));
  return {};
}

}  // namespace

std::expected<gid_t, std::string> resolve_group(const std::string& group) {
  gid_t numeric = 0;
  auto [p, ec] = std::from_chars(group.data(), group.data() + group.size(), numeric);
  if (ec == std::errc() && p == group.data() + group.size()) return numeric;
  long size = sysconf(_SC_GETGR_R_SIZE_MAX);
  std::string buf(size > 0 ? static_cast<std::size_t>(size) : 16384, '\0');
  struct group gr {};
  struct group* result = nullptr;
  int rc;
  while ((rc = getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &result)) == ERANGE &&
         buf.size() < (1u << 20))
    buf.resize(buf.size() * 2);
  if (rc != 0)
    return std::unexpected(fmt::format("cannot look up group {}: {}", group, errno_text(rc)));
  if (!result) return std::unexpected(fmt::format("unknown group {}", group));
  return gr.gr_gid;
}

std::expected<std::optional<int>, std::string> socket_from_systemd() {
  int n = sd_listen_fds(1);
  if (n < 0) return std::unexpected(fmt::format("sd_listen_fds: {}", errno_text(-n)));
  if (n == 0) return std::optional<int>();
  if (n > 1)
    return std::unexpected(
        fmt::format("systemd passed {} sockets; budgetd listens on exactly one", n));
  int fd = SD_LISTEN_FDS_START;
  int r = sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0);
  if (r < 0) return std::unexpected(fmt::format("passed fd {}: {}", fd, errno_text(-r)));
  if (r == 0)
    return std::unexpected(
        fmt::format("passed fd {} is not a listening AF_UNIX stream socket", fd));
  return std::optional<int>(fd);
}

std::expected<void, std::string> remove_stale_socket(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return std::unexpected(fmt::format("cannot inspect {}: {}", path, errno_text(errno)));
  }
  if (!S_ISSOCK(st.st_mode))
    return std::unexpected(
        fmt::format("{} exists and is not a socket; refusing to replace it", path));
  auto addr = unix_address(path);
  if (!addr) return std::unexpected(addr.error());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::unexpected(fmt::format("socket: {}", errno_text(errno)));
  int rc = connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
  int err = rc == 0 ? 0 : errno;
  ::close(fd);
  switch (err) {
    case 0:
    case EAGAIN:  // a listener whose backlog is full is still a live listener
    case EINPROGRESS:
      return std::unexpected(
          fmt::format("another process (budgetd?) is listening on {}; refusing to start", path));
    case ECONNREFUSED:
      if (unlink(path.c_str()) != 0 && errno != ENOENT)
        return std::unexpected(
            fmt::format("cannot remove stale socket {}: {}", path, errno_text(errno)));
      return {};
    case ENOENT:  // removed meanwhile
      return {};
    default:
      return std::unexpected(
          fmt::format("cannot check whether {} is in use: {}", path, errno_text(err)));
  }
}

std::expected<ListenSocket, std::string> bind_socket(const ListenSpec& spec, int backlog) {
  auto addr = unix_address(spec.path);
  if (!addr) return std::unexpected(addr.error());
  if (auto r = make_parent_dirs(spec.path); !r) return std::unexpected(r.error());
  if (auto r = remove_stale_socket(spec.path); !r) return std::unexpected(r.error());

  ListenSocket s;
  s.path = spec.path;
  s.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s.fd < 0) return std::unexpected(fmt::format("socket: {}", errno_text(errno)));
  auto fail = [&](std::string msg) -> std::expected<ListenSocket, std::string> {
    ::close(s.fd);
    if (s.owns_path) unlink(spec.path.c_str());
    return std::unexpected(std::move(msg));
  };
  if (bind(s.fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0)
    return fail(fmt::format("cannot bind {}: {}", spec.path, errno_text(errno)));
  s.owns_path = true;
  // Mode and group are set before listen(): nobody can connect through looser bits.
  if (!spec.group.empty()) {
    auto gid = resolve_group(spec.group);
    if (!gid)
      s.warnings.push_back(
          fmt::format("socket group: {}; keeping the daemon's group", gid.error()));
    else if (chown(spec.path.c_str(), static_cast<uid_t>(-1), *gid) != 0)
      s.warnings.push_back(fmt::format("cannot set the group of {} to {}: {}", spec.path,
                                       spec.group, errno_text(errno)));
  }
  if (chmod(spec.path.c_str(), static_cast<mode_t>(spec.mode & 07777)) != 0)
    return fail(fmt::format("cannot chmod {}: {}", spec.path, errno_text(errno)));
  // Its identity, after the last metadata change (chmod, chown change the ctime).
  struct stat st {};
  if (lstat(spec.path.c_str(), &st) != 0)
    return fail(fmt::format("cannot stat {}: {}", spec.path, errno_text(errno)));
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.ctime = st.st_ctim;
  if (listen(s.fd, backlog) != 0)
    return fail(fmt::format("cannot listen on {}: {}", spec.path, errno_text(errno)));
  return s;
}

std::expected<ListenSocket, std::string> open_listen_socket(const ListenSpec& spec) {
  auto passed = socket_from_systemd();
  if (!passed) return std::unexpected(passed.error());
  if (!*passed) return bind_socket(spec);
  ListenSocket s;
  s.fd = **passed;
  s.activated = true;
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (getsockname(s.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
      len > offsetof(sockaddr_un, sun_path) && addr.sun_path[0] != '\0')
    s.path.assign(addr.sun_path, strnlen(addr.sun_path, sizeof addr.sun_path));
  else
    s.path = "(socket passed by systemd)";
  // Close-on-exec: budgetd execs nothing, but a passed fd should not leak anyway.
  fcntl(s.fd, F_SETFD, FD_CLOEXEC);
  if (spec.explicit_path && !spec.path.empty() && s.path != spec.path)
    s.warnings.push_back(fmt::format(
        "systemd passed the socket {}; the configured path {} is unused", s.path, spec.path));
  return s;
}

void unlink_if_ours(const ListenSocket& s) {
  if (!s.owns_path || s.activated || s.path.empty()) return;
  struct stat st {};
  if (lstat(s.path.c_str(), &st) != 0) return;
  if (S_ISSOCK(st.st_mode) && st.st_dev == s.dev && st.st_ino == s.ino &&
      st.st_ctim.tv_sec == s.ctime.tv_sec && st.st_ctim.tv_nsec == s.ctime.tv_nsec)
    unlink(s.path.c_str());
}

// ---- Listener -------------------------------------------------------------------------

Listener::Listener(uv_loop_t* loop) : loop_(loop) { pipe_.data = this; }

Listener::~Listener() {
  // The handle must be closed and its callback run before the memory goes (libuv).
  if (started_ && !closed_) log_error("listener destroyed before its handle was closed");
}

std::expected<void, std::string> Listener::start(ListenSocket socket, OnConnection on_connection) {
  socket_ = std::move(socket);
  on_connection_ = std::move(on_connection);
  if (int r = uv_pipe_init(loop_, &pipe_, 0); r != 0) {
    ::close(socket_.fd);
    return std::unexpected(fmt::format("uv_pipe_init: {}", uv_strerror(r)));
  }
  started_ = true;
  if (int r = uv_pipe_open(&pipe_, socket_.fd); r != 0) {
    ::close(socket_.fd);  // not adopted by the handle
    close();
    return std::unexpected(fmt::format("uv_pipe_open: {}", uv_strerror(r)));
  }
  if (int r = uv_listen(reinterpret_cast<uv_stream_t*>(&pipe_), SOMAXCONN, on_connection_cb);
      r != 0) {
    close();
    return std::unexpected(fmt::format("uv_listen on {}: {}", socket_.path, uv_strerror(r)));
  }
  return {};
}

void Listener::close() {
  if (!started_ || closing_) return;
  closing_ = true;
  unlink_if_ours(socket_);
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), on_close_cb);
}

void Listener::on_connection_cb(uv_stream_t* server, int status) {
  auto* self = static_cast<Listener*>(server->data);
  if (status < 0) {
    log_warning("accept on {}: {}", self->socket_.path, uv_strerror(status));
    return;
  }
  if (self->closing_) return;
  self->on_connection_(server);
}

void Listener::on_close_cb(uv_handle_t* h) { static_cast<Listener*>(h->data)->closed_ = true; }

}  // namespace budgetd::daemon
