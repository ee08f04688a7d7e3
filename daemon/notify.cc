#include "daemon/notify.h"

#include <fmt/core.h>
#include <systemd/sd-daemon.h>

#include "daemon/clock.h"
#include "daemon/journal.h"

namespace budgetd::daemon {

namespace {
void notify(const std::string& text) {
  int r = sd_notify(0, text.c_str());
  if (r < 0) log_debug("sd_notify: {}", r);
}
}  // namespace

Notifier::Notifier(uv_loop_t* loop, StatusFn status) : status_fn_(std::move(status)) {
  uv_timer_init(loop, &status_timer_);
  uv_timer_init(loop, &watchdog_timer_);
  status_timer_.data = this;
  watchdog_timer_.data = this;
}

void Notifier::start(uint64_t status_interval_ms) {
  set_status_interval(status_interval_ms);
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_ms_ = std::max<uint64_t>(usec / 2 / 1000, 1);
    uv_timer_start(&watchdog_timer_, on_watchdog, watchdog_ms_, watchdog_ms_);
    log_info("watchdog: WATCHDOG=1 every {} ms", watchdog_ms_);
  }
}

void Notifier::set_status_interval(uint64_t ms) {
  if (closing_) return;
  ms = std::max<uint64_t>(ms, 10);
  uv_timer_start(&status_timer_, on_status, ms, ms);
}

void Notifier::ready() { notify("READY=1\nSTATUS=" + status_fn_()); }

void Notifier::reloading() {
  notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=Reloading configuration",
                     monotonic_usec()));
}

void Notifier::stopping() { notify("STOPPING=1\nSTATUS=Stopping"); }

void Notifier::status() { notify("STATUS=" + status_fn_()); }

void Notifier::close() {
  if (closing_) return;
  closing_ = true;
  auto done = [](uv_handle_t* h) { ++static_cast<Notifier*>(h->data)->closed_count_; };
  uv_timer_stop(&status_timer_);
  uv_timer_stop(&watchdog_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&status_timer_), done);
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog_timer_), done);
}

void Notifier::on_status(uv_timer_t* t) { static_cast<Notifier*>(t->data)->status(); }

void Notifier::on_watchdog(uv_timer_t*) { notify("WATCHDOG=1"); }

}  // namespace budgetd::daemon
