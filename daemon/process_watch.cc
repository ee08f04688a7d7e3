#include "daemon/process_watch.h"

#include <fmt/core.h>
#include <string.h>
#include <unistd.h>

#include "daemon/journal.h"
#include "daemon/pidfd.h"
#include "daemon/procfs.h"

namespace budgetd::daemon {

ProcessWatch::ProcessWatch(uv_loop_t* loop, OnExit on_exit)
    : loop_(loop), on_exit_(std::move(on_exit)) {}

ProcessWatch::~ProcessWatch() {
  if (!idle())
    log_error("process watch destroyed with {} open handles", watches_.size() + closing_);
}

Result<void> ProcessWatch::track(std::string_view id) {
  auto pid = parse_pid(id);
  if (!pid) return {};  // a logical id: nothing to watch
  if (watches_.contains(std::string(id))) return {};
  int fd = pidfd_open_pid(*pid);
  if (fd < 0) {
    const char* name = strerrorname_np(-fd);
    std::string detail = fmt::format("cannot watch pid {}: {}", *pid, name ? name : "E?");
    if (fd == -ESRCH) return fail(Errc::unknown_process, std::move(detail));
    if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM)
      return fail(Errc::capacity_exceeded, std::move(detail));
    return fail(Errc::invalid_state, std::move(detail));
  }
  auto* w = new Watch;
  w->fd = fd;
  w->id = std::string(id);
  w->owner = this;
  w->poll.data = w;
  if (int r = uv_poll_init(loop_, &w->poll, fd); r != 0) {
    ::close(fd);
    delete w;
    return fail(Errc::invalid_state, fmt::format("cannot watch pid {}: {}", *pid, uv_err_name(r)));
  }
  if (int r = uv_poll_start(&w->poll, UV_READABLE, on_poll); r != 0) {
    ++closing_;
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), on_close);
    return fail(Errc::invalid_state, fmt::format("cannot watch pid {}: {}", *pid, uv_err_name(r)));
  }
  watches_.emplace(w->id, w);
  return {};
}

void ProcessWatch::close_watch(Watch* w) {
  uv_poll_stop(&w->poll);
  ++closing_;
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), on_close);  // the fd is closed after
}

void ProcessWatch::untrack(std::string_view id) {
  auto it = watches_.find(std::string(id));
  if (it == watches_.end()) return;
  Watch* w = it->second;
  watches_.erase(it);
  close_watch(w);
}

std::optional<int> ProcessWatch::pidfd(std::string_view id) const {
  auto it = watches_.find(std::string(id));
  if (it == watches_.end()) return std::nullopt;
  return it->second->fd;
}

void ProcessWatch::close_all() {
  for (auto& [id, w] : watches_) close_watch(w);
  watches_.clear();
}

void ProcessWatch::on_poll(uv_poll_t* h, int status, int events) {
  auto* w = static_cast<Watch*>(h->data);
  ProcessWatch* self = w->owner;
  // Readable means exited; an error on a pidfd means the same for our purpose.
  if (status == 0 && !(events & UV_READABLE)) return;
  std::string id = w->id;
  self->untrack(id);
  self->on_exit_(id);
}

void ProcessWatch::on_close(uv_handle_t* h) {
  auto* w = static_cast<Watch*>(h->data);
  if (w->fd >= 0) ::close(w->fd);
  --w->owner->closing_;
  delete w;
}

}  // namespace budgetd::daemon
