// Process lifetime: every OS-pid process gets a pidfd when it is allocated (Hooks::track),
// polled by libuv. The pidfd turns readable when the process exits; the daemon then
// releases it (the engine emits `released` with the final usage). The same pidfd is the
// only way the Enforcer signals the process, so a pid that was reused by another process
// is never signalled: a process without a pidfd opened at allocation is never signalled.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "lib/error.h"

namespace budgetd::daemon {

class ProcessWatch {
 public:
  // Called from the loop when a watched process exits; the watch is already gone.
  using OnExit = std::function<void(const std::string& id)>;

  ProcessWatch(uv_loop_t* loop, OnExit on_exit);
  ~ProcessWatch();
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;

  // For an all-digit id, opens its pidfd and polls it; a logical id needs nothing.
  // Watching an id again is a no-op. Errors name the pid and the errno:
  // "cannot watch pid 4242: ESRCH" (Errc::unknown_process), EMFILE (capacity_exceeded).
  Result<void> track(std::string_view id);
  // Stops watching (the process was released by a call); closes the pidfd.
  void untrack(std::string_view id);
  // The pidfd opened at allocation, or nullopt (a logical id, or not tracked).
  std::optional<int> pidfd(std::string_view id) const;
  std::size_t size() const { return watches_.size(); }
  // Closes every watch (shutdown). Handles finish closing in the next loop iteration.
  void close_all();
  // No handle is open or closing.
  bool idle() const { return watches_.empty() && closing_ == 0; }

 private:
  struct Watch {
    uv_poll_t poll{};
    int fd = -1;
    std::string id;
    ProcessWatch* owner = nullptr;
  };
  static void on_poll(uv_poll_t* h, int status, int events);
  static void on_close(uv_handle_t* h);
  void close_watch(Watch* w);

  uv_loop_t* loop_;
  OnExit on_exit_;
  std::unordered_map<std::string, Watch*> watches_;
  std::size_t closing_ = 0;
};

}  // namespace budgetd::daemon
