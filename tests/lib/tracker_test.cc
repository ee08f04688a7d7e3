// Seed 002's ResourceTracker through budgetd::Engine: every method and its semantics,
// timeouts and deadlines, capacity and overflow. Time is a FakeClock; nothing sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lib/engine.h"

namespace budgetd {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
const TimePoint kStart{std::chrono::sys_days{std::chrono::year{2024} / 1 / 15}};

using Fields = std::vector<std::pair<std::string, std::string>>;

Decimal D(const char* s) { return *Decimal::parse(s); }
Decimal N(uint64_t v) { return Decimal::from_int(v); }

UsageReport Calls(uint64_t llm, uint64_t tool = 0, uint64_t hops = 0, uint64_t iters = 0) {
  UsageReport r;
  r.llm_calls = llm;
  r.tool_calls = tool;
  r.agent_hops = hops;
  r.iterations = iters;
  return r;
}

UsageReport Tokens(uint64_t llm, uint64_t in, uint64_t out) {
  UsageReport r;
  r.llm_calls = llm;
  r.tokens_in = in;
  r.tokens_out = out;
  return r;
}

UsageReport Cost(const char* amount) {
  UsageReport r;
  r.cost = D(amount);
  return r;
}

std::string Name(EventKind k) { return std::string(event_kind_name(k)); }
std::string Name(Reason r) { return std::string(reason_name(r)); }
std::string Name(Errc c) { return std::string(errc_name(c)); }
std::string Name(Action a) { return std::string(action_name(a)); }

class TrackerTest : public ::testing::Test {
 protected:
  FakeClock clock_{kStart};
  Engine engine_{clock_};

  // Drains the event queue and keeps the events of one kind.
  std::vector<Event> Take(EventKind k) {
    std::vector<Event> out;
    for (auto& e : engine_.take_events())
      if (e.kind == k) out.push_back(std::move(e));
    return out;
  }
  // Drains the event queue and returns the kinds, in order.
  std::vector<std::string> Kinds() {
    std::vector<std::string> out;
    for (const auto& e : engine_.take_events()) out.push_back(Name(e.kind));
    return out;
  }
  // Advances the clock and applies what fell due.
  void AdvanceTo(Duration since_start) {
    clock_.set(kStart + since_start);
    engine_.advance();
  }
  void Allocate(const std::string& pid, const ResourceQuota& q = {},
                const std::string& scope = "/") {
    auto r = engine_.allocate(pid, q, scope);
    ASSERT_TRUE(r.has_value()) << pid << ": " << r.error().message();
    ASSERT_TRUE(*r) << pid << " was already allocated";
  }
  RecordResult Record(const std::string& pid, const UsageReport& report) {
    auto r = engine_.record_usage(pid, report);
    EXPECT_TRUE(r.has_value()) << pid << ": " << (r ? "" : r.error().message());
    return r.value_or(RecordResult{});
  }
  // check_quota's reason as its wire string; "" when within quota.
  std::string Check(const std::string& pid) {
    auto r = engine_.check_quota(pid);
    if (!r) return "error:" + Name(r.error().code);
    return *r ? Name((*r)->reason) : std::string();
  }
  Result<ResourceQuota> Adjust(const std::string& pid, const Fields& f) {
    return engine_.adjust_quota(pid, f);
  }
  void MustAdjust(const std::string& pid, const Fields& f) {
    auto r = Adjust(pid, f);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }
};

// ---- allocate ------------------------------------------------------------------------

TEST_F(TrackerTest, AllocateReturnsTrueThenFalseWhenAlreadyAllocated) {
  ResourceQuota q;
  q.max_llm_calls = 7;
  auto first = engine_.allocate("env-123", q);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(*first);
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(Name(events[0].kind), "allocated");
  EXPECT_EQ(events[0].process, "env-123");
  EXPECT_EQ(events[0].path, "/");
  EXPECT_EQ(events[0].at, kStart);

  ResourceQuota other;
  other.max_llm_calls = 99;
  auto second = engine_.allocate("env-123", other);
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(*second);
  EXPECT_EQ(engine_.get_quota("env-123")->max_llm_calls, 7u);  // the first quota stays
  EXPECT_TRUE(engine_.take_events().empty());
  EXPECT_EQ(engine_.process_count(), 1u);
}

TEST_F(TrackerTest, AllocateAcceptsOsPidsAndLogicalIds) {
  Allocate("4242");
  Allocate("env-123");
  Allocate(std::string(128, 'x'));
  Allocate("a.b:c@d_e-f~!");
  EXPECT_TRUE(engine_.is_tracked("4242"));
  EXPECT_TRUE(engine_.is_tracked("env-123"));
  EXPECT_TRUE(engine_.is_tracked(std::string(128, 'x')));
  EXPECT_EQ(engine_.process_count(), 4u);
}

TEST_F(TrackerTest, AllocateRejectsInvalidIds) {
  const std::string bad[] = {"",     std::string(129, 'a'),  "a/b",  "/", "a b", " a",
                             "a\tb", std::string("a\0b", 3), "a\x7f"};
  for (const auto& id : bad) {
    SCOPED_TRACE("id of " + std::to_string(id.size()) + " bytes: " + id);
    auto a = engine_.allocate(id, ResourceQuota{});
    ASSERT_FALSE(a.has_value());
    EXPECT_EQ(Name(a.error().code), "invalid_id");
    auto r = engine_.record_usage(id, Calls(1));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(Name(r.error().code), "invalid_id");
    EXPECT_FALSE(engine_.is_tracked(id));
  }
  EXPECT_EQ(engine_.process_count(), 0u);
  EXPECT_TRUE(engine_.take_events().empty());
}

TEST_F(TrackerTest, AllocatePlacesTheProcessInItsScope) {
  Allocate("p", ResourceQuota{}, "acme/research");
  EXPECT_EQ(engine_.get_process("p")->scope, "acme/research");
  Allocate("q", ResourceQuota{}, "/acme/research/");
  EXPECT_EQ(engine_.get_process("q")->scope, "acme/research");
  auto bad = engine_.allocate("r", ResourceQuota{}, "acme/re search");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(Name(bad.error().code), "invalid_id");
  EXPECT_FALSE(engine_.is_tracked("r"));
}

TEST_F(TrackerTest, AllocateRecordsOwner) {
  auto r = engine_.allocate("p", ResourceQuota{}, "/", 1000);
  ASSERT_TRUE(r.has_value() && *r);
  EXPECT_EQ(engine_.get_process("p")->owner, 1000u);
}

TEST_F(TrackerTest, CapacityIsEnforced) {
  EngineConfig cfg;
  cfg.max_processes = 2;
  Engine e(clock_, cfg);
  ASSERT_TRUE(*e.allocate("a", ResourceQuota{}));
  ASSERT_TRUE(*e.allocate("b", ResourceQuota{}));
  auto c = e.allocate("c", ResourceQuota{});
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(Name(c.error().code), "capacity_exceeded");
  auto rec = e.record_usage("c", Calls(1));  // auto-create hits the same bound
  ASSERT_FALSE(rec.has_value());
  EXPECT_EQ(Name(rec.error().code), "capacity_exceeded");
  EXPECT_FALSE(e.is_tracked("c"));
  EXPECT_EQ(e.process_count(), 2u);
  // Re-allocating a tracked pid is "already allocated", not a capacity error.
  auto again = e.allocate("a", ResourceQuota{});
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(*again);
  // Recording for a tracked pid at capacity works.
  EXPECT_TRUE(e.record_usage("a", Calls(1)).has_value());
  // A release makes room.
  EXPECT_TRUE(e.release("a"));
  auto c2 = e.allocate("c", ResourceQuota{});
  ASSERT_TRUE(c2.has_value());
  EXPECT_TRUE(*c2);
}

// ---- release -------------------------------------------------------------------------

TEST_F(TrackerTest, ReleaseUnknownReturnsFalse) {
  EXPECT_FALSE(engine_.release("nobody"));
  EXPECT_FALSE(engine_.release(""));
  EXPECT_TRUE(engine_.take_events().empty());
}

TEST_F(TrackerTest, ReleaseEmitsFinalUsageAndForgetsTheProcess) {
  Allocate("p");
  UsageReport r = Tokens(3, 100, 50);
  r.tool_calls = 2;
  r.agent_hops = 1;
  r.iterations = 1;
  r.cost = D("0.25");
  Record("p", r);
  clock_.advance(5s);
  engine_.take_events();

  EXPECT_TRUE(engine_.release("p"));
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  const Event& e = events[0];
  EXPECT_EQ(Name(e.kind), "released");
  EXPECT_EQ(e.process, "p");
  EXPECT_EQ(e.path, "/");
  EXPECT_EQ(e.at, kStart + 5s);
  EXPECT_EQ(e.message, "Process released.");
  ASSERT_TRUE(e.usage.has_value());
  EXPECT_EQ(e.usage->llm_calls, 3u);
  EXPECT_EQ(e.usage->tool_calls, 2u);
  EXPECT_EQ(e.usage->agent_hops, 1u);
  EXPECT_EQ(e.usage->iterations, 1u);
  EXPECT_EQ(e.usage->tokens_in, 100u);
  EXPECT_EQ(e.usage->tokens_out, 50u);
  EXPECT_EQ(e.usage->cost.to_string(), "0.25");

  EXPECT_FALSE(engine_.is_tracked("p"));
  EXPECT_FALSE(engine_.get_usage("p").has_value());
  EXPECT_FALSE(engine_.get_quota("p").has_value());
  EXPECT_FALSE(engine_.get_process("p").has_value());
  EXPECT_FALSE(engine_.get_remaining_budget("p").has_value());
  EXPECT_FALSE(engine_.update_elapsed_time("p").has_value());
  EXPECT_EQ(Name(engine_.check_quota("p").error().code), "unknown_process");
  EXPECT_FALSE(engine_.release("p"));
  EXPECT_EQ(engine_.process_count(), 0u);
}

TEST_F(TrackerTest, ReleaseFreesItsReservations) {
  Allocate("p", ResourceQuota{}, "acme");
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, N(1000)).has_value());
  ASSERT_TRUE(est.add(res::llm_calls, N(1)).has_value());
  Target t;
  t.process = "p";
  auto rr = engine_.reserve(t, est, 60s);
  ASSERT_TRUE(rr.has_value()) << rr.error().message();
  ASSERT_TRUE(rr->admitted);
  EXPECT_EQ(engine_.hold_count(), 1u);
  EXPECT_EQ(engine_.get_process("p")->reserved.tokens_in, 1000u);
  EXPECT_EQ(engine_.get_process("p")->reserved.llm_calls, 1u);

  auto reserved = [&](const std::string& path, const std::string& resource) {
    auto v = engine_.get_scope(path);
    EXPECT_TRUE(v.has_value());
    if (!v) return std::string("?");
    for (const auto& s : v->resources)
      if (s.resource == resource) return s.reserved.to_string();
    return std::string("0");
  };
  EXPECT_EQ(reserved("acme", "tokens_in"), "1000");
  EXPECT_EQ(reserved("acme", "tokens"), "1000");
  EXPECT_EQ(reserved("/", "llm_calls"), "1");

  EXPECT_TRUE(engine_.release("p"));
  EXPECT_EQ(engine_.hold_count(), 0u);
  EXPECT_EQ(reserved("acme", "tokens_in"), "0");
  EXPECT_EQ(reserved("acme", "tokens"), "0");
  EXPECT_EQ(reserved("/", "llm_calls"), "0");
  EXPECT_EQ(reserved("/", "tokens_in"), "0");
  auto commit = engine_.commit(rr->id, Tokens(1, 10, 10));
  ASSERT_FALSE(commit.has_value());
  EXPECT_EQ(Name(commit.error().code), "unknown_reservation");

  // The freed hold never expires later, and a re-allocated pid starts with no holds.
  engine_.take_events();
  AdvanceTo(120s);
  EXPECT_TRUE(Take(EventKind::reservation_expired).empty());
  Allocate("p", ResourceQuota{}, "acme");
  EXPECT_EQ(engine_.get_process("p")->reserved, ResourceUsage{});
}

