// The daemon's Clock for the engine: the wall time read once at start, plus the monotonic
// time elapsed since. Timeouts and reservation expiries therefore never jump when an
// administrator (or NTP stepping) sets the wall clock; calendar resets still see civil
// time, offset by whatever the wall clock was at start.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

#include "lib/clock.h"

namespace budgetd::daemon {

// CLOCK_MONOTONIC in microseconds (the same clock as uv_hrtime and sd_notify's
// MONOTONIC_USEC).
inline int64_t monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

inline int64_t realtime_usec() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

class MonotonicWallClock final : public Clock {
 public:
  MonotonicWallClock() : wall_start_(realtime_usec()), mono_start_(monotonic_usec()) {}

  TimePoint now() const override {
    return TimePoint{Duration{wall_start_ + (monotonic_usec() - mono_start_)}};
  }

  // Seconds since the daemon started (monotonic).
  double uptime_seconds() const {
    return static_cast<double>(monotonic_usec() - mono_start_) / 1e6;
  }

 private:
  int64_t wall_start_;
  int64_t mono_start_;
};

}  // namespace budgetd::daemon
