// The store: engine state, OS-pid start times, idempotency replies and the usage ledger in
// one SQLite database (WAL), written by group commit off the loop thread.
//
//   loop thread                                   writer thread (own connection)
//   submit(write) -> appended to the open batch   takes the whole open batch when idle,
//                    returns the batch's seq       encodes blobs, one transaction, fsync
//   on_commit(seq, error) <---- uv_async ------   reports the outcome
//   ledger().summary/records: a read-only connection on the loop thread (WAL readers do
//   not wait for the writer's commit).
//
// Group commit: while the writer commits batch N, everything submitted meanwhile goes
// into N+1, so under load one fsync covers many calls and the loop never waits on disk.
// In `batch` durability the writer also starts at most one commit per batch_window, so
// data is on disk within about batch_window + one commit. In `none` there is no file: the
// database lives in memory (SQLite's memdb VFS, shared by the store's two connections), so
// Usage reports work and nothing survives a restart; it holds at most
// memory_ledger_max_records ledger records (older ones fold into the daily aggregates), and
// the pager's page cap stays under the memdb's own size cap so that a full memdb is a clean
// SQLITE_FULL, never a damaged database (store_writer.cc, guard_memdb_size).
//
// Layout: each engine record is one BLOB row keyed by its id (lib/state_codec.h) in a
// WITHOUT ROWID table, upserted in place (no snapshots, no compaction). Ledger records are
// rows keyed by (recorded_at, seq) with their filterable fields as columns, inserted 16 to
// a statement; amounts are raw 128-bit decimals in a codec blob, summed in C++ with
// Decimal, never by SQL arithmetic. Records older than the retention window fold into
// per-day aggregates that summaries still count.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "lib/clock.h"
#include "lib/error.h"
#include "lib/ledger.h"
#include "lib/state.h"

struct sqlite3;

namespace budgetd::daemon {

enum class Durability : uint8_t {
  ack,    // a reply that needs durability waits for its batch's commit
  batch,  // replies at once; on disk within batch_window
  none,   // memory only
};

struct StoreOptions {
  std::string dir;  // holds budgetd.db; created 0700 when missing. Unused for `none`.
  Durability durability = Durability::ack;
  std::chrono::milliseconds batch_window{10};
  uint32_t retention_days = 90;  // 0 keeps every record and idempotency entry forever
  uv_loop_t* loop = nullptr;     // required: commit outcomes are delivered on it
  // Wall clock for retention (tests pass a fake); empty = the system clock.
  std::function<TimePoint()> now;
  // PRAGMA quick_check at open: reads the whole file (about 0.1 s per 100 MB) but refuses a
  // damaged database before anything is loaded.
  bool verify_on_open = true;
  // `none` only: the most ledger records kept in memory (0 = no bound). A batch that goes
  // past it folds its oldest records into the per-day aggregates (as retention does, so
  // Summary totals stay whole) and drops them, in the same transaction.
  uint64_t memory_ledger_max_records = 1'000'000;
};

// A reply remembered for an idempotency key (scoped by method and the caller's uid).
struct IdempotencyEntry {
  std::string method;
  uint32_t uid = 0;
  std::string key;
  std::string reply;  // the whole reply frame's JSON
  TimePoint recorded_at;
  friend bool operator==(const IdempotencyEntry&, const IdempotencyEntry&) = default;
};

// One batch's worth of writes from the loop; submit() moves it into the open batch.
// Writes are applied in submission order, so a later submission's record wins.
struct StoreWrite {
  EngineChanges changes;
  std::vector<LedgerRecord> ledger;
  std::vector<IdempotencyEntry> idempotency;
  // OS-pid processes: process id -> the process's start time from /proc/<pid>/stat (field
  // 22), so recovery can tell a live process from a reused pid.
  std::vector<std::pair<std::string, uint64_t>> start_times;
  std::vector<std::string> removed_start_times;
  bool empty() const;
};

struct LedgerStats {
  uint64_t records = 0;      // rows in the ledger (not yet folded)
  uint64_t daily_rows = 0;   // per-day aggregate rows of folded records
  std::optional<TimePoint> oldest, newest;  // recorded_at range of the rows
};

struct LoadedState {
  EngineState state;
  std::vector<std::pair<std::string, uint64_t>> start_times;  // process id -> start time
  std::vector<IdempotencyEntry> idempotency;  // those within the retention window
  LedgerStats ledger;
};

enum class StoreErrc : uint8_t {
  disk_full,  // SQLITE_FULL: the file system (or the page limit) is full
  io_error,   // SQLITE_IOERR: a read, write or fsync failed
  corrupt,    // SQLITE_CORRUPT / SQLITE_NOTADB, or a blob that does not decode
  busy,       // SQLITE_BUSY / SQLITE_LOCKED: another process holds the database
  unwritable, // SQLITE_READONLY / SQLITE_CANTOPEN / SQLITE_PERM
  other,
};
std::string_view store_errc_name(StoreErrc c);

struct StoreError {
  StoreErrc code = StoreErrc::other;
  int sqlite_code = 0;  // the extended result code, 0 when not from SQLite
  std::string message;  // names the file and the cause
};

// Counters for Admin.Stats and tests. `transactions` counts committed and failed batches.
struct StoreStats {
  uint64_t submits = 0;
  uint64_t transactions = 0;
  uint64_t failed_batches = 0;
  uint64_t rows_written = 0;
  uint64_t ledger_records_written = 0;
  uint64_t records_folded = 0;
  uint64_t commit_usec_total = 0;  // time inside transactions, fsync included
};

// Called on the loop thread once per batch, in seq order: error is nullptr when the batch
// committed. A failed batch's writes are not lost: they are retried in front of the next
// batch (its state rows are the engine's current state, its ledger records happened), so
// the database catches up once the cause (a full disk) is gone.
using CommitCallback = std::function<void(uint64_t seq, const StoreError* error)>;

class Store {
 public:
  // Creates the directory (0700) and budgetd.db, or opens and verifies an existing one
  // (application id, schema version, quick_check). A file that is not a budgetd database,
  // is damaged, has another schema version, or cannot be written is an error naming the
  // path and the cause; nothing is loaded from it. Starts the writer thread.
  static Result<std::unique_ptr<Store>> open(StoreOptions options);
  // Commits what is still queued (blocking), stops the writer, closes the async handle
  // (freed by the loop's next iteration). Pending callbacks are not called.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Everything stored, for recovery. Loop thread; call before the first submit.
  Result<LoadedState> load();