// ---- get_quota / defaults --------------------------------------------------------------

TEST_F(TrackerTest, DefaultQuotaIsExactlySeed002s) {
  ASSERT_TRUE(*engine_.allocate("p"));
  auto q = engine_.get_quota("p");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->max_input_tokens, 4096u);
  EXPECT_EQ(q->max_output_tokens, 2048u);
  EXPECT_EQ(q->max_context_tokens, 16384u);
  EXPECT_EQ(q->max_llm_calls, 10u);
  EXPECT_EQ(q->max_tool_calls, 50u);
  EXPECT_EQ(q->max_agent_hops, 21u);
  EXPECT_EQ(q->max_iterations, 3u);
  EXPECT_EQ(q->timeout_seconds, 300u);
  EXPECT_EQ(q->soft_timeout_seconds, 240u);
  EXPECT_EQ(q->max_tokens, kUnlimited);
  EXPECT_EQ(q->max_cost, kUnlimitedAmount);
  EXPECT_EQ(*q, ResourceQuota{});
  EXPECT_EQ(engine_.config().default_quota, ResourceQuota{});
}

TEST_F(TrackerTest, GetQuotaReturnsTheAllocatedQuota) {
  ResourceQuota q;
  q.max_llm_calls = 3;
  q.max_cost = D("0.5");
  q.on_timeout = Action::terminate;
  Allocate("p", q);
  EXPECT_EQ(engine_.get_quota("p"), q);
  EXPECT_FALSE(engine_.get_quota("nobody").has_value());
}

// ---- adjust_quota ----------------------------------------------------------------------

TEST_F(TrackerTest, AdjustQuotaAppliesEveryField) {
  Allocate("p");
  engine_.take_events();
  auto r = Adjust("p", {{"max_llm_calls", "20"},
                        {"timeout_seconds", "600"},
                        {"max_cost", "1.25"},
                        {"on_violation", "terminate"}});
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->max_llm_calls, 20u);
  EXPECT_EQ(r->timeout_seconds, 600u);
  EXPECT_EQ(r->max_cost.to_string(), "1.25");
  EXPECT_EQ(r->on_violation, Action::terminate);
  EXPECT_EQ(engine_.get_quota("p"), *r);
  ResourceQuota expected;
  expected.max_llm_calls = 20;
  expected.timeout_seconds = 600;
  expected.max_cost = D("1.25");
  expected.on_violation = Action::terminate;
  EXPECT_EQ(*r, expected);

  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(Name(events[0].kind), "limit_changed");
  EXPECT_EQ(events[0].process, "p");
  EXPECT_EQ(events[0].message, "Quota adjusted.");
}

TEST_F(TrackerTest, AdjustQuotaIsAllOrNothing) {
  Allocate("p");
  engine_.take_events();
  const ResourceQuota before = *engine_.get_quota("p");
  struct Case {
    Fields fields;
    const char* errc;
  };
  const Case cases[] = {
      {{{"max_llm_calls", "20"}, {"max_tool_calls", "-1"}}, "negative_amount"},
      {{{"max_llm_calls", "20"}, {"max_tool_calls", "many"}}, "invalid_argument"},
      {{{"max_llm_calls", "20"}, {"max_tool_calls", "18446744073709551616"}}, "overflow"},
      {{{"max_llm_calls", "20"}, {"on_timeout", "explode"}}, "invalid_argument"},
      {{{"max_llm_calls", "20"}, {"max_cost", "1.x"}}, "malformed_decimal"},
      {{{"max_llm_calls", "20"}, {"max_llm_callz", "30"}}, "unknown_field"},
      {{{"bogus", "1"}, {"max_llm_calls", "20"}}, "unknown_field"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.errc);
    auto r = Adjust("p", c.fields);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(Name(r.error().code), c.errc);
    EXPECT_EQ(engine_.get_quota("p"), before);
  }
  EXPECT_TRUE(engine_.take_events().empty());  // no limit_changed for a refused change
}

TEST_F(TrackerTest, AdjustQuotaUnknownPid) {
  auto r = Adjust("nobody", {{"max_llm_calls", "20"}});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(Name(r.error().code), "unknown_process");
  EXPECT_FALSE(engine_.is_tracked("nobody"));
}

TEST_F(TrackerTest, AdjustQuotaToUnlimited) {
  Allocate("p");
  MustAdjust("p", {{"max_llm_calls", "unlimited"}, {"max_input_tokens", "unlimited"}});
  EXPECT_EQ(engine_.get_quota("p")->max_llm_calls, kUnlimited);
  engine_.take_events();
  auto rec = Record("p", Tokens(1000, 1'000'000, 0));
  EXPECT_TRUE(rec.violations.empty());
  EXPECT_TRUE(Take(EventKind::threshold_crossed).empty());
  EXPECT_EQ(rec.usage.llm_calls, 1000u);
  EXPECT_EQ(Check("p"), "");
  EXPECT_EQ(engine_.get_remaining_budget("p")->llm_calls, kUnlimited);
}

