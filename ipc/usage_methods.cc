// io.budgetd.Usage: reports over the ledger (seed 004's summary and records, seed 001's
// audit trail), the price table, consumption statistics and seed 003's thread, agent and
// model views. Pricing and Stats are open to everyone; the rest say who spent what, so
// they are for operators only, checked before anything is read. Reset is the one method
// that changes state, and it leaves an audit record.
#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ipc/errors.h"
#include "ipc/ledger_records.h"
#include "ipc/methods.h"
#include "lib/calendar.h"

namespace budgetd::ipc {

namespace {

constexpr std::string_view kUsage = "io.budgetd.Usage.";
constexpr uint64_t kDefaultPage = 100;
constexpr uint64_t kMaxPage = 1000;  // RecordFilter's bound, and the same for Threads
// The ledger resources that count as tokens in the seed 003 views: the engine's split
// (tokens_in, tokens_out), a combined count, and seed 004's "token" resource.
constexpr std::string_view kTokenResources[] = {"tokens_in", "tokens_out", "tokens", "token"};

template <Handler H>
void operator_only(CallContext& ctx) {
  if (!ctx.peer.is_operator)
    return (void)ctx.reply.error(err::kPermissionDenied)
        .field("message", "this io.budgetd.Usage method is for operators (root or the operator group)");
  H(ctx);
}

// The ledger, or nullptr after answering LedgerUnavailable.
LedgerReader* ledger_or_fail(CallContext& ctx) {
  LedgerReader* ledger = ctx.hooks.ledger();
  if (!ledger)
    ctx.reply.error(err::kLedgerUnavailable)
        .field("message", "budgetd runs without a store, so it keeps no ledger");
  return ledger;
}

// A failed ledger read: a bad argument the store noticed (a cursor it never gave) is the
// caller's; anything else is the store's.
void ledger_failed(CallContext& ctx, const Error& e) {
  if (e.code == Errc::invalid_argument || e.code == Errc::invalid_id) return ctx.reply.fail(e);
  ctx.reply.error(err::kStorageFailed).field("message", e.message());
}

// An instant parameter: what parse_utc accepts, RFC 3339 UTC or a plain date. A date that
// ends a range (end, until) includes its whole day, so it means the next midnight: seed
// 004 asks for start_date=2024-01-01&end_date=2024-01-31 and means all of January.
std::optional<TimePoint> read_instant(std::string_view text, bool ends_range) {
  auto t = parse_utc(text);
  if (!t) return std::nullopt;
  const bool plain_date = text.find('T') == std::string_view::npos;
  if (ends_range && plain_date) return *t + std::chrono::days(1);
  return *t;
}

// A scope filter as the ledger keys it: the normalized path, "" for everything (the root
// holds everything). A malformed path answers InvalidArgument and gives nullopt.
std::optional<std::string> read_scope(CallContext& ctx, std::optional<std::string_view> text) {
  if (!text) return std::string();
  auto norm = normalize_path(*text);
  if (!norm) {
    ctx.reply.fail(norm.error());
    return std::nullopt;
  }
  return *norm == "/" ? std::string() : std::move(*norm);
}

// A page size: `def` when absent, else 1..kMaxPage.
std::optional<uint64_t> read_limit(CallContext& ctx) {
  auto limit = ctx.params.opt_u64("limit");
  if (!params_ok(ctx)) return std::nullopt;
  if (limit && (*limit == 0 || *limit > kMaxPage)) {
    ctx.reply.invalid_parameter("limit");
    return std::nullopt;
  }
  return limit.value_or(kDefaultPage);
}

JsonWriter& write_quantities(JsonWriter& w, const std::map<std::string, Decimal>& quantity) {
  w.begin_object();
  for (const auto& [resource, amount] : quantity) w.field(resource, amount);
  return w.end_object();
}

uint64_t token_count(const std::map<std::string, Decimal>& quantity) {
  Decimal tokens;
  for (auto name : kTokenResources) {
    if (auto it = quantity.find(std::string(name)); it != quantity.end())
      tokens = tokens.saturating_add(it->second);
  }
  return tokens.to_u64_floor();
}

// Everything the ledger holds: from the epoch to a day past now, so that a record stamped
// a moment after the engine's clock was read still counts.
SummaryQuery all_time(CallContext& ctx, GroupBy group_by) {
  SummaryQuery q;
  q.start = TimePoint{};
  q.end = ctx.engine.now() + std::chrono::days(1);
  q.group_by = group_by;
  return q;
}

JsonWriter& write_record(JsonWriter& w, const LedgerRecord& r) {
  w.begin_object();
  w.field("id", r.id)
      .field("kind", ledger_kind_name(r.kind))
      .field("recorded_at", format_utc(r.recorded_at))
      .field("uid", r.uid)
      .field("pid", int64_t{r.pid});
  if (!r.process.empty()) w.field("process", r.process);
  if (!r.thread.empty()) w.field("thread", r.thread);
  w.field("scope", r.scope);
  w.key("labels").begin_object();
  for (const auto& [k, v] : r.labels) w.field(k, v);
  w.end_object();
  w.key("items").begin_array();
  for (const auto& item : r.items) {
    w.begin_object()
        .field("resource", item.resource)
        .field("quantity", item.quantity)
        .field("unit", item.unit)
        .field("unit_cost", item.unit_cost)
        .field("total_cost", item.total_cost)
        .end_object();
  }
  w.end_array();
  w.field("total_cost", r.total_cost);
  if (!r.idempotency_key.empty()) w.field("idempotency_key", r.idempotency_key);
  if (!r.action.empty()) w.field("action", r.action);
  if (!r.detail.empty()) w.field("detail", r.detail);
  return w.end_object();
}

// The fields of a ThreadUsage into the object being written (no braces).
JsonWriter& write_thread_fields(JsonWriter& w, const ThreadUsage& t) {
  w.field("thread", t.id)
      .field("prompt_tokens", t.prompt_tokens)
      .field("completion_tokens", t.completion_tokens)
      .field("total_tokens", t.total_tokens)
      .field("remaining", t.remaining)
      .field("max_tokens", t.max_tokens)
      .field("request_count", t.request_count)
      .field("reserved", t.reserved);
  if (!t.process.empty()) w.field("process", t.process);
  return w;
}

// ---- The ledger ---------------------------------------------------------------------------

void summary(CallContext& ctx) {
  std::string_view start_text = ctx.params.str("start");
  std::string_view end_text = ctx.params.str("end");
  auto scope_text = opt_str(ctx.params, "scope");
  std::string_view group_text = ctx.params.str_or("group_by", "resource");
  if (!params_ok(ctx)) return;
  auto start = read_instant(start_text, false);
  if (!start) return ctx.reply.invalid_parameter("start");
  auto end = read_instant(end_text, true);
  if (!end || *end < *start) return ctx.reply.invalid_parameter("end");
  auto group_by = parse_group_by(group_text);
  if (!group_by) return ctx.reply.invalid_parameter("group_by");
  auto scope = read_scope(ctx, scope_text);
  if (!scope) return;
  LedgerReader* ledger = ledger_or_fail(ctx);
  if (!ledger) return;

  SummaryQuery q;
  q.start = *start;
  q.end = *end;
  q.scope = std::move(*scope);
  q.group_by = *group_by;
  auto s = ledger->summary(q);
  if (!s) return ledger_failed(ctx, s.error());
  // The range and grouping as asked (the store answers for the query it was given).
  auto& w = ctx.reply.ok();
  w.field("start", format_utc(q.start))
      .field("end", format_utc(q.end))
      .field("scope", q.scope)
      .field("group_by", group_by_name(q.group_by));
  w.key("usage").begin_array();
  for (const auto& g : s->groups) {
    w.begin_object().field("key", g.key);
    write_quantities(w.key("quantity"), g.quantity);
    w.field("cost", g.cost).field("records", g.records).end_object();
  }
  w.end_array();
  w.field("total_cost", s->total_cost).field("records", s->records);
}

void records(CallContext& ctx) {
  RecordFilter f;
  const std::pair<std::string_view, std::string RecordFilter::*> text_filters[] = {
      {"resource_type", &RecordFilter::resource_type},
      {"process", &RecordFilter::process},
      {"agent", &RecordFilter::agent},
      {"model", &RecordFilter::model},
      {"thread", &RecordFilter::thread},
      {"cursor", &RecordFilter::cursor},
  };
  for (auto [name, member] : text_filters) f.*member = std::string(ctx.params.str_or(name));
  auto scope_text = opt_str(ctx.params, "scope");
  auto kind_text = opt_str(ctx.params, "kind");
  auto since_text = opt_str(ctx.params, "since");
  auto until_text = opt_str(ctx.params, "until");
  auto limit = read_limit(ctx);
  if (!limit) return;
  f.limit = static_cast<uint32_t>(*limit);
  if (kind_text) {
    f.kind = parse_ledger_kind(*kind_text);
    if (!f.kind) return ctx.reply.invalid_parameter("kind");
  }
  if (since_text) {
    f.since = read_instant(*since_text, false);
    if (!f.since) return ctx.reply.invalid_parameter("since");
  }
  if (until_text) {
    f.until = read_instant(*until_text, true);
    if (!f.until) return ctx.reply.invalid_parameter("until");
  }
  auto scope = read_scope(ctx, scope_text);
  if (!scope) return;
  f.scope = std::move(*scope);
  LedgerReader* ledger = ledger_or_fail(ctx);
  if (!ledger) return;

  auto page = ledger->records(f);
  if (!page) return ledger_failed(ctx, page.error());
  auto& w = ctx.reply.ok();
  w.key("records").begin_array();
  for (const auto& r : page->records) write_record(w, r);
  w.end_array();
  if (!page->next_cursor.empty()) w.field("next_cursor", page->next_cursor);
}

// ---- Prices and statistics (any caller) -----------------------------------------------------

void pricing(CallContext& ctx) {
  const PriceTable& prices = ctx.hooks.prices();
  auto& w = ctx.reply.ok();
  w.key("resources").begin_array();
  for (const auto& [name, p] : prices.resources()) {
    w.begin_object()
        .field("resource", name)
        .field("unit", p.unit)
        .field("unit_size", p.unit_size)
        .field("unit_cost", p.unit_cost)
        .end_object();
  }
  w.end_array();
  w.key("models").begin_array();
  for (const auto& [name, p] : prices.models()) {
    w.begin_object()
        .field("model", name)
        .field("input_per_1k", p.input_per_1k)
        .field("output_per_1k", p.output_per_1k)
        .end_object();
  }
  w.end_array();
  w.key("actions").begin_array();
  for (const auto& [name, tokens] : prices.actions())
    w.begin_object().field("action", name).field("tokens_per_1000_words", tokens).end_object();
  w.end_array();
}

void stats(CallContext& ctx) {
  const ConsumptionStats s = ctx.engine.get_stats();
  ctx.reply.ok()
      .field("total_events", s.total_events)
      .field("approved", s.consumed_count)
      .field("denied", s.rejected_count)
      .field("partial", s.partial)
      .field("pending", s.pending);
}

// ---- Seed 003 views -------------------------------------------------------------------------

void overview(CallContext& ctx) {
  uint64_t prompt = 0, completion = 0, total = 0, requests = 0;
  const std::vector<ThreadUsage> threads = ctx.engine.get_all_thread_usage();
  for (const auto& t : threads) {
    prompt += t.prompt_tokens;
    completion += t.completion_tokens;
    total += t.total_tokens;
    requests += t.request_count;
  }
  // The splits come from the ledger; without a store the thread totals still answer.
  std::optional<UsageSummary> by_agent, by_model;
  if (LedgerReader* ledger = ctx.hooks.ledger()) {
    auto a = ledger->summary(all_time(ctx, GroupBy::agent));
    if (!a) return ledger_failed(ctx, a.error());
    auto m = ledger->summary(all_time(ctx, GroupBy::model));
    if (!m) return ledger_failed(ctx, m.error());
    by_agent = std::move(*a);
    by_model = std::move(*m);
  }
  auto& w = ctx.reply.ok();
  w.field("total_tokens", total)
      .field("prompt_tokens", prompt)
      .field("completion_tokens", completion)
      .field("requests", requests)
      .field("threads", static_cast<uint64_t>(threads.size()));
  const std::pair<std::string_view, const std::optional<UsageSummary>*> splits[] = {
      {"agent", &by_agent}, {"model", &by_model}};
  for (auto [label, split] : splits) {
    if (!*split) continue;
    w.key(label == "agent" ? "by_agent" : "by_model").begin_array();
    for (const auto& g : (*split)->groups) {
      w.begin_object()
          .field(label, g.key)
          .field("tokens", token_count(g.quantity))
          .field("cost", g.cost)
          .end_object();
    }
    w.end_array();
  }
}

void threads(CallContext& ctx) {
  auto limit = read_limit(ctx);
  if (!limit) return;
  std::vector<ThreadUsage> all = ctx.engine.get_all_thread_usage();
  const auto by_use = [](const ThreadUsage& a, const ThreadUsage& b) {
    if (a.total_tokens != b.total_tokens) return a.total_tokens > b.total_tokens;
    return a.id < b.id;
  };
  const std::size_t shown = std::min<std::size_t>(all.size(), *limit);
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(shown), all.end(), by_use);
  auto& w = ctx.reply.ok();
  w.key("threads").begin_array();
  for (std::size_t i = 0; i < shown; ++i) write_thread_fields(w.begin_object(), all[i]).end_object();
  w.end_array();
  w.field("total", static_cast<uint64_t>(all.size()));
}

void thread(CallContext& ctx) {
  std::string_view id = ctx.params.str("thread");
  if (!params_ok(ctx)) return;
  auto t = ctx.engine.get_thread_usage(id);
  if (!t) return ctx.reply.fail(Error{Errc::unknown_thread, std::string(id)});
  write_thread_fields(ctx.reply.ok(), *t);
}

// Agent and Model: one label's group of the all-time summary.
template <GroupBy By>
void label_usage(CallContext& ctx) {
  constexpr std::string_view label = By == GroupBy::agent ? "agent" : "model";
  std::string_view key = ctx.params.str(label);
  if (!params_ok(ctx)) return;
  LedgerReader* ledger = ledger_or_fail(ctx);
  if (!ledger) return;
  auto s = ledger->summary(all_time(ctx, By));
  if (!s) return ledger_failed(ctx, s.error());
  static const SummaryGroup kNone;
  auto it = std::find_if(s->groups.begin(), s->groups.end(),
                         [&](const SummaryGroup& g) { return g.key == key; });
  const SummaryGroup& g = it == s->groups.end() ? kNone : *it;
  auto& w = ctx.reply.ok();
  w.field(label, key);
  write_quantities(w.key("quantity"), g.quantity);
  w.field("tokens", token_count(g.quantity)).field("cost", g.cost).field("records", g.records);
}

// ---- Reset (audited) --------------------------------------------------------------------------

// Admin.Reset's work, audited the same way, so one filter finds every reset.
void reset(CallContext& ctx) {
  reset_usage(ctx);
  if (!ctx.reply.is_error()) audit(ctx);
}

}  // namespace

void register_usage_methods(Service& s) {
  const std::pair<std::string_view, Handler> methods[] = {
      {"Summary", operator_only<summary>},
      {"Records", operator_only<records>},
      {"Pricing", pricing},
      {"Stats", stats},
      {"Overview", operator_only<overview>},
      {"Threads", operator_only<threads>},
      {"Thread", operator_only<thread>},
      {"Agent", operator_only<label_usage<GroupBy::agent>>},
      {"Model", operator_only<label_usage<GroupBy::model>>},
      {"Reset", operator_only<reset>},
  };
  for (auto [name, h] : methods) s.add_method(std::string(kUsage) + std::string(name), h);
}

}  // namespace budgetd::ipc
