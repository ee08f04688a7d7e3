#include "daemon/timer.h"

#include <algorithm>

namespace budgetd::daemon {

DeadlineTimer::DeadlineTimer(uv_loop_t* loop, const Clock& clock, std::function<void()> on_fire)
    : clock_(clock), on_fire_(std::move(on_fire)) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

uint64_t DeadlineTimer::delay_ms(TimePoint now, TimePoint deadline) {
  if (deadline <= now) return 1;
  auto us = static_cast<uint64_t>((deadline - now).count());
  uint64_t ms = us / 1000 + (us % 1000 != 0 ? 1 : 0);
  return std::clamp<uint64_t>(ms, 1, kMaxDelayMs);
}

void DeadlineTimer::arm(std::optional<TimePoint> deadline) {
  if (closing_) return;
  if (deadline == armed_ && deadline) return;  // already armed there
  armed_ = deadline;
  if (!deadline) {
    uv_timer_stop(&timer_);
    return;
  }
  uv_update_time(timer_.loop);  // the loop's cached time may be stale after a long batch
  uv_timer_start(&timer_, on_timer, delay_ms(clock_.now(), *deadline), 0);
}

void DeadlineTimer::close() {
  if (closing_) return;
  closing_ = true;
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_),
           [](uv_handle_t* h) { static_cast<DeadlineTimer*>(h->data)->closed_ = true; });
}

void DeadlineTimer::on_timer(uv_timer_t* t) {
  auto* self = static_cast<DeadlineTimer*>(t->data);
  self->armed_.reset();
  self->on_fire_();  // expected to advance the engine and re-arm
}

}  // namespace budgetd::daemon