TEST_F(TrackerTest, RaisingMaxLlmCallsReadmits) {
  Allocate("p");
  Record("p", Calls(10));
  EXPECT_EQ(Check("p"), "max_llm_calls_exceeded");
  EXPECT_EQ(engine_.get_process("p")->state, Reason::max_llm_calls_exceeded);
  MustAdjust("p", {{"max_llm_calls", "20"}});
  EXPECT_EQ(Check("p"), "");
  EXPECT_EQ(engine_.get_process("p")->state, Reason::none);
  EXPECT_EQ(engine_.get_remaining_budget("p")->llm_calls, 10u);
  // The raised limit re-arms its thresholds: 16 of 20 is a new 80% crossing.
  engine_.take_events();
  Record("p", Calls(6));
  auto warn = Take(EventKind::threshold_crossed);
  ASSERT_EQ(warn.size(), 1u);
  EXPECT_EQ(warn[0].percent, 80u);
  EXPECT_EQ(warn[0].used.to_string(), "16");
  EXPECT_EQ(warn[0].limit.to_string(), "20");
  // Lowering below usage refuses at once.
  MustAdjust("p", {{"max_llm_calls", "16"}});
  EXPECT_EQ(Check("p"), "max_llm_calls_exceeded");
}

TEST_F(TrackerTest, RaisingTimeoutAfterTimeoutReadmits) {
  Allocate("p");
  AdvanceTo(300s);
  ASSERT_EQ(Take(EventKind::timeout).size(), 1u);
  EXPECT_EQ(Check("p"), "timeout_exceeded");
  EXPECT_EQ(engine_.get_remaining_budget("p")->time_seconds, 0);

  MustAdjust("p", {{"timeout_seconds", "600"}});
  EXPECT_EQ(Check("p"), "");
  EXPECT_EQ(engine_.get_remaining_budget("p")->time_seconds, 300);
  EXPECT_TRUE(Take(EventKind::timeout).empty());

  // The new deadline fires once, at the new instant.
  AdvanceTo(599s);
  EXPECT_TRUE(Take(EventKind::timeout).empty());
  EXPECT_EQ(Check("p"), "");
  AdvanceTo(600s);
  auto t = Take(EventKind::timeout);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].limit.to_string(), "600");
  EXPECT_EQ(t[0].used.to_string(), "600");
  EXPECT_EQ(Check("p"), "timeout_exceeded");
  AdvanceTo(2000s);
  EXPECT_TRUE(Take(EventKind::timeout).empty());
}

TEST_F(TrackerTest, LoweringTimeoutBelowElapsedFiresAtOnce) {
  Allocate("p");
  clock_.advance(100s);
  engine_.take_events();
  MustAdjust("p", {{"timeout_seconds", "60"}});
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(Name(events[0].kind), "limit_changed");
  EXPECT_EQ(Name(events[1].kind), "timeout");
  EXPECT_EQ(events[1].process, "p");
  EXPECT_EQ(Name(events[1].reason), "timeout_exceeded");
  EXPECT_EQ(events[1].used.to_string(), "100");
  EXPECT_EQ(events[1].limit.to_string(), "60");
  EXPECT_EQ(events[1].at, kStart + 100s);
  EXPECT_EQ(Check("p"), "timeout_exceeded");
  AdvanceTo(1000s);
  EXPECT_TRUE(Take(EventKind::timeout).empty());  // once
}

TEST_F(TrackerTest, LoweringSoftTimeoutBelowElapsedFiresAtOnce) {
  Allocate("p");
  clock_.advance(100s);
  engine_.take_events();
  MustAdjust("p", {{"soft_timeout_seconds", "50"}});
  auto soft = Take(EventKind::soft_timeout);
  ASSERT_EQ(soft.size(), 1u);
  EXPECT_EQ(soft[0].limit.to_string(), "50");
  EXPECT_EQ(soft[0].used.to_string(), "100");
  EXPECT_EQ(Check("p"), "");  // a soft timeout warns, it does not refuse
  AdvanceTo(299s);
  EXPECT_TRUE(Take(EventKind::soft_timeout).empty());
}

TEST_F(TrackerTest, MovingATimeoutBeforeItFiresUsesOnlyTheNewInstant) {
  Allocate("p");
  AdvanceTo(10s);
  MustAdjust("p", {{"timeout_seconds", "600"}});
  AdvanceTo(300s);
  EXPECT_TRUE(Take(EventKind::timeout).empty());  // the old entry is stale
  AdvanceTo(600s);
  EXPECT_EQ(Take(EventKind::timeout).size(), 1u);

  Allocate("q");  // allocated at 600 s
  MustAdjust("q", {{"timeout_seconds", "100"}});
  AdvanceTo(699s);
  EXPECT_TRUE(Take(EventKind::timeout).empty());
  AdvanceTo(700s);
  auto t = Take(EventKind::timeout);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].process, "q");
  EXPECT_EQ(t[0].limit.to_string(), "100");
  AdvanceTo(900s);  // q's original 300 s entry does not fire
  EXPECT_TRUE(Take(EventKind::timeout).empty());
}

// ---- record_usage ----------------------------------------------------------------------

TEST_F(TrackerTest, RecordUsageAutoCreatesWithTheDefaultQuota) {
  clock_.advance(5s);
  auto rec = Record("env-9", Calls(1, 2));
  EXPECT_TRUE(engine_.is_tracked("env-9"));
  EXPECT_EQ(engine_.get_quota("env-9"), ResourceQuota{});
  EXPECT_EQ(engine_.get_process("env-9")->allocated_at, kStart + 5s);
  EXPECT_EQ(engine_.get_process("env-9")->scope, "/");
  EXPECT_EQ(rec.usage.llm_calls, 1u);
  EXPECT_EQ(rec.usage.tool_calls, 2u);
  auto kinds = Kinds();
  ASSERT_EQ(kinds.size(), 1u);
  EXPECT_EQ(kinds[0], "allocated");
}

TEST_F(TrackerTest, RecordUsageAutoCreatesWithTheConfiguredDefault) {
  EngineConfig cfg;
  cfg.default_quota.max_llm_calls = 2;
  Engine e(clock_, cfg);
  auto rec = e.record_usage("p", Calls(2));
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(e.get_quota("p")->max_llm_calls, 2u);
  ASSERT_EQ(rec->violations.size(), 1u);
  EXPECT_EQ(Name(rec->violations[0].reason), "max_llm_calls_exceeded");
}

TEST_F(TrackerTest, RecordUsageAccumulatesAndReturnsTheUsage) {
  Allocate("p");
  UsageReport a = Tokens(1, 500, 200);
  a.tool_calls = 3;
  a.agent_hops = 2;
  a.iterations = 1;
  a.cost = D("0.0375");
  auto r1 = Record("p", a);
  EXPECT_EQ(r1.usage.llm_calls, 1u);
  EXPECT_EQ(r1.usage.tokens_in, 500u);
  auto r2 = Record("p", a);
  ResourceUsage expected;
  expected.llm_calls = 2;
  expected.tool_calls = 6;
  expected.agent_hops = 4;
  expected.iterations = 2;
  expected.tokens_in = 1000;
  expected.tokens_out = 400;
  expected.cost = D("0.075");
  EXPECT_EQ(r2.usage, expected);
  EXPECT_EQ(engine_.get_usage("p"), expected);
  EXPECT_EQ(r2.usage.tokens(), 1400u);
  // An empty report changes nothing.
  EXPECT_EQ(Record("p", UsageReport{}).usage, expected);
}

TEST_F(TrackerTest, RecordUsageRejectsANegativeCostWithoutSideEffects) {
  Allocate("p");
  UsageReport r = Calls(1);
  r.cost = *Decimal::parse("-1", true);
  auto rec = engine_.record_usage("p", r);
  ASSERT_FALSE(rec.has_value());
  EXPECT_EQ(Name(rec.error().code), "negative_amount");
  EXPECT_EQ(engine_.get_usage("p")->llm_calls, 0u);
  // Nor is an unknown pid created by a report that is refused.
  auto rec2 = engine_.record_usage("fresh", r);
  ASSERT_FALSE(rec2.has_value());
  EXPECT_EQ(Name(rec2.error().code), "negative_amount");
  EXPECT_FALSE(engine_.is_tracked("fresh"));
}

TEST_F(TrackerTest, RecordUsageUpdatesElapsedTime) {
  Allocate("p");
  clock_.advance(12500ms);
  Record("p", Calls(1));
  EXPECT_DOUBLE_EQ(engine_.get_process("p")->elapsed_seconds, 12.5);
  EXPECT_EQ(engine_.get_process("p")->allocated_at, kStart);
  clock_.advance(2500ms);
  Record("p", Calls(1));
  EXPECT_DOUBLE_EQ(engine_.get_process("p")->elapsed_seconds, 15.0);
}

