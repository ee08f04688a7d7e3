// The ledger's read side: exact decimal sums, grouping, scope prefixes, paging by cursor
// with filters, and retention folding that keeps summaries identical while Records drops
// the folded records.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <set>

#include "daemon/store.h"
#include "tests/daemon/store_test_support.h"

namespace budgetd::daemon {
namespace {

using testing::at_usec;
using testing::dec;
using testing::sample_ledger;
using testing::TempDir;
using testing::TestLoop;

constexpr int64_t kDay = 86'400'000'000;
constexpr int64_t kT0 = 1'700'006'400'000'000;  // 2023-11-15 00:00 UTC

class StoreLedger : public ::testing::Test {
 protected:
  void open(uint32_t retention_days = 90) {
    store_.reset();
    StoreOptions o;
    o.dir = dir_.path();
    o.loop = loop_.get();
    o.retention_days = retention_days;
    o.now = [this] { return now_; };
    auto s = Store::open(o);
    ASSERT_TRUE(s.has_value()) << s.error().detail;
    store_ = std::move(*s);
  }
  void write(std::vector<LedgerRecord> records, std::vector<IdempotencyEntry> idem = {}) {
    StoreWrite w;
    w.ledger = std::move(records);
    w.idempotency = std::move(idem);
    uint64_t seq = store_->submit(std::move(w));
    std::optional<StoreError> error;
    store_->set_commit_callback([&](uint64_t, const StoreError* e) {
      if (e) error = *e;
    });
    ASSERT_TRUE(loop_.run_until([&] { return error || store_->durable_seq() >= seq; }));
    ASSERT_FALSE(error) << error->message;
  }
  UsageSummary summary(GroupBy g, std::string scope = "", int64_t start = INT64_MIN, int64_t end = INT64_MAX) {
    auto s = store_->ledger().summary(SummaryQuery{at_usec(start), at_usec(end), std::move(scope), g});
    EXPECT_TRUE(s.has_value()) << s.error().detail;
    return s ? *s : UsageSummary{};
  }

