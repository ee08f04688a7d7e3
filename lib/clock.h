// Time for the engine. The engine never reads a wall clock itself: the daemon passes one
// in, and tests pass a FakeClock they advance by hand, so no unit test ever sleeps.
#pragma once

#include <chrono>
#include <cstdint>

namespace budgetd {

using Duration = std::chrono::microseconds;
// Microseconds since the Unix epoch, UTC. Calendar resets (daily at 00:00 UTC, ...) are
// computed from this, so it must be civil time, not a monotonic counter.
using TimePoint = std::chrono::sys_time<Duration>;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = TimePoint{}) : now_(start) {}
  TimePoint now() const override { return now_; }
  void advance(Duration d) { now_ += d; }
  void set(TimePoint t) { now_ = t; }

 private:
  TimePoint now_;
};

// Whole seconds, rounded down; used where the seeds speak in seconds.
inline int64_t to_seconds(Duration d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d).count();
}
inline double to_seconds_f(Duration d) { return static_cast<double>(d.count()) / 1e6; }
inline Duration seconds(int64_t s) { return std::chrono::seconds(s); }

}  // namespace budgetd