TEST_F(TrackerTest, ThresholdsAt80And90FireOncePerCrossing) {
  Allocate("p");
  engine_.take_events();

  auto r = Record("p", Calls(7));  // 70%
  EXPECT_TRUE(r.violations.empty());
  EXPECT_TRUE(Take(EventKind::threshold_crossed).empty());

  r = Record("p", Calls(1));  // 80%
  EXPECT_TRUE(r.violations.empty());
  auto w = Take(EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].process, "p");
  EXPECT_EQ(w[0].path, "/");
  EXPECT_EQ(w[0].resource, "llm_calls");
  EXPECT_EQ(w[0].used.to_string(), "8");
  EXPECT_EQ(w[0].limit.to_string(), "10");
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(w[0].message, "Approaching limit.");
  EXPECT_EQ(event_severity(w[0].kind), Severity::warning);

  // More reports above 80% but below 90%: no repeat.
  Record("p", Calls(0, 1));
  Record("p", UsageReport{});
  Record("p", Tokens(0, 10, 10));
  EXPECT_TRUE(Take(EventKind::threshold_crossed).empty());

  r = Record("p", Calls(1));  // 90%
  EXPECT_TRUE(r.violations.empty());
  w = Take(EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 90u);
  EXPECT_EQ(w[0].used.to_string(), "9");
  Record("p", Calls(0, 1));
  EXPECT_TRUE(Take(EventKind::threshold_crossed).empty());

  r = Record("p", Calls(1));  // 100%: a violation, not a threshold
  EXPECT_TRUE(Take(EventKind::threshold_crossed).empty());
  ASSERT_EQ(r.violations.size(), 1u);

  r = Record("p", Calls(5));  // already past: no new events, still recorded
  EXPECT_TRUE(r.violations.empty());
  EXPECT_TRUE(engine_.take_events().empty());
  EXPECT_EQ(r.usage.llm_calls, 15u);
}

TEST_F(TrackerTest, OneReportCrossingBothThresholdsWarnsOnceAtTheHigher) {
  Allocate("p");
  engine_.take_events();
  Record("p", Calls(9));
  auto w = Take(EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 90u);

  Allocate("q");
  engine_.take_events();
  auto r = Record("q", Calls(10));
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(Name(events[0].kind), "violation");
  ASSERT_EQ(r.violations.size(), 1u);
}

TEST_F(TrackerTest, ThresholdsOnToolCalls) {
  Allocate("p");
  engine_.take_events();
  Record("p", Calls(0, 39));
  EXPECT_TRUE(Take(EventKind::threshold_crossed).empty());
  Record("p", Calls(0, 1));
  auto w = Take(EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].resource, "tool_calls");
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(w[0].limit.to_string(), "50");
  Record("p", Calls(0, 5));
  w = Take(EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 90u);
  EXPECT_EQ(w[0].used.to_string(), "45");
}

TEST_F(TrackerTest, ViolationWhenALimitIsReached) {
  ResourceQuota q;
  q.on_violation = Action::terminate;
  q.kill_grace_seconds = 5;
  Allocate("p", q);
  Record("p", Calls(9));
  engine_.take_events();
  clock_.advance(3s);
  auto r = Record("p", Calls(1));
  ASSERT_EQ(r.violations.size(), 1u);
  const Violation& v = r.violations[0];
  EXPECT_EQ(Name(v.reason), "max_llm_calls_exceeded");
  EXPECT_EQ(v.path, "/");
  EXPECT_EQ(v.resource, "llm_calls");
  EXPECT_EQ(v.used.to_string(), "10");
  EXPECT_EQ(v.limit.to_string(), "10");
  EXPECT_EQ(v.message, "Quota exceeded: max_llm_calls_exceeded.");

  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  const Event& e = events[0];
  EXPECT_EQ(Name(e.kind), "violation");
  EXPECT_EQ(e.process, "p");
  EXPECT_EQ(e.path, "/");
  EXPECT_EQ(e.resource, "llm_calls");
  EXPECT_EQ(Name(e.reason), "max_llm_calls_exceeded");
  EXPECT_EQ(e.used.to_string(), "10");
  EXPECT_EQ(e.limit.to_string(), "10");
  EXPECT_EQ(e.percent, 100u);
  EXPECT_EQ(Name(e.action), "terminate");
  EXPECT_EQ(e.grace_seconds, 5u);
  EXPECT_EQ(e.at, kStart + 3s);
  EXPECT_EQ(event_severity(e.kind), Severity::error);
}

TEST_F(TrackerTest, ViolationForEveryCumulativeLimit) {
  struct Case {
    const char* reason;
    const char* resource;
    const char* limit;
    Fields adjust;
    UsageReport report;
  };
  UsageReport tokens = Tokens(1, 60, 40);
  const Case cases[] = {
      {"max_llm_calls_exceeded", "llm_calls", "10", {}, Calls(10)},
      {"max_tool_calls_exceeded", "tool_calls", "50", {}, Calls(0, 50)},
      {"max_agent_hops_exceeded", "agent_hops", "21", {}, Calls(0, 0, 21)},
      {"max_iterations_exceeded", "iterations", "3", {}, Calls(0, 0, 0, 3)},
      {"max_tokens_exceeded", "tokens", "100", {{"max_tokens", "100"}}, tokens},
      {"max_cost_exceeded", "cost", "1.5", {{"max_cost", "1.5"}}, Cost("1.5")},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.reason);
    FakeClock clock(kStart);
    Engine e(clock);
    ASSERT_TRUE(*e.allocate("p"));
    ASSERT_TRUE(e.adjust_quota("p", c.adjust).has_value());
    e.take_events();
    auto r = e.record_usage("p", c.report);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->violations.size(), 1u);
    EXPECT_EQ(Name(r->violations[0].reason), c.reason);
    EXPECT_EQ(r->violations[0].resource, c.resource);
    EXPECT_EQ(r->violations[0].limit.to_string(), c.limit);
    EXPECT_EQ(r->violations[0].used.to_string(), c.limit);
    auto events = e.take_events();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(Name(events[0].kind), "violation");
    EXPECT_EQ(Name(events[0].reason), c.reason);
    EXPECT_EQ(events[0].resource, c.resource);
  }
}

