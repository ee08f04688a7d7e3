#include "clients/cpp/varlink_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <utility>

namespace budgetd::client {

namespace {

std::string errno_text(std::string_view what, int err) {
  std::string s(what);
  s += ": ";
  s += std::system_category().message(err);  // strerror_r underneath: thread-safe
  return s;
}

bool is_closed_errno(int err) { return err == ECONNRESET || err == EPIPE || err == ENOTCONN; }

// Waits for `events` on fd until the deadline. EINTR restarts with the time left.
std::expected<void, std::string> wait_for(int fd, short events,
                                          std::chrono::steady_clock::time_point deadline,
                                          bool has_deadline) {
  for (;;) {
    int ms = -1;
    if (has_deadline) {
      auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::unexpected(std::string(kTimedOut));
      ms = left.count() > 0x7fffffff ? 0x7fffffff : static_cast<int>(left.count());
    }
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms);
    if (r > 0) return {};  // readable, writable, or an error/hangup the next I/O reports
    if (r == 0) {
      if (has_deadline && std::chrono::steady_clock::now() >= deadline) {
        return std::unexpected(std::string(kTimedOut));
      }
      continue;
    }
    if (errno == EINTR) continue;
    return std::unexpected(errno_text("poll", errno));
  }
}

std::chrono::steady_clock::time_point deadline_of(Timeout t) {
  return t.count() < 0 ? std::chrono::steady_clock::time_point::max()
                       : std::chrono::steady_clock::now() + t;
}

}  // namespace

std::string Reply::message() const {
  if (parameters.is_object()) {
    auto it = parameters.find("message");
    if (it != parameters.end() && it->is_string()) return it->get<std::string>();
  }
  return {};
}

std::string encode_call(std::string_view method, const Json& parameters, CallFlags flags) {
  Json call = Json::object();
  call["method"] = method;
  if (!parameters.is_null()) call["parameters"] = parameters;
  if (flags.oneway) call["oneway"] = true;
  if (flags.more) call["more"] = true;
  std::string out = call.dump(-1, ' ', false, Json::error_handler_t::replace);
  out.push_back('\0');
  return out;
}