  TempDir dir_;
  TestLoop loop_;
  TimePoint now_ = at_usec(kT0);
  std::unique_ptr<Store> store_;
};

LedgerRecord charge(std::string id, int64_t at, std::string agent, std::string model, std::string thread,
                    std::string process, std::string scope, std::vector<LedgerItem> items) {
  LedgerRecord r;
  r.id = std::move(id);
  r.recorded_at = at_usec(at);
  r.kind = LedgerKind::usage;
  r.labels = {{"agent", std::move(agent)}, {"model", std::move(model)}};
  r.thread = std::move(thread);
  r.process = std::move(process);
  r.scope = std::move(scope);
  Decimal total;
  for (const auto& i : items) total = *total.checked_add(i.total_cost);
  r.items = std::move(items);
  r.total_cost = total;
  r.action = "approved";
  return r;
}

LedgerItem item(std::string resource, std::string_view quantity, std::string_view cost) {
  return LedgerItem{std::move(resource), dec(quantity), "count", dec("0"), dec(cost)};
}

TEST_F(StoreLedger, SumsAreExactAMillionTimes) {
  open();
  // 1 token at $0.002 per 1000 tokens, a million times: exactly $2 (a double sum is not).
  constexpr int kRecords = 1'000'000;
  constexpr int kPerBatch = 100'000;
  for (int b = 0; b < kRecords / kPerBatch; ++b) {
    std::vector<LedgerRecord> batch;
    batch.reserve(kPerBatch);
    for (int i = 0; i < kPerBatch; ++i) {
      int n = b * kPerBatch + i;
      LedgerRecord r;
      r.id = std::to_string(n);
      r.recorded_at = at_usec(kT0 + n);
      r.items = {LedgerItem{"tokens_in", dec("1"), "1000 tokens", dec("0.002"), dec("0.000002")}};
      r.total_cost = dec("0.000002");
      batch.push_back(std::move(r));
    }
    write(std::move(batch));
  }
  auto s = summary(GroupBy::resource);
  EXPECT_EQ(s.total_cost, dec("2"));
  EXPECT_EQ(s.records, static_cast<uint64_t>(kRecords));
  ASSERT_EQ(s.groups.size(), 1u);
  EXPECT_EQ(s.groups[0].key, "tokens_in");
  EXPECT_EQ(s.groups[0].cost.to_string(), "2");
  EXPECT_EQ(s.groups[0].quantity.at("tokens_in"), Decimal::from_int(kRecords));
  double d = 0;
  for (int i = 0; i < kRecords; ++i) d += 0.000002;
  EXPECT_NE(d, 2.0);  // what SQL's SUM() over REAL would have given
  auto stats = store_->stats();
  std::error_code ec;
  auto wal = std::filesystem::file_size(dir_.db() + "-wal", ec);
  std::printf("[ledger] %d records, %.1f bytes/record in the file (+%.1f in the WAL), %.0f records/s written\n",
              kRecords, static_cast<double>(std::filesystem::file_size(dir_.db())) / kRecords,
              static_cast<double>(ec ? 0 : wal) / kRecords,
              static_cast<double>(kRecords) / (static_cast<double>(stats.commit_usec_total) / 1e6));
}

TEST_F(StoreLedger, SummaryGroupsByEveryDimension) {
  open();
  write({
      charge("a", kT0 + 1, "planner", "gpt-4o", "t1", "p1", "org/acme/user/alice",
             {item("tokens_in", "100", "0.1"), item("llm_calls", "1", "0.2")}),
      charge("b", kT0 + 2, "coder", "gpt-4o", "t2", "p2", "org/acme/user/bob", {item("tokens_in", "50", "0.05")}),
      charge("c", kT0 + 3, "planner", "claude", "t1", "p1", "org/acme/user/alice", {item("tokens_out", "7", "0.7")}),
      charge("d", kT0 + 4, "", "", "", "p3", "org/acme2", {item("tokens_in", "1", "1")}),
  });
  auto by_resource = summary(GroupBy::resource);
  EXPECT_EQ(by_resource.total_cost, dec("2.05"));
  EXPECT_EQ(by_resource.records, 4u);
  ASSERT_EQ(by_resource.groups.size(), 3u);
  EXPECT_EQ(by_resource.groups[0].key, "tokens_in");  // 1.15, the largest cost first
  EXPECT_EQ(by_resource.groups[0].cost, dec("1.15"));
  EXPECT_EQ(by_resource.groups[0].quantity.at("tokens_in"), dec("151"));
  EXPECT_EQ(by_resource.groups[0].records, 3u);
  EXPECT_EQ(by_resource.groups[1].key, "tokens_out");
  EXPECT_EQ(by_resource.groups[2].key, "llm_calls");

  auto by_agent = summary(GroupBy::agent);
  ASSERT_EQ(by_agent.groups.size(), 3u);
  EXPECT_EQ(by_agent.groups[0].key, "");  // cost 1
  EXPECT_EQ(by_agent.groups[1].key, "planner");
  EXPECT_EQ(by_agent.groups[1].cost, dec("1"));
  EXPECT_EQ(by_agent.groups[1].records, 2u);
  EXPECT_EQ(by_agent.groups[1].quantity.at("tokens_in"), dec("100"));
  EXPECT_EQ(by_agent.groups[1].quantity.at("tokens_out"), dec("7"));
  EXPECT_EQ(by_agent.groups[1].quantity.at("llm_calls"), dec("1"));

  EXPECT_EQ(summary(GroupBy::model).groups.size(), 3u);
  EXPECT_EQ(summary(GroupBy::thread).groups.size(), 3u);
  EXPECT_EQ(summary(GroupBy::process).groups.size(), 3u);
  auto by_scope = summary(GroupBy::scope);
  EXPECT_EQ(by_scope.groups.size(), 3u);

  // Scope prefix: the path and below, not a sibling that shares the prefix text.
  auto acme = summary(GroupBy::scope, "org/acme");
  EXPECT_EQ(acme.records, 3u);
  EXPECT_EQ(acme.total_cost, dec("1.05"));
  EXPECT_EQ(summary(GroupBy::scope, "org/acme/user/alice").records, 2u);
  EXPECT_EQ(summary(GroupBy::scope, "/").records, 4u);

  // [start, end)
  EXPECT_EQ(summary(GroupBy::resource, "", kT0 + 2, kT0 + 4).records, 2u);
}

TEST_F(StoreLedger, ReservationsAuditsAndRefusalsAreNotCharges) {
  open();
  auto r = charge("r", kT0, "a", "m", "t", "p", "s", {item("tokens", "500", "5")});
  r.kind = LedgerKind::reservation;
  auto audit = charge("audit", kT0, "a", "m", "t", "p", "s", {});
  audit.kind = LedgerKind::audit;
  audit.action = "adjust";
  audit.detail = "adjust max_llm_calls=20";
  auto denied = charge("denied", kT0, "a", "m", "t", "p", "s", {item("cost", "3", "3")});
  denied.kind = LedgerKind::consumption;
  denied.action = "DENIED";  // as Consume writes it
  auto pending = charge("pending", kT0, "a", "m", "t", "p", "s", {item("cost", "3", "3")});
  pending.kind = LedgerKind::consumption;
  pending.action = "PENDING";
  auto partial = charge("partial", kT0, "a", "m", "t", "p", "s", {item("cost", "2", "2")});
  partial.kind = LedgerKind::consumption;
  partial.action = "PARTIAL";
  auto commit = charge("commit", kT0, "a", "m", "t", "p", "s", {item("tokens", "120", "1.2")});
  commit.kind = LedgerKind::commit;
  write({r, audit, denied, pending, partial, commit});
  auto s = summary(GroupBy::resource);
  EXPECT_EQ(s.records, 2u);
  EXPECT_EQ(s.total_cost, dec("3.2"));
  RecordFilter all;
  EXPECT_EQ(store_->ledger().records(all)->records.size(), 6u);  // all listed
}

TEST_F(StoreLedger, RecordsPageNewestFirstWithACursor) {
  open();
  std::vector<LedgerRecord> records;
  for (int i = 0; i < 250; ++i) {
    // Pairs share a timestamp: the cursor must not skip or repeat within one microsecond.
    records.push_back(sample_ledger("r" + std::to_string(i), at_usec(kT0 + i / 2)));
  }
  write(records);
  RecordFilter f;
  f.limit = 100;
  std::vector<std::string> seen;
  int pages = 0;
  for (;;) {
    auto page = store_->ledger().records(f);
    ASSERT_TRUE(page.has_value()) << page.error().detail;
    ++pages;
    for (const auto& r : page->records) seen.push_back(r.id);
    if (page->next_cursor.empty()) break;
    f.cursor = page->next_cursor;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 250u);
  for (int i = 0; i < 250; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], "r" + std::to_string(249 - i));