TEST_F(TrackerTest, UsageIsRecordedEvenAboveLimits) {
  Allocate("p");
  auto r = Record("p", Calls(25, 70, 30, 9));
  EXPECT_EQ(r.usage.llm_calls, 25u);
  EXPECT_EQ(r.usage.tool_calls, 70u);
  EXPECT_EQ(r.usage.agent_hops, 30u);
  EXPECT_EQ(r.usage.iterations, 9u);
  // One report passing four limits returns all four, in seed order.
  ASSERT_EQ(r.violations.size(), 4u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_llm_calls_exceeded");
  EXPECT_EQ(Name(r.violations[1].reason), "max_tool_calls_exceeded");
  EXPECT_EQ(Name(r.violations[2].reason), "max_agent_hops_exceeded");
  EXPECT_EQ(Name(r.violations[3].reason), "max_iterations_exceeded");
  EXPECT_EQ(r.violations[0].used.to_string(), "25");
  // After a timeout, too.
  AdvanceTo(400s);
  r = Record("p", Calls(1));
  EXPECT_EQ(r.usage.llm_calls, 26u);
  EXPECT_EQ(engine_.get_system_usage().system_llm_calls, 26u);
}

// ---- per-call caps -----------------------------------------------------------------------

TEST_F(TrackerTest, PerCallInputCap) {
  ResourceQuota q;
  q.on_violation = Action::pause;
  Allocate("p", q);
  engine_.take_events();
  EXPECT_TRUE(Record("p", Tokens(1, 4096, 0)).violations.empty());
  auto r = Record("p", Tokens(1, 4097, 0));
  ASSERT_EQ(r.violations.size(), 1u);
  const Violation& v = r.violations[0];
  EXPECT_EQ(Name(v.reason), "max_input_tokens_exceeded");
  EXPECT_EQ(v.resource, "tokens_in");
  EXPECT_EQ(v.used.to_string(), "4097");
  EXPECT_EQ(v.limit.to_string(), "4096");
  EXPECT_EQ(v.path, "/");
  EXPECT_EQ(r.usage.tokens_in, 4096u + 4097u);  // recorded anyway
  auto events = Take(EventKind::violation);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(Name(events[0].reason), "max_input_tokens_exceeded");
  EXPECT_EQ(events[0].process, "p");
  EXPECT_EQ(events[0].resource, "tokens_in");
  EXPECT_EQ(events[0].used.to_string(), "4097");
  EXPECT_EQ(events[0].limit.to_string(), "4096");
  EXPECT_EQ(Name(events[0].action), "pause");
  // A per-call cap is about one call: it does not refuse the next one.
  EXPECT_EQ(Check("p"), "");
  // Every offending call is reported, not only the first.
  EXPECT_EQ(Record("p", Tokens(1, 5000, 0)).violations.size(), 1u);
}

TEST_F(TrackerTest, PerCallOutputCap) {
  Allocate("p");
  EXPECT_TRUE(Record("p", Tokens(1, 0, 2048)).violations.empty());
  auto r = Record("p", Tokens(1, 0, 2049));
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_output_tokens_exceeded");
  EXPECT_EQ(r.violations[0].resource, "tokens_out");
  EXPECT_EQ(r.violations[0].used.to_string(), "2049");
  EXPECT_EQ(r.violations[0].limit.to_string(), "2048");
}

TEST_F(TrackerTest, PerCallContextCap) {
  Allocate("p");
  UsageReport ok = Tokens(1, 100, 100);
  ok.context_tokens = 16384;
  EXPECT_TRUE(Record("p", ok).violations.empty());
  UsageReport big = Tokens(1, 100, 100);
  big.context_tokens = 16385;
  auto r = Record("p", big);
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_context_tokens_exceeded");
  EXPECT_EQ(r.violations[0].resource, "context_tokens");
  EXPECT_EQ(r.violations[0].used.to_string(), "16385");
  EXPECT_EQ(r.violations[0].limit.to_string(), "16384");
  // context_tokens is not itself charged as usage.
  EXPECT_EQ(r.usage.tokens(), 400u);
}

TEST_F(TrackerTest, PerCallContextDefaultsToInPlusOut) {
  Allocate("p");
  MustAdjust("p", {{"max_context_tokens", "5000"}});
  EXPECT_TRUE(Record("p", Tokens(1, 3000, 2000)).violations.empty());
  auto r = Record("p", Tokens(1, 3000, 2001));
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_context_tokens_exceeded");
  EXPECT_EQ(r.violations[0].used.to_string(), "5001");
}

TEST_F(TrackerTest, PerCallCapsDivideByTheNumberOfCalls) {
  Allocate("p");
  MustAdjust("p", {{"max_llm_calls", "100"}});
  EXPECT_TRUE(Record("p", Tokens(2, 8192, 4096)).violations.empty());
  auto r = Record("p", Tokens(2, 8193, 0));
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_input_tokens_exceeded");
  EXPECT_EQ(r.violations[0].used.to_string(), "4097");  // ceil(8193 / 2)
  r = Record("p", Tokens(2, 0, 4097));
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_output_tokens_exceeded");
  EXPECT_EQ(r.violations[0].used.to_string(), "2049");
  UsageReport ctx = Tokens(3, 0, 0);
  ctx.context_tokens = 3 * 16384 + 1;
  r = Record("p", ctx);
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_context_tokens_exceeded");
  EXPECT_EQ(r.violations[0].used.to_string(), "16385");
  // Tokens without any call count as one call.
  r = Record("p", Tokens(0, 4097, 0));
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "max_input_tokens_exceeded");
}

// ---- get_usage / get_all_usage -------------------------------------------------------------

TEST_F(TrackerTest, GetUsage) {
  EXPECT_FALSE(engine_.get_usage("p").has_value());
  Allocate("p");
  EXPECT_EQ(engine_.get_usage("p"), ResourceUsage{});
  Record("p", Tokens(2, 30, 40));
  auto u = engine_.get_usage("p");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->llm_calls, 2u);
  EXPECT_EQ(u->tokens_in, 30u);
  EXPECT_EQ(u->tokens_out, 40u);
}

TEST_F(TrackerTest, GetAllUsageIsSortedByPid) {
  EXPECT_TRUE(engine_.get_all_usage().empty());
  Record("zeta", Calls(1));
  Record("alpha", Calls(2));
  Record("m-1", Calls(3));
  Record("4242", Calls(4));
  Allocate("beta");
  auto all = engine_.get_all_usage();
  ASSERT_EQ(all.size(), 5u);
  const std::pair<const char*, uint64_t> expected[] = {
      {"4242", 4}, {"alpha", 2}, {"beta", 0}, {"m-1", 3}, {"zeta", 1}};
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].first, expected[i].first) << i;
    EXPECT_EQ(all[i].second.llm_calls, expected[i].second) << i;
  }
  engine_.release("alpha");
  all = engine_.get_all_usage();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[1].first, "beta");
}

// ---- update_elapsed_time -------------------------------------------------------------------

TEST_F(TrackerTest, UpdateElapsedTimeInSeconds) {
  EXPECT_FALSE(engine_.update_elapsed_time("p").has_value());
  Allocate("p");
  EXPECT_DOUBLE_EQ(*engine_.update_elapsed_time("p"), 0.0);
  clock_.advance(1250ms);
  EXPECT_DOUBLE_EQ(*engine_.update_elapsed_time("p"), 1.25);
  clock_.advance(1us);
  EXPECT_DOUBLE_EQ(*engine_.update_elapsed_time("p"), 1.250001);
  clock_.advance(400s);
  EXPECT_DOUBLE_EQ(*engine_.update_elapsed_time("p"), 401.250001);
  // It applies what fell due on the way.
  EXPECT_EQ(Kinds(), (std::vector<std::string>{"allocated", "soft_timeout", "timeout"}));
}

// ---- check_quota ------------------------------------------------------------------------

TEST_F(TrackerTest, CheckQuotaReturnsEachReasonExactly) {
  struct Case {
    const char* reason;
    const char* resource;
    const char* used;
    const char* limit;
    Fields adjust;
    UsageReport below, at;  // recorded in turn: the first stays within, the second hits
    Duration advance_below, advance_at;
  };
  const Case cases[] = {
      {"max_llm_calls_exceeded", "llm_calls", "10", "10", {}, Calls(9), Calls(1), 0s, 0s},
      {"max_tool_calls_exceeded", "tool_calls", "50", "50", {}, Calls(0, 49), Calls(0, 1), 0s, 0s},
      {"max_agent_hops_exceeded",
       "agent_hops",
       "21",
       "21",
       {},
       Calls(0, 0, 20),
       Calls(0, 0, 1),
       0s,
       0s},
      {"max_iterations_exceeded",
       "iterations",
       "3",
       "3",
       {},
       Calls(0, 0, 0, 2),
       Calls(0, 0, 0, 1),
       0s,
       0s},
      {"timeout_exceeded", "elapsed", "300", "300", {}, {}, {}, 299s, 1s},
      {"max_tokens_exceeded",
       "tokens",
       "100",
       "100",
       {{"max_tokens", "100"}},
       Tokens(1, 60, 39),
       Tokens(0, 0, 1),
       0s,
       0s},
      {"max_cost_exceeded",
       "cost",
       "1.5",
       "1.5",
       {{"max_cost", "1.5"}},
       Cost("1.499999999999"),
       Cost("0.000000000001"),
       0s,
       0s},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.reason);
    FakeClock clock(kStart);
    Engine e(clock);
    ASSERT_TRUE(*e.allocate("p"));
    ASSERT_TRUE(e.adjust_quota("p", c.adjust).has_value());
    ASSERT_TRUE(e.record_usage("p", c.below).has_value());
    clock.advance(c.advance_below);
    auto within = e.check_quota("p");
    ASSERT_TRUE(within.has_value());
    EXPECT_FALSE(within->has_value()) << reason_name((*within)->reason);

    ASSERT_TRUE(e.record_usage("p", c.at).has_value());
    clock.advance(c.advance_at);
    auto hit = e.check_quota("p");
    ASSERT_TRUE(hit.has_value());
    ASSERT_TRUE(hit->has_value());
    const Refusal& r = **hit;
    EXPECT_EQ(Name(r.reason), c.reason);
    EXPECT_EQ(r.resource, c.resource);
    EXPECT_EQ(r.used.to_string(), c.used);
    EXPECT_EQ(r.limit.to_string(), c.limit);
    EXPECT_EQ(r.path, "/");
    EXPECT_EQ(r.message, "Quota exceeded: " + std::string(c.reason) + ".");
    EXPECT_EQ(e.get_process("p")->state, r.reason);
  }
}

