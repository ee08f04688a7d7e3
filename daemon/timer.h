// The engine's one timer: a uv_timer armed at Engine::next_deadline(). The engine applies
// whatever fell due on every call anyway; the timer only makes soft timeouts, timeouts,
// expiries and resets happen (and reach the journal and watchers) at their instant when no
// call comes.
#pragma once

#include <uv.h>

#include <functional>
#include <optional>

#include "lib/clock.h"

namespace budgetd::daemon {

class DeadlineTimer {
 public:
  // A deadline further away than this is re-armed when the timer fires (uv timers take
  // milliseconds, and an hour keeps the arithmetic far from overflow).
  static constexpr uint64_t kMaxDelayMs = 3'600'000;

  DeadlineTimer(uv_loop_t* loop, const Clock& clock, std::function<void()> on_fire);
  ~DeadlineTimer() = default;
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  // Fires at `deadline` (rounded up to the next millisecond, at least 1 ms from now, so a
  // deadline that is already due cannot make the loop spin); nullopt disarms.
  void arm(std::optional<TimePoint> deadline);
  std::optional<TimePoint> armed_at() const { return armed_; }
  void close();
  bool closed() const { return closed_; }

  // Milliseconds from `now` until `deadline`, as arm() computes them.
  static uint64_t delay_ms(TimePoint now, TimePoint deadline);

 private:
  static void on_timer(uv_timer_t* t);
  uv_timer_t timer_{};
  const Clock& clock_;
  std::function<void()> on_fire_;
  std::optional<TimePoint> armed_;
  bool closing_ = false;
  bool closed_ = false;
};

}  // namespace budgetd::daemon
