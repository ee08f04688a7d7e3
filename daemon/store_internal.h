// The store's parts, shared by its files: schema (store_schema.cc), the writer thread's
// transaction (store_writer.cc), recovery reads (store_load.cc) and the ledger's read side
// (store_ledger.cc). Not for use outside daemon/store*.cc.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "daemon/store.h"
#include "daemon/store_sqlite.h"

namespace budgetd::daemon {

inline constexpr int kStoreSchemaVersion = 2;
inline constexpr int32_t kStoreApplicationId = 0x62756467;  // "budg"
inline constexpr int64_t kMicrosPerDay = 86'400'000'000;

// Opens a connection. `read_only` connections refuse writes (query_only) as well.
std::expected<sql::Db, StoreError> open_connection(const std::string& path, bool memory, bool read_only);
// Creates the schema in a new file, or checks an existing one: application id, schema
// version, journal mode WAL (file only), and, when `verify`, quick_check.
std::expected<void, StoreError> prepare_schema(sqlite3* db, const std::string& path, bool memory, bool verify);

// The day (00:00 UTC, µs since the epoch) holding `t`.
inline int64_t day_start(int64_t t_usec) {
  int64_t d = t_usec / kMicrosPerDay;
  if (t_usec % kMicrosPerDay < 0) --d;
  return d * kMicrosPerDay;
}

// The ledger columns that hold labels; every other label goes to the details blob.
inline constexpr std::string_view kColumnLabels[] = {"agent", "model"};

class Store::Writer {
 public:
  // `memory`: the database is a memdb (its VFS size cap is guarded, see apply()).
  // `max_records`: the ledger bound in memory (0 = none).
  static std::expected<std::unique_ptr<Writer>, StoreError> create(sql::Db db, bool memory, uint64_t max_records);

  struct Fold {
    int64_t ledger_before;       // fold ledger records recorded before this (µs)
    int64_t idempotency_before;  // delete idempotency entries recorded before this
  };
  struct Applied {
    uint64_t rows = 0, ledger_records = 0, folded = 0;
  };
  // One transaction: every write in order, then the fold, then (in memory) the ledger
  // bound. On error nothing is applied and the connection is back in autocommit.
  std::expected<Applied, StoreError> apply(const std::vector<StoreWrite>& batch, std::optional<Fold> fold);
  // The page cap from the next batch on (0 = none but the memdb's own).
  std::expected<void, StoreError> set_page_limit(uint64_t pages);

 private:
  Writer(sql::Db db, bool memory, uint64_t max_records)
      : db_(std::move(db)), memory_(memory), max_records_(max_records) {}
  std::expected<void, StoreError> prepare();
  std::expected<void, StoreError> write(const StoreWrite& w, Applied& applied);
  // Ledger rows go in kLedgerRowsPerInsert at a time (one statement execution for all);
  // append() stages a record, flush_ledger() writes what is staged.
  std::expected<void, StoreError> append(const LedgerRecord& r);
  std::expected<void, StoreError> flush_ledger();
  // Folds the ledger rows `select` yields into ledger_daily and deletes them with `del`
  // (both take `arg` as ?1, `arg2` as ?2, and match the same rows); returns how many went.
  std::expected<uint64_t, StoreError> fold_ledger(sql::Stmt& select, sql::Stmt& del, int64_t arg,
                                                  std::optional<int64_t> arg2 = std::nullopt);
  std::expected<uint64_t, StoreError> fold(const Fold& f);
  std::expected<uint64_t, StoreError> trim_to_bound(uint64_t rows);
  std::expected<void, StoreError> guard_memdb_size();
  std::expected<void, StoreError> run(sql::Stmt& s, std::string_view what);
  std::expected<void, StoreError> run_keep_bindings(sql::Stmt& s, std::string_view what);
  void rollback();

  sql::Db db_;
  bool memory_;
  uint64_t max_records_;
  uint64_t ledger_rows_ = 0;   // rows in the ledger table as of the last commit
  uint64_t page_limit_ = 0;    // the caller's cap, 0 = none
  int64_t page_size_ = 4096;
  uint64_t applied_cap_ = 0;   // the max_page_count last set (memory)
  sql::Stmt begin_, commit_, rollback_;
  sql::Stmt fold_by_time_, fold_by_key_, fold_get_, fold_put_, del_by_time_, del_by_key_, nth_oldest_, del_idem_;
  sql::Stmt put_process_, del_process_, put_scope_, put_template_, put_thread_, del_thread_;
  sql::Stmt put_hold_, del_hold_, put_rate_limit_, del_rate_limit_, put_rate_window_, del_rate_window_;
  sql::Stmt put_counters_, put_start_time_, del_start_time_, put_idempotency_;
  static constexpr int kLedgerRowsPerInsert = 16;
  static constexpr int kLedgerColumns = 12;
  sql::Stmt put_ledger_many_, put_ledger_one_, put_ledger_meta_;
  struct Staged {
    const LedgerRecord* record = nullptr;
    std::string_view columns[std::size(kColumnLabels)];  // the label columns' values
    std::string resources, amounts, details;  // reused: capacity stays
  };
  Staged staged_[kLedgerRowsPerInsert];
  int n_staged_ = 0;
  int64_t next_seq_ = 1;  // the next ledger row's seq (ledger_meta as of the last commit)
  std::string blob_;      // reused per state row
};

class Store::Ledger final : public LedgerReader {
 public:
  explicit Ledger(sqlite3* db) : db_(db) {}
  Result<UsageSummary> summary(const SummaryQuery& q) override;
  Result<RecordPage> records(const RecordFilter& f) override;
  Result<LedgerStats> stats();

 private:
  sqlite3* db_;  // the store's read-only connection
};

}  // namespace budgetd::daemon
