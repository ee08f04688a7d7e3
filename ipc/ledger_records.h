// What the handlers put in the ledger (issue 5): the record of an accepted call, the
// audit record of an operator action, the labels a caller attaches, and idempotent
// retries. The store writes the records; handlers only describe them.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "ipc/service.h"
#include "lib/ledger.h"
#include "lib/pricing.h"

namespace budgetd::ipc {

// Bounds on caller-given ledger input; crossing one is InvalidParameter, nothing recorded.
inline constexpr std::size_t kMaxLabels = 32;
inline constexpr std::size_t kMaxLabelKeyBytes = 64;
inline constexpr std::size_t kMaxLabelValueBytes = 256;
inline constexpr std::size_t kMaxIdempotencyKeyBytes = 128;
// An audit record keeps at most this much of the call's parameters.
inline constexpr std::size_t kMaxAuditDetailBytes = 4096;

// Reads the optional "labels" ({"agent": "...", "model": "..."}). A value that is not a
// string, or labels over the bounds above, fail the parameter "labels".
std::map<std::string, std::string> read_labels(Params& p);
// Reads the optional "idempotency_key"; over kMaxIdempotencyKeyBytes fails it.
std::string_view read_idempotency_key(Params& p);

// When `key` was answered before (same method, same caller uid), writes that answer
// unchanged and returns true: the retry counts nothing. Otherwise arranges for this call's
// answer to be remembered under the key and returns false.
bool replay_if_answered(CallContext& ctx, std::string_view key);

// For a usage report: may it be made durable? When the store cannot take writes, answers
// io.budgetd.StorageFailed and returns false, before anything is counted.
bool durable_ok(CallContext& ctx);

// A record of the current call, by the current caller, now.
LedgerRecord ledger_record(CallContext& ctx, LedgerKind kind);
void add_priced(LedgerRecord& r, PriceTable::Priced&& priced);

// Appends an audit record of the current (operator) call: the method's short name as the
// action, its parameters (JSON, bounded) as the detail.
void audit(CallContext& ctx);

}  // namespace budgetd::ipc
