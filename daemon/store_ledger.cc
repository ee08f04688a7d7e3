// The ledger's read side (io.budgetd.Usage): Summary adds up charges exactly in C++ with
// Decimal (SQL would sum amounts as doubles), Records pages newest first by an opaque
// (recorded_at, seq) cursor. Runs on the loop thread's read-only connection.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <variant>

#include "daemon/store_internal.h"
#include "lib/state_codec.h"

namespace budgetd::daemon {

namespace {

using Param = std::variant<int64_t, std::string>;

void bind_all(sql::Stmt& st, const std::vector<Param>& params) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    int pos = static_cast<int>(i) + 1;
    if (auto* v = std::get_if<int64_t>(&params[i])) st.bind(pos, *v);
    else st.bind(pos, std::get<std::string>(params[i]));
  }
}

// "this path and below", as an index-friendly range: "a/b" matches "a/b" and "a/b/..."
// ('0' is the byte after '/'). "" and "/" mean everything.
void add_scope_filter(std::string_view scope, std::string& where, std::vector<Param>& params) {
  if (scope.empty() || scope == "/") return;
  std::string s(scope);
  if (s.size() > 1 && s.back() == '/') s.pop_back();
  std::size_t n = params.size();
  where += fmt::format(" AND (scope = ?{} OR (scope >= ?{} AND scope < ?{}))", n + 1, n + 2, n + 3);
  params.emplace_back(s);
  params.emplace_back(s + "/");
  params.emplace_back(s + "0");
}

int64_t usec(TimePoint t) { return t.time_since_epoch().count(); }

Error corrupt(std::string_view what) { return Error{Errc::invalid_state, "corrupt ledger row: " + std::string(what)}; }

constexpr std::string_view kCursorPrefix = "1.";

std::string make_cursor(int64_t recorded_at, int64_t seq) {
  return fmt::format("{}{}.{}", kCursorPrefix, recorded_at, seq);
}

std::optional<std::pair<int64_t, int64_t>> parse_cursor(std::string_view c) {
  if (!c.starts_with(kCursorPrefix)) return std::nullopt;
  c.remove_prefix(kCursorPrefix.size());
  auto dot = c.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  int64_t t = 0, seq = 0;
  auto a = std::from_chars(c.data(), c.data() + dot, t);
  auto b = std::from_chars(c.data() + dot + 1, c.data() + c.size(), seq);
  if (a.ec != std::errc() || a.ptr != c.data() + dot || b.ec != std::errc() || b.ptr != c.data() + c.size())
    return std::nullopt;
  return std::pair{t, seq};
}

}  // namespace

Result<UsageSummary> Store::Ledger::summary(const SummaryQuery& q) {
  UsageSummary out;
  out.start = q.start;
  out.end = q.end;
  out.scope = q.scope;
  out.group_by = q.group_by;
  std::map<std::string, SummaryGroup, std::less<>> groups;
  auto group = [&](std::string_view key) -> SummaryGroup& {
    auto it = groups.find(key);
    if (it == groups.end()) {
      it = groups.emplace(std::string(key), SummaryGroup{}).first;
      it->second.key = std::string(key);
    }
    return it->second;
  };
  auto add = [](Decimal& to, Decimal v) { to = to.saturating_add(v); };
  bool by_resource = q.group_by == GroupBy::resource;
  // Column positions of the group keys in both queries below: scope, agent, model, thread,
  // process.
  auto key_column = [&]() -> int {
    switch (q.group_by) {
      case GroupBy::scope: return 0;
      case GroupBy::agent: return 1;
      case GroupBy::model: return 2;
      case GroupBy::thread: return 3;
      case GroupBy::process: return 4;
      case GroupBy::resource: return -1;
    }
    return -1;
  }();

  // Live records.
  {
    std::string where = "recorded_at >= ?1 AND recorded_at < ?2";
    std::vector<Param> params{usec(q.start), usec(q.end)};
    add_scope_filter(q.scope, where, params);
    auto st = sql::Stmt::prepare(db_, "SELECT scope, agent, model, thread, process, kind, action, amounts "
                                      "FROM ledger WHERE " + where);
    if (!st) return std::unexpected(sql::to_error(st.error()));
    sql::ResetOnExit reset(*st);
    bind_all(*st, params);
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
      if (!ledger_record_charges(static_cast<LedgerKind>(st->int64(5)), st->text(6))) continue;
      auto amounts = decode_ledger_amounts(st->blob(7));
      if (!amounts) return std::unexpected(amounts.error());
      const Decimal* cost = &amounts->total_cost;
      const std::vector<LedgerItem>& items = amounts->items;
      add(out.total_cost, *cost);
      ++out.records;
      if (by_resource) {
        for (const auto& i : items) {
          SummaryGroup& g = group(i.resource);
          add(g.quantity[i.resource], i.quantity);
          add(g.cost, i.total_cost);
          ++g.records;
        }
      } else {
        SummaryGroup& g = group(st->text(key_column));
        for (const auto& i : items) add(g.quantity[i.resource], i.quantity);
        add(g.cost, *cost);
        ++g.records;
      }
    }
    if (rc != SQLITE_DONE) return std::unexpected(sql::to_error(sql::error(db_, rc, "read the ledger")));
  }

  // Folded days whose 00:00 UTC lies in [start, end).
  {
    std::string where = "day >= ?1 AND day < ?2";
    std::vector<Param> params{usec(q.start), usec(q.end)};
    add_scope_filter(q.scope, where, params);
    auto st = sql::Stmt::prepare(db_, "SELECT scope, agent, model, thread, process, resource, quantity, cost, records "
                                      "FROM ledger_daily WHERE " + where);
    if (!st) return std::unexpected(sql::to_error(st.error()));
    sql::ResetOnExit reset(*st);
    bind_all(*st, params);
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
      auto quantity = Decimal::parse(st->text(6), true);
      auto cost = Decimal::parse(st->text(7), true);
      if (!quantity || !cost) return std::unexpected(corrupt("ledger_daily amount"));
      auto records = static_cast<uint64_t>(st->int64(8));
      std::string_view resource = st->text(5);
      if (resource.empty()) {  // the day's records and their total cost
        add(out.total_cost, *cost);
        out.records += records;
        if (!by_resource) {
          SummaryGroup& g = group(st->text(key_column));
          add(g.cost, *cost);
          g.records += records;
        }
      } else if (by_resource) {
        SummaryGroup& g = group(resource);
        add(g.quantity[std::string(resource)], *quantity);
        add(g.cost, *cost);
        g.records += records;
      } else {
        add(group(st->text(key_column)).quantity[std::string(resource)], *quantity);
      }
    }
    if (rc != SQLITE_DONE) return std::unexpected(sql::to_error(sql::error(db_, rc, "read the daily aggregates")));
  }

  out.groups.reserve(groups.size());
  for (auto& [k, g] : groups) out.groups.push_back(std::move(g));
  std::stable_sort(out.groups.begin(), out.groups.end(),
                   [](const SummaryGroup& a, const SummaryGroup& b) { return a.cost > b.cost; });
  return out;
}

