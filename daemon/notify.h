// systemd notifications (sd_notify): READY=1 once listening; STATUS= refreshed every
// status interval; WATCHDOG=1 at half of WATCHDOG_USEC; RELOADING=1 with MONOTONIC_USEC=
// on reload, then READY=1; STOPPING=1 on shutdown. Without NOTIFY_SOCKET (not started by
// systemd) sd_notify does nothing, and the status timer still samples the call rate for
// Admin.Stats.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

namespace budgetd::daemon {

class Notifier {
 public:
  // Called every status interval; returns the STATUS= text.
  using StatusFn = std::function<std::string()>;

  Notifier(uv_loop_t* loop, StatusFn status);
  ~Notifier() = default;
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Starts the status and watchdog timers.
  void start(uint64_t status_interval_ms);
  void set_status_interval(uint64_t ms);
  void ready();      // READY=1 + STATUS=
  void reloading();  // RELOADING=1 + MONOTONIC_USEC=
  void stopping();   // STOPPING=1
  void status();     // STATUS= now
  void close();
  bool closed() const { return closed_count_ == 2; }
  // The watchdog period (half WATCHDOG_USEC), 0 when systemd asked for none.
  uint64_t watchdog_interval_ms() const { return watchdog_ms_; }

 private:
  static void on_status(uv_timer_t* t);
  static void on_watchdog(uv_timer_t* t);

  uv_timer_t status_timer_{};
  uv_timer_t watchdog_timer_{};
  StatusFn status_fn_;
  uint64_t watchdog_ms_ = 0;
  bool closing_ = false;
  int closed_count_ = 0;
};

}  // namespace budgetd::daemon
