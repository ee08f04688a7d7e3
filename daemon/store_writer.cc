// The writer thread's side: one transaction per batch with prepared statements, blobs
// encoded here (not on the loop), and the retention fold of old ledger records into
// per-day aggregates.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "daemon/store_internal.h"
#include "lib/state_codec.h"

namespace budgetd::daemon {

namespace {

int64_t usec(TimePoint t) { return t.time_since_epoch().count(); }

}  // namespace

std::expected<std::unique_ptr<Store::Writer>, StoreError> Store::Writer::create(sql::Db db, bool memory,
                                                                                uint64_t max_records) {
  std::unique_ptr<Writer> w(new Writer(std::move(db), memory, max_records));
  if (auto r = w->prepare(); !r) return std::unexpected(r.error());
  // The row count only matters for the memory bound (a memdb starts empty); a file's
  // ledger is not counted here, which would read all of it.
  auto st = sql::Stmt::prepare(w->db_.get(),
                               max_records ? "SELECT (SELECT count(*) FROM ledger), (SELECT page_size FROM pragma_page_size), "
                                             "(SELECT next_seq FROM ledger_meta)"
                                           : "SELECT 0, (SELECT page_size FROM pragma_page_size), "
                                             "(SELECT next_seq FROM ledger_meta)");
  if (!st) return std::unexpected(st.error());
  if (int rc = st->step(); rc != SQLITE_ROW) return std::unexpected(sql::error(w->db_.get(), rc, "count the ledger"));
  w->ledger_rows_ = static_cast<uint64_t>(st->int64(0));
  w->page_size_ = st->int64(1) > 0 ? st->int64(1) : 4096;
  w->next_seq_ = sqlite3_column_type(st->get(), 2) == SQLITE_NULL ? 1 : st->int64(2);
  return w;
}

std::expected<void, StoreError> Store::Writer::prepare() {
  struct Def {
    sql::Stmt* stmt;
    std::string_view sql;
  };
  const Def defs[] = {
      {&begin_, "BEGIN IMMEDIATE"},
      {&commit_, "COMMIT"},
      {&rollback_, "ROLLBACK"},
      {&put_process_, "INSERT OR REPLACE INTO processes (id, rec) VALUES (?1, ?2)"},
      {&del_process_, "DELETE FROM processes WHERE id = ?1"},
      {&put_scope_, "INSERT OR REPLACE INTO scopes (path, rec) VALUES (?1, ?2)"},
      {&put_template_, "INSERT OR REPLACE INTO templates (name, rec) VALUES (?1, ?2)"},
      {&put_thread_, "INSERT OR REPLACE INTO threads (id, rec) VALUES (?1, ?2)"},
      {&del_thread_, "DELETE FROM threads WHERE id = ?1"},
      {&put_hold_, "INSERT OR REPLACE INTO holds (id, rec) VALUES (?1, ?2)"},
      {&del_hold_, "DELETE FROM holds WHERE id = ?1"},
      {&put_rate_limit_, "INSERT OR REPLACE INTO rate_limits (endpoint, name, rec) VALUES (?1, ?2, ?3)"},
      {&del_rate_limit_, "DELETE FROM rate_limits WHERE endpoint = ?1 AND name = ?2"},
      {&put_rate_window_, "INSERT OR REPLACE INTO rate_windows (user, endpoint, rec) VALUES (?1, ?2, ?3)"},
      {&del_rate_window_, "DELETE FROM rate_windows WHERE user = ?1 AND endpoint = ?2"},
      {&put_counters_, "INSERT OR REPLACE INTO counters (id, rec) VALUES (0, ?1)"},
      {&put_start_time_, "INSERT OR REPLACE INTO start_times (process, start_time) VALUES (?1, ?2)"},
      {&del_start_time_, "DELETE FROM start_times WHERE process = ?1"},
      {&put_idempotency_,
       "INSERT OR REPLACE INTO idempotency (method, uid, idem_key, reply, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)"},
      {&put_ledger_meta_, "INSERT OR REPLACE INTO ledger_meta (id, next_seq) VALUES (0, ?1)"},
  };
  auto insert_rows = [](int rows) {
    std::string sql =
        "INSERT OR FAIL INTO ledger (recorded_at, seq, kind, process, thread, scope, agent, model, action, resources, "
        "amounts, details) VALUES ";
    for (int r = 0; r < rows; ++r) {
      sql += r ? ",(" : "(";
      for (int c = 0; c < kLedgerColumns; ++c) sql += fmt::format("{}?{}", c ? "," : "", r * kLedgerColumns + c + 1);
      sql += ")";
    }
    return sql;
  };
  for (auto [stmt, rows] : {std::pair{&put_ledger_many_, kLedgerRowsPerInsert}, std::pair{&put_ledger_one_, 1}}) {
    auto st = sql::Stmt::prepare(db_.get(), insert_rows(rows));
    if (!st) return std::unexpected(st.error());
    *stmt = std::move(*st);
  }
  const Def fold_defs[] = {
      {&fold_by_time_, "SELECT recorded_at, kind, action, scope, agent, model, thread, process, amounts "
                       "FROM ledger WHERE recorded_at < ?1"},
      {&fold_by_key_, "SELECT recorded_at, kind, action, scope, agent, model, thread, process, amounts "
                      "FROM ledger WHERE (recorded_at, seq) <= (?1, ?2)"},
      {&fold_get_, "SELECT quantity, cost, records FROM ledger_daily WHERE day = ?1 AND scope = ?2 AND "
                   "agent = ?3 AND model = ?4 AND thread = ?5 AND process = ?6 AND resource = ?7"},
      {&fold_put_, "INSERT OR REPLACE INTO ledger_daily (day, scope, agent, model, thread, process, "
                   "resource, quantity, cost, records) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"},
      {&del_by_time_, "DELETE FROM ledger WHERE recorded_at < ?1"},
      {&del_by_key_, "DELETE FROM ledger WHERE (recorded_at, seq) <= (?1, ?2)"},
      {&nth_oldest_, "SELECT recorded_at, seq FROM ledger ORDER BY recorded_at, seq LIMIT 1 OFFSET ?1"},
      {&del_idem_, "DELETE FROM idempotency WHERE recorded_at < ?1"},
  };
  for (const auto& d : fold_defs) {
    auto st = sql::Stmt::prepare(db_.get(), d.sql);
    if (!st) return std::unexpected(st.error());
    *d.stmt = std::move(*st);
  }
  for (const auto& d : defs) {
    auto st = sql::Stmt::prepare(db_.get(), d.sql);
    if (!st) return std::unexpected(st.error());
    *d.stmt = std::move(*st);
  }
  return {};
}

std::expected<void, StoreError> Store::Writer::run(sql::Stmt& s, std::string_view what) {
  int rc = s.step();
  s.reset();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return std::unexpected(sql::error(db_.get(), rc, what));
  return {};
}

// For statements whose every parameter is bound before each step: no clear_bindings.
std::expected<void, StoreError> Store::Writer::run_keep_bindings(sql::Stmt& s, std::string_view what) {
  int rc = s.step();
  sqlite3_reset(s.get());
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return std::unexpected(sql::error(db_.get(), rc, what));
  return {};
}

std::expected<void, StoreError> Store::Writer::set_page_limit(uint64_t pages) {
  page_limit_ = pages;
  if (memory_) return guard_memdb_size();
  // max_page_count cannot go below the current size; 0 means "no cap" to callers.
  uint64_t n = pages == 0 ? 0xfffffffeULL : pages;
  return sql::exec(db_.get(), fmt::format("PRAGMA max_page_count = {}", n));
}

// The memdb VFS refuses a write past its size cap (1 GiB unless raised) with SQLITE_FULL.
// When that write is a cache spill in the middle of a statement, SQLite 3.40's rollback
// of the in-memory journal leaves the database damaged ("database disk image is
// malformed" from then on, in every later batch, on both connections). So the pager must
// never try: max_page_count, which the B-tree checks before it allocates a page (a clean
// statement error that rolls back whole), stays at or below the VFS cap. Checked before
// every batch since the cap belongs to the shared memdb, not to this connection.
std::expected<void, StoreError> Store::Writer::guard_memdb_size() {
  sqlite3_int64 vfs_limit = -1;  // negative: query
  if (int rc = sqlite3_file_control(db_.get(), "main", SQLITE_FCNTL_SIZE_LIMIT, &vfs_limit); rc != SQLITE_OK)
    return std::unexpected(sql::error(db_.get(), rc, "read the memory database's size limit"));
  uint64_t cap = static_cast<uint64_t>(vfs_limit / page_size_);
  if (cap > 0xfffffffeULL) cap = 0xfffffffeULL;
  if (page_limit_ != 0) cap = std::min(cap, page_limit_);
  if (cap == applied_cap_) return {};
  if (auto r = sql::exec(db_.get(), fmt::format("PRAGMA max_page_count = {}", cap)); !r) return r;
  applied_cap_ = cap;
  return {};
}

void Store::Writer::rollback() {
  // A failed statement or COMMIT (SQLITE_FULL, SQLITE_IOERR) may or may not have rolled
  // the transaction back already; a ROLLBACK that fails is retried before the next BEGIN.
  if (!sqlite3_get_autocommit(db_.get())) {
    rollback_.step();
    rollback_.reset();
  }
}

std::expected<Store::Writer::Applied, StoreError> Store::Writer::apply(const std::vector<StoreWrite>& batch,
                                                                       std::optional<Fold> fold) {
  Applied applied;
  rollback();  // never continue a transaction a failure left open
  if (memory_) {
    if (auto r = guard_memdb_size(); !r) return std::unexpected(r.error());
  }
  if (auto r = run(begin_, "begin a batch"); !r) return std::unexpected(r.error());
  uint64_t rows = ledger_rows_;
  int64_t first_seq = next_seq_;
  n_staged_ = 0;
  auto body = [&]() -> std::expected<void, StoreError> {
    for (const auto& w : batch) {
      if (auto r = write(w, applied); !r) return r;
    }
    if (auto r = flush_ledger(); !r) return r;
    if (next_seq_ != first_seq) {
      put_ledger_meta_.bind(1, next_seq_);
      if (auto r = run(put_ledger_meta_, "write the ledger's next seq"); !r) return r;
    }
    rows += applied.ledger_records;
    if (fold) {
      auto folded = this->fold(*fold);
      if (!folded) return std::unexpected(folded.error());
      applied.folded += *folded;
      rows -= std::min(rows, *folded);
    }
    if (max_records_ != 0 && rows > max_records_) {
      auto trimmed = trim_to_bound(rows);
      if (!trimmed) return std::unexpected(trimmed.error());
      applied.folded += *trimmed;
      rows -= std::min(rows, *trimmed);
    }
    return run(commit_, "commit a batch");
  }();
  n_staged_ = 0;
  if (!body) {
    rollback();
    next_seq_ = first_seq;
    return std::unexpected(body.error());
  }
  ledger_rows_ = rows;
  return applied;
}

std::expected<void, StoreError> Store::Writer::write(const StoreWrite& w, Applied& applied) {
  const EngineChanges& c = w.changes;
  auto put = [&](sql::Stmt& s, std::string_view key, const auto& record) -> std::expected<void, StoreError> {
    blob_.clear();
    encode_record(record, blob_);
    s.bind(1, key);
    s.bind_blob(2, blob_);
    ++applied.rows;
    return run(s, "write a state row");
  };
  auto del = [&](sql::Stmt& s, std::string_view key) {
    s.bind(1, key);
    ++applied.rows;
    return run(s, "delete a state row");
  };
  for (const auto& r : c.templates)
    if (auto e = put(put_template_, r.name, r); !e) return e;
  for (const auto& r : c.scopes)
    if (auto e = put(put_scope_, r.path, r); !e) return e;
  for (const auto& r : c.processes)
    if (auto e = put(put_process_, r.id, r); !e) return e;
  for (const auto& id : c.released_processes)
    if (auto e = del(del_process_, id); !e) return e;
  for (const auto& r : c.threads)
    if (auto e = put(put_thread_, r.id, r); !e) return e;
  for (const auto& id : c.removed_threads)
    if (auto e = del(del_thread_, id); !e) return e;
  for (const auto& r : c.holds) {
    blob_.clear();
    encode_record(r, blob_);
    put_hold_.bind(1, static_cast<int64_t>(r.id));
    put_hold_.bind_blob(2, blob_);
    ++applied.rows;
    if (auto e = run(put_hold_, "write a hold"); !e) return e;
  }
  for (uint64_t id : c.removed_holds) {
    del_hold_.bind(1, static_cast<int64_t>(id));
    ++applied.rows;
    if (auto e = run(del_hold_, "delete a hold"); !e) return e;
  }
  for (const auto& r : c.rate_limits) {
    blob_.clear();
    encode_record(r, blob_);
    put_rate_limit_.bind(1, r.endpoint ? 1 : 0);
    put_rate_limit_.bind(2, r.name);
    put_rate_limit_.bind_blob(3, blob_);
    ++applied.rows;
    if (auto e = run(put_rate_limit_, "write a rate limit"); !e) return e;
  }
  for (const auto& r : c.removed_rate_limits) {
    del_rate_limit_.bind(1, r.endpoint ? 1 : 0);
    del_rate_limit_.bind(2, r.name);
    ++applied.rows;
    if (auto e = run(del_rate_limit_, "delete a rate limit"); !e) return e;
  }
  for (const auto& r : c.rate_windows) {
    blob_.clear();
    encode_record(r, blob_);
    put_rate_window_.bind(1, r.user);
    put_rate_window_.bind(2, r.endpoint);
    put_rate_window_.bind_blob(3, blob_);
    ++applied.rows;
    if (auto e = run(put_rate_window_, "write a rate window"); !e) return e;
  }
  for (const auto& [user, endpoint] : c.removed_rate_windows) {
    del_rate_window_.bind(1, user);
    del_rate_window_.bind(2, endpoint);
    ++applied.rows;
    if (auto e = run(del_rate_window_, "delete a rate window"); !e) return e;
  }
  if (c.counters) {
    blob_.clear();
    encode_record(*c.counters, blob_);
    put_counters_.bind_blob(1, blob_);
    ++applied.rows;
    if (auto e = run(put_counters_, "write the counters"); !e) return e;
  }
  for (const auto& [process, start] : w.start_times) {
    put_start_time_.bind(1, process);
    put_start_time_.bind(2, static_cast<int64_t>(start));
    ++applied.rows;
    if (auto e = run(put_start_time_, "write a start time"); !e) return e;
  }
  for (const auto& process : w.removed_start_times)
    if (auto e = del(del_start_time_, process); !e) return e;
  for (const auto& i : w.idempotency) {
    put_idempotency_.bind(1, i.method);
    put_idempotency_.bind(2, static_cast<int64_t>(i.uid));
    put_idempotency_.bind(3, i.key);
    put_idempotency_.bind(4, i.reply);
    put_idempotency_.bind(5, usec(i.recorded_at));
    ++applied.rows;
    if (auto e = run(put_idempotency_, "write an idempotency entry"); !e) return e;
  }
  for (const auto& r : w.ledger) {
    if (auto e = append(r); !e) return e;
    ++applied.rows;
    ++applied.ledger_records;
  }
  return {};
}

std::expected<void, StoreError> Store::Writer::append(const LedgerRecord& r) {
  Staged& st = staged_[n_staged_];
  st.record = &r;
  for (auto& c : st.columns) c = {};
  for (const auto& [k, v] : r.labels) {
    for (std::size_t i = 0; i < std::size(kColumnLabels); ++i)
      if (k == kColumnLabels[i]) st.columns[i] = v;
  }
  st.resources.clear();
  for (const auto& i : r.items) {
    if (st.resources.empty()) st.resources.push_back(',');
    st.resources.append(i.resource);
    st.resources.push_back(',');
  }
  st.amounts.clear();
  encode_ledger_amounts(r.total_cost, r.items, st.amounts);
  st.details.clear();
  encode_ledger_details(r, kColumnLabels, st.details);
  if (++n_staged_ == kLedgerRowsPerInsert) return flush_ledger();
  return {};
}

std::expected<void, StoreError> Store::Writer::flush_ledger() {
  auto bind_row = [&](sql::Stmt& s, int row, Staged& st) {
    const LedgerRecord& r = *st.record;
    int base = row * kLedgerColumns;
    s.bind(base + 1, usec(r.recorded_at));
    s.bind(base + 2, next_seq_++);
    s.bind(base + 3, static_cast<int64_t>(r.kind));
    s.bind(base + 4, r.process);
    s.bind(base + 5, r.thread);
    s.bind(base + 6, r.scope);
    s.bind(base + 7, st.columns[0]);
    s.bind(base + 8, st.columns[1]);
    s.bind(base + 9, r.action);
    s.bind(base + 10, st.resources);
    s.bind_blob(base + 11, st.amounts);
    s.bind_blob(base + 12, st.details);
  };
  if (n_staged_ == kLedgerRowsPerInsert) {
    for (int i = 0; i < n_staged_; ++i) bind_row(put_ledger_many_, i, staged_[i]);
    n_staged_ = 0;
    return run_keep_bindings(put_ledger_many_, "append ledger records");
  }
  for (int i = 0; i < n_staged_; ++i) {
    bind_row(put_ledger_one_, 0, staged_[i]);
    if (auto e = run_keep_bindings(put_ledger_one_, "append a ledger record"); !e) {
      n_staged_ = 0;
      return e;
    }
  }
  n_staged_ = 0;
  return {};
}

// Folds ledger records into ledger_daily, then deletes them. A charge adds its items to
// (day, scope, agent, model, thread, process, resource) rows, and its record count and
// total cost to the same key with resource "" (so summaries grouped by anything but
// resource count records, not items). Records that charge nothing just go. `select` and
// `del` take the same single parameter and match the same rows.
std::expected<uint64_t, StoreError> Store::Writer::fold_ledger(sql::Stmt& select, sql::Stmt& del, int64_t arg,
                                                               std::optional<int64_t> arg2) {
  using Key = std::tuple<int64_t, std::string, std::string, std::string, std::string, std::string, std::string>;
  struct Sum {
    Decimal quantity, cost;
    uint64_t records = 0;
  };
  std::map<Key, Sum> sums;
  uint64_t folded = 0;
  {
    sql::ResetOnExit reset(select);
    select.bind(1, arg);
    if (arg2) select.bind(2, *arg2);
    int rc;
    while ((rc = select.step()) == SQLITE_ROW) {
      ++folded;
      auto kind = static_cast<LedgerKind>(select.int64(1));
      if (!ledger_record_charges(kind, select.text(2))) continue;
      Key base{day_start(select.int64(0)), std::string(select.text(3)), std::string(select.text(4)),
               std::string(select.text(5)), std::string(select.text(6)), std::string(select.text(7)), std::string()};
      auto amounts = decode_ledger_amounts(select.blob(8));
      if (!amounts) return std::unexpected(StoreError{StoreErrc::corrupt, 0, amounts.error().detail});
      Sum& whole = sums[base];
      whole.cost = whole.cost.saturating_add(amounts->total_cost);
      ++whole.records;
      for (const auto& item : amounts->items) {
        Key k = base;
        std::get<6>(k) = item.resource;
        Sum& sum = sums[k];
        sum.quantity = sum.quantity.saturating_add(item.quantity);
        sum.cost = sum.cost.saturating_add(item.total_cost);
        ++sum.records;
      }
    }
    if (rc != SQLITE_DONE) return std::unexpected(sql::error(db_.get(), rc, "read ledger records to fold"));
  }
  auto bind_key = [](sql::Stmt& st, const Key& k) {
    st.bind(1, std::get<0>(k));
    st.bind(2, std::get<1>(k));
    st.bind(3, std::get<2>(k));
    st.bind(4, std::get<3>(k));
    st.bind(5, std::get<4>(k));
    st.bind(6, std::get<5>(k));
    st.bind(7, std::get<6>(k));
  };
  for (auto& [k, sum] : sums) {
    {
      sql::ResetOnExit reset(fold_get_);
      bind_key(fold_get_, k);
      int rc = fold_get_.step();
      if (rc == SQLITE_ROW) {  // a day folded in parts (an earlier pass, a partial day)
        auto q = Decimal::parse(fold_get_.text(0), true);
        auto c = Decimal::parse(fold_get_.text(1), true);
        if (!q || !c) return std::unexpected(StoreError{StoreErrc::corrupt, 0, "ledger_daily amount does not parse"});
        sum.quantity = sum.quantity.saturating_add(*q);
        sum.cost = sum.cost.saturating_add(*c);
        sum.records += static_cast<uint64_t>(fold_get_.int64(2));
      } else if (rc != SQLITE_DONE) {
        return std::unexpected(sql::error(db_.get(), rc, "read a daily aggregate"));
      }
    }
    std::string q = sum.quantity.to_string(), c = sum.cost.to_string();
    bind_key(fold_put_, k);
    fold_put_.bind(8, q);
    fold_put_.bind(9, c);
    fold_put_.bind(10, static_cast<int64_t>(sum.records));
    if (auto e = run(fold_put_, "write a daily aggregate"); !e) return std::unexpected(e.error());
  }
  del.bind(1, arg);
  if (arg2) del.bind(2, *arg2);
  if (auto e = run(del, "delete folded ledger records"); !e) return std::unexpected(e.error());
  return folded;
}

// Retention: every ledger record recorded before f.ledger_before, and the idempotency
// entries past their window.
std::expected<uint64_t, StoreError> Store::Writer::fold(const Fold& f) {
  auto folded = fold_ledger(fold_by_time_, del_by_time_, f.ledger_before);
  if (!folded) return folded;
  del_idem_.bind(1, f.idempotency_before);
  if (auto e = run(del_idem_, "delete expired idempotency entries"); !e) return std::unexpected(e.error());
  return folded;
}

// The memory bound: the oldest records (by recorded_at, then seq) beyond max_records_ fold
// like retention's, so Summary totals keep counting them.
std::expected<uint64_t, StoreError> Store::Writer::trim_to_bound(uint64_t rows) {
  uint64_t excess = rows - max_records_;
  int64_t last_time, last_seq;
  {
    sql::ResetOnExit reset(nth_oldest_);
    nth_oldest_.bind(1, static_cast<int64_t>(excess - 1));
    int rc = nth_oldest_.step();
    if (rc == SQLITE_DONE) return 0;  // fewer rows than counted: nothing to trim
    if (rc != SQLITE_ROW) return std::unexpected(sql::error(db_.get(), rc, "find the oldest ledger records"));
    last_time = nth_oldest_.int64(0);
    last_seq = nth_oldest_.int64(1);
  }
  return fold_ledger(fold_by_key_, del_by_key_, last_time, last_seq);
}

}  // namespace budgetd::daemon