Result<RecordPage> Store::Ledger::records(const RecordFilter& f) {
  std::string where = "1";
  std::vector<Param> params;
  auto eq = [&](std::string_view column, const std::string& value) {
    if (value.empty()) return;
    params.emplace_back(value);
    where += fmt::format(" AND {} = ?{}", column, params.size());
  };
  eq("process", f.process);
  eq("agent", f.agent);
  eq("model", f.model);
  eq("thread", f.thread);
  if (!f.resource_type.empty()) {
    params.emplace_back("," + f.resource_type + ",");
    where += fmt::format(" AND instr(resources, ?{}) > 0", params.size());
  }
  if (f.kind) {
    params.emplace_back(static_cast<int64_t>(*f.kind));
    where += fmt::format(" AND kind = ?{}", params.size());
  }
  if (f.since) {
    params.emplace_back(usec(*f.since));
    where += fmt::format(" AND recorded_at >= ?{}", params.size());
  }
  if (f.until) {
    params.emplace_back(usec(*f.until));
    where += fmt::format(" AND recorded_at < ?{}", params.size());
  }
  add_scope_filter(f.scope, where, params);
  if (!f.cursor.empty()) {
    auto c = parse_cursor(f.cursor);
    if (!c) return fail(Errc::invalid_argument, "cursor: not one this ledger gave out");
    params.emplace_back(c->first);
    params.emplace_back(c->second);
    where += fmt::format(" AND (recorded_at, seq) < (?{}, ?{})", params.size() - 1, params.size());
  }
  uint32_t limit = f.limit == 0 ? 100 : std::min<uint32_t>(f.limit, 1000);
  params.emplace_back(static_cast<int64_t>(limit) + 1);  // one more tells whether a next page exists
  auto st = sql::Stmt::prepare(
      db_, fmt::format("SELECT seq, recorded_at, kind, process, thread, scope, agent, model, action, amounts, details "
                       "FROM ledger WHERE {} "
                       "ORDER BY recorded_at DESC, seq DESC LIMIT ?{}",
                       where, params.size()));
  if (!st) return std::unexpected(sql::to_error(st.error()));
  sql::ResetOnExit reset(*st);
  bind_all(*st, params);

  RecordPage page;
  int64_t last_time = 0, last_seq = 0;
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    if (page.records.size() == limit) {
      page.next_cursor = make_cursor(last_time, last_seq);
      break;
    }
    LedgerRecord r;
    last_seq = st->int64(0);
    last_time = st->int64(1);
    r.recorded_at = TimePoint(Duration(last_time));
    int64_t kind = st->int64(2);
    if (kind < 0 || kind > static_cast<int64_t>(LedgerKind::audit)) return std::unexpected(corrupt("kind"));
    r.kind = static_cast<LedgerKind>(kind);
    r.process = st->text(3);
    r.thread = st->text(4);
    r.scope = st->text(5);
    if (auto d = decode_ledger_details(st->blob(10), r); !d) return std::unexpected(d.error());
    for (std::size_t i = 0; i < std::size(kColumnLabels); ++i) {
      std::string_view v = st->text(6 + static_cast<int>(i));
      if (!v.empty()) r.labels.insert_or_assign(std::string(kColumnLabels[i]), std::string(v));
    }
    r.action = st->text(8);
    auto amounts = decode_ledger_amounts(st->blob(9));
    if (!amounts) return std::unexpected(amounts.error());
    r.total_cost = amounts->total_cost;
    r.items = std::move(amounts->items);
    page.records.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return std::unexpected(sql::to_error(sql::error(db_, rc, "read the ledger")));
  return page;
}

}  // namespace budgetd::daemon
