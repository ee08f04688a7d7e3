// Recovery reads: every table back into EngineState and its companions. One sequential
// scan per table on the read-only connection; a row that does not decode stops the load
// (nothing half-loaded reaches the engine).
#include <fmt/format.h>

#include "daemon/store_internal.h"
#include "lib/state_codec.h"

namespace budgetd::daemon {

namespace {

template <class T>
Result<void> load_table(sqlite3* db, std::string_view table, std::vector<T>& out) {
  // Counting first costs one pass over the leaf pages (about 20 ms per million rows) and
  // saves growing a vector of a million ~300-byte records by doubling.
  auto count = sql::Stmt::prepare(db, fmt::format("SELECT count(*) FROM {}", table));
  if (!count) return std::unexpected(sql::to_error(count.error()));
  if (count->step() == SQLITE_ROW) out.reserve(out.size() + static_cast<std::size_t>(count->int64(0)));
  auto st = sql::Stmt::prepare(db, fmt::format("SELECT rec FROM {}", table));
  if (!st) return std::unexpected(sql::to_error(st.error()));
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    auto r = decode_record<T>(st->blob(0));
    if (!r) return fail(Errc::invalid_state, fmt::format("table {}: {}", table, r.error().detail));
    out.push_back(std::move(*r));
  }
  if (rc != SQLITE_DONE) return std::unexpected(sql::to_error(sql::error(db, rc, fmt::format("read table {}", table))));
  return {};
}

}  // namespace

Result<LoadedState> Store::load() {
  sqlite3* db = reader_.get();
  LoadedState out;
  // One read transaction: the tables are read as of one commit.
  if (auto r = sql::exec(db, "BEGIN"); !r) return std::unexpected(sql::to_error(r.error()));
  auto body = [&]() -> Result<void> {
    EngineState& s = out.state;
    if (auto r = load_table(db, "templates", s.templates); !r) return r;
    if (auto r = load_table(db, "scopes", s.scopes); !r) return r;
    if (auto r = load_table(db, "processes", s.processes); !r) return r;
    if (auto r = load_table(db, "threads", s.threads); !r) return r;
    if (auto r = load_table(db, "holds", s.holds); !r) return r;
    if (auto r = load_table(db, "rate_limits", s.rate_limits); !r) return r;
    if (auto r = load_table(db, "rate_windows", s.rate_windows); !r) return r;
    std::vector<CountersRecord> counters;
    if (auto r = load_table(db, "counters", counters); !r) return r;
    if (!counters.empty()) s.counters = counters.front();

    auto times = sql::Stmt::prepare(db, "SELECT process, start_time FROM start_times");
    if (!times) return std::unexpected(sql::to_error(times.error()));
    int rc;
    while ((rc = times->step()) == SQLITE_ROW)
      out.start_times.emplace_back(std::string(times->text(0)), static_cast<uint64_t>(times->int64(1)));
    if (rc != SQLITE_DONE) return std::unexpected(sql::to_error(sql::error(db, rc, "read table start_times")));

    auto idem = sql::Stmt::prepare(
        db, "SELECT method, uid, idem_key, reply, recorded_at FROM idempotency WHERE recorded_at >= ?1");
    if (!idem) return std::unexpected(sql::to_error(idem.error()));
    int64_t cutoff = INT64_MIN;
    if (options_.retention_days > 0)
      cutoff = now().time_since_epoch().count() - static_cast<int64_t>(options_.retention_days) * kMicrosPerDay;
    idem->bind(1, cutoff);
    while ((rc = idem->step()) == SQLITE_ROW) {
      out.idempotency.push_back(IdempotencyEntry{std::string(idem->text(0)), static_cast<uint32_t>(idem->int64(1)),
                                                 std::string(idem->text(2)), std::string(idem->text(3)),
                                                 TimePoint(Duration(idem->int64(4)))});
    }
    if (rc != SQLITE_DONE) return std::unexpected(sql::to_error(sql::error(db, rc, "read table idempotency")));

    auto stats = ledger_->stats();
    if (!stats) return std::unexpected(stats.error());
    out.ledger = *stats;
    return {};
  }();
  sql::exec(db, "COMMIT");
  if (!body) {
    Error e = body.error();
    e.detail = fmt::format("{}: {}", path_, e.detail);
    return std::unexpected(std::move(e));
  }
  return out;
}

Result<LedgerStats> Store::Ledger::stats() {
  auto st = sql::Stmt::prepare(db_,
                               "SELECT (SELECT count(*) FROM ledger), (SELECT count(*) FROM ledger_daily), "
                               "(SELECT min(recorded_at) FROM ledger), (SELECT max(recorded_at) FROM ledger)");
  if (!st) return std::unexpected(sql::to_error(st.error()));
  sql::ResetOnExit reset(*st);
  int rc = st->step();
  if (rc != SQLITE_ROW) return std::unexpected(sql::to_error(sql::error(db_, rc, "ledger stats")));
  LedgerStats s;
  s.records = static_cast<uint64_t>(st->int64(0));
  s.daily_rows = static_cast<uint64_t>(st->int64(1));
  if (sqlite3_column_type(st->get(), 2) != SQLITE_NULL) {
    s.oldest = TimePoint(Duration(st->int64(2)));
    s.newest = TimePoint(Duration(st->int64(3)));
  }
  return s;
}

}  // namespace budgetd::daemon
