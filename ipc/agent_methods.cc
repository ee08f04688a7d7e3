// io.budgetd.Agent: the methods agent runtimes call. Each handler reads its parameters,
// checks who may act, calls the engine once, and writes the reply. No decisions here.
#include <fmt/core.h>

#include <charconv>

#include "ipc/errors.h"
#include "ipc/ledger_records.h"
#include "ipc/methods.h"
#include "ipc/wire_types.h"
#include "lib/calendar.h"

namespace budgetd::ipc {

namespace {

constexpr std::string_view kAgent = "io.budgetd.Agent.";

bool is_os_pid(std::string_view id) {
  if (id.empty() || id.size() > 9) return false;
  for (char c : id)
    if (c < '0' || c > '9') return false;
  return true;
}

int32_t os_pid(std::string_view id) {
  int32_t v = 0;
  std::from_chars(id.data(), id.data() + id.size(), v);
  return v;
}

// Reads the process parameter and checks the caller may act on it; on failure the reply
// is already written.
std::optional<std::string_view> process_param(CallContext& ctx, std::string_view name = "process") {
  std::string_view pid = ctx.params.str(name);
  if (!ctx.params.ok()) {
    ctx.reply.invalid_parameter(ctx.params.bad());
    return std::nullopt;
  }
  if (!may_act_on(ctx, pid)) {
    ctx.reply.error(err::kPermissionDenied).field("message", "may not act on process " + std::string(pid));
    return std::nullopt;
  }
  return pid;
}

// Reads optional "amounts": [{resource, amount}] into `out`. On false the reply is written
// (InvalidParameter for this or any earlier bad parameter).
bool read_amounts(CallContext& ctx, ChargeList& out) {
  auto arr = ctx.params.array("amounts");
  if (!arr) return params_ok(ctx);
  for (auto el : *arr) {
    Params item(el);
    std::string_view resource = item.str("resource");
    Decimal amount = item.decimal("amount");
    if (!item.ok()) {
      ctx.params.fail("amounts");
      return params_ok(ctx);
    }
    auto id = ctx.engine.resources().find(resource);
    if (!id) {
      ctx.reply.fail(Error{Errc::unknown_resource, std::string(resource)});
      return false;
    }
    if (auto a = out.add(*id, amount); !a) {
      ctx.reply.fail(a.error());
      return false;
    }
  }
  return true;
}

// The counts of a usage report, shared by RecordUsage and Commit.
UsageReport read_report(Params& p) {
  UsageReport r;
  r.llm_calls = p.u64_or("llm_calls", 0);
  r.tool_calls = p.u64_or("tool_calls", 0);
  r.agent_hops = p.u64_or("agent_hops", 0);
  r.iterations = p.u64_or("iterations", 0);
  r.tokens_in = p.u64_or("tokens_in", 0);
  r.tokens_out = p.u64_or("tokens_out", 0);
  r.context_tokens = p.opt_u64("context_tokens");
  r.cost = p.opt_decimal("cost").value_or(Decimal());
  return r;
}

std::string_view model_label(const std::map<std::string, std::string>& labels) {
  auto it = labels.find("model");
  return it == labels.end() ? std::string_view() : std::string_view(it->second);
}

// Prices a report for the ledger (tokens by the `model` label's price) and, when the report
// has no explicit cost, makes the priced cost its charge, so max_cost budgets see it. On
// nullopt the error reply is written.
std::optional<PriceTable::Priced> price(CallContext& ctx, UsageReport& report,
                                        const std::map<std::string, std::string>& labels) {
  auto priced = ctx.hooks.prices().price_report(report, model_label(labels), ctx.engine.resources());
  if (!priced) {
    ctx.reply.fail(priced.error());
    return std::nullopt;
  }
  if (report.cost.is_zero()) report.cost = priced->total_cost;
  return std::move(*priced);
}

// Tracks a newly created OS-pid process with the daemon (pidfd); refuses it if that fails.
bool track_new(CallContext& ctx, std::string_view pid) {
  if (!is_os_pid(pid)) return true;
  if (auto t = ctx.hooks.track(pid); !t) {
    ctx.engine.release(pid);
    ctx.reply.fail(t.error());
    return false;
  }
  return true;
}

void allocate(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  std::string_view scope = ctx.params.str_or("scope", "");
  Params qp = ctx.params.object("quota");
  if (!params_ok(ctx)) return;
  ResourceQuota quota = ctx.engine.config().default_quota;
  if (auto r = read_quota_input(qp, quota); !r) {
    if (!qp.ok()) return ctx.reply.invalid_parameter("quota." + qp.bad());
    return ctx.reply.fail(r.error());
  }
  std::string place(scope);
  // An agent's allocation is a delegation: nested under its own process when it has a
  // budget, so the child's spending is also the parent's (cgroups-style accounting).
  std::string parent;
  if (!ctx.peer.is_operator && !ctx.engine.is_tracked(*pid) && validate_id(*pid)) {
    if (!delegate(ctx, quota, place, parent)) return;
  }
  if (place.empty()) place = "/";
  auto a = parent.empty() ? ctx.engine.allocate(*pid, quota, place, ctx.peer.uid)
                          : ctx.engine.allocate_child(parent, *pid, quota, place, ctx.peer.uid);
  if (!a) return ctx.reply.fail(a.error());
  if (*a && !track_new(ctx, *pid)) return;
  auto& w = ctx.reply.ok();
  w.field("allocated", *a);
  w.key("quota");
  write_quota(w, *ctx.engine.get_quota(*pid));
}

void release(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  auto usage = ctx.engine.get_process(*pid);
  bool released = ctx.engine.release(*pid);
  auto& w = ctx.reply.ok();
  w.field("released", released);
  if (released) {
    w.key("usage");
    write_usage(w, usage->usage, usage->elapsed_seconds);
  }
}

void record_usage(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  UsageReport report = read_report(ctx.params);
  report.thread = std::string(ctx.params.str_or("thread", ""));
  std::string_view key = read_idempotency_key(ctx.params);
  auto labels = read_labels(ctx.params);
  if (!read_amounts(ctx, report.extra) || !params_ok(ctx)) return;
  if (!durable_ok(ctx) || replay_if_answered(ctx, key)) return;
  auto priced = price(ctx, report, labels);
  if (!priced) return;
  auto r = ctx.engine.record_usage(*pid, report, ctx.peer.uid);
  if (!r) return ctx.reply.fail(r.error());
  if (r->created && !track_new(ctx, *pid)) return;
  LedgerRecord rec = ledger_record(ctx, LedgerKind::usage);
  rec.process = std::string(*pid);
  rec.thread = std::move(report.thread);
  rec.scope = std::string(r->scope);
  rec.labels = std::move(labels);
  add_priced(rec, std::move(*priced));
  ctx.hooks.append(std::move(rec));
  // A oneway call is answered only when its key must remember the answer a retry gets.
  if (ctx.call.oneway && ctx.remember_key.empty()) return;
  auto& w = ctx.reply.ok();
  w.key("usage");
  write_usage(w, r->usage, r->elapsed_seconds);
  w.key("violations").begin_array();
  for (const auto& v : r->violations) write_violation(w.begin_object(), v).end_object();
  w.end_array();
}

void check_quota(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  auto r = ctx.engine.check_quota(*pid);
  if (!r) return ctx.reply.fail(r.error());
  auto& w = ctx.reply.ok();
  w.field("within", !r->has_value());
  if (*r) {
    w.field("reason", reason_name((*r)->reason));
    w.key("violation").begin_object();
    write_violation(w, **r).end_object();
  }
}

// Exactly one consumer: a process (or thread) the caller may act on, or, for operators, a
// scope.
std::optional<Target> target_param(CallContext& ctx) {
  Target t;
  t.process = std::string(ctx.params.str_or("process", ""));
  t.thread = std::string(ctx.params.str_or("thread", ""));
  t.scope = std::string(ctx.params.str_or("scope", ""));
  if (!params_ok(ctx)) return std::nullopt;
  if (t.process.empty() && t.thread.empty() && t.scope.empty()) {
    ctx.reply.invalid_parameter("process");
    return std::nullopt;
  }
  bool allowed = ctx.peer.is_operator;
  if (!allowed && !t.process.empty()) allowed = may_act_on(ctx, t.process);
  if (!allowed && t.process.empty() && !t.thread.empty()) {
    // A thread answers for its process.
    auto th = ctx.engine.get_thread_usage(t.thread);
    allowed = th && !th->process.empty() && may_act_on(ctx, th->process);
  }
  if (!t.scope.empty() && !ctx.peer.is_operator) allowed = false;
  if (!allowed) {
    ctx.reply.error(err::kPermissionDenied).field("message", "may not charge this consumer");
    return std::nullopt;
  }
  return t;
}

void consume(CallContext& ctx) {
  auto t = target_param(ctx);
  if (!t) return;
  ConsumeRequest req;
  req.target = std::move(*t);
  // Seed 001's action costs: an action on N words costs the configured tokens per 1000
  // words, charged to `tokens` unless another resource is named.
  std::string_view action = ctx.params.str_or("action", "");
  if (action.empty()) {
    req.resource = std::string(ctx.params.str("resource"));
    req.amount = ctx.params.decimal("amount");
  } else {
    req.resource = std::string(ctx.params.str_or("resource", "tokens"));
    uint64_t words = ctx.params.u64("words");
    if (ctx.params.has("amount")) ctx.params.fail("amount");
    if (ctx.params.ok()) {
      auto tokens = ctx.hooks.prices().action_tokens(action, words);
      if (!tokens) return ctx.reply.fail(tokens.error());
      req.amount = Decimal::from_int(*tokens);
    }
  }
  req.allow_partial = ctx.params.bool_or("allow_partial", false);
  req.context = std::string(ctx.params.str_or("context", ""));
  // It is kept with a pending request and in the ledger: bounded like a label.
  if (req.context.size() > kMaxLabelValueBytes) ctx.params.fail("context");
  std::string_view key = read_idempotency_key(ctx.params);
  auto labels = read_labels(ctx.params);
  if (!params_ok(ctx)) return;
  if (!action.empty()) labels.emplace("action", action);
  if (!durable_ok(ctx) || replay_if_answered(ctx, key)) return;
  auto r = ctx.engine.consume(req);
  if (!r) return ctx.reply.fail(r.error());
  LedgerRecord rec = ledger_record(ctx, LedgerKind::consumption);
  rec.process = req.target.process;
  rec.thread = req.target.thread;
  rec.scope = req.target.scope;
  rec.labels = std::move(labels);
  rec.action = std::string(consume_status_name(r->status));
  rec.detail = req.context;
  if (r->status == ConsumeStatus::pending) rec.detail = fmt::format("request_id={} {}", r->request_id, req.context);
  if (r->approved() && !r->granted.is_zero()) {
    auto item = ctx.hooks.prices().price(req.resource, r->granted);
    if (item) {
      rec.total_cost = item->total_cost;
      rec.items.push_back(std::move(*item));
    }
  }
  ctx.hooks.append(std::move(rec));
  write_consume_result(ctx.reply.ok(), *r);
}

void reserve(CallContext& ctx) {
  auto t = target_param(ctx);
  if (!t) return;
  ChargeList estimate;
  const std::pair<std::string_view, ResourceId> counts[] = {
      {"llm_calls", res::llm_calls}, {"tokens_in", res::tokens_in}, {"tokens_out", res::tokens_out}};
  for (auto [name, id] : counts)
    if (uint64_t v = ctx.params.u64_or(name, 0)) (void)estimate.add(id, Decimal::from_int(v));
  if (auto cost = ctx.params.opt_decimal("cost"); cost && !cost->is_zero()) (void)estimate.add(res::cost, *cost);
  uint64_t ttl = ctx.params.u64_or("ttl_seconds", 0);
  if (!read_amounts(ctx, estimate) || !params_ok(ctx)) return;
  auto r = ctx.engine.reserve(*t, estimate, std::chrono::seconds(static_cast<int64_t>(std::min<uint64_t>(ttl, 1u << 30))));
  if (!r) return ctx.reply.fail(r.error());
  if (!r->admitted) return ctx.reply.refuse(*r->refusal);
  // A hold is not usage: the record carries no items, so summaries count only the commit.
  LedgerRecord rec = ledger_record(ctx, LedgerKind::reservation);
  rec.process = t->process;
  rec.thread = t->thread;
  rec.scope = t->scope;
  rec.action = "reserved";
  rec.detail = fmt::format("reservation_id={} expires_at={}", r->id, format_utc(r->expires_at));
  ctx.hooks.append(std::move(rec));
  ctx.reply.ok().field("reservation_id", r->id).field("expires_at", format_utc(r->expires_at));
}

void commit(CallContext& ctx) {
  uint64_t id = ctx.params.u64("reservation_id");
  UsageReport report = read_report(ctx.params);
  std::string_view key = read_idempotency_key(ctx.params);
  auto labels = read_labels(ctx.params);
  if (!read_amounts(ctx, report.extra) || !params_ok(ctx)) return;
  if (!durable_ok(ctx) || replay_if_answered(ctx, key)) return;
  auto priced = price(ctx, report, labels);
  if (!priced) return;
  auto r = ctx.engine.commit(id, report);
  if (!r) return ctx.reply.fail(r.error());
  LedgerRecord rec = ledger_record(ctx, LedgerKind::commit);
  rec.process = r->process;
  rec.thread = r->thread;
  rec.scope = r->scope;
  rec.labels = std::move(labels);
  rec.action = r->expired ? "committed_after_expiry" : "committed";
  rec.detail = fmt::format("reservation_id={}", id);
  add_priced(rec, std::move(*priced));
  ctx.hooks.append(std::move(rec));
  auto& w = ctx.reply.ok();
  w.field("expired", r->expired);
  if (r->reason != Reason::none) w.field("reason", reason_name(r->reason));
  w.key("violations").begin_array();
  for (const auto& v : r->violations) write_violation(w.begin_object(), v).end_object();
  w.end_array();
}

void cancel(CallContext& ctx) {
  uint64_t id = ctx.params.u64("reservation_id");
  if (!params_ok(ctx)) return;
  if (auto r = ctx.engine.cancel(id); !r) return ctx.reply.fail(r.error());
  LedgerRecord rec = ledger_record(ctx, LedgerKind::reservation);
  rec.action = "cancelled";
  rec.detail = fmt::format("reservation_id={}", id);
  ctx.hooks.append(std::move(rec));
  ctx.reply.ok();
}

// A thread the caller may use: unowned threads are open to anyone who names them (seed 003
// has no owner); a thread of a process follows that process's rule.
bool thread_allowed(CallContext& ctx, std::string_view thread, std::string_view process) {
  if (ctx.peer.is_operator) return true;
  if (!process.empty()) return may_act_on(ctx, process);
  auto th = ctx.engine.get_thread_usage(thread);
  return !th || th->process.empty() || may_act_on(ctx, th->process);
}

void check_budget(CallContext& ctx) {
  std::string_view thread = ctx.params.str("thread");
  uint64_t estimate = ctx.params.u64_or("estimated_tokens", 0);
  std::string_view process = ctx.params.str_or("process", "");
  if (!params_ok(ctx)) return;
  if (!thread_allowed(ctx, thread, process))
    return (void)ctx.reply.error(err::kPermissionDenied).field("message", "may not use this thread");
  auto r = ctx.engine.check_budget(thread, estimate, process);
  if (!r) return ctx.reply.fail(r.error());
  if (*r) return ctx.reply.refuse(**r);
  auto u = ctx.engine.get_thread_usage(thread);
  ctx.reply.ok().field("remaining", u->remaining).field("max_tokens", u->max_tokens);
}

void consume_thread(CallContext& ctx) {
  std::string_view thread = ctx.params.str("thread");
  uint64_t prompt = ctx.params.u64_or("prompt_tokens", 0);
  uint64_t completion = ctx.params.u64_or("completion_tokens", 0);
  std::string_view process = ctx.params.str_or("process", "");
  std::string_view key = read_idempotency_key(ctx.params);
  auto labels = read_labels(ctx.params);
  if (!params_ok(ctx)) return;
  if (!thread_allowed(ctx, thread, process))
    return (void)ctx.reply.error(err::kPermissionDenied).field("message", "may not use this thread");
  if (!durable_ok(ctx) || replay_if_answered(ctx, key)) return;
  auto r = ctx.engine.consume(thread, prompt, completion, process);
  if (!r) return ctx.reply.fail(r.error());
  // Priced for the ledger (seed 003 per-model costs); a thread budget counts tokens only.
  UsageReport tokens;
  tokens.tokens_in = prompt;
  tokens.tokens_out = completion;
  auto priced = ctx.hooks.prices().price_report(tokens, model_label(labels), ctx.engine.resources());
  LedgerRecord rec = ledger_record(ctx, LedgerKind::thread);
  rec.thread = std::string(thread);
  rec.process = r->process;
  rec.labels = std::move(labels);
  if (priced) add_priced(rec, std::move(*priced));
  ctx.hooks.append(std::move(rec));
  ctx.reply.ok()
      .field("prompt_tokens", r->prompt_tokens)
      .field("completion_tokens", r->completion_tokens)
      .field("total_tokens", r->total_tokens)
      .field("remaining", r->remaining)
      .field("max_tokens", r->max_tokens)
      .field("request_count", r->request_count);
}

void get_usage(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  auto p = ctx.engine.get_process(*pid);
  if (!p) return ctx.reply.fail(Error{Errc::unknown_process, std::string(*pid)});
  write_usage(ctx.reply.ok().key("usage"), p->usage, p->elapsed_seconds);
}

void get_quota(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  auto q = ctx.engine.get_quota(*pid);
  if (!q) return ctx.reply.fail(Error{Errc::unknown_process, std::string(*pid)});
  write_quota(ctx.reply.ok().key("quota"), *q);
}

void get_remaining_budget(CallContext& ctx) {
  auto pid = process_param(ctx);
  if (!pid) return;
  auto r = ctx.engine.get_remaining_budget(*pid);
  if (!r) return ctx.reply.fail(Error{Errc::unknown_process, std::string(*pid)});
  auto& w = ctx.reply.ok();
  w.field("llm_calls", limit_text(r->llm_calls));
  w.field("tool_calls", limit_text(r->tool_calls));
  w.field("agent_hops", limit_text(r->agent_hops));
  w.field("iterations", limit_text(r->iterations));
  w.field("time_seconds", r->time_seconds == INT64_MAX ? std::string("unlimited") : std::to_string(r->time_seconds));
  w.field("tokens", limit_text(r->tokens));
  w.field("cost", limit_text(r->cost));
}

void is_tracked(CallContext& ctx) {
  std::string_view pid = ctx.params.str("process");
  if (!params_ok(ctx)) return;
  ctx.reply.ok().field("tracked", ctx.engine.is_tracked(pid));
}

void check_rate_limit(CallContext& ctx) {
  std::string user = std::to_string(ctx.peer.uid);
  std::string_view named = ctx.params.str_or("user", "");
  std::string_view endpoint = ctx.params.str_or("endpoint", "default");
  bool record = ctx.params.bool_or("record", true);
  if (!params_ok(ctx)) return;
  // Agents are rate limited as their uid; only operators may ask on behalf of a name.
  if (!named.empty()) {
    if (!ctx.peer.is_operator && named != user)
      return (void)ctx.reply.error(err::kPermissionDenied).field("message", "may not check another user's rate");
    user = std::string(named);
  }
  auto r = ctx.engine.rate_limiter().check_rate_limit(user, endpoint, record);
  if (!r) return ctx.reply.fail(r.error());
  write_rate_limit_result(ctx.reply.ok(), *r);
}

void watch(CallContext& ctx) {
  if (!ctx.call.more) return (void)ctx.reply.error(err::kExpectedMore);
  WatchFilter f;
  f.peer_pid = ctx.peer.pid;
  f.peer_uid = ctx.peer.uid;
  f.processes.push_back(std::to_string(ctx.peer.pid));
  ctx.hooks.watch(f);
  write_watching(ctx.reply.stream(), ctx.engine.now());
}

}  // namespace

bool may_act_on(CallContext& ctx, std::string_view process) {
  if (ctx.peer.is_operator) return true;
  if (is_os_pid(process)) {
    int32_t pid = os_pid(process);
    return pid == ctx.peer.pid || (ctx.peer.pid > 0 && ctx.hooks.is_descendant(pid, ctx.peer.pid));
  }
  // A logical id belongs to the uid that created it; an untracked one is free to create.
  auto p = ctx.engine.get_process(process);
  return !p || p->owner == ctx.peer.uid;
}

void register_agent_methods(Service& s) {
  const std::pair<std::string_view, Handler> methods[] = {
      {"Allocate", allocate},
      {"Release", release},
      {"RecordUsage", record_usage},
      {"CheckQuota", check_quota},
      {"Consume", consume},
      {"Reserve", reserve},
      {"Commit", commit},
      {"Cancel", cancel},
      {"CheckBudget", check_budget},
      {"ConsumeThread", consume_thread},
      {"GetUsage", get_usage},
      {"GetQuota", get_quota},
      {"GetRemainingBudget", get_remaining_budget},
      {"IsTracked", is_tracked},
      {"CheckRateLimit", check_rate_limit},
      {"Watch", watch},
  };
  for (auto [name, h] : methods) s.add_method(std::string(kAgent) + std::string(name), h);
}

}  // namespace budgetd::ipc