std::expected<Reply, std::string> decode_reply(std::string_view message) {
  Json j = Json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::unexpected(std::string("reply is not valid JSON"));
  if (!j.is_object()) return std::unexpected(std::string("reply is not a JSON object"));
  Reply r;
  if (auto it = j.find("parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return std::unexpected(std::string("reply parameters are not an object"));
    r.parameters = std::move(*it);
  }
  if (auto it = j.find("error"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return std::unexpected(std::string("reply error is not a string"));
    r.error = it->get<std::string>();
  }
  if (auto it = j.find("continues"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return std::unexpected(std::string("reply continues is not a boolean"));
    r.continues = it->get<bool>();
  }
  return r;
}

// ---------------------------------------------------------------------------------------

std::expected<VarlinkClient, std::string> VarlinkClient::connect(const std::string& path,
                                                                 Timeout timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  socklen_t len = 0;
  if (path.empty()) return std::unexpected(std::string("empty socket path"));
  if (path.find('\0') != std::string::npos)
    return std::unexpected(std::string("socket path contains a NUL byte"));
  if (path[0] == '@') {  // abstract namespace: a leading NUL, not terminated
    if (path.size() > sizeof(addr.sun_path))
      return std::unexpected("socket path too long: " + path);
    std::memcpy(addr.sun_path + 1, path.data() + 1, path.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    if (path.size() >= sizeof(addr.sun_path))
      return std::unexpected("socket path too long: " + path);
    std::memcpy(addr.sun_path, path.data(), path.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(errno_text("socket", errno));
  // A blocking connect on a Unix socket waits while the listen backlog is full, bounded
  // by SO_SNDTIMEO; the socket turns non-blocking once connected.
  if (timeout.count() >= 0) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;  // 0 would mean "no timeout"
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) break;
    int err = errno;
    if (err == EINTR) continue;
    if (err == EISCONN) break;
    ::close(fd);
    if (err == EAGAIN || err == EINPROGRESS) {
      return std::unexpected("connect " + path + ": " + std::string(kTimedOut));
    }
    return std::unexpected(errno_text("connect " + path, err));
  }
  timeval zero{};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
  return adopt(fd);
}

VarlinkClient VarlinkClient::adopt(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return VarlinkClient(fd);
}

VarlinkClient::VarlinkClient(VarlinkClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      in_(std::move(other.in_)),
      scanned_(std::exchange(other.scanned_, 0)),
      max_message_(other.max_message_),
      eof_(std::exchange(other.eof_, false)) {}

VarlinkClient& VarlinkClient::operator=(VarlinkClient&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    in_ = std::move(other.in_);
    scanned_ = std::exchange(other.scanned_, 0);
    max_message_ = other.max_message_;
    eof_ = std::exchange(other.eof_, false);
  }
  return *this;
}

VarlinkClient::~VarlinkClient() { close(); }

void VarlinkClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void VarlinkClient::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

std::expected<void, std::string> VarlinkClient::write_all(std::string_view bytes,
                                                          Clock::time_point deadline,
                                                          bool has_deadline) {
  if (fd_ < 0) return std::unexpected(std::string("not connected"));
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (auto w = wait_for(fd_, POLLOUT, deadline, has_deadline); !w) return w;
      continue;
    }
    if (n < 0 && is_closed_errno(errno)) return std::unexpected(std::string(kConnectionClosed));
    return std::unexpected(errno_text("send", errno));
  }
  return {};
}

std::expected<std::string, std::string> VarlinkClient::read_frame(Clock::time_point deadline,
                                                                  bool has_deadline) {
  if (fd_ < 0) return std::unexpected(std::string("not connected"));
  for (;;) {
    if (std::size_t nul = in_.find('\0', scanned_); nul != std::string::npos) {
      std::string msg = in_.substr(0, nul);
      in_.erase(0, nul + 1);
      scanned_ = 0;
      return msg;
    }
    scanned_ = in_.size();
    if (in_.size() > max_message_) {
      return std::unexpected("reply larger than " + std::to_string(max_message_) + " bytes");
    }
    if (eof_) return std::unexpected(std::string(kConnectionClosed));

    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      in_.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      eof_ = true;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (auto w = wait_for(fd_, POLLIN, deadline, has_deadline); !w)
        return std::unexpected(w.error());
      continue;
    }
    if (is_closed_errno(errno)) {
      eof_ = true;
      continue;
    }
    return std::unexpected(errno_text("recv", errno));
  }
}

std::expected<void, std::string> VarlinkClient::send_raw(std::string_view bytes, Timeout timeout) {
  return write_all(bytes, deadline_of(timeout), timeout.count() >= 0);
}

std::expected<void, std::string> VarlinkClient::send_call(std::string_view method,
                                                          const Json& parameters, CallFlags flags,
                                                          Timeout timeout) {
  return send_raw(encode_call(method, parameters, flags), timeout);
}

std::expected<std::string, std::string> VarlinkClient::read_message(Timeout timeout) {
  return read_frame(deadline_of(timeout), timeout.count() >= 0);
}

std::expected<Reply, std::string> VarlinkClient::read_reply(Timeout timeout) {
  auto msg = read_message(timeout);
  if (!msg) return std::unexpected(msg.error());
  return decode_reply(*msg);
}

std::expected<Reply, std::string> VarlinkClient::call(std::string_view method,
                                                      const Json& parameters, Timeout timeout) {
  const auto deadline = deadline_of(timeout);
  const bool has_deadline = timeout.count() >= 0;
  if (auto w = write_all(encode_call(method, parameters), deadline, has_deadline); !w) {
    return std::unexpected(w.error());
  }
  auto msg = read_frame(deadline, has_deadline);
  if (!msg) return std::unexpected(msg.error());
  return decode_reply(*msg);
}

std::expected<void, std::string> VarlinkClient::send_oneway(std::string_view method,
                                                            const Json& parameters,
                                                            Timeout timeout) {
  return send_call(method, parameters, CallFlags{.oneway = true, .more = false}, timeout);
}

std::expected<void, std::string> VarlinkClient::call_more(std::string_view method,
                                                          const Json& parameters,
                                                          const StreamCallback& on_reply,
                                                          Timeout timeout) {
  if (auto w = send_call(method, parameters, CallFlags{.oneway = false, .more = true},
                         timeout.count() >= 0 ? timeout : kDefaultTimeout);
      !w) {
    return w;
  }
  for (;;) {
    auto reply = read_reply(timeout);
    if (!reply) return std::unexpected(reply.error());
    const bool continues = reply->continues && reply->ok();
    if (!on_reply(*reply, continues) || !continues) return {};
  }
}

bool VarlinkClient::wait_closed(Timeout timeout) {
  const auto deadline = deadline_of(timeout);
  const bool has_deadline = timeout.count() >= 0;
  for (;;) {
    auto msg = read_frame(deadline, has_deadline);
    if (msg) continue;
    if (msg.error() == kTimedOut) return false;
    if (msg.error().starts_with("reply larger")) {
      in_.clear();  // discarding anyway
      scanned_ = 0;
      continue;
    }
    return true;  // closed, reset, or broken
  }
}

// ---------------------------------------------------------------------------------------

std::string default_socket_path() {
  if (::geteuid() == 0) return "/run/budgetd/io.budgetd";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg) return std::string(xdg) + "/budgetd/io.budgetd";
  return "./run/io.budgetd";
}

std::string resolve_socket_path(std::string_view flag) {
  if (!flag.empty()) return std::string(flag);
  const char* env = std::getenv("BUDGETD_SOCKET");
  if (env && *env) return env;
  return default_socket_path();
}

}  // namespace budgetd::client