TEST_F(TrackerTest, CheckQuotaFollowsSeedOrder) {
  struct Case {
    const char* expected;
    UsageReport report;
    Duration elapsed;
  };
  UsageReport tokens_and_cost = Tokens(0, 100, 0);
  tokens_and_cost.cost = D("2");
  UsageReport iters_and_tokens = Calls(0, 0, 0, 3);
  iters_and_tokens.tokens_in = 100;
  const Case cases[] = {
      {"max_llm_calls_exceeded", Calls(10, 50, 21, 3), 300s},
      {"max_tool_calls_exceeded", Calls(9, 50, 21, 3), 300s},
      {"max_agent_hops_exceeded", Calls(0, 0, 21, 3), 300s},
      {"max_iterations_exceeded", iters_and_tokens, 300s},
      {"timeout_exceeded", tokens_and_cost, 300s},
      {"max_tokens_exceeded", tokens_and_cost, 0s},
      {"max_cost_exceeded", Cost("2"), 0s},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.expected);
    FakeClock clock(kStart);
    Engine e(clock);
    ResourceQuota q;
    q.max_tokens = 100;
    q.max_cost = D("2");
    ASSERT_TRUE(*e.allocate("p", q));
    ASSERT_TRUE(e.record_usage("p", c.report).has_value());
    clock.advance(c.elapsed);
    auto r = e.check_quota("p");
    ASSERT_TRUE(r.has_value() && r->has_value());
    EXPECT_EQ(Name((*r)->reason), c.expected);
  }
}

TEST_F(TrackerTest, CheckQuotaUnknownPid) {
  auto r = engine_.check_quota("nobody");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(Name(r.error().code), "unknown_process");
  EXPECT_FALSE(engine_.is_tracked("nobody"));  // checking never creates
}

TEST_F(TrackerTest, CheckQuotaReportsAnAncestorScopeLimit) {
  Allocate("p", ResourceQuota{}, "acme/research");
  ScopeUpdate u;
  u.limits[res::llm_calls].hard = N(5);
  ASSERT_TRUE(engine_.set_limits("acme", u).has_value());
  engine_.take_events();

  auto r = Record("p", Calls(4));
  EXPECT_TRUE(r.violations.empty());
  auto w = Take(EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].path, "acme");
  EXPECT_EQ(w[0].process, "p");
  EXPECT_EQ(w[0].resource, "llm_calls");
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(Check("p"), "");

  r = Record("p", Calls(1));
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_EQ(Name(r.violations[0].reason), "scope_limit_exceeded");
  EXPECT_EQ(r.violations[0].path, "acme");
  EXPECT_EQ(r.violations[0].resource, "llm_calls");
  EXPECT_EQ(r.violations[0].used.to_string(), "5");
  EXPECT_EQ(r.violations[0].limit.to_string(), "5");

  auto hit = engine_.check_quota("p");
  ASSERT_TRUE(hit.has_value());
  ASSERT_TRUE(hit->has_value()) << "check_quota ignores the scope path";
  const Refusal& ref = **hit;
  EXPECT_EQ(Name(ref.reason), "scope_limit_exceeded");
  EXPECT_EQ(ref.path, "acme");
  EXPECT_EQ(ref.resource, "llm_calls");
  EXPECT_EQ(ref.used.to_string(), "5");
  EXPECT_EQ(ref.limit.to_string(), "5");
  EXPECT_EQ(ref.message, std::string(kQuotaExceededMessage));
  EXPECT_EQ(engine_.get_process("p")->state, Reason::scope_limit_exceeded);
  // The process's own quota (10) is not what refused.
  EXPECT_EQ(engine_.get_remaining_budget("p")->llm_calls, 5u);

  // A process's own limit comes before its scope's.
  Record("p", Calls(5));
  EXPECT_EQ(Check("p"), "max_llm_calls_exceeded");
}

TEST_F(TrackerTest, CheckQuotaReportsAScopeTokenLimit) {
  Allocate("p", ResourceQuota{}, "acme");
  ScopeUpdate u;
  u.limits[res::tokens].hard = N(1000);
  ASSERT_TRUE(engine_.set_limits("acme", u).has_value());
  Record("p", Tokens(1, 600, 399));
  EXPECT_EQ(Check("p"), "");
  Record("p", Tokens(0, 0, 1));
  auto hit = engine_.check_quota("p");
  ASSERT_TRUE(hit.has_value() && hit->has_value()) << "check_quota ignores the scope path";
  EXPECT_EQ(Name((*hit)->reason), "scope_limit_exceeded");
  EXPECT_EQ((*hit)->path, "acme");
  EXPECT_EQ((*hit)->resource, "tokens");
  EXPECT_EQ((*hit)->used.to_string(), "1000");
}

// ---- get_remaining_budget -------------------------------------------------------------------

TEST_F(TrackerTest, RemainingBudgetMatchesTheSeedExample) {
  Allocate("env-123");
  Record("env-123", Calls(3, 5, 3, 1));
  clock_.advance(46s);
  auto r = engine_.get_remaining_budget("env-123");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->llm_calls, 7u);
  EXPECT_EQ(r->tool_calls, 45u);
  EXPECT_EQ(r->agent_hops, 18u);
  EXPECT_EQ(r->iterations, 2u);
  EXPECT_EQ(r->time_seconds, 254);
  EXPECT_EQ(r->tokens, kUnlimited);
  EXPECT_EQ(r->cost, kUnlimitedAmount);
}

TEST_F(TrackerTest, RemainingBudgetOfTokensCostAndExhaustedLimits) {
  EXPECT_FALSE(engine_.get_remaining_budget("p").has_value());
  Allocate("p");
  MustAdjust("p", {{"max_tokens", "1000"}, {"max_cost", "2.5"}});
  UsageReport r = Tokens(0, 300, 100);
  r.cost = D("1.25");
  Record("p", r);
  auto rem = engine_.get_remaining_budget("p");
  EXPECT_EQ(rem->tokens, 600u);
  EXPECT_EQ(rem->cost.to_string(), "1.25");
  EXPECT_EQ(rem->time_seconds, 300);

  UsageReport over = Calls(20, 60, 30, 9);
  over.tokens_in = 2000;
  over.cost = D("5");
  Record("p", over);
  clock_.advance(400s);
  rem = engine_.get_remaining_budget("p");
  EXPECT_EQ(rem->llm_calls, 0u);
  EXPECT_EQ(rem->tool_calls, 0u);
  EXPECT_EQ(rem->agent_hops, 0u);
  EXPECT_EQ(rem->iterations, 0u);
  EXPECT_EQ(rem->tokens, 0u);
  EXPECT_EQ(rem->cost.to_string(), "0");
  EXPECT_EQ(rem->time_seconds, 0);

  MustAdjust("p", {{"timeout_seconds", "unlimited"},
                   {"max_llm_calls", "unlimited"},
                   {"max_tool_calls", "unlimited"},
                   {"max_agent_hops", "unlimited"},
                   {"max_iterations", "unlimited"},
                   {"max_tokens", "unlimited"},
                   {"max_cost", "unlimited"}});
  rem = engine_.get_remaining_budget("p");
  EXPECT_EQ(rem->llm_calls, kUnlimited);
  EXPECT_EQ(rem->tool_calls, kUnlimited);
  EXPECT_EQ(rem->agent_hops, kUnlimited);
  EXPECT_EQ(rem->iterations, kUnlimited);
  EXPECT_EQ(rem->tokens, kUnlimited);
  EXPECT_EQ(rem->cost, kUnlimitedAmount);
  EXPECT_EQ(rem->time_seconds, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Check("p"), "");
}

// ---- get_system_usage / is_tracked ------------------------------------------------------------