  // ---- Loop thread ----------------------------------------------------------------------
  // Appends to the open batch and returns its sequence number (increasing; the same number
  // for everything that lands in one batch).
  uint64_t submit(StoreWrite&& write);
  // The highest seq delivered to the callback as committed. Every write submitted in a
  // batch <= it is on disk: a failed batch's writes were retried in a later one.
  uint64_t durable_seq() const { return durable_seq_; }
  // The seq the next submit() will get (> durable_seq() when something is in flight).
  uint64_t open_seq() const;
  void set_commit_callback(CommitCallback cb) { on_commit_ = std::move(cb); }
  // Folds records past the retention window with the next batch (opening one when none is
  // queued) instead of waiting for the hourly pass; returns that batch's seq.
  uint64_t fold_now();
  // Caps the database at `pages` pages (PRAGMA max_page_count; 0 lifts the cap) from the
  // next batch on: tests use it to fill the "disk".
  void set_page_limit(uint64_t pages);
  // Blocks until everything submitted so far has been committed or has failed, then
  // delivers the outcomes. For shutdown and tests; the loop never waits otherwise.
  void flush();

  // The ledger's read side (read-only connection, loop thread).
  LedgerReader& ledger();
  StoreStats stats() const;
  Durability durability() const { return options_.durability; }
  // budgetd.db's path, or the memdb name for `none`.
  const std::string& path() const { return path_; }

  class Writer;  // store_writer.cc
  class Ledger;  // store_ledger.cc

 private:
  struct Pending;
  explicit Store(StoreOptions options);
  Result<void> start(sqlite3* writer_db);
  void writer_main();
  void deliver();
  TimePoint now() const;

  StoreOptions options_;
  std::string path_;
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<sqlite3, void (*)(sqlite3*)> reader_{nullptr, nullptr};

  // Shared between the loop and the writer thread.
  mutable std::mutex mu_;
  std::condition_variable wake_writer_;    // work queued, or stop
  std::condition_variable batch_resolved_; // flush() waits on it
  std::vector<StoreWrite> open_batch_;     // GUARDED_BY(mu_)
  uint64_t open_seq_ = 1;                  // GUARDED_BY(mu_)
  uint64_t resolved_seq_ = 0;              // GUARDED_BY(mu_): last batch the writer finished
  bool fold_requested_ = false;            // GUARDED_BY(mu_)
  std::optional<uint64_t> page_limit_;     // GUARDED_BY(mu_): to apply before the next batch
  bool stopping_ = false;                  // GUARDED_BY(mu_)
  bool flushing_ = false;                  // GUARDED_BY(mu_): skip the batch window
  struct Outcome {
    uint64_t seq;
    std::optional<StoreError> error;
  };
  std::vector<Outcome> outcomes_;  // GUARDED_BY(mu_): for the loop to deliver
  StoreStats stats_;               // GUARDED_BY(mu_)

  uv_async_t* async_ = nullptr;  // freed in its close callback
  uint64_t durable_seq_ = 0;     // loop thread
  CommitCallback on_commit_;     // loop thread
  std::thread thread_;
};

// Which ledger records are charges that summaries add up: usage, consumption, commit and
// thread records, except outcomes that charged nothing (denied, pending, expired,
// cancelled; in any case, as Consume writes DENIED/PENDING). Reservation records hold an estimate (its commit is the charge) and audit
// records change limits, not usage.
bool ledger_record_charges(LedgerKind kind, std::string_view action);

}  // namespace budgetd::daemon
