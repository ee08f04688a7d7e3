// The varlink types shared by the interfaces (Quota, Usage, Violation, Event, ...): how
// engine values are written to and read from the wire, in one place.
#pragma once

#include "ipc/json_writer.h"
#include "ipc/service.h"
#include "lib/engine.h"
#include "lib/ratelimit.h"

namespace budgetd::ipc {

// Each writes one object (begin_object ... end_object) as the next value.
JsonWriter& write_quota(JsonWriter& w, const ResourceQuota& q);
JsonWriter& write_usage(JsonWriter& w, const ResourceUsage& u, double elapsed_seconds);
// Writes the fields of a Violation into the object being written (no braces).
JsonWriter& write_violation(JsonWriter& w, const Refusal& r);
// The fields of a Consume reply.
void write_consume_result(JsonWriter& w, const ConsumeResult& r);
void write_rate_limit_result(JsonWriter& w, const RateLimitResult& r);
// The first reply of a Watch: {"event": {"kind": "watching", ...}}.
void write_watching(JsonWriter& w, TimePoint now);

// Applies the present fields of a QuotaInput object to `quota`. Counts may be integers or
// strings ("unlimited"). A wrong type marks the parameter in `p`.
Result<void> read_quota_input(Params& p, ResourceQuota& quota);

// An agent (not an operator) allocating a budget: the grant must come out of its own
// remaining budget, or be within the default quota when it has none. Clamps fields left at
// their default, refuses explicit excess (reply written, returns false), decides the scope
// (`place`) and names the parent to nest the child under (`parent`, "" for none).
bool delegate(CallContext& ctx, ResourceQuota& quota, std::string& place, std::string& parent);

}  // namespace budgetd::ipc