TEST_F(TrackerTest, SystemUsageCountsProcessesAndIncludesReleasedUsage) {
  SystemUsage s0 = engine_.get_system_usage();
  EXPECT_EQ(s0.total_processes, 0u);
  EXPECT_EQ(s0.active_processes, 0u);
  EXPECT_EQ(s0.system_llm_calls, 0u);

  Allocate("a");
  Allocate("b");
  Allocate("c");
  ResourceQuota short_timeout;
  short_timeout.timeout_seconds = 60;
  Allocate("d", short_timeout);
  UsageReport ra = Tokens(2, 100, 50);
  ra.tool_calls = 3;
  ra.cost = D("0.5");
  Record("a", ra);
  Record("b", Calls(10));  // at its limit: tracked, not active
  clock_.advance(61s);     // d timed out: tracked, not active

  SystemUsage s = engine_.get_system_usage();
  EXPECT_EQ(s.total_processes, 4u);
  EXPECT_EQ(s.active_processes, 2u);
  EXPECT_EQ(s.system_llm_calls, 12u);
  EXPECT_EQ(s.system_tool_calls, 3u);
  EXPECT_EQ(s.system_tokens_in, 100u);
  EXPECT_EQ(s.system_tokens_out, 50u);
  EXPECT_EQ(s.system_cost.to_string(), "0.5");

  EXPECT_TRUE(engine_.release("a"));
  EXPECT_TRUE(engine_.release("b"));
  s = engine_.get_system_usage();
  EXPECT_EQ(s.total_processes, 2u);
  EXPECT_EQ(s.active_processes, 1u);
  EXPECT_EQ(s.system_llm_calls, 12u);
  EXPECT_EQ(s.system_tool_calls, 3u);
  EXPECT_EQ(s.system_tokens_in, 100u);
  EXPECT_EQ(s.system_tokens_out, 50u);
  EXPECT_EQ(s.system_cost.to_string(), "0.5");

  // A process in a scope counts at the root too.
  Allocate("e", ResourceQuota{}, "acme/research");
  Record("e", Tokens(1, 7, 3));
  s = engine_.get_system_usage();
  EXPECT_EQ(s.system_llm_calls, 13u);
  EXPECT_EQ(s.system_tokens_in, 107u);
  EXPECT_EQ(s.total_processes, 3u);
}

TEST_F(TrackerTest, IsTracked) {
  EXPECT_FALSE(engine_.is_tracked("p"));
  Allocate("p");
  EXPECT_TRUE(engine_.is_tracked("p"));
  EXPECT_FALSE(engine_.is_tracked("P"));
  EXPECT_TRUE(engine_.release("p"));
  EXPECT_FALSE(engine_.is_tracked("p"));
  Record("p", Calls(1));
  EXPECT_TRUE(engine_.is_tracked("p"));
  EXPECT_FALSE(engine_.is_tracked(""));
}

// ---- get_process / list_processes -------------------------------------------------------------

TEST_F(TrackerTest, GetProcessView) {
  EXPECT_FALSE(engine_.get_process("p").has_value());
  ResourceQuota q;
  q.max_llm_calls = 4;
  ASSERT_TRUE(*engine_.allocate("p", q, "acme", 1000));
  Record("p", Calls(2));
  clock_.advance(30s);
  auto v = engine_.get_process("p");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->id, "p");
  EXPECT_EQ(v->scope, "acme");
  EXPECT_EQ(v->quota, q);
  EXPECT_EQ(v->usage.llm_calls, 2u);
  EXPECT_EQ(v->reserved, ResourceUsage{});
  EXPECT_EQ(v->allocated_at, kStart);
  EXPECT_DOUBLE_EQ(v->elapsed_seconds, 30.0);
  EXPECT_EQ(v->owner, 1000u);
  EXPECT_EQ(v->state, Reason::none);
  Record("p", Calls(2));
  EXPECT_EQ(engine_.get_process("p")->state, Reason::max_llm_calls_exceeded);
}

TEST_F(TrackerTest, ListProcessesIsPagedInPidOrder) {
  EXPECT_TRUE(engine_.list_processes().empty());
  for (const char* id : {"p3", "p1", "p5", "p2", "p4"}) Allocate(id);
  auto ids = [&](std::size_t offset, std::size_t limit) {
    std::vector<std::string> out;
    for (const auto& v : engine_.list_processes(offset, limit)) out.push_back(v.id);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(0, 1000), (V{"p1", "p2", "p3", "p4", "p5"}));
  EXPECT_EQ(ids(0, 2), (V{"p1", "p2"}));
  EXPECT_EQ(ids(2, 2), (V{"p3", "p4"}));
  EXPECT_EQ(ids(4, 2), (V{"p5"}));
  EXPECT_EQ(ids(5, 2), V{});
  EXPECT_EQ(ids(99, 2), V{});
  EXPECT_EQ(ids(1, 0), V{});
  EXPECT_EQ(engine_.list_processes().size(), 5u);
  engine_.release("p2");
  EXPECT_EQ(ids(0, 2), (V{"p1", "p3"}));
  Record("p1", Calls(3));
  EXPECT_EQ(engine_.list_processes(0, 1)[0].usage.llm_calls, 3u);
}

// ---- reset_process --------------------------------------------------------------------------

TEST_F(TrackerTest, ResetProcessZeroesUsageAndRestartsTheClock) {
  Allocate("p");
  Record("p", Calls(10, 1));
  AdvanceTo(100s);
  EXPECT_EQ(Check("p"), "max_llm_calls_exceeded");
  engine_.take_events();

  ASSERT_TRUE(engine_.reset_process("p").has_value());
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(Name(events[0].kind), "reset");
  EXPECT_EQ(events[0].process, "p");
  EXPECT_EQ(events[0].message, "Process budget reset.");
  EXPECT_EQ(engine_.get_usage("p"), ResourceUsage{});
  EXPECT_EQ(Check("p"), "");
  EXPECT_EQ(engine_.get_process("p")->allocated_at, kStart + 100s);
  EXPECT_DOUBLE_EQ(*engine_.update_elapsed_time("p"), 0.0);
  EXPECT_EQ(engine_.get_remaining_budget("p")->llm_calls, 10u);
  // The usage stays charged on the scope path: it happened.
  EXPECT_EQ(engine_.get_system_usage().system_llm_calls, 10u);

  // Thresholds re-arm.
  Record("p", Calls(8));
  EXPECT_EQ(Take(EventKind::threshold_crossed).size(), 1u);

  // The timeouts restart: the old 240 s / 300 s instants do not fire.
  AdvanceTo(300s);
  EXPECT_TRUE(engine_.take_events().empty());
  EXPECT_EQ(Check("p"), "");
  AdvanceTo(340s);
  auto soft = Take(EventKind::soft_timeout);
  ASSERT_EQ(soft.size(), 1u);
  EXPECT_EQ(soft[0].used.to_string(), "240");
  AdvanceTo(400s);
  EXPECT_EQ(Take(EventKind::timeout).size(), 1u);
  EXPECT_EQ(Check("p"), "timeout_exceeded");
}

TEST_F(TrackerTest, ResetProcessUnknownPid) {
  auto r = engine_.reset_process("nobody");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(Name(r.error().code), "unknown_process");
}

// ---- timeouts ---------------------------------------------------------------------------------

TEST_F(TrackerTest, NextDeadlineIsTheSoftTimeout) {
  EXPECT_FALSE(engine_.next_deadline().has_value());
  clock_.advance(5s);
  Allocate("p");
  ASSERT_TRUE(engine_.next_deadline().has_value());
  EXPECT_EQ(*engine_.next_deadline(), kStart + 5s + 240s);
  AdvanceTo(245s);
  EXPECT_EQ(*engine_.next_deadline(), kStart + 5s + 300s);
  AdvanceTo(305s);
  EXPECT_FALSE(engine_.next_deadline().has_value());
}

TEST_F(TrackerTest, SoftTimeoutThenTimeout) {
  ResourceQuota q;
  q.on_timeout = Action::terminate;
  q.kill_grace_seconds = 7;
  Allocate("p", q);
  engine_.take_events();

  clock_.set(kStart + 240s - 1us);
  engine_.advance();
  EXPECT_TRUE(engine_.take_events().empty());

  AdvanceTo(240s);
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  const Event& s = events[0];
  EXPECT_EQ(Name(s.kind), "soft_timeout");
  EXPECT_EQ(s.process, "p");
  EXPECT_EQ(s.path, "/");
  EXPECT_EQ(s.resource, "elapsed");
  EXPECT_EQ(s.used.to_string(), "240");
  EXPECT_EQ(s.limit.to_string(), "240");
  EXPECT_EQ(s.reason, Reason::none);
  EXPECT_EQ(s.action, Action::none);
  EXPECT_EQ(s.at, kStart + 240s);
  EXPECT_EQ(s.message, "Soft timeout: 240 s elapsed of 300 s.");
  EXPECT_EQ(event_severity(s.kind), Severity::warning);
  EXPECT_EQ(Check("p"), "");

  AdvanceTo(299s);
  EXPECT_TRUE(engine_.take_events().empty());
  AdvanceTo(300s);
  events = engine_.take_events();
  ASSERT_EQ(events.size(), 1u);
  const Event& t = events[0];
  EXPECT_EQ(Name(t.kind), "timeout");
  EXPECT_EQ(t.process, "p");
  EXPECT_EQ(t.resource, "elapsed");
  EXPECT_EQ(Name(t.reason), "timeout_exceeded");
  EXPECT_EQ(t.used.to_string(), "300");
  EXPECT_EQ(t.limit.to_string(), "300");
  EXPECT_EQ(Name(t.action), "terminate");
  EXPECT_EQ(t.grace_seconds, 7u);
  EXPECT_EQ(t.at, kStart + 300s);
  EXPECT_EQ(t.message, "Timeout exceeded: 300 s.");
  EXPECT_EQ(event_severity(t.kind), Severity::error);
  EXPECT_EQ(Check("p"), "timeout_exceeded");

  // Once each.
  engine_.advance();
  AdvanceTo(10000s);
  EXPECT_TRUE(engine_.take_events().empty());
}