  // Every field comes back (labels split into columns and the blob, joined again).
  RecordFilter one;
  one.limit = 1;
  auto newest = store_->ledger().records(one);
  ASSERT_TRUE(newest.has_value());
  ASSERT_EQ(newest->records.size(), 1u);
  EXPECT_EQ(newest->records[0], records.back());
  EXPECT_FALSE(newest->next_cursor.empty());

  RecordFilter bad;
  bad.cursor = "garbage";
  auto refused = store_->ledger().records(bad);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::invalid_argument);
  RecordFilter huge;
  huge.limit = 5000;
  EXPECT_EQ(store_->ledger().records(huge)->records.size(), 250u);  // capped at 1000
}

TEST_F(StoreLedger, RecordsFilters) {
  open();
  write({
      charge("a", kT0 + 1, "planner", "gpt-4o", "t1", "p1", "org/acme/user/alice", {item("tokens_in", "1", "0")}),
      charge("b", kT0 + 2, "coder", "gpt-4o", "t2", "p2", "org/acme/user/bob", {item("tokens_out", "1", "0")}),
      charge("c", kT0 + 3, "planner", "claude", "t1", "p1", "org/acme2", {item("tokens_in_x", "1", "0")}),
  });
  auto ids = [&](RecordFilter f) {
    std::vector<std::string> out;
    auto page = store_->ledger().records(f);
    EXPECT_TRUE(page.has_value()) << page.error().detail;
    if (page)
      for (const auto& r : page->records) out.push_back(r.id);
    return out;
  };
  using V = std::vector<std::string>;
  RecordFilter f;
  f.agent = "planner";
  EXPECT_EQ(ids(f), (V{"c", "a"}));
  f = {};
  f.model = "gpt-4o";
  EXPECT_EQ(ids(f), (V{"b", "a"}));
  f = {};
  f.thread = "t2";
  EXPECT_EQ(ids(f), (V{"b"}));
  f = {};
  f.process = "p1";
  EXPECT_EQ(ids(f), (V{"c", "a"}));
  f = {};
  f.resource_type = "tokens_in";  // not tokens_in_x
  EXPECT_EQ(ids(f), (V{"a"}));
  f = {};
  f.scope = "org/acme";
  EXPECT_EQ(ids(f), (V{"b", "a"}));
  f = {};
  f.since = at_usec(kT0 + 2);
  f.until = at_usec(kT0 + 3);
  EXPECT_EQ(ids(f), (V{"b"}));
  f = {};
  f.kind = LedgerKind::audit;
  EXPECT_EQ(ids(f), V{});
  f = {};
  f.agent = "planner";
  f.limit = 1;
  auto first = store_->ledger().records(f);
  ASSERT_TRUE(first.has_value());
  f.cursor = first->next_cursor;
  EXPECT_EQ(ids(f), (V{"a"}));
}

