#include "ipc/errors.h"

namespace budgetd::ipc {

std::string_view error_name(Errc c) {
  switch (c) {
    case Errc::unknown_process: return err::kProcessNotFound;
    case Errc::unknown_thread: return "io.budgetd.ThreadNotFound";
    case Errc::unknown_scope: return "io.budgetd.ScopeNotFound";
    case Errc::unknown_plan: return "io.budgetd.PlanNotFound";
    case Errc::unknown_resource: return "io.budgetd.UnknownResource";
    case Errc::unknown_reservation: return "io.budgetd.ReservationNotFound";
    case Errc::unknown_request: return "io.budgetd.RequestNotFound";
    case Errc::unknown_field: return "io.budgetd.UnknownField";
    case Errc::already_exists: return "io.budgetd.AlreadyExists";
    case Errc::capacity_exceeded: return "io.budgetd.CapacityExceeded";
    case Errc::overflow: return "io.budgetd.Overflow";
    case Errc::invalid_state: return "io.budgetd.InvalidState";
    case Errc::invalid_argument:
    case Errc::malformed_decimal:
    case Errc::negative_amount:
    case Errc::invalid_id: return "io.budgetd.InvalidArgument";
  }
  return err::kInternal;
}

std::string_view refusal_error_name(Reason r) {
  switch (r) {
    case Reason::thread_budget_exhausted: return err::kBudgetExhausted;
    case Reason::rate_limited: return err::kRateLimited;
    default: return err::kQuotaExceeded;
  }
}

void write_refusal(JsonWriter& w, const Refusal& r) {
  w.field("reason", reason_name(r.reason));
  w.field("resource", r.resource);
  w.key("used").str(limit_text(r.used));
  w.key("limit").str(limit_text(r.limit));
  w.field("path", r.path);
  if (r.retry_after > Duration{0}) w.field("retry_after", to_seconds_f(r.retry_after));
  w.field("message", r.message);
}

void write_error(JsonWriter& w, const Error& e) {
  w.field("code", errc_name(e.code));
  w.field("message", e.message());
}

}  // namespace budgetd::ipc
