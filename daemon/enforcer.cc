#include "daemon/enforcer.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>

#include "daemon/journal.h"
#include "daemon/pidfd.h"

namespace budgetd::daemon {

namespace {
const char* errno_name(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E?";
}
}  // namespace

Enforcer::Enforcer(uv_loop_t* loop, ProcessWatch& watch) : loop_(loop), watch_(watch) {}

Enforcer::~Enforcer() {
  if (!idle()) log_error("enforcer destroyed with {} open timers", kills_.size() + closing_);
}

Result<void> Enforcer::send(std::string_view id, int sig) {
  auto fd = watch_.pidfd(id);
  if (!fd)
    return fail(
        Errc::unknown_process,
        fmt::format("{} is not an OS process watched since its allocation; not signalled", id));
  if (int r = pidfd_signal(*fd, sig); r < 0) {
    if (r == -ESRCH) return fail(Errc::unknown_process, fmt::format("process {} has exited", id));
    return fail(Errc::invalid_state,
                fmt::format("cannot send {} to {}: {}", sigabbrev_np(sig), id, errno_name(-r)));
  }
  return {};
}

Result<void> Enforcer::terminate(std::string_view id, uint64_t grace_seconds) {
  if (auto r = send(id, SIGTERM); !r) return r;
  log_warning("process {}: sent SIGTERM; SIGKILL in {} s unless it exits", id, grace_seconds);
  std::string key(id);
  if (kills_.contains(key)) return {};
  int dup = fcntl(*watch_.pidfd(id), F_DUPFD_CLOEXEC, 3);
  if (dup < 0) {
    // Without a pidfd of our own, no SIGKILL can be sent safely later.
    log_error("process {}: cannot keep a pidfd for the SIGKILL: {}", id, errno_name(errno));
    return {};
  }
  auto* k = new Kill;
  k->pidfd = dup;
  k->id = key;
  k->owner = this;
  k->timer.data = k;
  uv_timer_init(loop_, &k->timer);
  uint64_t ms = std::min(grace_seconds, kMaxGraceSeconds) * 1000;
  uv_timer_start(&k->timer, on_timer, ms, 0);
  kills_.emplace(std::move(key), k);
  return {};
}

Result<void> Enforcer::pause(std::string_view id) {
  if (auto r = send(id, SIGSTOP); !r) return r;
  log_warning("process {}: paused (SIGSTOP)", id);
  return {};
}

Result<void> Enforcer::resume(std::string_view id) {
  if (auto r = send(id, SIGCONT); !r) return r;
  log_info("process {}: resumed (SIGCONT)", id);
  return {};
}

void Enforcer::close_kill(Kill* k) {
  uv_timer_stop(&k->timer);
  ++closing_;
  uv_close(reinterpret_cast<uv_handle_t*>(&k->timer), on_close);
}

void Enforcer::close_all() {
  for (auto& [id, k] : kills_) close_kill(k);
  kills_.clear();
}

void Enforcer::on_timer(uv_timer_t* t) {
  auto* k = static_cast<Kill*>(t->data);
  Enforcer* self = k->owner;
  int r = pidfd_signal(k->pidfd, SIGKILL);
  if (r == 0)
    log_warning("process {}: grace period over, sent SIGKILL", k->id);
  else if (r != -ESRCH)
    log_error("process {}: SIGKILL failed: {}", k->id, errno_name(-r));
  // ESRCH: it exited within the grace period.
  self->kills_.erase(k->id);
  self->close_kill(k);
}

void Enforcer::on_close(uv_handle_t* h) {
  auto* k = static_cast<Kill*>(h->data);
  if (k->pidfd >= 0) ::close(k->pidfd);
  --k->owner->closing_;
  delete k;
}

}  // namespace budgetd::daemon
