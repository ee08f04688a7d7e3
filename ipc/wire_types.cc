#include "ipc/wire_types.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "ipc/errors.h"
#include "ipc/methods.h"
#include "lib/calendar.h"

namespace budgetd::ipc {

JsonWriter& write_quota(JsonWriter& w, const ResourceQuota& q) {
  w.begin_object();
  for (const auto& [name, value] : q.fields()) w.field(name, value);
  return w.end_object();
}

namespace {
// Appends a string literal's bytes (without its NUL): a fixed-size copy the compiler inlines.
template <std::size_t N>
char* put(char* p, const char (&literal)[N]) {
  std::memcpy(p, literal, N - 1);
  return p + N - 1;
}
char* put(char* p, uint64_t v) { return std::to_chars(p, p + 20, v).ptr; }
}  // namespace

JsonWriter& write_usage(JsonWriter& w, const ResourceUsage& u, double elapsed_seconds) {
  // Every RecordUsage reply carries this object, so it is assembled in one stack buffer with
  // its keys compiled in, and handed to the writer as one value: the same text as a field()
  // per member, without a key's escape check and an append per member.
  char buf[9 * 20 + kMaxDecimalText + kMaxDoubleText + 128];
  char* p = buf;
  p = put(p, "{\"llm_calls\":");
  p = put(p, u.llm_calls);
  p = put(p, ",\"tool_calls\":");
  p = put(p, u.tool_calls);
  p = put(p, ",\"agent_hops\":");
  p = put(p, u.agent_hops);
  p = put(p, ",\"iterations\":");
  p = put(p, u.iterations);
  p = put(p, ",\"tokens_in\":");
  p = put(p, u.tokens_in);
  p = put(p, ",\"tokens_out\":");
  p = put(p, u.tokens_out);
  p = put(p, ",\"tokens\":");
  p = put(p, u.tokens());
  p = put(p, ",\"cost\":");
  p = format_decimal(p, u.cost);
  p = put(p, ",\"elapsed_seconds\":");
  p = format_double(p, elapsed_seconds);
  *p++ = '}';
  return w.raw(std::string_view(buf, static_cast<std::size_t>(p - buf)));
}

JsonWriter& write_violation(JsonWriter& w, const Refusal& r) {
  write_refusal(w, r);
  return w;
}

void write_consume_result(JsonWriter& w, const ConsumeResult& r) {
  // status, granted and remaining in one buffer, keys compiled in (every Consume reply).
  char buf[3 * kMaxDecimalText + 64];
  char* p = buf;
  p = put(p, "\"status\":\"");
  const std::string_view status = consume_status_name(r.status);  // upper-case letters
  std::memcpy(p, status.data(), status.size());
  p += status.size();
  p = put(p, "\",\"granted\":");
  p = format_decimal(p, r.granted);
  p = put(p, ",\"remaining\":");
  p = r.remaining == kUnlimitedAmount ? put(p, "\"unlimited\"") : format_decimal(p, r.remaining);
  w.members(std::string_view(buf, static_cast<std::size_t>(p - buf)));
  if (r.refusal) {
    w.key("violation").begin_object();
    write_violation(w, *r.refusal).end_object();
  }
  if (r.status == ConsumeStatus::pending) {
    w.field("request_id", r.request_id);
    w.field("expires_at", format_utc(r.expires_at));
  }
}

void write_rate_limit_result(JsonWriter& w, const RateLimitResult& r) {
  w.field("exceeded", r.exceeded);
  w.field("remaining", r.remaining == kUnlimitedRemaining ? uint64_t{0} : r.remaining);
  if (r.remaining == kUnlimitedRemaining) w.field("unlimited", true);
  if (!r.limit_type.empty()) w.field("limit_type", r.limit_type);
  w.field("current", r.current).field("limit", r.limit);
  w.field("retry_after", to_seconds_f(r.retry_after));
}

void write_watching(JsonWriter& w, TimePoint now) {
  w.key("event").begin_object();
  w.field("kind", "watching").field("at", format_utc(now)).field("path", "/");
  w.field("message", "Watching events.");
  w.end_object();
}

void write_event(JsonWriter& w, const Event& e) {
  w.key("event").begin_object();
  w.field("kind", event_kind_name(e.kind));
  w.field("at", format_utc(e.at));
  w.field("path", e.path);
  if (!e.process.empty()) w.field("process", e.process);
  if (!e.thread.empty()) w.field("thread", e.thread);
  if (!e.resource.empty()) {
    w.field("resource", e.resource);
    w.key("used").limit(e.used);
    w.key("limit").limit(e.limit);
  }
  if (e.percent) w.field("percent", e.percent);
  if (e.reason != Reason::none) w.field("reason", reason_name(e.reason));
  if (e.action != Action::none) {
    w.field("action", action_name(e.action));
    w.field("grace_seconds", e.grace_seconds);
  }
  if (e.ref) w.field("ref", e.ref);
  if (!e.outcome.empty()) w.field("outcome", e.outcome);
  w.field("message", e.message);
  if (e.usage) {
    w.key("usage");
    write_usage(w, *e.usage, 0);
  }
  w.end_object();
}

Result<void> read_quota_input(Params& p, ResourceQuota& quota) {
  if (!p.ok()) return fail(Errc::invalid_argument, "quota");
  // A name that is no quota field is refused, not ignored: a typo ("max_llm_call") must not
  // silently leave that limit at its default.
  if (p.present()) {
    const auto& names = ResourceQuota::field_names();
    for (auto field : p.raw())
      if (std::find(names.begin(), names.end(), field.key) == names.end())
        return fail(Errc::unknown_field, std::string(field.key.substr(0, 64)));
  }
  for (auto name : ResourceQuota::field_names()) {
    auto text = p.scalar_text(name);
    if (!p.ok()) return fail(Errc::invalid_argument, std::string(name));
    if (!text) continue;
    if (auto r = quota.set_field(name, *text); !r) return r;
  }
  return {};
}

namespace {

struct Cumulative {
  std::string_view name;
  uint64_t ResourceQuota::*field;
  Reason reason;
};
constexpr Cumulative kCumulative[] = {
    {"max_llm_calls", &ResourceQuota::max_llm_calls, Reason::max_llm_calls_exceeded},
    {"max_tool_calls", &ResourceQuota::max_tool_calls, Reason::max_tool_calls_exceeded},
    {"max_agent_hops", &ResourceQuota::max_agent_hops, Reason::max_agent_hops_exceeded},
    {"max_iterations", &ResourceQuota::max_iterations, Reason::max_iterations_exceeded},
    {"max_tokens", &ResourceQuota::max_tokens, Reason::max_tokens_exceeded},
};

bool within_scope(std::string_view place, std::string_view parent_scope) {
  if (parent_scope == "/") return true;
  std::string_view p = place;
  if (p.starts_with('/')) p.remove_prefix(1);
  return p == parent_scope || (p.starts_with(parent_scope) && p.size() > parent_scope.size() && p[parent_scope.size()] == '/');
}

}  // namespace

bool delegate(CallContext& ctx, ResourceQuota& quota, std::string& place, std::string& parent_out) {
  const ResourceQuota& def = ctx.engine.config().default_quota;
  const std::string parent_id = std::to_string(ctx.peer.pid);
  auto parent = ctx.engine.get_process(parent_id);
  auto deny = [&](std::string message) {
    ctx.reply.error(err::kPermissionDenied).field("message", message);
    return false;
  };
  if (!parent) {
    // No budget of its own: an agent may grant at most the operator's default.
    for (const auto& c : kCumulative)
      if (quota.*c.field > def.*c.field) return deny(std::string(c.name) + " above the default quota");
    if (quota.max_cost > def.max_cost) return deny("max_cost above the default quota");
    if (quota.timeout_seconds > def.timeout_seconds) return deny("timeout_seconds above the default quota");
    if (!place.empty() && place != "/") return deny("only operators place processes in scopes");
    return true;
  }
  // With a budget of its own, the child is nested under it: whatever the child spends is
  // charged to the parent too, so it can never spend more than the parent has left. An
  // explicit ask beyond that is refused at once rather than left to fail later.
  auto rem = ctx.engine.get_remaining_budget(parent_id);
  const uint64_t remaining[] = {rem->llm_calls, rem->tool_calls, rem->agent_hops, rem->iterations, rem->tokens};
  for (std::size_t i = 0; i < std::size(kCumulative); ++i) {
    const auto& c = kCumulative[i];
    uint64_t& want = quota.*c.field;
    if (remaining[i] == kUnlimited || want <= remaining[i]) continue;
    if (want != def.*c.field) {
      Refusal r{c.reason, parent->scope, std::string(c.name.substr(4)), Decimal::from_int(want),
                Decimal::from_int(remaining[i]), Duration{0},
                "A child budget must fit in the parent's remaining budget."};
      ctx.reply.refuse(r);
      return false;
    }
    want = remaining[i];  // left at the default: the child's view matches what it can get
  }
  if (rem->cost != kUnlimitedAmount && quota.max_cost > rem->cost) quota.max_cost = rem->cost;
  if (rem->time_seconds != INT64_MAX && quota.timeout_seconds > static_cast<uint64_t>(rem->time_seconds)) {
    quota.timeout_seconds = static_cast<uint64_t>(rem->time_seconds);
    quota.soft_timeout_seconds = std::min(quota.soft_timeout_seconds, quota.timeout_seconds);
  }
  if (place.empty()) place = parent->scope;
  if (!within_scope(place, parent->scope)) return deny("a child budget must sit in the parent's scope");
  parent_out = parent_id;
  return true;
}

}  // namespace budgetd::ipc
