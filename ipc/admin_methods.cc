// io.budgetd.Admin: the methods operators call. Every one is for operators only, checked
// once in operator_only() before a handler reads anything, so a refused call changes
// nothing. Each handler reads its parameters, calls the engine (or the daemon's hooks),
// and writes the reply. No decisions here.
#include <fmt/core.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "ipc/errors.h"
#include "ipc/ledger_records.h"
#include "ipc/methods.h"
#include "ipc/wire_types.h"
#include "lib/calendar.h"

namespace budgetd::ipc {

namespace {

constexpr std::string_view kAdmin = "io.budgetd.Admin.";
constexpr uint64_t kDefaultPage = 1000;
constexpr uint64_t kMaxPage = 10'000;

// Every Admin method goes through this: non-operators are refused before anything is read.
template <Handler H>
void operator_only(CallContext& ctx) {
  if (!ctx.peer.is_operator)
    return (void)ctx.reply.error(err::kPermissionDenied)
        .field("message", "io.budgetd.Admin is for operators (root or the operator group)");
  H(ctx);
}

// An operator action that changes budgets or processes: when it succeeds, it is an audit
// record in the ledger (seed 001's audit trail), with its parameters.
template <Handler H>
void audited(CallContext& ctx) {
  operator_only<H>(ctx);
  if (ctx.peer.is_operator && !ctx.reply.is_error()) audit(ctx);
}

// offset and limit of a paged list.
std::pair<uint64_t, uint64_t> page_params(Params& p) {
  uint64_t offset = p.u64_or("offset", 0);
  uint64_t limit = std::min(p.u64_or("limit", kDefaultPage), kMaxPage);
  return {offset, limit};
}

// Whole percent of `limit` used; written only when there is a limit.
void write_percent(JsonWriter& w, Decimal used, Decimal limit) {
  if (limit != kUnlimitedAmount) w.field("percent", used.percent_of(limit));
}

Decimal count_limit(uint64_t limit) {
  return limit == kUnlimited ? kUnlimitedAmount : Decimal::from_int(limit);
}

// ---- Views ----------------------------------------------------------------------------

JsonWriter& write_scope(JsonWriter& w, const ScopeView& v) {
  w.begin_object();
  w.field("path", v.path);
  if (!v.plan.empty()) w.field("plan", v.plan);
  if (!v.tier.empty()) w.field("tier", v.tier);
  w.field("reset", reset_period_name(v.reset));
  w.field("last_reset_at", format_utc(v.last_reset_at));
  if (v.next_reset_at != TimePoint::max()) w.field("next_reset_at", format_utc(v.next_reset_at));
  w.key("resources").begin_array();
  for (const auto& s : v.resources) {
    w.begin_object()
        .field("resource", s.resource)
        .field("used", s.used)
        .field("reserved", s.reserved);
    w.field("hard", limit_text(s.hard))
        .field("soft", limit_text(s.soft))
        .field("approval", limit_text(s.approval));
    write_percent(w, s.used, s.hard);
    w.end_object();
  }
  w.end_array();
  return w.end_object();
}

JsonWriter& write_template(JsonWriter& w, const LimitTemplate& t,
                           const ResourceRegistry& resources) {
  w.begin_object();
  w.field("name", t.name)
      .field("kind", template_kind_name(t.kind))
      .field("reset", reset_period_name(t.reset));
  w.key("limits").begin_array();
  for (const auto& [id, spec] : t.limits) {
    w.begin_object().field("resource", resources.name(id));
    if (spec.hard) w.field("hard", limit_text(*spec.hard));
    if (spec.soft) w.field("soft", limit_text(*spec.soft));
    if (spec.approval) w.field("approval", limit_text(*spec.approval));
    w.end_object();
  }
  w.end_array();
  return w.end_object();
}

JsonWriter& write_process(JsonWriter& w, const ProcessView& v, TimePoint now) {
  w.begin_object();
  w.field("process", v.id).field("scope", v.scope).field("owner", v.owner);
  w.field("allocated_at", format_utc(v.allocated_at));
  w.field("within", v.state == Reason::none);
  if (v.state != Reason::none) w.field("reason", reason_name(v.state));
  w.key("usage");
  write_usage(w, v.usage, v.elapsed_seconds);
  w.key("reserved");
  write_usage(w, v.reserved, 0);
  w.key("quota");
  write_quota(w, v.quota);
  // Elapsed time as an exact decimal of seconds (microsecond clock, 12-digit Decimal).
  const int64_t elapsed_us = std::max<int64_t>(0, (now - v.allocated_at).count());
  const Decimal elapsed =
      Decimal::from_raw(static_cast<__int128>(elapsed_us) * (Decimal::kOne / 1'000'000));
  const ResourceQuota& q = v.quota;
  const ResourceUsage& u = v.usage;
  const std::tuple<std::string_view, Decimal, Decimal> rows[] = {
      {"llm_calls", Decimal::from_int(u.llm_calls), count_limit(q.max_llm_calls)},
      {"tool_calls", Decimal::from_int(u.tool_calls), count_limit(q.max_tool_calls)},
      {"agent_hops", Decimal::from_int(u.agent_hops), count_limit(q.max_agent_hops)},
      {"iterations", Decimal::from_int(u.iterations), count_limit(q.max_iterations)},
      {"tokens", Decimal::from_int(u.tokens()), count_limit(q.max_tokens)},
      {"cost", u.cost, q.max_cost},
      {"elapsed", elapsed, count_limit(q.timeout_seconds)},
  };
  w.key("resources").begin_array();
  for (const auto& [name, used, limit] : rows) {
    w.begin_object().field("resource", name).field("used", used).field("limit", limit_text(limit));
    write_percent(w, used, limit);
    w.end_object();
  }
  w.end_array();
  return w.end_object();
}

JsonWriter& write_rate_limit(JsonWriter& w, const RateLimitConfig& c) {
  return w.begin_object()
      .field("requests_per_minute", c.requests_per_minute)
      .field("requests_per_hour", c.requests_per_hour)
      .field("requests_per_day", c.requests_per_day)
      .field("burst", c.burst)
      .end_object();
}

JsonWriter& write_window(JsonWriter& w, const WindowUsage& u) {
  const bool unlimited = u.limit == 0;
  w.begin_object().field("current", u.current).field("limit", u.limit);
  if (!unlimited) w.field("remaining", u.remaining);
  w.field("unlimited", unlimited).field("reset_in_seconds", u.reset_in_seconds);
  return w.end_object();
}

// ---- Quotas and limits ------------------------------------------------------------------

void adjust_quota(CallContext& ctx) {
  std::string_view pid = ctx.params.str("process");
  Params qp = ctx.params.object("quota");
  if (!ctx.params.has("quota")) ctx.params.fail("quota");
  if (!params_ok(ctx)) return;
  // Every field given, by name: the engine applies all of them or none, and names an
  // unknown one (UnknownField).
  std::vector<std::pair<std::string, std::string>> fields;
  if (qp.present()) {
    for (auto field : qp.raw()) {
      auto text = qp.scalar_text(field.key);
      if (!qp.ok()) return ctx.reply.invalid_parameter("quota." + qp.bad());
      if (text) fields.emplace_back(std::string(field.key), std::move(*text));
    }
  }
  auto q = ctx.engine.adjust_quota(pid, fields);
  if (!q) return ctx.reply.fail(q.error());
  auto view = ctx.engine.get_process(pid);
  auto& w = ctx.reply.ok();
  w.key("quota");
  write_quota(w, *q);
  w.field("within", view->state == Reason::none);
  if (view->state != Reason::none) w.field("reason", reason_name(view->state));
}

struct LimitInput {
  std::string_view resource;
  LimitSpec spec;
};

// Reads "limits": [{resource, hard, soft, approval}]; a bad element marks "limits".
std::vector<LimitInput> read_limits(Params& p) {
  std::vector<LimitInput> out;
  auto arr = p.array("limits");
  if (!arr) return out;
  for (auto el : *arr) {
    Params item(el);
    LimitInput in;
    in.resource = item.str("resource");
    in.spec.hard = item.opt_decimal_limit("hard");
    in.spec.soft = item.opt_decimal_limit("soft");
    in.spec.approval = item.opt_decimal_limit("approval");
    if (!item.ok()) {
      p.fail("limits");
      return out;
    }
    out.push_back(in);
  }
  return out;
}

// Resolves the limits' resource names into `out`. Counted resources take whole numbers;
// names that are not built in are declared as custom resources (as the config file does),
// only after every other check passed, so a refused call declares nothing.
bool resolve_limits(CallContext& ctx, const std::vector<LimitInput>& in, LimitMap& out) {
  ResourceRegistry& resources = ctx.engine.resources();
  for (const auto& l : in) {
    auto id = resources.find(l.resource);
    if (!id || !ResourceRegistry::is_integer(*id)) continue;
    for (const auto& v : {l.spec.hard, l.spec.soft, l.spec.approval}) {
      if (v && *v != kUnlimitedAmount && !v->is_integer()) {
        ctx.reply.fail(
            Error{Errc::invalid_argument, std::string(l.resource) + " is counted in whole units"});
        return false;
      }
    }
  }
  for (const auto& l : in) {
    auto id = resources.find(l.resource);
    if (!id) {
      auto interned = resources.intern(l.resource);
      if (!interned) {
        ctx.reply.fail(interned.error());
        return false;
      }
      id = *interned;
    }
    LimitSpec& s = out[*id];
    if (l.spec.hard) s.hard = l.spec.hard;
    if (l.spec.soft) s.soft = l.spec.soft;
    if (l.spec.approval) s.approval = l.spec.approval;
  }
  return true;
}

void merge_limits(LimitMap& into, const LimitMap& from) {
  for (const auto& [id, spec] : from) {
    LimitSpec& s = into[id];
    if (spec.hard) s.hard = spec.hard;
    if (spec.soft) s.soft = spec.soft;
    if (spec.approval) s.approval = spec.approval;
  }
}

void set_limits(CallContext& ctx) {
  auto path = opt_str(ctx.params, "path");
  auto name = opt_str(ctx.params, "template");
  auto kind = opt_str(ctx.params, "kind");
  auto plan = opt_str(ctx.params, "plan");
  auto tier = opt_str(ctx.params, "tier");
  auto reset_text = opt_str(ctx.params, "reset");
  bool clear = ctx.params.bool_or("clear", false);
  std::vector<LimitInput> limits = read_limits(ctx.params);
  if (!params_ok(ctx)) return;
  if (path && name) return ctx.reply.invalid_parameter("template");
  if (!path && !name) return ctx.reply.invalid_parameter("path");
  std::optional<ResetPeriod> reset;
  if (reset_text) {
    auto r = parse_reset_period(*reset_text);
    if (!r) return ctx.reply.invalid_parameter("reset");
    reset = *r;
  }

  if (path) {
    if (kind) return ctx.reply.invalid_parameter("kind");
    // The engine checks these too; checked first here so that a refused call declares no
    // custom resource.
    if (auto norm = normalize_path(*path); !norm) return ctx.reply.fail(norm.error());
    if (plan && !plan->empty() && !ctx.engine.get_template(TemplateKind::plan, *plan))
      return ctx.reply.fail(Error{Errc::unknown_plan, "plan " + std::string(*plan)});
    if (tier && !tier->empty() && !ctx.engine.get_template(TemplateKind::tier, *tier))
      return ctx.reply.fail(Error{Errc::unknown_plan, "tier " + std::string(*tier)});
    ScopeUpdate u;
    if (!resolve_limits(ctx, limits, u.limits)) return;
    if (plan) u.plan = std::string(*plan);
    if (tier) u.tier = std::string(*tier);
    u.reset = reset;
    u.clear_overrides = clear;
    if (auto r = ctx.engine.set_limits(*path, u); !r) return ctx.reply.fail(r.error());
    auto v = ctx.engine.get_scope(*path);
    write_scope(ctx.reply.ok().key("scope"), *v);
    return;
  }

  if (!kind || (*kind != "plan" && *kind != "tier")) return ctx.reply.invalid_parameter("kind");
  if (plan) return ctx.reply.invalid_parameter("plan");
  if (tier) return ctx.reply.invalid_parameter("tier");
  if (auto id = validate_id(*name); !id) return ctx.reply.fail(id.error());
  const TemplateKind k = *kind == "plan" ? TemplateKind::plan : TemplateKind::tier;
  LimitTemplate t;
  if (const LimitTemplate* current = ctx.engine.get_template(k, *name)) {
    t = *current;
  } else {
    t.name = std::string(*name);
    t.kind = k;
  }
  LimitMap changes;
  if (!resolve_limits(ctx, limits, changes)) return;
  if (clear) t.limits.clear();
  merge_limits(t.limits, changes);
  if (reset) t.reset = *reset;
  if (auto r = ctx.engine.set_template(t); !r) return ctx.reply.fail(r.error());
  write_template(ctx.reply.ok().key("template"), *ctx.engine.get_template(k, *name),
                 ctx.engine.resources());
}

void get_scope(CallContext& ctx) {
  std::string_view path = ctx.params.str("path");
  if (!params_ok(ctx)) return;
  auto v = ctx.engine.get_scope(path);
  if (!v) return ctx.reply.fail(v.error());
  write_scope(ctx.reply.ok().key("scope"), *v);
}

void list_scopes(CallContext& ctx) {
  auto [offset, limit] = page_params(ctx.params);
  if (!params_ok(ctx)) return;
  auto scopes = ctx.engine.list_scopes();
  auto& w = ctx.reply.ok();
  w.key("scopes").begin_array();
  for (uint64_t i = offset; i < scopes.size() && i - offset < limit; ++i) write_scope(w, scopes[i]);
  w.end_array();
  w.field("total", static_cast<uint64_t>(scopes.size()));
}

void list_templates(CallContext& ctx) {
  auto& w = ctx.reply.ok();
  w.key("templates").begin_array();
  for (const LimitTemplate* t : ctx.engine.list_templates())
    write_template(w, *t, ctx.engine.resources());
  w.end_array();
}

void set_rate_limit(CallContext& ctx) {
  std::string_view target = ctx.params.str("target");
  auto name = opt_str(ctx.params, "name");
  const std::pair<std::string_view, uint64_t RateLimitConfig::*> fields[] = {
      {"requests_per_minute", &RateLimitConfig::requests_per_minute},
      {"requests_per_hour", &RateLimitConfig::requests_per_hour},
      {"requests_per_day", &RateLimitConfig::requests_per_day},
      {"burst", &RateLimitConfig::burst},
  };
  std::optional<uint64_t> values[std::size(fields)];
  bool any_value = false;
  for (std::size_t i = 0; i < std::size(fields); ++i) {
    values[i] = ctx.params.opt_u64(fields[i].first);
    any_value = any_value || values[i].has_value();
  }
  bool clear = ctx.params.bool_or("clear", false);
  if (!params_ok(ctx)) return;
  const bool is_default = target == "default", is_user = target == "user";
  if (!is_default && !is_user && target != "endpoint") return ctx.reply.invalid_parameter("target");
  if (is_default ? name.has_value() : !name.has_value()) return ctx.reply.invalid_parameter("name");
  if (clear && (is_default || any_value)) return ctx.reply.invalid_parameter("clear");

  RateLimiter& rl = ctx.engine.rate_limiter();
  if (clear) {
    auto r = is_user ? rl.clear_user_limits(*name) : rl.clear_endpoint_limits(*name);
    if (!r) return ctx.reply.fail(r.error());
    write_rate_limit(ctx.reply.ok().key("limits"), rl.default_config());
    return;
  }
  // The override replaces the whole config: start from the target's current one.
  RateLimitConfig c = rl.default_config();
  if (!is_default) {
    const auto& table = is_user ? rl.user_limits() : rl.endpoint_limits();
    if (auto it = table.find(*name); it != table.end()) c = it->second;
  }
  for (std::size_t i = 0; i < std::size(fields); ++i)
    if (values[i]) c.*fields[i].second = *values[i];
  if (is_default) {
    rl.set_default_config(c);
  } else {
    auto r = is_user ? rl.set_user_limits(std::string(*name), c)
                     : rl.set_endpoint_limits(std::string(*name), c);
    if (!r) return ctx.reply.fail(r.error());
  }
  write_rate_limit(ctx.reply.ok().key("limits"), c);
}

void get_rate_limit_usage(CallContext& ctx) {
  std::string_view user = ctx.params.str("user");
  std::string_view endpoint = ctx.params.str_or("endpoint", "default");
  if (!params_ok(ctx)) return;
  const RateLimiter& rl = ctx.engine.rate_limiter();
  auto usage = rl.get_usage(user, endpoint);
  if (!usage) return ctx.reply.fail(usage.error());
  auto config = rl.get_config(user, endpoint);
  if (!config) return ctx.reply.fail(config.error());
  auto& w = ctx.reply.ok();
  for (RateWindow rw : kAllRateWindows) {
    std::string_view name = rate_window_name(rw);
    auto it = usage->find(std::string(name));
    w.key(name);
    write_window(w, it == usage->end() ? WindowUsage{} : it->second);
  }
  w.key("limits");
  write_rate_limit(w, *config);
}

void reset_rate_limits(CallContext& ctx) {
  std::string_view user = ctx.params.str("user");
  if (!params_ok(ctx)) return;
  auto r = ctx.engine.rate_limiter().reset_user(user);
  if (!r) return ctx.reply.fail(r.error());
  ctx.reply.ok().field("cleared", static_cast<uint64_t>(*r));
}

// ---- Housekeeping -----------------------------------------------------------------------

void cleanup_expired(CallContext& ctx) {
  const std::size_t dropped = ctx.engine.rate_limiter().cleanup_expired();
  ctx.reply.ok().field("rate_limit_entries", static_cast<uint64_t>(dropped));
}


// ---- Views --------------------------------------------------------------------------------

void list_processes(CallContext& ctx) {
  auto [offset, limit] = page_params(ctx.params);
  if (!params_ok(ctx)) return;
  const TimePoint now = ctx.engine.now();
  auto& w = ctx.reply.ok();
  w.key("processes").begin_array();
  for (const auto& v : ctx.engine.list_processes(offset, limit)) write_process(w, v, now);
  w.end_array();
  w.field("total", static_cast<uint64_t>(ctx.engine.process_count()));
}

void get_system_usage(CallContext& ctx) {
  const SystemUsage s = ctx.engine.get_system_usage();
  ctx.reply.ok()
      .field("total_processes", s.total_processes)
      .field("active_processes", s.active_processes)
      .field("system_llm_calls", s.system_llm_calls)
      .field("system_tool_calls", s.system_tool_calls)
      .field("system_tokens_in", s.system_tokens_in)
      .field("system_tokens_out", s.system_tokens_out)
      .field("system_cost", s.system_cost);
}

void stats(CallContext& ctx) {
  const ConsumptionStats s = ctx.engine.get_stats();
  auto& w = ctx.reply.ok();
  w.field("total_events", s.total_events)
      .field("consumed_count", s.consumed_count)
      .field("rejected_count", s.rejected_count)
      .field("partial", s.partial)
      .field("pending", s.pending);
  w.key("daemon").begin_object();
  ctx.hooks.write_stats(w);
  w.end_object();
}

// ---- Control ------------------------------------------------------------------------------

void list_pending(CallContext& ctx) {
  auto& w = ctx.reply.ok();
  w.key("requests").begin_array();
  for (const auto& p : ctx.engine.list_pending()) {
    w.begin_object().field("request_id", p.id);
    if (!p.process.empty()) w.field("process", p.process);
    if (!p.thread.empty()) w.field("thread", p.thread);
    w.field("scope", p.scope).field("resource", p.resource).field("amount", p.amount);
    if (!p.context.empty()) w.field("context", p.context);
    w.field("created_at", format_utc(p.created_at)).field("expires_at", format_utc(p.expires_at));
    w.end_object();
  }
  w.end_array();
}

template <bool Approve>
void decide(CallContext& ctx) {
  uint64_t id = ctx.params.u64("request_id");
  if (!params_ok(ctx)) return;
  // The request's consumer and resource, for the ledger record of what was granted.
  std::optional<PendingView> request;
  for (auto& v : ctx.engine.list_pending())
    if (v.id == id) request = std::move(v);
  auto r = Approve ? ctx.engine.approve(id) : ctx.engine.deny(id);
  if (!r) return ctx.reply.fail(r.error());
  if (request) {
    LedgerRecord rec = ledger_record(ctx, LedgerKind::consumption);
    rec.process = request->process;
    rec.thread = request->thread;
    rec.scope = request->scope;
    rec.action = std::string(consume_status_name(r->status));
    rec.detail = fmt::format("request_id={} {}", id, request->context);
    if (r->approved() && !r->granted.is_zero())
      if (auto item = ctx.hooks.prices().price(request->resource, r->granted)) {
        rec.total_cost = item->total_cost;
        rec.items.push_back(std::move(*item));
      }
    ctx.hooks.append(std::move(rec));
  }
  write_consume_result(ctx.reply.ok(), *r);
}

template <bool Resume>
void signal_process(CallContext& ctx) {
  std::string_view pid = ctx.params.str("process");
  if (!params_ok(ctx)) return;
  if (!ctx.engine.is_tracked(pid))
    return ctx.reply.fail(Error{Errc::unknown_process, std::string(pid)});
  if (auto r = ctx.hooks.pause(pid, Resume); !r) return ctx.reply.fail(r.error());
  ctx.reply.ok();
}

void reload(CallContext& ctx) {
  if (auto r = ctx.hooks.reload(); !r) {
    const Error& e = r.error();
    return (void)ctx.reply.error(err::kReloadFailed)
        .field("message", e.detail.empty() ? e.message() : e.detail);
  }
  ctx.reply.ok();
}

void watch(CallContext& ctx) {
  if (!ctx.call.more) return (void)ctx.reply.error(err::kExpectedMore);
  WatchFilter f;
  f.everything = true;
  ctx.hooks.watch(f);
  write_watching(ctx.reply.stream(), ctx.engine.now());
}

}  // namespace

void reset_usage(CallContext& ctx) {
  auto scope = opt_str(ctx.params, "scope");
  auto thread = opt_str(ctx.params, "thread");
  auto process = opt_str(ctx.params, "process");
  if (!params_ok(ctx)) return;
  // Exactly one: the first one given names a call with none; a second one names itself.
  const std::pair<std::string_view, bool> given[] = {{"scope", scope.has_value()},
                                                     {"thread", thread.has_value()},
                                                     {"process", process.has_value()}};
  std::size_t count = 0;
  for (auto [n, has] : given) {
    if (has && ++count > 1) return ctx.reply.invalid_parameter(n);
  }
  if (count == 0) return ctx.reply.invalid_parameter("scope");
  // A store that cannot take the audit record refuses the reset before it happens.
  if (!durable_ok(ctx)) return;
  Result<void> r;
  if (scope) {
    r = ctx.engine.reset_scope(*scope);
  } else if (thread) {
    if (!ctx.engine.reset_thread(*thread)) r = fail(Errc::unknown_thread, std::string(*thread));
  } else {
    r = ctx.engine.reset_process(*process);
  }
  if (!r) return ctx.reply.fail(r.error());
  ctx.reply.ok();
}


void register_admin_methods(Service& s) {
  const std::pair<std::string_view, Handler> methods[] = {
      {"AdjustQuota", audited<adjust_quota>},
      {"SetLimits", audited<set_limits>},
      {"GetScope", operator_only<get_scope>},
      {"ListScopes", operator_only<list_scopes>},
      {"ListTemplates", operator_only<list_templates>},
      {"SetRateLimit", audited<set_rate_limit>},
      {"GetRateLimitUsage", operator_only<get_rate_limit_usage>},
      {"ResetRateLimits", audited<reset_rate_limits>},
      {"CleanupExpired", audited<cleanup_expired>},
      {"Reset", audited<reset_usage>},
      {"ListProcesses", operator_only<list_processes>},
      {"GetSystemUsage", operator_only<get_system_usage>},
      {"Stats", operator_only<stats>},
      {"ListPending", operator_only<list_pending>},
      {"Approve", audited<decide<true>>},
      {"Deny", audited<decide<false>>},
      {"Pause", audited<signal_process<false>>},
      {"Resume", audited<signal_process<true>>},
      {"Reload", audited<reload>},
      {"Watch", operator_only<watch>},
  };
  for (auto [name, h] : methods) s.add_method(std::string(kAdmin) + std::string(name), h);
}

}  // namespace budgetd::ipc
