#include "lib/error.h"

namespace budgetd {

std::string_view errc_name(Errc c) {
  switch (c) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::malformed_decimal: return "malformed_decimal";
    case Errc::negative_amount: return "negative_amount";
    case Errc::overflow: return "overflow";
    case Errc::invalid_id: return "invalid_id";
    case Errc::unknown_process: return "unknown_process";
    case Errc::unknown_thread: return "unknown_thread";
    case Errc::unknown_scope: return "unknown_scope";
    case Errc::unknown_plan: return "unknown_plan";
    case Errc::unknown_resource: return "unknown_resource";
    case Errc::unknown_reservation: return "unknown_reservation";
    case Errc::unknown_request: return "unknown_request";
    case Errc::unknown_field: return "unknown_field";
    case Errc::already_exists: return "already_exists";
    case Errc::capacity_exceeded: return "capacity_exceeded";
    case Errc::invalid_state: return "invalid_state";
  }
  return "unknown_error";
}

std::string Error::message() const {
  std::string m(errc_name(code));
  if (!detail.empty()) {
    m += ": ";
    m += detail;
  }
  return m;
}

}  // namespace budgetd