TEST_F(StoreLedger, RetentionFoldKeepsSummariesAndDropsOldRecords) {
  // Written without retention: the first batch after an open folds, and the summaries
  // below are to be taken before any fold.
  open(0);
  std::vector<LedgerRecord> records;
  int n = 0;
  // 60 days of history, a few records a day across agents, models, threads and scopes.
  for (int day = 0; day < 60; ++day) {
    for (int k = 0; k < 5; ++k) {
      int64_t at = kT0 - (60 - day) * kDay + k * 3'600'000'000LL;
      records.push_back(charge("r" + std::to_string(n++), at, k % 2 ? "planner" : "coder",
                               k % 3 ? "gpt-4o" : "claude", "t" + std::to_string(k % 2), "p" + std::to_string(k),
                               k % 2 ? "org/acme/user/alice" : "org/other",
                               {item("tokens_in", std::to_string(k + 1), "0.000001"),
                                item("tokens_out", "3", "0.000000000001")}));
    }
  }
  auto refused = records.back();
  refused.id = "refused";
  refused.kind = LedgerKind::consumption;
  refused.action = "denied";
  refused.recorded_at = at_usec(kT0 - 50 * kDay);
  records.push_back(refused);
  // Old idempotency entries go with the window, recent ones stay.
  write(records, {IdempotencyEntry{"m", 1, "old", "{}", at_usec(kT0 - 40 * kDay)},
                  IdempotencyEntry{"m", 1, "new", "{}", at_usec(kT0 - kDay)}});
  open(30);

  const GroupBy all[] = {GroupBy::resource, GroupBy::agent, GroupBy::model,
                         GroupBy::thread,   GroupBy::process, GroupBy::scope};
  auto snapshot = [&](std::string scope, int64_t start) {
    std::vector<std::tuple<std::string, std::string, std::vector<std::tuple<std::string, std::string, uint64_t>>>> out;
    for (GroupBy g : all) {
      auto s = summary(g, scope, start);
      std::vector<std::tuple<std::string, std::string, uint64_t>> groups;
      for (const auto& grp : s.groups) {
        std::string q;
        for (const auto& [res, amount] : grp.quantity) q += res + "=" + amount.to_string() + ";";
        groups.emplace_back(grp.key + "|" + q, grp.cost.to_string(), grp.records);
      }
      out.emplace_back(s.total_cost.to_string(), std::to_string(s.records), groups);
    }
    return out;
  };
  auto before_all = snapshot("", INT64_MIN);
  auto before_acme = snapshot("org/acme", INT64_MIN);
  // A range starting at a day boundary inside the folded period.
  auto before_range = snapshot("", kT0 - 45 * kDay);

  uint64_t seq = store_->fold_now();
  ASSERT_TRUE(loop_.run_until([&] { return store_->durable_seq() >= seq; }));
  EXPECT_GT(store_->stats().records_folded, 0u);

  EXPECT_EQ(snapshot("", INT64_MIN), before_all);
  EXPECT_EQ(snapshot("org/acme", INT64_MIN), before_acme);
  EXPECT_EQ(snapshot("", kT0 - 45 * kDay), before_range);

  RecordFilter f;
  f.limit = 1000;
  auto page = store_->ledger().records(f);
  ASSERT_TRUE(page.has_value());
  int64_t cutoff = kT0 - 30 * kDay;
  for (const auto& r : page->records) EXPECT_GE(r.recorded_at.time_since_epoch().count(), cutoff) << r.id;
  EXPECT_EQ(page->records.size(), 150u);  // 30 days x 5 (the refused one was old: dropped, not summed)

  // A second fold later (more days past the window) merges into the same aggregates.
  now_ += std::chrono::days(10);
  seq = store_->fold_now();
  ASSERT_TRUE(loop_.run_until([&] { return store_->durable_seq() >= seq; }));
  EXPECT_EQ(snapshot("", INT64_MIN), before_all);
  EXPECT_EQ(store_->ledger().records(f)->records.size(), 100u);

  // Reopen: the aggregates and the retained idempotency entry are there.
  open(30);
  EXPECT_EQ(snapshot("", INT64_MIN), before_all);
  auto loaded = store_->load();
  ASSERT_TRUE(loaded.has_value());
  ASSERT_EQ(loaded->idempotency.size(), 1u);
  EXPECT_EQ(loaded->idempotency[0].key, "new");
  EXPECT_EQ(loaded->ledger.records, 100u);
  EXPECT_GT(loaded->ledger.daily_rows, 0u);
}

