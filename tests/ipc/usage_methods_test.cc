// io.budgetd.Usage, driven through Service::handle as the daemon drives it, on a real
// Engine and FakeClock. The daemon's part is a FakeHooks whose ledger() is a FakeLedger:
// it records the queries the handlers build (dates parsed, grouping, scope, page) and
// answers what the test set, so the replies can be compared exactly.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "ipc/methods.h"
#include "ipc/service.h"
#include "lib/calendar.h"
#include "lib/engine.h"
#include "tests/ipc/test_support.h"

namespace budgetd::ipc {
namespace {

using testsupport::error_of;
using testsupport::json;
using testsupport::kAgent;
using testsupport::kOperator;
using testsupport::params_of;
using namespace std::chrono_literals;

constexpr std::string_view kInvalidParameter = "org.varlink.service.InvalidParameter";
constexpr std::string_view kPermissionDenied = "io.budgetd.PermissionDenied";
constexpr std::string_view kLedgerUnavailable = "io.budgetd.LedgerUnavailable";
constexpr std::string_view kStorageFailed = "io.budgetd.StorageFailed";

TimePoint at(std::string_view utc) {
  auto t = parse_utc(utc);
  EXPECT_TRUE(t) << utc;
  return t.value_or(TimePoint{});
}

Decimal dec(std::string_view s) {
  auto d = Decimal::parse(s);
  EXPECT_TRUE(d) << s;
  return d.value_or(Decimal{});
}

class FakeLedger final : public LedgerReader {
 public:
  // --- what it answers ---
  Result<UsageSummary> summary_result = UsageSummary{};
  Result<RecordPage> records_result = RecordPage{};
  // --- what it was asked ---
  std::vector<SummaryQuery> summaries;
  std::vector<RecordFilter> filters;

  Result<UsageSummary> summary(const SummaryQuery& q) override {
    summaries.push_back(q);
    // Answers for the query asked, as a store would: the groups set, by the grouping asked.
    if (summary_result) {
      UsageSummary s = *summary_result;
      s.start = q.start, s.end = q.end, s.scope = q.scope, s.group_by = q.group_by;
      return s;
    }
    return summary_result;
  }
  Result<RecordPage> records(const RecordFilter& f) override {
    filters.push_back(f);
    return records_result;
  }
  std::size_t queries() const { return summaries.size() + filters.size(); }
};

class UsageHooks final : public testsupport::FakeHooks {
 public:
  FakeLedger fake_ledger;
  bool has_ledger = true;
  PriceTable price_table;
  Result<void> durable_result{};
  // What was appended, and how often need_durable was asked.
  std::vector<LedgerRecord> appended;
  int durable_calls = 0;

  LedgerReader* ledger() override { return has_ledger ? &fake_ledger : nullptr; }
  const PriceTable& prices() override { return price_table; }
  void append(LedgerRecord record) override { appended.push_back(std::move(record)); }
  Result<void> need_durable() override {
    ++durable_calls;
    return durable_result;
  }
};

class UsageMethods : public ::testing::Test {
 protected:
  // 2025-01-15 12:00:00 UTC.
  static constexpr TimePoint kStart =
      TimePoint{std::chrono::sys_days{std::chrono::year{2025} / 1 / 15}} + std::chrono::hours(12);

  UsageMethods() : clock(kStart), engine(clock), service(ServiceInfo{}) { register_all(service); }

