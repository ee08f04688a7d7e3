#include "lib/event.h"

namespace budgetd {

std::string_view event_kind_name(EventKind k) {
  switch (k) {
    case EventKind::allocated: return "allocated";
    case EventKind::threshold_crossed: return "threshold_crossed";
    case EventKind::violation: return "violation";
    case EventKind::soft_timeout: return "soft_timeout";
    case EventKind::timeout: return "timeout";
    case EventKind::reset: return "reset";
    case EventKind::limit_changed: return "limit_changed";
    case EventKind::reservation_expired: return "reservation_expired";
    case EventKind::pending_created: return "pending_created";
    case EventKind::pending_decided: return "pending_decided";
    case EventKind::released: return "released";
  }
  return "unknown";
}

Severity event_severity(EventKind k) {
  switch (k) {
    case EventKind::threshold_crossed:
    case EventKind::soft_timeout:
    case EventKind::reservation_expired:
    case EventKind::pending_created: return Severity::warning;
    case EventKind::violation:
    case EventKind::timeout: return Severity::error;
    default: return Severity::info;
  }
}

}  // namespace budgetd
