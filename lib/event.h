// Everything that happens in the engine and that someone may care about. The engine
// appends events to a queue; the daemon drains it and turns each into a journal entry and
// a pushed Watch message. The engine itself never logs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "lib/clock.h"
#include "lib/decimal.h"
#include "lib/quota.h"
#include "lib/reason.h"

namespace budgetd {

enum class EventKind : uint8_t {
  allocated,             // a process got a budget
  threshold_crossed,     // usage passed a warning threshold (80%, 90%) or a soft limit
  violation,             // usage reached a hard limit (or a per-call cap was passed)
  soft_timeout,          // a process passed its soft timeout
  timeout,               // a process passed its hard timeout (reason timeout_exceeded)
  reset,                 // a scope's period reset, a thread or process was reset
  limit_changed,         // an operator changed a quota or limit
  reservation_expired,   // a hold was freed because nobody committed it in time
  pending_created,       // a consumption above an approval threshold awaits an operator
  pending_decided,       // ... and was approved, denied or expired
  released,              // a process was released; `usage` holds its final usage
};

std::string_view event_kind_name(EventKind k);

// Severity as the journal will see it.
enum class Severity : uint8_t { info, warning, error };
Severity event_severity(EventKind k);

struct Event {
  EventKind kind;
  TimePoint at;
  std::string path;     // scope node path ("/" for the root)
  std::string process;  // process id, if the event concerns one
  std::string thread;   // thread id, if the event concerns one
  std::string resource; // resource name, if one
  Decimal used;
  Decimal limit;
  uint32_t percent = 0;  // threshold percentage for threshold_crossed
  Reason reason = Reason::none;
  Action action = Action::none;  // what the daemon should do now
  uint64_t grace_seconds = 0;    // for Action::terminate: SIGKILL after this
  uint64_t ref = 0;              // reservation or pending request id
  std::string outcome;           // approved / denied / expired for pending_decided
  std::string message;           // the human sentence
  std::optional<ResourceUsage> usage;  // final usage on release
  // The owner recorded at allocation (the daemon passes the caller's uid), so a watcher can
  // be matched even after the process is gone (its `released` event).
  std::optional<uint32_t> owner;
};

inline Event make_event(EventKind kind, std::string path) {
  Event e{};
  e.kind = kind;
  e.path = std::move(path);
  return e;
}

}  // namespace budgetd
