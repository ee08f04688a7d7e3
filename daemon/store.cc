// The store's life and its group commit: open, the writer thread, the open batch, and the
// outcomes carried back to the loop by uv_async.
#include "daemon/store.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "daemon/store_internal.h"

namespace budgetd::daemon {

namespace fs = std::filesystem;

std::string_view store_errc_name(StoreErrc c) {
  switch (c) {
    case StoreErrc::disk_full: return "disk_full";
    case StoreErrc::io_error: return "io_error";
    case StoreErrc::corrupt: return "corrupt";
    case StoreErrc::busy: return "busy";
    case StoreErrc::unwritable: return "unwritable";
    case StoreErrc::other: return "other";
  }
  return "other";
}

bool StoreWrite::empty() const {
  return changes.empty() && ledger.empty() && idempotency.empty() && start_times.empty() &&
         removed_start_times.empty();
}

bool ledger_record_charges(LedgerKind kind, std::string_view action) {
  // Consume outcomes are written as the wire's status names (DENIED, PENDING).
  auto is = [&](std::string_view name) {
    return action.size() == name.size() &&
           std::equal(action.begin(), action.end(), name.begin(), [](char a, char b) { return (a | 0x20) == b; });
  };
  switch (kind) {
    case LedgerKind::usage:
    case LedgerKind::consumption:
    case LedgerKind::commit:
    case LedgerKind::thread:
      return !is("denied") && !is("pending") && !is("expired") && !is("cancelled");
    case LedgerKind::reservation:
    case LedgerKind::audit:
      return false;
  }
  return false;
}

namespace {

Error open_error(StoreError e) { return Error{Errc::invalid_state, std::move(e.message)}; }

// The directory holding the database: created 0700 when missing (it holds every
// idempotency reply and the ledger); an existing one is used as the operator made it.
Result<void> make_state_dir(const std::string& dir) {
  if (dir.empty()) return fail(Errc::invalid_argument, "store: no state directory configured");
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (!ec && fs::exists(st)) {
    if (!fs::is_directory(st)) return fail(Errc::invalid_state, fmt::format("{}: not a directory", dir));
    return {};
  }
  fs::path p(dir);
  if (p.has_parent_path() && p != p.root_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) return fail(Errc::invalid_state, fmt::format("{}: cannot create the state directory: {}", dir, ec.message()));
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail(Errc::invalid_state, fmt::format("{}: cannot create the state directory: {}", dir, std::strerror(errno)));
  return {};
}

std::atomic<uint64_t> memory_store_counter{0};

}  // namespace

Store::Store(StoreOptions options) : options_(std::move(options)) {}

TimePoint Store::now() const {
  if (options_.now) return options_.now();
  return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
}

Result<std::unique_ptr<Store>> Store::open(StoreOptions options) {
  if (!options.loop) return fail(Errc::invalid_argument, "store: no event loop");
  // SQLite's memory statistics take a global mutex on every malloc and free (about 17
  // lock/unlock pairs per ledger record); nothing reads them. A process-wide setting that
  // sqlite3_config accepts only before SQLite initializes, which the first sqlite3_open
  // does: the daemon opens nothing before its store. Should something have opened a
  // database first, the call is refused (SQLITE_MISUSE) and the statistics stay on.
  static std::once_flag sqlite_configured;
  std::call_once(sqlite_configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  bool memory = options.durability == Durability::none;
  std::unique_ptr<Store> store(new Store(std::move(options)));
  if (memory) {
    // memdb names starting with '/' are shared by the connections of one process.
    store->path_ = fmt::format("/budgetd-{}-{}", ::getpid(), memory_store_counter.fetch_add(1));
  } else {
    if (auto r = make_state_dir(store->options_.dir); !r) return std::unexpected(r.error());
    store->path_ = (fs::path(store->options_.dir) / "budgetd.db").string();
  }
  auto writer_db = open_connection(store->path_, memory, false);
  if (!writer_db) return std::unexpected(open_error(writer_db.error()));
  if (auto r = prepare_schema(writer_db->get(), store->path_, memory, store->options_.verify_on_open); !r)
    return std::unexpected(open_error(r.error()));
  auto reader_db = open_connection(store->path_, memory, true);
  if (!reader_db) return std::unexpected(open_error(reader_db.error()));
  store->reader_ = std::unique_ptr<sqlite3, void (*)(sqlite3*)>(reader_db->release(),
                                                                 [](sqlite3* db) { sqlite3_close_v2(db); });
  store->ledger_ = std::make_unique<Ledger>(store->reader_.get());
  auto writer = Writer::create(std::move(*writer_db), memory, memory ? store->options_.memory_ledger_max_records : 0);
  if (!writer) return std::unexpected(open_error(writer.error()));
  store->writer_ = std::move(*writer);

  store->async_ = new uv_async_t;
  uv_async_init(store->options_.loop, store->async_, [](uv_async_t* h) {
    if (auto* self = static_cast<Store*>(h->data)) self->deliver();
  });
  store->async_->data = store.get();
  // The store alone does not keep the loop running (shutdown closes it explicitly).
  uv_unref(reinterpret_cast<uv_handle_t*>(store->async_));
  store->thread_ = std::thread([s = store.get()] { s->writer_main(); });
  return store;
}

Store::~Store() {
  if (thread_.joinable()) {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    wake_writer_.notify_one();
    thread_.join();
  }
  if (async_) {
    async_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(async_), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  }
  // Statements of the ledger reader go before its connection, and the read-only connection
  // before the writer's: the last connection to close checkpoints the WAL into the database
  // and removes it, which a read-only one cannot do. A clean stop leaves one file.
  ledger_.reset();
  reader_.reset();
  writer_.reset();
}

uint64_t Store::submit(StoreWrite&& write) {
  uint64_t seq;
  {
    std::lock_guard lk(mu_);
    open_batch_.push_back(std::move(write));
    seq = open_seq_;
    ++stats_.submits;
  }
  // Cheap when the writer is busy (no waiter); when it is idle this is the group commit's
  // "close the batch now".
  wake_writer_.notify_one();
  return seq;
}

uint64_t Store::open_seq() const {
  std::lock_guard lk(mu_);
  return open_seq_;
}

uint64_t Store::fold_now() {
  uint64_t seq;
  {
    std::lock_guard lk(mu_);
    fold_requested_ = true;
    seq = open_seq_;
  }
  wake_writer_.notify_one();
  return seq;
}

void Store::set_page_limit(uint64_t pages) {
  std::lock_guard lk(mu_);
  page_limit_ = pages;
}

StoreStats Store::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

LedgerReader& Store::ledger() { return *ledger_; }

void Store::flush() {
  {
    std::unique_lock lk(mu_);
    uint64_t target = open_batch_.empty() && !fold_requested_ ? open_seq_ - 1 : open_seq_;
    flushing_ = true;
    wake_writer_.notify_one();
    batch_resolved_.wait(lk, [&] { return resolved_seq_ >= target; });
    flushing_ = false;
  }
  deliver();
}

void Store::deliver() {
  std::vector<Outcome> outcomes;
  {
    std::lock_guard lk(mu_);
    outcomes.swap(outcomes_);
  }
  for (const auto& o : outcomes) {
    if (!o.error) durable_seq_ = o.seq;
    if (on_commit_) on_commit_(o.seq, o.error ? &*o.error : nullptr);
  }
}

void Store::writer_main() {
  using Steady = std::chrono::steady_clock;
  Steady::time_point last_start{};
  // The writes of failed batches, retried in front of the next one.
  std::vector<StoreWrite> carried;
  bool fold_carried = false;
  std::optional<TimePoint> last_fold;
  constexpr auto kFoldInterval = std::chrono::hours(1);

  for (;;) {
    std::vector<StoreWrite> batch;
    uint64_t seq;
    bool fold_requested;
    std::optional<uint64_t> page_limit;
    {
      std::unique_lock lk(mu_);
      for (;;) {
        bool has_work = !open_batch_.empty() || fold_requested_;
        if (has_work) {
          if (options_.durability != Durability::batch || stopping_ || flushing_) break;
          auto due = last_start + options_.batch_window;
          if (Steady::now() >= due) break;
          wake_writer_.wait_until(lk, due);
          continue;
        }
        if (stopping_) return;
        wake_writer_.wait(lk);
      }
      batch.swap(open_batch_);
      seq = open_seq_++;
      fold_requested = std::exchange(fold_requested_, false);
      page_limit = std::exchange(page_limit_, std::nullopt);
    }
    last_start = Steady::now();

    std::optional<StoreError> error;
    if (page_limit) {
      if (auto r = writer_->set_page_limit(*page_limit); !r) error = r.error();
    }
    if (!carried.empty()) {
      carried.insert(carried.end(), std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
      batch.swap(carried);
      carried.clear();
    }
    TimePoint wall = now();
    std::optional<Writer::Fold> fold;
    bool fold_due = !last_fold || wall - *last_fold >= kFoldInterval;
    if (options_.retention_days > 0 && (fold_requested || fold_carried || fold_due)) {
      int64_t window = static_cast<int64_t>(options_.retention_days) * kMicrosPerDay;
      int64_t t = wall.time_since_epoch().count();
      // Whole days fold, so a day's aggregate is complete once made.
      fold = Writer::Fold{day_start(t) - window, t - window};
    }
    Writer::Applied applied;
    auto started = Steady::now();
    if (!error) {
      auto r = writer_->apply(batch, fold);
      if (r) applied = *r;
      else error = r.error();
    }
    auto spent = std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - started);
    if (error) {
      carried = std::move(batch);
      fold_carried = fold.has_value();
    } else {
      fold_carried = false;
      if (fold) last_fold = wall;
    }
    {
      std::lock_guard lk(mu_);
      ++stats_.transactions;
      stats_.commit_usec_total += static_cast<uint64_t>(spent.count());
      if (error) {
        ++stats_.failed_batches;
      } else {
        stats_.rows_written += applied.rows;
        stats_.ledger_records_written += applied.ledger_records;
        stats_.records_folded += applied.folded;
      }
      resolved_seq_ = seq;
      outcomes_.push_back(Outcome{seq, std::move(error)});
    }
    batch_resolved_.notify_all();
    uv_async_send(async_);
  }
}

}  // namespace budgetd::daemon