  json invoke(std::string_view method, const json& params = json::object(),
              const Peer& peer = kOperator) {
    std::string message = json{{"method", method}, {"parameters", params}}.dump();
    const std::size_t size = message.size();
    message.push_back('\0');
    message.append(Framer::kPadding, '\0');
    std::string out;
    service.handle(std::string_view(message.data(), size), engine, peer, hooks, out);
    auto replies = testsupport::parse_frames(out);
    if (replies.size() != 1) {
      ADD_FAILURE() << method << ": expected one reply, got " << replies.size() << ": " << out;
      return json();
    }
    return replies.front();
  }
  json usage(std::string_view method, const json& params = json::object(),
             const Peer& peer = kOperator) {
    return invoke("io.budgetd.Usage." + std::string(method), params, peer);
  }
  // The parameter an InvalidParameter names ("" for any other reply).
  std::string bad_parameter(std::string_view method, const json& params) {
    json r = usage(method, params);
    if (error_of(r) != kInvalidParameter) {
      ADD_FAILURE() << method << " " << params.dump() << ": " << r.dump();
      return {};
    }
    return params_of(r).value("parameter", "");
  }

  FakeClock clock;
  Engine engine;
  UsageHooks hooks;
  Service service;
};

UsageSummary two_groups() {
  UsageSummary s;
  s.groups.push_back({"gpt-4", {{"tokens_in", dec("1000")}, {"tokens_out", dec("500")}}, dec("0.09"), 3});
  s.groups.push_back({"", {{"agent_execution", dec("2")}}, dec("0.02"), 2});
  s.total_cost = dec("0.11");
  s.records = 5;
  return s;
}

// ---- The interface ------------------------------------------------------------------------

TEST_F(UsageMethods, InterfaceIsServedAndEveryMethodAnswers) {
  json info = invoke("org.varlink.service.GetInfo");
  EXPECT_NE(params_of(info)["interfaces"].dump().find("io.budgetd.Usage"), std::string::npos);
  json d = invoke("org.varlink.service.GetInterfaceDescription", {{"interface", "io.budgetd.Usage"}});
  const std::string text = params_of(d).value("description", "");
  for (auto m : {"Summary", "Records", "Pricing", "Stats", "Overview", "Threads", "Thread", "Agent",
                 "Model", "Reset"}) {
    EXPECT_NE(text.find("method " + std::string(m) + "("), std::string::npos) << m;
    EXPECT_NE(error_of(usage(m)), "org.varlink.service.MethodNotFound") << m;
  }
}

// ---- Summary ------------------------------------------------------------------------------

TEST_F(UsageMethods, SummaryTakesDatesWithTheEndDateIncluded) {
  hooks.fake_ledger.summary_result = two_groups();
  json r = usage("Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}, {"group_by", "model"},
                             {"scope", "/org/acme/"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  ASSERT_EQ(hooks.fake_ledger.summaries.size(), 1u);
  const SummaryQuery& q = hooks.fake_ledger.summaries[0];
  EXPECT_EQ(q.start, at("2024-01-01T00:00:00Z"));
  EXPECT_EQ(q.end, at("2024-02-01T00:00:00Z"));  // all of January 31
  EXPECT_EQ(q.group_by, GroupBy::model);
  EXPECT_EQ(q.scope, "org/acme");
  EXPECT_EQ(params_of(r), json::parse(R"({
    "start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z",
    "scope": "org/acme", "group_by": "model",
    "usage": [
      {"key": "gpt-4", "quantity": {"tokens_in": "1000", "tokens_out": "500"}, "cost": "0.09", "records": 3},
      {"key": "", "quantity": {"agent_execution": "2"}, "cost": "0.02", "records": 2}],
    "total_cost": "0.11", "records": 5})"));
}

TEST_F(UsageMethods, SummaryTakesInstantsAndDefaults) {
  json r = usage("Summary", {{"start", "2024-01-01T10:00:00Z"}, {"end", "2024-01-01T12:30:00.5Z"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  const SummaryQuery& q = hooks.fake_ledger.summaries.at(0);
  EXPECT_EQ(q.start, at("2024-01-01T10:00:00Z"));
  EXPECT_EQ(q.end, at("2024-01-01T12:30:00.500000Z"));  // an instant is taken as it is
  EXPECT_EQ(q.group_by, GroupBy::resource);
  EXPECT_EQ(q.scope, "");
  EXPECT_EQ(params_of(r), json::parse(R"({
    "start": "2024-01-01T10:00:00Z", "end": "2024-01-01T12:30:00.500000Z",
    "scope": "", "group_by": "resource", "usage": [], "total_cost": "0", "records": 0})"));

  // The root is everything; one day is start..the next midnight; every grouping parses.
  for (auto by : {"resource", "agent", "model", "thread", "process", "scope"}) {
    r = usage("Summary", {{"start", "2024-03-01"}, {"end", "2024-03-01"}, {"scope", "/"}, {"group_by", by}});
    ASSERT_EQ(error_of(r), "") << by << r.dump();
    EXPECT_EQ(params_of(r)["group_by"], by);
    EXPECT_EQ(hooks.fake_ledger.summaries.back().scope, "");
    EXPECT_EQ(hooks.fake_ledger.summaries.back().end - hooks.fake_ledger.summaries.back().start,
              Duration(24h));
  }
}

TEST_F(UsageMethods, SummaryRefusesBadParametersWithoutAsking) {
  EXPECT_EQ(bad_parameter("Summary", {{"end", "2024-01-31"}}), "start");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-01-01"}}), "end");
  EXPECT_EQ(bad_parameter("Summary", {{"start", 20240101}, {"end", "2024-01-31"}}), "start");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "yesterday"}, {"end", "2024-01-31"}}), "start");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-01-01"}, {"end", "2024-13-01"}}), "end");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-01-01"}, {"end", "2023-02-29"}}), "end");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-01-01T00:00:00+01:00"}, {"end", "2024-01-31"}}),
            "start");
  // The end date includes its day: 2024-01-31 ends at 2024-02-01T00:00:00Z.
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-02-02"}, {"end", "2024-01-31"}}), "end");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-02-01T00:00:00.000001Z"}, {"end", "2024-01-31"}}),
            "end");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}, {"group_by", "colour"}}),
            "group_by");
  EXPECT_EQ(bad_parameter("Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}, {"scope", 7}}), "scope");
  json r = usage("Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}, {"scope", "a//b"}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r.dump();
  EXPECT_EQ(hooks.fake_ledger.queries(), 0u);
}

TEST_F(UsageMethods, LedgerFailures) {
  hooks.fake_ledger.summary_result = fail(Errc::invalid_state, "database is locked");
  json r = usage("Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}});
  EXPECT_EQ(error_of(r), kStorageFailed);
  EXPECT_NE(params_of(r).value("message", "").find("database is locked"), std::string::npos) << r.dump();
  EXPECT_EQ(error_of(usage("Agent", {{"agent", "a"}})), kStorageFailed);
  EXPECT_EQ(error_of(usage("Overview")), kStorageFailed);

  hooks.fake_ledger.records_result = fail(Errc::invalid_argument, "cursor");
  EXPECT_EQ(error_of(usage("Records", {{"cursor", "zzz"}})), "io.budgetd.InvalidArgument");
}

// ---- Records ------------------------------------------------------------------------------

TEST_F(UsageMethods, RecordsPassesEveryFilterAndWritesRecordsExactly) {
  LedgerRecord rec;
  rec.id = "0f8fad5b-d9cb-469f-a165-70867728950e";
  rec.kind = LedgerKind::usage;
  rec.recorded_at = at("2024-01-05T09:30:00.25Z");
  rec.uid = 1000;
  rec.pid = 4242;
  rec.process = "4242";
  rec.thread = "t-1";
  rec.scope = "org/acme";
  rec.labels = {{"agent", "planner"}, {"model", "gpt-4"}};
  rec.items = {{"tokens_in", dec("1"), "token", dec("0.002"), dec("0.000002")}};
  rec.total_cost = dec("0.000002");
  rec.idempotency_key = "k-1";
  LedgerRecord audit;
  audit.id = "1f8fad5b-d9cb-469f-a165-70867728950e";
  audit.kind = LedgerKind::audit;
  audit.recorded_at = at("2024-01-04T00:00:00Z");
  audit.scope = "org";
  audit.action = "Reset";
  audit.detail = R"({"scope":"org"})";
  hooks.fake_ledger.records_result = RecordPage{{rec, audit}, "c-2"};

  json r = usage("Records", {{"resource_type", "tokens_in"}, {"process", "4242"}, {"agent", "planner"},
                             {"model", "gpt-4"}, {"thread", "t-1"}, {"scope", "/org/acme"},
                             {"kind", "usage"}, {"since", "2024-01-01"}, {"until", "2024-01-31"},
                             {"limit", 2}, {"cursor", "c-1"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  ASSERT_EQ(hooks.fake_ledger.filters.size(), 1u);
  const RecordFilter& f = hooks.fake_ledger.filters[0];
  EXPECT_EQ(f.resource_type, "tokens_in");
  EXPECT_EQ(f.process, "4242");
  EXPECT_EQ(f.agent, "planner");
  EXPECT_EQ(f.model, "gpt-4");
  EXPECT_EQ(f.thread, "t-1");
  EXPECT_EQ(f.scope, "org/acme");
  EXPECT_EQ(f.kind, LedgerKind::usage);
  EXPECT_EQ(f.since, at("2024-01-01T00:00:00Z"));
  EXPECT_EQ(f.until, at("2024-02-01T00:00:00Z"));
  EXPECT_EQ(f.limit, 2u);
  EXPECT_EQ(f.cursor, "c-1");
  EXPECT_EQ(params_of(r), json::parse(R"({
    "records": [
      {"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "kind": "usage",
       "recorded_at": "2024-01-05T09:30:00.250000Z", "uid": 1000, "pid": 4242,
       "process": "4242", "thread": "t-1", "scope": "org/acme",
       "labels": {"agent": "planner", "model": "gpt-4"},
       "items": [{"resource": "tokens_in", "quantity": "1", "unit": "token",
                  "unit_cost": "0.002", "total_cost": "0.000002"}],
       "total_cost": "0.000002", "idempotency_key": "k-1"},
      {"id": "1f8fad5b-d9cb-469f-a165-70867728950e", "kind": "audit",
       "recorded_at": "2024-01-04T00:00:00Z", "uid": 0, "pid": 0, "scope": "org",
       "labels": {}, "items": [], "total_cost": "0",
       "action": "Reset", "detail": "{\"scope\":\"org\"}"}],
    "next_cursor": "c-2"})"));
}

TEST_F(UsageMethods, RecordsDefaultsAndBounds) {
  json r = usage("Records");
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::parse(R"({"records": []})"));  // no next_cursor: the last page
  const RecordFilter& f = hooks.fake_ledger.filters.at(0);
  EXPECT_EQ(f.limit, 100u);
  EXPECT_EQ(f.kind, std::nullopt);
  EXPECT_EQ(f.since, std::nullopt);
  EXPECT_EQ(f.until, std::nullopt);
  EXPECT_EQ(f.cursor, "");
  EXPECT_EQ(f.scope, "");

  EXPECT_EQ(error_of(usage("Records", {{"limit", 1000}})), "");
  EXPECT_EQ(hooks.fake_ledger.filters.back().limit, 1000u);
  // An instant for until is taken as it is.
  EXPECT_EQ(error_of(usage("Records", {{"until", "2024-01-31T06:00:00Z"}})), "");
  EXPECT_EQ(hooks.fake_ledger.filters.back().until, at("2024-01-31T06:00:00Z"));
  const std::size_t asked = hooks.fake_ledger.queries();

  EXPECT_EQ(bad_parameter("Records", {{"limit", 1001}}), "limit");
  EXPECT_EQ(bad_parameter("Records", {{"limit", 0}}), "limit");
  EXPECT_EQ(bad_parameter("Records", {{"limit", -1}}), "limit");
  EXPECT_EQ(bad_parameter("Records", {{"limit", "10"}}), "limit");
  EXPECT_EQ(bad_parameter("Records", {{"kind", "bogus"}}), "kind");
  EXPECT_EQ(bad_parameter("Records", {{"since", "2024-01-01 00:00"}}), "since");
  EXPECT_EQ(bad_parameter("Records", {{"until", "2024-02-30"}}), "until");
  EXPECT_EQ(bad_parameter("Records", {{"agent", 5}}), "agent");
  EXPECT_EQ(bad_parameter("Records", {{"cursor", false}}), "cursor");
  EXPECT_EQ(hooks.fake_ledger.queries(), asked);
}

// ---- Without a store ------------------------------------------------------------------------

TEST_F(UsageMethods, WithoutALedgerItsMethodsNameTheError) {
  hooks.has_ledger = false;
  const std::pair<std::string_view, json> calls[] = {
      {"Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}}},
      {"Records", json::object()},
      {"Agent", {{"agent", "planner"}}},
      {"Model", {{"model", "gpt-4"}}},
  };
  for (const auto& [m, p] : calls) {
    json r = usage(m, p);
    EXPECT_EQ(error_of(r), kLedgerUnavailable) << m;
    EXPECT_FALSE(params_of(r).value("message", "").empty()) << m;
  }
  // The overview's thread totals need no ledger; its ledger splits are left out.
  ASSERT_TRUE(engine.consume("t-1", 10, 5));
  json r = usage("Overview");
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::parse(R"({"total_tokens": 15, "prompt_tokens": 10,
    "completion_tokens": 5, "requests": 1, "threads": 1})"));
}

// ---- Authorization --------------------------------------------------------------------------

TEST_F(UsageMethods, OnlyOperatorsReadTheLedgerOrReset) {
  ASSERT_TRUE(engine.consume("t-1", 10, 5));
  const std::pair<std::string_view, json> calls[] = {
      {"Summary", {{"start", "2024-01-01"}, {"end", "2024-01-31"}}},
      {"Records", json::object()},
      {"Overview", json::object()},
      {"Threads", json::object()},
      {"Thread", {{"thread", "t-1"}}},
      {"Agent", {{"agent", "planner"}}},
      {"Model", {{"model", "gpt-4"}}},
      {"Reset", {{"thread", "t-1"}}},
  };
  for (const auto& [m, p] : calls) {
    json r = usage(m, p, kAgent);
    EXPECT_EQ(error_of(r), kPermissionDenied) << m;
    EXPECT_FALSE(params_of(r).value("message", "").empty()) << m;
    // Refused before anything was read, even with parameters that are wrong.
    EXPECT_EQ(error_of(usage(m, {{"limit", "x"}, {"start", 1}}, kAgent)), kPermissionDenied) << m;
  }
  EXPECT_EQ(hooks.fake_ledger.queries(), 0u);
  EXPECT_TRUE(hooks.appended.empty());
  EXPECT_EQ(hooks.durable_calls, 0);
  EXPECT_EQ(engine.get_thread_usage("t-1")->total_tokens, 15u);  // not reset

  EXPECT_EQ(error_of(usage("Pricing", {}, kAgent)), "");
  EXPECT_EQ(error_of(usage("Stats", {}, kAgent)), "");
}

// ---- Prices and statistics ------------------------------------------------------------------

TEST_F(UsageMethods, PricingListsTheTableExactly) {
  hooks.price_table.set_resource("token", UnitPrice{"token", Decimal::from_int(1000), dec("0.002")});
  hooks.price_table.set_resource("agent_execution", UnitPrice{"count", Decimal::from_int(1), dec("0.01")});
  hooks.price_table.set_model("gpt-4", ModelPrice{dec("0.03"), dec("0.06")});
  hooks.price_table.set_action("translate", Decimal::from_int(5));
  json r = usage("Pricing", {}, kAgent);
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::parse(R"({
    "resources": [
      {"resource": "agent_execution", "unit": "count", "unit_size": "1", "unit_cost": "0.01"},
      {"resource": "token", "unit": "token", "unit_size": "1000", "unit_cost": "0.002"}],
    "models": [{"model": "gpt-4", "input_per_1k": "0.03", "output_per_1k": "0.06"}],
    "actions": [{"action": "translate", "tokens_per_1000_words": "5"}]})"));

  hooks.price_table = PriceTable{};
  EXPECT_EQ(params_of(usage("Pricing")), json::parse(R"({"resources": [], "models": [], "actions": []})"));
}

TEST_F(UsageMethods, StatsNamesSeed000sCounts) {
  EXPECT_EQ(params_of(usage("Stats", {}, kAgent)), json::parse(R"({"total_events": 0, "approved": 0,
    "denied": 0, "partial": 0, "pending": 0})"));
  json set = invoke("io.budgetd.Admin.SetLimits",
                    {{"path", "org"}, {"limits", {{{"resource", "cost"}, {"hard", "10"}}}}});
  ASSERT_EQ(error_of(set), "") << set.dump();
  auto consume = [&](std::string_view amount, bool partial) {
    ConsumeRequest req;
    req.target.scope = "org";
    req.resource = "cost";
    req.amount = dec(amount);
    req.allow_partial = partial;
    return engine.consume(req);
  };
  ASSERT_EQ(consume("6", false)->status, ConsumeStatus::approved);
  ASSERT_EQ(consume("6", false)->status, ConsumeStatus::denied);
  ASSERT_EQ(consume("6", true)->status, ConsumeStatus::partial);
  const ConsumptionStats s = engine.get_stats();
  json r = usage("Stats", {}, kAgent);
  EXPECT_EQ(params_of(r), (json{{"total_events", s.total_events},
                                {"approved", s.consumed_count},
                                {"denied", s.rejected_count},
                                {"partial", s.partial},
                                {"pending", s.pending}}));
  EXPECT_EQ(params_of(r)["denied"], 1);
  EXPECT_EQ(params_of(r)["partial"], 1);
}

// ---- Seed 003 views ---------------------------------------------------------------------------

TEST_F(UsageMethods, OverviewTotalsThreadsAndSplitsTheLedger) {
  ASSERT_TRUE(engine.consume("t-1", 100, 50));
  ASSERT_TRUE(engine.consume("t-1", 10, 0));
  ASSERT_TRUE(engine.consume("t-2", 1, 2));
  hooks.fake_ledger.summary_result = two_groups();
  json r = usage("Overview");
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::parse(R"({
    "total_tokens": 163, "prompt_tokens": 111, "completion_tokens": 52, "requests": 3, "threads": 2,
    "by_agent": [{"agent": "gpt-4", "tokens": 1500, "cost": "0.09"}, {"agent": "", "tokens": 0, "cost": "0.02"}],
    "by_model": [{"model": "gpt-4", "tokens": 1500, "cost": "0.09"}, {"model": "", "tokens": 0, "cost": "0.02"}]})"));
  // All time: from the epoch to past now, by agent, then by model, over every scope.
  ASSERT_EQ(hooks.fake_ledger.summaries.size(), 2u);
  EXPECT_EQ(hooks.fake_ledger.summaries[0].group_by, GroupBy::agent);
  EXPECT_EQ(hooks.fake_ledger.summaries[1].group_by, GroupBy::model);
  for (const auto& q : hooks.fake_ledger.summaries) {
    EXPECT_EQ(q.start, TimePoint{});
    EXPECT_GT(q.end, clock.now());
    EXPECT_EQ(q.scope, "");
  }
}

TEST_F(UsageMethods, ThreadsByUseWithALimit) {
  ASSERT_TRUE(engine.consume("b", 10, 0));
  ASSERT_TRUE(engine.consume("a", 10, 0));
  ASSERT_TRUE(engine.consume("c", 30, 5));
  ASSERT_TRUE(engine.consume("d", 1, 0));
  json r = usage("Threads");
  ASSERT_EQ(error_of(r), "") << r.dump();
  json p = params_of(r);
  EXPECT_EQ(p["total"], 4);
  std::vector<std::string> order;
  for (const auto& t : p["threads"]) order.push_back(t["thread"]);
  EXPECT_EQ(order, (std::vector<std::string>{"c", "a", "b", "d"}));  // ties by id
  const ThreadUsage c = *engine.get_thread_usage("c");
  EXPECT_EQ(p["threads"][0], (json{{"thread", "c"},
                                   {"prompt_tokens", 30},
                                   {"completion_tokens", 5},
                                   {"total_tokens", 35},
                                   {"remaining", c.remaining},
                                   {"max_tokens", c.max_tokens},
                                   {"request_count", 1},
                                   {"reserved", 0}}));

  r = usage("Threads", {{"limit", 2}});
  EXPECT_EQ(params_of(r)["threads"].size(), 2u);
  EXPECT_EQ(params_of(r)["total"], 4);
  EXPECT_EQ(bad_parameter("Threads", {{"limit", 1001}}), "limit");
  EXPECT_EQ(bad_parameter("Threads", {{"limit", 0}}), "limit");
  EXPECT_EQ(params_of(usage("Threads", {{"limit", 1000}}))["threads"].size(), 4u);
}

TEST_F(UsageMethods, OneThread) {
  ASSERT_TRUE(engine.consume("t-1", 7, 3));
  json r = usage("Thread", {{"thread", "t-1"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r)["thread"], "t-1");
  EXPECT_EQ(params_of(r)["total_tokens"], 10);
  EXPECT_EQ(params_of(r)["request_count"], 1);
  EXPECT_FALSE(params_of(r).contains("process"));

  r = usage("Thread", {{"thread", "nope"}});
  EXPECT_EQ(error_of(r), "io.budgetd.ThreadNotFound") << r.dump();
  EXPECT_FALSE(engine.has_budget("nope"));  // asking does not create it
  EXPECT_EQ(bad_parameter("Thread", json::object()), "thread");
}

TEST_F(UsageMethods, AgentAndModelAreOneGroupOfAllTime) {
  hooks.fake_ledger.summary_result = two_groups();
  json r = usage("Model", {{"model", "gpt-4"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::parse(R"({"model": "gpt-4",
    "quantity": {"tokens_in": "1000", "tokens_out": "500"}, "tokens": 1500, "cost": "0.09", "records": 3})"));
  EXPECT_EQ(hooks.fake_ledger.summaries.back().group_by, GroupBy::model);
  EXPECT_EQ(hooks.fake_ledger.summaries.back().start, TimePoint{});

  r = usage("Agent", {{"agent", "never-seen"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::parse(R"({"agent": "never-seen", "quantity": {}, "tokens": 0,
    "cost": "0", "records": 0})"));
  EXPECT_EQ(hooks.fake_ledger.summaries.back().group_by, GroupBy::agent);
  EXPECT_EQ(bad_parameter("Agent", json::object()), "agent");
  EXPECT_EQ(bad_parameter("Model", {{"model", 1}}), "model");
}

// ---- Reset ------------------------------------------------------------------------------------

TEST_F(UsageMethods, ResetZeroesAndIsAudited) {
  ASSERT_TRUE(engine.consume("t-1", 7, 3));
  json r = usage("Reset", {{"thread", "t-1"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(params_of(r), json::object());
  // Seed 003 drops the budget; the next use starts afresh.
  auto after = engine.get_thread_usage("t-1");
  EXPECT_TRUE(!after || after->total_tokens == 0);
  ASSERT_EQ(hooks.appended.size(), 1u);
  const LedgerRecord& a = hooks.appended[0];
  EXPECT_EQ(a.kind, LedgerKind::audit);
  EXPECT_EQ(a.action, "Reset");
  EXPECT_EQ(a.thread, "t-1");
  EXPECT_EQ(a.uid, kOperator.uid);
  EXPECT_EQ(a.pid, kOperator.pid);
  EXPECT_NE(a.detail.find("t-1"), std::string::npos) << a.detail;
  EXPECT_EQ(hooks.durable_calls, 1);

  // A scope node's usage.
  json set = invoke("io.budgetd.Admin.SetLimits",
                    {{"path", "org"}, {"limits", {{{"resource", "cost"}, {"hard", "10"}}}}});
  ASSERT_EQ(error_of(set), "") << set.dump();
  hooks.appended.clear();  // Admin.SetLimits' own audit record
  ConsumeRequest req;
  req.target.scope = "org";
  req.resource = "cost";
  req.amount = dec("4");
  ASSERT_EQ(engine.consume(req)->status, ConsumeStatus::approved);
  r = usage("Reset", {{"scope", "/org"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  auto org = engine.get_scope("org");
  ASSERT_TRUE(org);
  for (const auto& slot : org->resources) {
    if (slot.resource == "cost") {
      EXPECT_EQ(slot.used, Decimal{});
    }
  }
  ASSERT_EQ(hooks.appended.size(), 1u);
  EXPECT_EQ(hooks.appended[0].action, "Reset");
  EXPECT_NE(hooks.appended[0].scope.find("org"), std::string::npos);

  // A process.
  UsageReport report;
  report.llm_calls = 2;
  ASSERT_TRUE(engine.record_usage("4242", report));
  r = usage("Reset", {{"process", "4242"}});
  ASSERT_EQ(error_of(r), "") << r.dump();
  EXPECT_EQ(engine.get_usage("4242")->llm_calls, 0u);
  ASSERT_EQ(hooks.appended.size(), 2u);
  EXPECT_EQ(hooks.appended[1].process, "4242");
}

TEST_F(UsageMethods, ResetRefusalsAreNotAudited) {
  ASSERT_TRUE(engine.consume("t-1", 7, 3));
  EXPECT_EQ(bad_parameter("Reset", json::object()), "scope");
  EXPECT_EQ(bad_parameter("Reset", {{"scope", "org"}, {"thread", "t-1"}}), "thread");
  // Checked in Admin.Reset's order (scope, thread, process): the second one given is named.
  EXPECT_EQ(bad_parameter("Reset", {{"process", "1"}, {"thread", "t-1"}}), "process");
  EXPECT_EQ(bad_parameter("Reset", {{"thread", 5}}), "thread");
  EXPECT_EQ(error_of(usage("Reset", {{"thread", "nope"}})), "io.budgetd.ThreadNotFound");
  EXPECT_EQ(error_of(usage("Reset", {{"process", "nope"}})), "io.budgetd.ProcessNotFound");
  EXPECT_EQ(error_of(usage("Reset", {{"scope", "nowhere"}})), "io.budgetd.ScopeNotFound");
  EXPECT_EQ(error_of(usage("Reset", {{"scope", "a//b"}})), "io.budgetd.InvalidArgument");
  EXPECT_TRUE(hooks.appended.empty());

  // A store that cannot take the audit record: nothing is reset.
  hooks.durable_result = fail(Errc::invalid_state, "disk full");
  json r = usage("Reset", {{"thread", "t-1"}});
  EXPECT_EQ(error_of(r), kStorageFailed) << r.dump();
  EXPECT_NE(params_of(r).value("message", "").find("disk full"), std::string::npos) << r.dump();
  EXPECT_EQ(engine.get_thread_usage("t-1")->total_tokens, 10u);
  EXPECT_TRUE(hooks.appended.empty());
}

}  // namespace
}  // namespace budgetd::ipc