TEST_F(TrackerTest, TimeoutCarriesTheDefaultActionNone) {
  Allocate("p");
  AdvanceTo(300s);
  auto t = Take(EventKind::timeout);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(Name(t[0].action), "none");
  EXPECT_EQ(t[0].grace_seconds, 10u);
}

TEST_F(TrackerTest, BothDueAtOnceFireSoftThenHard) {
  Allocate("p");
  engine_.take_events();
  AdvanceTo(301s);
  auto events = engine_.take_events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(Name(events[0].kind), "soft_timeout");
  EXPECT_EQ(Name(events[1].kind), "timeout");
  EXPECT_EQ(events[0].limit.to_string(), "240");
  EXPECT_EQ(events[1].limit.to_string(), "300");
}

TEST_F(TrackerTest, SoftAndHardAtTheSameInstantFireSoftFirst) {
  ResourceQuota q;
  q.soft_timeout_seconds = 300;
  Allocate("p", q);
  engine_.take_events();
  AdvanceTo(300s);
  EXPECT_EQ(Kinds(), (std::vector<std::string>{"soft_timeout", "timeout"}));
}

TEST_F(TrackerTest, DeadlinesOfSeveralProcessesFireInTimeOrder) {
  Allocate("a");
  clock_.advance(10s);
  Allocate("b");
  engine_.take_events();
  AdvanceTo(1000s);
  auto events = engine_.take_events();
  std::vector<std::string> got;
  for (const auto& e : events) got.push_back(Name(e.kind) + ":" + e.process);
  EXPECT_EQ(got, (std::vector<std::string>{"soft_timeout:a", "soft_timeout:b", "timeout:a",
                                           "timeout:b"}));
}

TEST_F(TrackerTest, TimeoutsAreAppliedByAnyCall) {
  Allocate("p");
  engine_.take_events();
  clock_.advance(300s);  // no advance(): check_quota catches up itself
  EXPECT_EQ(Check("p"), "timeout_exceeded");
  EXPECT_EQ(Kinds(), (std::vector<std::string>{"soft_timeout", "timeout"}));
}

TEST_F(TrackerTest, UnlimitedTimeoutsNeverFire) {
  ResourceQuota q;
  q.timeout_seconds = kUnlimited;
  q.soft_timeout_seconds = kUnlimited;
  Allocate("p", q);
  EXPECT_FALSE(engine_.next_deadline().has_value());
  engine_.take_events();
  AdvanceTo(std::chrono::hours(24 * 365));
  EXPECT_TRUE(engine_.take_events().empty());
  EXPECT_EQ(Check("p"), "");
}

TEST_F(TrackerTest, AReleasedProcessDeadlineDoesNotFire) {
  Allocate("p");
  AdvanceTo(100s);
  EXPECT_TRUE(engine_.release("p"));
  engine_.take_events();
  AdvanceTo(1000s);
  EXPECT_TRUE(engine_.take_events().empty());
}

TEST_F(TrackerTest, AReusedPidGetsFreshDeadlines) {
  Allocate("p");
  AdvanceTo(100s);
  EXPECT_TRUE(engine_.release("p"));
  Allocate("p");  // at 100 s
  EXPECT_EQ(engine_.get_process("p")->allocated_at, kStart + 100s);
  EXPECT_EQ(engine_.get_usage("p"), ResourceUsage{});
  engine_.take_events();

  AdvanceTo(300s);  // the first allocation's 240 s and 300 s entries are stale
  EXPECT_TRUE(engine_.take_events().empty());
  EXPECT_EQ(Check("p"), "");
  EXPECT_EQ(engine_.get_remaining_budget("p")->time_seconds, 100);

  AdvanceTo(340s);
  auto soft = Take(EventKind::soft_timeout);
  ASSERT_EQ(soft.size(), 1u);
  EXPECT_EQ(soft[0].process, "p");
  EXPECT_EQ(soft[0].used.to_string(), "240");
  AdvanceTo(400s);
  auto hard = Take(EventKind::timeout);
  ASSERT_EQ(hard.size(), 1u);
  EXPECT_EQ(hard[0].used.to_string(), "300");
  AdvanceTo(1000s);
  EXPECT_TRUE(engine_.take_events().empty());
}

TEST_F(TrackerTest, ASlotReusedAtTheSameInstantFiresOnlyForTheNewProcess) {
  Allocate("a");
  EXPECT_TRUE(engine_.release("a"));
  Allocate("b");  // same instant, same slot: a's entries carry b's instants
  Allocate("a");  // and a comes back in a new slot
  engine_.take_events();
  AdvanceTo(240s);
  std::vector<std::string> got;
  for (const auto& e : engine_.take_events()) got.push_back(Name(e.kind) + ":" + e.process);
  std::sort(got.begin(), got.end());  // one instant: no order between the two processes
  EXPECT_EQ(got, (std::vector<std::string>{"soft_timeout:a", "soft_timeout:b"}));
}

// ---- overflow -------------------------------------------------------------------------------

TEST_F(TrackerTest, RecordingMaxValuesTwiceSaturates) {
  ResourceQuota q;
  q.max_llm_calls = kUnlimited;
  q.max_tool_calls = kUnlimited;
  q.max_input_tokens = kUnlimited;
  q.max_output_tokens = kUnlimited;
  q.max_context_tokens = kUnlimited;
  Allocate("p", q);
  UsageReport r = Tokens(kU64Max, kU64Max, kU64Max);
  r.tool_calls = kU64Max;
  r.cost = Decimal::max();
  for (int i = 0; i < 2; ++i) {
    auto rec = engine_.record_usage("p", r);
    ASSERT_TRUE(rec.has_value()) << rec.error().message();
    EXPECT_TRUE(rec->violations.empty());
  }
  auto u = *engine_.get_usage("p");
  EXPECT_EQ(u.llm_calls, kU64Max);
  EXPECT_EQ(u.tool_calls, kU64Max);
  EXPECT_EQ(u.tokens_in, kU64Max);
  EXPECT_EQ(u.tokens_out, kU64Max);
  EXPECT_EQ(u.tokens(), kU64Max);
  EXPECT_EQ(u.cost, Decimal::max());

  SystemUsage s = engine_.get_system_usage();
  EXPECT_EQ(s.system_llm_calls, kU64Max);
  EXPECT_EQ(s.system_tool_calls, kU64Max);
  EXPECT_EQ(s.system_tokens_in, kU64Max);
  EXPECT_EQ(s.system_tokens_out, kU64Max);
  EXPECT_EQ(s.system_cost, Decimal::max());
  // Unlimited stays unlimited, even for a saturated counter.
  EXPECT_EQ(Check("p"), "");
  EXPECT_EQ(s.active_processes, 1u);
  EXPECT_EQ(engine_.get_remaining_budget("p")->llm_calls, kUnlimited);
}

TEST_F(TrackerTest, RecordingMaxTokensAgainstFiniteLimits) {
  Allocate("p");
  MustAdjust("p", {{"max_tokens", "1000"}});
  engine_.take_events();
  auto r1 = Record("p", Tokens(0, kU64Max, 0));
  // The per-call cap and the cumulative cap, both.
  ASSERT_EQ(r1.violations.size(), 2u);
  EXPECT_EQ(Name(r1.violations[0].reason), "max_input_tokens_exceeded");
  EXPECT_EQ(r1.violations[0].used.to_string(), "18446744073709551615");
  EXPECT_EQ(Name(r1.violations[1].reason), "max_tokens_exceeded");
  auto r2 = Record("p", Tokens(0, kU64Max, 0));
  ASSERT_EQ(r2.violations.size(), 1u);  // the per-call cap again; the cumulative one is past
  EXPECT_EQ(r2.usage.tokens_in, kU64Max);
  EXPECT_EQ(Check("p"), "max_tokens_exceeded");
  EXPECT_EQ(engine_.get_remaining_budget("p")->tokens, 0u);
}

}  // namespace
}  // namespace budgetd
