// The one place where engine errors and refusals become varlink error names.
#pragma once

#include <string_view>

#include "ipc/json_writer.h"
#include "lib/engine.h"
#include "lib/error.h"

namespace budgetd::ipc {

namespace err {
inline constexpr std::string_view kMethodNotFound = "org.varlink.service.MethodNotFound";
inline constexpr std::string_view kInterfaceNotFound = "org.varlink.service.InterfaceNotFound";
inline constexpr std::string_view kInvalidParameter = "org.varlink.service.InvalidParameter";
inline constexpr std::string_view kExpectedMore = "org.varlink.service.ExpectedMore";
inline constexpr std::string_view kPermissionDenied = "io.budgetd.PermissionDenied";
inline constexpr std::string_view kQuotaExceeded = "io.budgetd.QuotaExceeded";
inline constexpr std::string_view kBudgetExhausted = "io.budgetd.BudgetExhausted";
inline constexpr std::string_view kRateLimited = "io.budgetd.RateLimited";
inline constexpr std::string_view kProcessNotFound = "io.budgetd.ProcessNotFound";
inline constexpr std::string_view kInternal = "io.budgetd.InternalError";
inline constexpr std::string_view kReloadFailed = "io.budgetd.ReloadFailed";
// budgetd runs without a store: there is no ledger to report from.
inline constexpr std::string_view kLedgerUnavailable = "io.budgetd.LedgerUnavailable";
// A change that needs durability could not be written (disk full, I/O error).
inline constexpr std::string_view kStorageFailed = "io.budgetd.StorageFailed";
}  // namespace err

// io.budgetd.ProcessNotFound, io.budgetd.InvalidArgument, ...
std::string_view error_name(Errc c);
// QuotaExceeded, BudgetExhausted (thread budgets) or RateLimited, by reason.
std::string_view refusal_error_name(Reason r);

// Writes the parameters every budgetd error carries: reason, resource, used, limit, path,
// retry_after (seconds, when it applies) and message.
void write_refusal(JsonWriter& w, const Refusal& r);
void write_error(JsonWriter& w, const Error& e);

}  // namespace budgetd::ipc
