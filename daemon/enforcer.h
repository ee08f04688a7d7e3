// Carries out the engine's actions on OS-pid processes, through the pidfd opened when the
// process was allocated (ProcessWatch), never through kill(2):
//   terminate  SIGTERM now, SIGKILL after the grace period (like RLIMIT_CPU's SIGXCPU then
//              SIGKILL, or systemd's RuntimeMaxSec + TimeoutStopSec);
//   pause      SIGSTOP, until Admin.Resume sends SIGCONT.
// The SIGKILL timer holds its own duplicate of the pidfd, so it still names the same
// process after the watch is gone, and a reused pid is never hit.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "daemon/process_watch.h"
#include "lib/error.h"

namespace budgetd::daemon {

class Enforcer {
 public:
  // Grace periods above this are clamped (a day; libuv timers take milliseconds).
  static constexpr uint64_t kMaxGraceSeconds = 86'400;

  Enforcer(uv_loop_t* loop, ProcessWatch& watch);
  ~Enforcer();
  Enforcer(const Enforcer&) = delete;
  Enforcer& operator=(const Enforcer&) = delete;

  // SIGTERM now and SIGKILL after grace_seconds (a second terminate while the first is
  // pending does not start another timer). Errc::unknown_process when the id has no
  // pidfd (a logical id or an untracked pid): it cannot be signalled safely.
  Result<void> terminate(std::string_view id, uint64_t grace_seconds);
  Result<void> pause(std::string_view id);   // SIGSTOP
  Result<void> resume(std::string_view id);  // SIGCONT
  std::size_t pending_kills() const { return kills_.size(); }
  // Shutdown: drops pending SIGKILLs (the processes keep running) and closes the timers.
  void close_all();
  bool idle() const { return kills_.empty() && closing_ == 0; }

 private:
  struct Kill {
    uv_timer_t timer{};
    int pidfd = -1;  // a dup of the watch's pidfd
    std::string id;
    Enforcer* owner = nullptr;
  };
  Result<void> send(std::string_view id, int sig);
  static void on_timer(uv_timer_t* t);
  static void on_close(uv_handle_t* h);
  void close_kill(Kill* k);

  uv_loop_t* loop_;
  ProcessWatch& watch_;
  std::unordered_map<std::string, Kill*> kills_;
  std::size_t closing_ = 0;
};

}  // namespace budgetd::daemon
