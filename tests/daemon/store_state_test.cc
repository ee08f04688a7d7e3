// daemon/store: engine state survives close and reopen; group commit coalesces; a bad
// file or directory stops the open with a message naming it; a full disk fails a batch
// without losing it; `none` keeps no file. No sleeps: the loop runs until a condition.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "daemon/store.h"
#include "tests/daemon/store_test_support.h"

namespace budgetd::daemon {
namespace {

namespace fs = std::filesystem;
using testing::at_usec;
using testing::dec;
using testing::sample_ledger;
using testing::sample_process;
using testing::sample_state;
using testing::TempDir;
using testing::TestLoop;

StoreOptions options_for(TestLoop& loop, const TempDir& dir, Durability d = Durability::ack) {
  StoreOptions o;
  o.dir = dir.path();
  o.durability = d;
  o.loop = loop.get();
  o.retention_days = 0;  // the sample ledger records are dated near the epoch
  return o;
}

std::unique_ptr<Store> open_ok(const StoreOptions& o) {
  auto s = Store::open(o);
  EXPECT_TRUE(s.has_value()) << (s ? "" : s.error().detail);
  return s ? std::move(*s) : nullptr;
}

// Submits and runs the loop until that batch is reported; returns the error, if any.
std::optional<StoreError> commit(TestLoop& loop, Store& store, StoreWrite w) {
  std::optional<StoreError> error;
  bool done = false;
  uint64_t seq = store.submit(std::move(w));
  store.set_commit_callback([&](uint64_t s, const StoreError* e) {
    if (s != seq) return;
    done = true;
    if (e) error = *e;
  });
  EXPECT_TRUE(loop.run_until([&] { return done; }));
  store.set_commit_callback(nullptr);
  return error;
}

StoreWrite full_write(const EngineState& s) {
  StoreWrite w;
  w.changes.templates = s.templates;
  w.changes.scopes = s.scopes;
  w.changes.processes = s.processes;
  w.changes.threads = s.threads;
  w.changes.holds = s.holds;
  w.changes.rate_limits = s.rate_limits;
  w.changes.rate_windows = s.rate_windows;
  w.changes.counters = s.counters;
  return w;
}

// Tables come back in key order; the sample's order is not.
template <class T, class K>
std::vector<T> sorted(std::vector<T> v, K key) {
  std::sort(v.begin(), v.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
  return v;
}

void expect_same_state(const EngineState& got, const EngineState& want) {
  auto by_id = [](const auto& r) { return r.id; };
  EXPECT_EQ(got.templates, want.templates);
  EXPECT_EQ(got.scopes, want.scopes);
  EXPECT_EQ(sorted(got.processes, by_id), sorted(want.processes, by_id));
  EXPECT_EQ(got.threads, want.threads);
  EXPECT_EQ(got.holds, want.holds);
  auto rl_key = [](const RateLimitRecord& r) { return std::pair(r.endpoint, r.name); };
  EXPECT_EQ(sorted(got.rate_limits, rl_key), sorted(want.rate_limits, rl_key));
  EXPECT_EQ(got.rate_windows, want.rate_windows);
  EXPECT_EQ(got.counters, want.counters);
}

TEST(StoreState, NewDatabaseLoadsEmpty) {
  TempDir dir;
  TestLoop loop;
  auto store = open_ok(options_for(loop, dir));
  ASSERT_TRUE(store);
  auto loaded = store->load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().detail;
  EXPECT_TRUE(loaded->state.processes.empty());
  EXPECT_EQ(loaded->state.counters, CountersRecord{});
  EXPECT_EQ(loaded->ledger.records, 0u);
  EXPECT_FALSE(loaded->ledger.oldest.has_value());
  struct stat st{};
  ASSERT_EQ(stat(dir.db().c_str(), &st), 0);
  struct stat d{};
  ASSERT_EQ(stat(dir.path().c_str(), &d), 0);
}

TEST(StoreState, CreatesTheStateDirectory0700) {
  TempDir parent;
  TestLoop loop;
  StoreOptions o;
  o.dir = parent.path() + "/a/state";
  o.loop = loop.get();
  auto store = open_ok(o);
  ASSERT_TRUE(store);
  struct stat st{};
  ASSERT_EQ(stat(o.dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(StoreState, EveryRecordTypeSurvivesReopen) {
  TempDir dir;
  TestLoop loop;
  EngineState want = sample_state();
  StoreWrite w = full_write(want);
  w.start_times = {{"4242", 123456789}};
  IdempotencyEntry idem{"io.budgetd.Agent.RecordUsage", 1000, "k1", R"({"parameters":{}})",
                        TimePoint(std::chrono::duration_cast<Duration>(std::chrono::system_clock::now().time_since_epoch()))};
  w.idempotency = {idem};
  {
    auto store = open_ok(options_for(loop, dir));
    ASSERT_TRUE(store);
    auto error = commit(loop, *store, std::move(w));
    ASSERT_FALSE(error) << error->message;
    EXPECT_EQ(store->durable_seq(), 1u);
  }
  auto store = open_ok(options_for(loop, dir));
  ASSERT_TRUE(store);
  auto loaded = store->load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().detail;
  expect_same_state(loaded->state, want);
  ASSERT_EQ(loaded->start_times.size(), 1u);
  EXPECT_EQ(loaded->start_times[0], (std::pair<std::string, uint64_t>{"4242", 123456789}));
  ASSERT_EQ(loaded->idempotency.size(), 1u);
  EXPECT_EQ(loaded->idempotency[0], idem);
}

TEST(StoreState, DeletesAndUpdatesSurviveReopen) {
  TempDir dir;
  TestLoop loop;
  EngineState s = sample_state();
  {
    auto store = open_ok(options_for(loop, dir));
    ASSERT_TRUE(store);
    StoreWrite w = full_write(s);
    w.start_times = {{"4242", 1}, {"4243", 2}};
    ASSERT_FALSE(commit(loop, *store, std::move(w)));

    StoreWrite del;
    del.changes.released_processes = {"4242"};
    del.changes.removed_threads = {"7f3a"};
    del.changes.removed_holds = {9};
    del.changes.removed_rate_limits = {s.rate_limits[0]};
    del.changes.removed_rate_windows = {{"alice", "/v1/chat"}};
    del.removed_start_times = {"4242"};
    ProcessRecord updated = s.processes[1];
    updated.usage.llm_calls = 99;
    del.changes.processes = {updated};
    del.changes.counters = CountersRecord{1, 2, 3, 4, 5, 6};
    ASSERT_FALSE(commit(loop, *store, std::move(del)));
  }
  auto store = open_ok(options_for(loop, dir));
  ASSERT_TRUE(store);
  auto loaded = store->load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().detail;
  ASSERT_EQ(loaded->state.processes.size(), 1u);
  EXPECT_EQ(loaded->state.processes[0].id, "env-123");
  EXPECT_EQ(loaded->state.processes[0].usage.llm_calls, 99u);
  EXPECT_TRUE(loaded->state.threads.empty());
  EXPECT_TRUE(loaded->state.holds.empty());
  ASSERT_EQ(loaded->state.rate_limits.size(), 1u);
  EXPECT_EQ(loaded->state.rate_limits[0].name, "alice");
  EXPECT_TRUE(loaded->state.rate_windows.empty());
  EXPECT_EQ(loaded->state.counters, (CountersRecord{1, 2, 3, 4, 5, 6}));
  ASSERT_EQ(loaded->start_times.size(), 1u);
  EXPECT_EQ(loaded->start_times[0].first, "4243");
}

TEST(StoreState, LaterSubmissionInOneBatchWins) {
  TempDir dir;
  TestLoop loop;
  {
    auto o = options_for(loop, dir, Durability::batch);
    o.batch_window = std::chrono::hours(1);  // everything after the first commit waits for flush()
    auto store = open_ok(o);
    ASSERT_TRUE(store);
    for (int i = 0; i < 5; ++i) {
      StoreWrite w;
      ProcessRecord p = sample_process("p");
      p.usage.llm_calls = static_cast<uint64_t>(i);
      w.changes.processes = {p};
      store->submit(std::move(w));
    }
    StoreWrite gone;
    gone.changes.released_processes = {"q"};
    StoreWrite q;
    q.changes.processes = {sample_process("q")};
    store->submit(std::move(q));
    store->submit(std::move(gone));
    store->flush();
  }
  auto store = open_ok(options_for(loop, dir));
  auto loaded = store->load();
  ASSERT_TRUE(loaded.has_value());
  ASSERT_EQ(loaded->state.processes.size(), 1u);
  EXPECT_EQ(loaded->state.processes[0].usage.llm_calls, 4u);
}

TEST(StoreState, GroupCommitCoalescesInBatchMode) {
  TempDir dir;
  TestLoop loop;
  auto o = options_for(loop, dir, Durability::batch);
  o.batch_window = std::chrono::hours(1);
  auto store = open_ok(o);
  ASSERT_TRUE(store);
  std::vector<uint64_t> seqs, delivered;
  store->set_commit_callback([&](uint64_t seq, const StoreError* e) {
    EXPECT_EQ(e, nullptr);
    delivered.push_back(seq);
  });
  constexpr int kSubmits = 1000;
  for (int i = 0; i < kSubmits; ++i) {
    StoreWrite w;
    w.ledger = {sample_ledger("r" + std::to_string(i), at_usec(i))};
    seqs.push_back(store->submit(std::move(w)));
  }
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  // The first submit may start a commit at once; the rest wait for the window, so flush()
  // finds them in one batch.
  store->flush();
  StoreStats st = store->stats();
  EXPECT_LE(st.transactions, 2u);
  EXPECT_EQ(st.submits, static_cast<uint64_t>(kSubmits));
  EXPECT_EQ(st.ledger_records_written, static_cast<uint64_t>(kSubmits));
  EXPECT_EQ(delivered.size(), st.transactions);
  EXPECT_TRUE(std::is_sorted(delivered.begin(), delivered.end()));
  EXPECT_EQ(store->durable_seq(), seqs.back());
}

TEST(StoreState, GroupCommitInAckModeOneCallbackPerBatch) {
  TempDir dir;
  TestLoop loop;
  auto store = open_ok(options_for(loop, dir));
  ASSERT_TRUE(store);
  std::vector<uint64_t> delivered;
  uint64_t last_durable = 0;
  store->set_commit_callback([&](uint64_t seq, const StoreError* e) {
    EXPECT_EQ(e, nullptr);
    EXPECT_GE(store->durable_seq(), last_durable);
    last_durable = store->durable_seq();
    delivered.push_back(seq);
  });
  constexpr int kSubmits = 2000;
  uint64_t last = 0;
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kSubmits; ++i) {
    StoreWrite w;
    w.ledger = {sample_ledger("r" + std::to_string(i), at_usec(i))};
    uint64_t seq = store->submit(std::move(w));
    EXPECT_GE(seq, last);
    last = seq;
    if (i % 100 == 99) loop.run_until([] { return true; });  // lets completions arrive meanwhile
  }
  ASSERT_TRUE(loop.run_until([&] { return store->durable_seq() >= last; }));
  auto spent = std::chrono::steady_clock::now() - started;
  StoreStats st = store->stats();
  EXPECT_EQ(delivered.size(), st.transactions);
  EXPECT_TRUE(std::is_sorted(delivered.begin(), delivered.end()));
  EXPECT_EQ(delivered.back(), last);
  EXPECT_LE(st.transactions, static_cast<uint64_t>(kSubmits));
  double secs = std::chrono::duration<double>(spent).count();
  std::printf("[ack] %d submits in %llu transactions, %.0f ledger rows/s, mean commit %.0f us\n", kSubmits,
              static_cast<unsigned long long>(st.transactions), kSubmits / secs,
              static_cast<double>(st.commit_usec_total) / static_cast<double>(st.transactions));
}

TEST(StoreState, GarbageFileIsRefusedWithItsPath) {
  TempDir dir;
  TestLoop loop;
  {
    std::ofstream f(dir.db(), std::ios::binary);
    for (int i = 0; i < 1000; ++i) f << "this is not a database, it is garbage ";
  }
  auto s = Store::open(options_for(loop, dir));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find(dir.db()), std::string::npos) << s.error().detail;
  EXPECT_NE(s.error().detail.find("not a database"), std::string::npos) << s.error().detail;
}

TEST(StoreState, DamagedPagesAreRefused) {
  TempDir dir;
  TestLoop loop;
  {
    auto store = open_ok(options_for(loop, dir));
    ASSERT_TRUE(store);
    StoreWrite w;
    for (int i = 0; i < 3000; ++i) w.changes.processes.push_back(sample_process("p" + std::to_string(i)));
    ASSERT_FALSE(commit(loop, *store, std::move(w)));
  }
  {
    // Overwrite the middle of the file (B-tree pages), leave the header intact.
    auto size = fs::file_size(dir.db());
    std::fstream f(dir.db(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(size / 2));
    std::string junk(16384, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto s = Store::open(options_for(loop, dir));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find(dir.db()), std::string::npos) << s.error().detail;
  std::printf("[damaged] %s\n", s.error().detail.c_str());
}

TEST(StoreState, WrongSchemaVersionIsRefused) {
  TempDir dir;
  TestLoop loop;
  { ASSERT_TRUE(open_ok(options_for(loop, dir))); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.db().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 7", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = Store::open(options_for(loop, dir));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find("schema version 7"), std::string::npos) << s.error().detail;
  EXPECT_NE(s.error().detail.find(dir.db()), std::string::npos);

  // A version 1 file (the rowid ledger with decimal text) is refused the same way.
  ASSERT_EQ(sqlite3_open(dir.db().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 1", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  s = Store::open(options_for(loop, dir));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find("schema version 1, this budgetd reads version 2"), std::string::npos)
      << s.error().detail;
}

TEST(StoreState, AnotherApplicationsDatabaseIsRefused) {
  TempDir dir;
  TestLoop loop;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.db().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE t (x)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = Store::open(options_for(loop, dir));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find("not a budgetd database"), std::string::npos) << s.error().detail;
}

TEST(StoreState, StateDirThatIsAFileIsRefused) {
  TempDir dir;
  TestLoop loop;
  std::string file = dir.path() + "/file";
  { std::ofstream f(file); }
  StoreOptions o;
  o.dir = file;
  o.loop = loop.get();
  auto s = Store::open(o);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find(file), std::string::npos) << s.error().detail;
  EXPECT_NE(s.error().detail.find("not a directory"), std::string::npos) << s.error().detail;

  o.dir = file + "/sub";
  s = Store::open(o);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find("cannot create the state directory"), std::string::npos) << s.error().detail;
}

// Root writes anywhere, so the unwritable cases run in a child that drops to nobody.
TEST(StoreState, UnwritableDirectoryAndFileAreRefused) {
  TempDir dir;
  {
    TestLoop loop;
    ASSERT_TRUE(open_ok(options_for(loop, dir)));  // the file exists, owned by us, 0644
  }
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);  // readable, not writable, by others
  std::string fresh = dir.path() + "/fresh";
  ASSERT_EQ(mkdir(fresh.c_str(), 0755), 0);

  uid_t nobody = getuid() == 0 ? 65534 : getuid();
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipefd[0]);
    if (getuid() == 0 && (setgid(65534) != 0 || setuid(nobody) != 0)) _exit(3);
    std::string report;
    uv_loop_t loop;
    uv_loop_init(&loop);
    StoreOptions o;
    o.loop = &loop;
    o.dir = dir.path();  // existing file, no write permission
    auto a = Store::open(o);
    report += a ? std::string("OPENED") : a.error().detail;
    report += "\n";
    o.dir = fresh;  // no file yet, directory not writable
    auto b = Store::open(o);
    report += b ? std::string("OPENED") : b.error().detail;
    (void)!write(pipefd[1], report.data(), report.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string report;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<std::size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto nl = report.find('\n');
  ASSERT_NE(nl, std::string::npos) << report;
  std::string existing = report.substr(0, nl), created = report.substr(nl + 1);
  std::printf("[unwritable] %s\n[unwritable] %s\n", existing.c_str(), created.c_str());
  EXPECT_NE(existing.find(dir.db()), std::string::npos) << existing;
  EXPECT_NE(existing.find("unwritable"), std::string::npos) << existing;
  EXPECT_NE(created.find(fresh + "/budgetd.db"), std::string::npos) << created;
  EXPECT_NE(created.find("unwritable"), std::string::npos) << created;
}

TEST(StoreState, DiskFullFailsTheBatchKeepsReadsAndRetriesItLater) {
  TempDir dir;
  TestLoop loop;
  auto store = open_ok(options_for(loop, dir));
  ASSERT_TRUE(store);
  StoreWrite first;
  first.ledger = {sample_ledger("before", at_usec(1))};
  ASSERT_FALSE(commit(loop, *store, std::move(first)));

  store->set_page_limit(1);  // no room to grow: the cap is clamped to the current size
  StoreWrite big;
  for (int i = 0; i < 5000; ++i) big.ledger.push_back(sample_ledger("full-" + std::to_string(i), at_usec(10 + i)));
  auto error = commit(loop, *store, std::move(big));
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, StoreErrc::disk_full) << error->message;
  EXPECT_NE(error->message.find("disk_full"), std::string::npos) << error->message;
  EXPECT_EQ(store->stats().failed_batches, 1u);
  EXPECT_EQ(store->durable_seq(), 1u);

  // Reads keep working, and see only what committed.
  auto page = store->ledger().records(RecordFilter{});
  ASSERT_TRUE(page.has_value()) << page.error().detail;
  ASSERT_EQ(page->records.size(), 1u);
  EXPECT_EQ(page->records[0].id, "before");

  // Room again: the next batch commits, with the failed one's writes in front of it.
  store->set_page_limit(0);
  StoreWrite after;
  after.ledger = {sample_ledger("after", at_usec(100000))};
  auto ok = commit(loop, *store, std::move(after));
  ASSERT_FALSE(ok) << ok->message;
  EXPECT_EQ(store->durable_seq(), 3u);
  RecordFilter all;
  all.limit = 1000;
  auto again = store->ledger().records(all);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->records.front().id, "after");
  auto summary = store->ledger().summary(SummaryQuery{at_usec(0), at_usec(INT64_MAX), "", GroupBy::resource});
  ASSERT_TRUE(summary.has_value());
  EXPECT_EQ(summary->records, 5002u);
}

TEST(StoreState, NoneKeepsNoFileButServesTheLedger) {
  TempDir dir;
  TestLoop loop;
  {
    auto store = open_ok(options_for(loop, dir, Durability::none));
    ASSERT_TRUE(store);
    EXPECT_FALSE(fs::exists(dir.db()));
    StoreWrite w = full_write(sample_state());
    w.ledger = {sample_ledger("m1", at_usec(5))};
    ASSERT_FALSE(commit(loop, *store, std::move(w)));
    auto page = store->ledger().records(RecordFilter{});
    ASSERT_TRUE(page.has_value()) << page.error().detail;
    ASSERT_EQ(page->records.size(), 1u);
    EXPECT_EQ(page->records[0], sample_ledger("m1", at_usec(5)));
    auto loaded = store->load();
    ASSERT_TRUE(loaded.has_value());
    EXPECT_EQ(loaded->state.processes.size(), 2u);
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  auto store = open_ok(options_for(loop, dir, Durability::none));
  auto loaded = store->load();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_TRUE(loaded->state.processes.empty());
}

TEST(StoreState, TwoMemoryStoresAreSeparate) {
  TempDir dir;
  TestLoop loop;
  auto a = open_ok(options_for(loop, dir, Durability::none));
  auto b = open_ok(options_for(loop, dir, Durability::none));
  StoreWrite w;
  w.ledger = {sample_ledger("only-a", at_usec(5))};
  ASSERT_FALSE(commit(loop, *a, std::move(w)));
  EXPECT_EQ(a->ledger().records(RecordFilter{})->records.size(), 1u);
  EXPECT_TRUE(b->ledger().records(RecordFilter{})->records.empty());
}

// The database's own check, on a connection of the test's: "ok" or what is damaged.
std::string integrity(const Store& store, bool memory) {
  std::string name = memory ? "file:" + store.path() + "?vfs=memdb" : store.path();
  sqlite3* db = nullptr;
  int flags = memory ? SQLITE_OPEN_URI | SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
  if (sqlite3_open_v2(name.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return "cannot open";
  }
  sqlite3_busy_timeout(db, 5000);
  std::string out;
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && out.size() < 300) {
    if (!out.empty()) out += "; ";
    out += reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  }
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) out += sqlite3_errmsg(db);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

uint64_t summed_records(Store& store) {
  auto s = store.ledger().summary(SummaryQuery{at_usec(INT64_MIN), at_usec(INT64_MAX), "", GroupBy::resource});
  EXPECT_TRUE(s.has_value()) << s.error().detail;
  return s ? s->records : 0;
}

StoreWrite ledger_batch(int& n, int count) {
  StoreWrite w;
  for (int i = 0; i < count; ++i, ++n) w.ledger.push_back(sample_ledger("r-" + std::to_string(n), at_usec(10 + n)));
  return w;
}

// A full "disk" fails batches, mid-statement as well as at COMMIT, without damaging the
// database: reads keep seeing what committed, and once there is room again the carried
// writes and new ones commit, each record once.
class StoreFull : public ::testing::TestWithParam<Durability> {};

TEST_P(StoreFull, FailedBatchesRollBackAndLaterBatchesCommit) {
  TempDir dir;
  TestLoop loop;
  bool memory = GetParam() == Durability::none;
  auto store = open_ok(options_for(loop, dir, GetParam()));
  ASSERT_TRUE(store);
  int n = 0;
  for (int b = 0; b < 3; ++b) ASSERT_FALSE(commit(loop, *store, ledger_batch(n, 2000)));
  EXPECT_EQ(summed_records(*store), 6000u);

  store->set_page_limit(1);  // clamped to the current size: the next new page fails
  for (int b = 0; b < 3; ++b) {
    auto error = commit(loop, *store, ledger_batch(n, 3000));
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code, StoreErrc::disk_full) << error->message;
    EXPECT_EQ(summed_records(*store), 6000u);
    EXPECT_EQ(integrity(*store, memory), "ok");
  }
  EXPECT_EQ(store->stats().failed_batches, 3u);
  EXPECT_TRUE(store->load().has_value());

  store->set_page_limit(0);
  auto ok = commit(loop, *store, ledger_batch(n, 10));
  ASSERT_FALSE(ok) << ok->message;
  EXPECT_EQ(summed_records(*store), static_cast<uint64_t>(n));
  ok = commit(loop, *store, ledger_batch(n, 10));
  ASSERT_FALSE(ok) << ok->message;
  EXPECT_EQ(summed_records(*store), static_cast<uint64_t>(n));
  EXPECT_EQ(integrity(*store, memory), "ok");
  // Every id once, newest first.
  RecordFilter f;
  f.limit = 1000;
  std::set<std::string> ids;
  int listed = 0;
  for (;;) {
    auto page = store->ledger().records(f);
    ASSERT_TRUE(page.has_value()) << page.error().detail;
    for (const auto& r : page->records) {
      ids.insert(r.id);
      ++listed;
    }
    if (page->next_cursor.empty()) break;
    f.cursor = page->next_cursor;
  }
  EXPECT_EQ(listed, n);
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(n));
}

INSTANTIATE_TEST_SUITE_P(Durabilities, StoreFull, ::testing::Values(Durability::none, Durability::ack),
                         [](const auto& info) { return info.param == Durability::none ? "none" : "ack"; });

// What happened in a long benchmark: the memdb VFS itself (capped at 1 GiB) refused a
// write. SQLite's rollback of a cache spill that hit that cap left the database
// malformed for good; the store keeps the pager's page cap under the VFS cap so that it
// is a clean SQLITE_FULL. The cap is lowered here from a connection of the test's, as the
// shared memdb has one cap for all its connections.
TEST(StoreState, MemdbSizeCapIsAFullNotACorruption) {
  TempDir dir;
  TestLoop loop;
  auto store = open_ok(options_for(loop, dir, Durability::none));
  ASSERT_TRUE(store);
  sqlite3* side = nullptr;
  ASSERT_EQ(sqlite3_open_v2(("file:" + store->path() + "?vfs=memdb").c_str(), &side,
                            SQLITE_OPEN_URI | SQLITE_OPEN_READWRITE, nullptr),
            SQLITE_OK);
  auto set_cap = [&](sqlite3_int64 bytes) {
    ASSERT_EQ(sqlite3_file_control(side, "main", SQLITE_FCNTL_SIZE_LIMIT, &bytes), SQLITE_OK);
  };
  int n = 0;
  for (int b = 0; b < 3; ++b) ASSERT_FALSE(commit(loop, *store, ledger_batch(n, 2000)));
  set_cap(1);  // clamped to the current size
  for (int b = 0; b < 3; ++b) {
    auto error = commit(loop, *store, ledger_batch(n, 3000));
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code, StoreErrc::disk_full) << error->message;
    EXPECT_EQ(summed_records(*store), 6000u);
    EXPECT_EQ(integrity(*store, true), "ok");
  }
  set_cap(int64_t{1} << 30);
  auto ok = commit(loop, *store, ledger_batch(n, 10));
  ASSERT_FALSE(ok) << ok->message;
  EXPECT_EQ(summed_records(*store), static_cast<uint64_t>(n));
  EXPECT_EQ(integrity(*store, true), "ok");
  sqlite3_close(side);
}

// `none` keeps at most memory_ledger_max_records records: the oldest fold into the daily
// aggregates in the batch that goes past the bound, so Summary still counts them all.
TEST(StoreState, MemoryLedgerIsBounded) {
  TempDir dir;
  TestLoop loop;
  auto o = options_for(loop, dir, Durability::none);
  o.memory_ledger_max_records = 100;
  auto store = open_ok(o);
  ASSERT_TRUE(store);
  constexpr int64_t kDay = 86'400'000'000;
  int n = 0;
  Decimal total;
  for (int b = 0; b < 5; ++b) {
    StoreWrite w;
    for (int i = 0; i < 70; ++i, ++n) {
      // Spread over days, so folded records land in several aggregates and partial days.
      auto r = sample_ledger("m-" + std::to_string(n), at_usec(kDay * 19'000 + n * (kDay / 50)));
      r.labels["agent"] = n % 2 ? "planner" : "coder";
      r.total_cost = Decimal::from_int(static_cast<uint64_t>(n));
      total = total.saturating_add(r.total_cost);
      if (n % 10 == 0) r.action = "denied";  // folded away, never summed
      w.ledger.push_back(std::move(r));
    }
    ASSERT_FALSE(commit(loop, *store, std::move(w)));
    auto loaded = store->load();
    ASSERT_TRUE(loaded.has_value());
    EXPECT_EQ(loaded->ledger.records, std::min<uint64_t>(static_cast<uint64_t>(n), 100u));
  }
  EXPECT_EQ(store->stats().records_folded, 250u);
  RecordFilter all;
  all.limit = 1000;
  auto page = store->ledger().records(all);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->records.size(), 100u);
  EXPECT_EQ(page->records.front().id, "m-349");
  EXPECT_EQ(page->records.back().id, "m-250");
  Decimal charged;
  for (int i = 0; i < n; ++i)
    if (i % 10 != 0) charged = charged.saturating_add(Decimal::from_int(static_cast<uint64_t>(i)));
  for (GroupBy g : {GroupBy::resource, GroupBy::agent}) {
    auto s = store->ledger().summary(SummaryQuery{at_usec(INT64_MIN), at_usec(INT64_MAX), "", g});
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->records, 315u);
    EXPECT_EQ(s->total_cost, charged);
  }
  auto by_agent = store->ledger().summary(SummaryQuery{at_usec(INT64_MIN), at_usec(INT64_MAX), "", GroupBy::agent});
  ASSERT_EQ(by_agent->groups.size(), 2u);
  EXPECT_EQ(by_agent->groups[0].records + by_agent->groups[1].records, 315u);
  EXPECT_EQ(integrity(*store, true), "ok");
}

void load_processes(int n) {
  TempDir dir;
  TestLoop loop;
  double write_secs = 0;
  {
    auto o = options_for(loop, dir);
    auto store = open_ok(o);
    ASSERT_TRUE(store);
    StoreWrite w;
    w.changes.processes.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      ProcessRecord p;
      p.id = std::to_string(100000 + i);
      p.scope = "org/acme/team/research/user/u" + std::to_string(i % 1000);
      p.usage.llm_calls = static_cast<uint64_t>(i % 7);
      p.usage.tokens_in = static_cast<uint64_t>(i) * 31;
      p.allocated_at = at_usec(1'700'000'000'000'000 + i);
      p.owner = 1000;
      w.changes.processes.push_back(std::move(p));
    }
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_FALSE(commit(loop, *store, std::move(w)));
    write_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  auto bytes = fs::file_size(dir.db());
  auto t0 = std::chrono::steady_clock::now();
  auto o = options_for(loop, dir);
  auto store = open_ok(o);
  ASSERT_TRUE(store);
  auto t1 = std::chrono::steady_clock::now();
  auto loaded = store->load();
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.processes.size(), static_cast<std::size_t>(n));
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("[load] %d processes: open+quick_check %.0f ms, load %.0f ms; written in one batch at %.0f rows/s; "
              "%.1f bytes/process on disk\n",
              n, ms(t1 - t0), ms(t2 - t1), n / write_secs, static_cast<double>(bytes) / n);
}

TEST(StoreState, Load100kProcessesTimed) { load_processes(100'000); }
TEST(StoreState, DISABLED_Load1MProcessesTimed) { load_processes(1'000'000); }

}  // namespace
}  // namespace budgetd::daemon