// For profiling the writer (valgrind --tool=callgrind --toggle-collect='*Writer::apply*'):
// 50,000 RecordUsage-like records in batches of 100, in memory.
TEST(StoreLedgerCost, DISABLED_Write50kRecords) {
  TestLoop loop;
  StoreOptions o;
  o.durability = Durability::none;
  o.loop = loop.get();
  o.retention_days = 0;
  auto s = Store::open(o);
  ASSERT_TRUE(s.has_value()) << s.error().detail;
  auto& store = **s;
  constexpr int kRecords = 50'000, kPerBatch = 100;
  for (int b = 0; b < kRecords / kPerBatch; ++b) {
    StoreWrite w;
    for (int i = 0; i < kPerBatch; ++i) {
      int n = b * kPerBatch + i;
      LedgerRecord r;
      r.id = fmt::format("{:08x}-1b2c-4d3e-8f40-{:012x}", n * 2654435761u, n * 40503u);
      r.kind = LedgerKind::usage;
      r.recorded_at = at_usec(kT0 + n * 37);
      r.uid = 1000;
      r.pid = 4000 + n % 50;
      r.process = std::to_string(4000 + n % 50);
      r.scope = "org/acme/team/research/user/u" + std::to_string(n % 20);
      r.labels = {{"agent", "planner"}, {"model", "gpt-4o"}};
      r.items = {LedgerItem{"tokens_in", Decimal::from_int(1200 + static_cast<uint64_t>(n % 300)), "1000 tokens",
                            dec("0.0025"), dec("0.003")},
                 LedgerItem{"tokens_out", Decimal::from_int(350), "1000 tokens", dec("0.01"), dec("0.0035")},
                 LedgerItem{"llm_calls", dec("1"), "count", dec("0"), dec("0")}};
      r.total_cost = dec("0.0065");
      w.ledger.push_back(std::move(r));
    }
    store.submit(std::move(w));
    if (b % 10 == 9) store.flush();
  }
  store.flush();
  auto st = store.stats();
  EXPECT_EQ(st.ledger_records_written, static_cast<uint64_t>(kRecords));
  std::printf("[cost] %d records in %llu transactions, %.0f records/s in transactions\n", kRecords,
              static_cast<unsigned long long>(st.transactions),
              kRecords / (static_cast<double>(st.commit_usec_total) / 1e6));
}

}  // namespace
}  // namespace budgetd::daemon
