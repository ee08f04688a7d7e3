// A fake varlink server for the budgetctl tests: a thread serving a temporary Unix socket.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/varlink_client.h"

namespace budgetd::cli {

using client::Json;

// Serves one connection at a time on a temporary socket. The handler maps each call to the
// reply messages to send (none for oneway; several for a stream). A reply {"__close": true}
// closes the connection instead; {"__raw": "..."} sends the bytes as they are.
class FakeServer {
 public:
  using Handler = std::function<std::vector<Json>(const Json& call)>;

  explicit FakeServer(Handler handler) : handler_(std::move(handler)) {
    char tmpl[] = "/tmp/budgetctl-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/sock";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      ADD_FAILURE() << "bind/listen " << path_;
    }
    if (::pipe2(stop_, O_CLOEXEC) != 0) ADD_FAILURE() << "pipe";
    thread_ = std::thread([this] { loop(); });
  }

  ~FakeServer() {
    char c = 1;
    [[maybe_unused]] auto n = ::write(stop_[1], &c, 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
    std::filesystem::remove_all(dir_);
  }

  const std::string& path() const { return path_; }
  std::vector<Json> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  bool wait(int fd) {  // false when asked to stop
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    while (::poll(p, 2, -1) < 0) {
    }
    return !(p[1].revents & POLLIN);
  }

  void loop() {
    while (wait(listen_fd_)) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      serve(fd);
      ::close(fd);
    }
  }

  void serve(int fd) {
    std::string buf;
    for (;;) {
      if (!wait(fd)) return;
      char tmp[4096];
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return;
      buf.append(tmp, static_cast<std::size_t>(n));
      for (std::size_t nul; (nul = buf.find('\0')) != std::string::npos;) {
        Json call = Json::parse(buf.substr(0, nul), nullptr, false);
        buf.erase(0, nul + 1);
        {
          std::lock_guard lock(mu_);
          calls_.push_back(call);
        }
        for (const Json& reply : handler_(call)) {
          if (reply.contains("__close")) return;
          std::string frame;
          if (reply.contains("__raw")) {
            frame = reply["__raw"].get<std::string>();
          } else {
            frame = reply.dump();
            frame.push_back('\0');
          }
          if (::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) !=
              static_cast<ssize_t>(frame.size()))
            return;
        }
      }
    }
  }

  Handler handler_;
  std::string dir_, path_;
  int listen_fd_ = -1;
  int stop_[2] = {-1, -1};
  std::thread thread_;
  std::mutex mu_;
  std::vector<Json> calls_;
};

}  // namespace budgetd::cli
