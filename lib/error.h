// Errors are values (std::expected), never exceptions across the engine boundary. The code
// is a small enum; `detail` names the offending input. ipc/ maps each code to exactly one
// varlink error name.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace budgetd {

enum class Errc {
  invalid_argument,     // a parameter is out of its domain (empty id, zero ttl, ...)
  malformed_decimal,    // a decimal string that does not parse
  negative_amount,      // an amount below zero where only >= 0 makes sense
  overflow,             // an amount or counter would pass its representable range
  invalid_id,           // empty, oversized or badly formed identifier
  unknown_process,
  unknown_thread,
  unknown_scope,
  unknown_plan,
  unknown_resource,
  unknown_reservation,
  unknown_request,
  unknown_field,        // adjust_quota / set_limits with a field name that does not exist
  already_exists,
  capacity_exceeded,    // a configured bound (tracked processes, ...) is reached
  invalid_state,        // e.g. approving a request that is no longer pending
};

std::string_view errc_name(Errc c);

struct Error {
  Errc code;
  std::string detail;

  std::string message() const;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, std::string detail = {}) {
  return std::unexpected<Error>(Error{code, std::move(detail)});
}

}  // namespace budgetd
