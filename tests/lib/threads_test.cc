// Thread budgets: seed 003's ThreadBudgetRegistry, every method, through the Engine.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <string>
#include <vector>

#include "lib/engine.h"
#include "tests/lib/engine_test_support.h"

namespace budgetd {
namespace {

using testing_support::N;
using testing_support::set_hard;
using testing_support::slot_of;

constexpr TimePoint kStart = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1};

std::vector<Event> Only(const std::vector<Event>& events, EventKind kind) {
  std::vector<Event> out;
  for (const auto& e : events)
    if (e.kind == kind) out.push_back(e);
  return out;
}

class ThreadsTest : public ::testing::Test {
 protected:
  SlotView Slot(std::string_view path, std::string_view resource) {
    return slot_of(engine, path, resource);
  }
  void SetHard(std::string_view path, ResourceId id, uint64_t hard) {
    set_hard(engine, path, id, hard);
  }

  FakeClock clock{kStart};
  Engine engine{clock};
};

TEST_F(ThreadsTest, DefaultBudgetIs100000Tokens) {
  EXPECT_EQ(engine.max_tokens_per_thread(), 100'000u);
  auto b = engine.get_budget("t1");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->id, "t1");
  EXPECT_EQ(b->max_tokens, 100'000u);
  EXPECT_EQ(b->remaining, 100'000u);
  EXPECT_EQ(b->prompt_tokens, 0u);
  EXPECT_EQ(b->completion_tokens, 0u);
  EXPECT_EQ(b->total_tokens, 0u);
  EXPECT_EQ(b->request_count, 0u);
  EXPECT_EQ(b->reserved, 0u);
  EXPECT_EQ(b->process, "");
}

TEST_F(ThreadsTest, ConfiguredDefaultComesFromEngineConfig) {
  EngineConfig cfg;
  cfg.thread_default_max_tokens = 2'500;
  Engine e(clock, cfg);
  EXPECT_EQ(e.max_tokens_per_thread(), 2'500u);
  EXPECT_EQ(e.get_budget("t1")->max_tokens, 2'500u);
}

TEST_F(ThreadsTest, ConfigureChangesTheDefaultForNewThreadsOnly) {
  ASSERT_TRUE(engine.consume("old", 100, 0).has_value());
  engine.configure(500);
  EXPECT_EQ(engine.max_tokens_per_thread(), 500u);
  // The existing thread keeps its 100000.
  auto old = engine.get_budget("old");
  EXPECT_EQ(old->max_tokens, 100'000u);
  EXPECT_EQ(old->remaining, 99'900u);
  // A new one gets 500, whether made by get_budget, consume or check_budget.
  EXPECT_EQ(engine.get_budget("new1")->max_tokens, 500u);
  EXPECT_EQ(engine.consume("new2", 10, 0)->max_tokens, 500u);
  ASSERT_FALSE(engine.check_budget("new3", 0).value().has_value());
  EXPECT_EQ(engine.get_thread_usage("new3")->max_tokens, 500u);
  // So its 501-token estimate does not fit, while the old thread's does.
  EXPECT_TRUE(engine.check_budget("new1", 501).value().has_value());
  EXPECT_FALSE(engine.check_budget("old", 501).value().has_value());
}

TEST_F(ThreadsTest, GetBudgetCreatesHasBudgetNever) {
  EXPECT_FALSE(engine.has_budget("t1"));
  EXPECT_FALSE(engine.has_budget("t1"));
  EXPECT_FALSE(engine.get_thread_usage("t1").has_value());
  EXPECT_TRUE(engine.get_all_thread_usage().empty());
  ASSERT_TRUE(engine.get_budget("t1").has_value());
  EXPECT_TRUE(engine.has_budget("t1"));
  ASSERT_TRUE(engine.get_thread_usage("t1").has_value());
  EXPECT_EQ(engine.get_all_thread_usage().size(), 1u);
  // A second get_budget returns the same budget, not a fresh one.
  ASSERT_TRUE(engine.consume("t1", 7, 3).has_value());
  EXPECT_EQ(engine.get_budget("t1")->total_tokens, 10u);
}

TEST_F(ThreadsTest, CheckBudgetCreatesTheThread) {
  EXPECT_FALSE(engine.has_budget("t1"));
  auto r = engine.check_budget("t1", 1'000);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value());
  EXPECT_TRUE(engine.has_budget("t1"));
}

TEST_F(ThreadsTest, CheckBudgetBoundaryUsedPlusEstimateEqualMaxFits) {
  engine.configure(1'000);
  ASSERT_TRUE(engine.consume("t1", 600, 0).has_value());
  auto fits = engine.check_budget("t1", 400);
  ASSERT_TRUE(fits.has_value());
  EXPECT_FALSE(fits->has_value());

  auto refused = engine.check_budget("t1", 401);
  ASSERT_TRUE(refused.has_value());
  ASSERT_TRUE(refused->has_value());
  const Refusal& r = **refused;
  EXPECT_EQ(r.reason, Reason::thread_budget_exhausted);
  EXPECT_EQ(reason_name(r.reason), "thread_budget_exhausted");
  EXPECT_EQ(r.resource, "tokens");
  EXPECT_EQ(r.used, N(600));
  EXPECT_EQ(r.limit, N(1'000));
  EXPECT_EQ(r.path, "/");
  EXPECT_EQ(r.message, "Thread token budget exhausted.");

  // A check records nothing.
  auto u = engine.get_thread_usage("t1");
  EXPECT_EQ(u->total_tokens, 600u);
  EXPECT_EQ(u->request_count, 1u);
  EXPECT_EQ(u->reserved, 0u);
}

TEST_F(ThreadsTest, CheckBudgetRefusesAnExhaustedThreadEvenForZero) {
  engine.configure(1'000);
  EXPECT_FALSE(engine.check_budget("t1", 0).value().has_value());
  ASSERT_TRUE(engine.consume("t1", 700, 300).has_value());
  auto r = engine.check_budget("t1", 0);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->reason, Reason::thread_budget_exhausted);
  EXPECT_EQ((*r)->used, N(1'000));
  EXPECT_EQ((*r)->limit, N(1'000));

  // Recording always succeeds: past the budget, used keeps counting, remaining stays 0.
  auto over = engine.consume("t1", 150, 50);
  ASSERT_TRUE(over.has_value());
  EXPECT_EQ(over->total_tokens, 1'200u);
  EXPECT_EQ(over->remaining, 0u);
  auto again = engine.check_budget("t1", 1);
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ((*again)->used, N(1'200));
  EXPECT_EQ((*again)->limit, N(1'000));
}

TEST_F(ThreadsTest, ConsumeCountsPromptCompletionAndRequests) {
  auto a = engine.consume("t1", 100, 50);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->prompt_tokens, 100u);
  EXPECT_EQ(a->completion_tokens, 50u);
  EXPECT_EQ(a->total_tokens, 150u);
  EXPECT_EQ(a->remaining, 99'850u);
  EXPECT_EQ(a->request_count, 1u);

  auto b = engine.consume("t1", 0, 25);
  EXPECT_EQ(b->prompt_tokens, 100u);
  EXPECT_EQ(b->completion_tokens, 75u);
  EXPECT_EQ(b->total_tokens, 175u);
  EXPECT_EQ(b->request_count, 2u);

  // Seed 003 counts every consume as a request, even an empty one.
  auto c = engine.consume("t1", 0, 0);
  EXPECT_EQ(c->total_tokens, 175u);
  EXPECT_EQ(c->request_count, 3u);

  auto u = engine.get_thread_usage("t1");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 100u);
  EXPECT_EQ(u->completion_tokens, 75u);
  EXPECT_EQ(u->remaining, 99'825u);
  EXPECT_EQ(u->request_count, 3u);
}

TEST_F(ThreadsTest, ConsumeOnAnUnknownThreadCreatesIt) {
  engine.configure(300);
  auto a = engine.consume("fresh", 10, 20);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->max_tokens, 300u);
  EXPECT_EQ(a->remaining, 270u);
  EXPECT_TRUE(engine.has_budget("fresh"));
}

TEST_F(ThreadsTest, CrossingTheBudgetEmitsOneViolation) {
  engine.configure(100);
  ASSERT_TRUE(engine.consume("t1", 50, 0).has_value());
  EXPECT_TRUE(Only(engine.take_events(), EventKind::violation).empty());

  ASSERT_TRUE(engine.consume("t1", 30, 20).has_value());
  auto v = Only(engine.take_events(), EventKind::violation);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].reason, Reason::thread_budget_exhausted);
  EXPECT_EQ(v[0].thread, "t1");
  EXPECT_EQ(v[0].process, "");
  EXPECT_EQ(v[0].path, "/");
  EXPECT_EQ(v[0].resource, "tokens");
  EXPECT_EQ(v[0].used, N(100));
  EXPECT_EQ(v[0].limit, N(100));
  EXPECT_EQ(v[0].at, kStart);

  // Once past, further use is not a new crossing.
  ASSERT_TRUE(engine.consume("t1", 5, 5).has_value());
  EXPECT_TRUE(Only(engine.take_events(), EventKind::violation).empty());
}

TEST_F(ThreadsTest, GetAllThreadUsageIsSortedByUseLargestFirst) {
  ASSERT_TRUE(engine.consume("t_a", 10, 0).has_value());
  ASSERT_TRUE(engine.consume("t_c", 200, 100).has_value());
  ASSERT_TRUE(engine.consume("t_b", 100, 200).has_value());
  ASSERT_TRUE(engine.get_budget("t_d").has_value());
  ASSERT_TRUE(engine.consume("t_e", 0, 1'000).has_value());

  auto all = engine.get_all_thread_usage();
  ASSERT_EQ(all.size(), 5u);
  // Ties (t_b and t_c, 300 each) are ordered by id.
  EXPECT_EQ(all[0].id, "t_e");
  EXPECT_EQ(all[0].total_tokens, 1'000u);
  EXPECT_EQ(all[1].id, "t_b");
  EXPECT_EQ(all[1].total_tokens, 300u);
  EXPECT_EQ(all[2].id, "t_c");
  EXPECT_EQ(all[2].total_tokens, 300u);
  EXPECT_EQ(all[3].id, "t_a");
  EXPECT_EQ(all[3].total_tokens, 10u);
  EXPECT_EQ(all[4].id, "t_d");
  EXPECT_EQ(all[4].total_tokens, 0u);
  EXPECT_EQ(all[1].prompt_tokens, 100u);
  EXPECT_EQ(all[1].completion_tokens, 200u);
  EXPECT_EQ(all[1].remaining, 99'700u);
  EXPECT_EQ(all[1].request_count, 1u);
}

TEST_F(ThreadsTest, ResetThreadDropsTheBudgetAndTheNextUseStartsFresh) {
  ASSERT_TRUE(engine.consume("t1", 400, 100).has_value());
  engine.take_events();
  engine.configure(2'000);
  EXPECT_TRUE(engine.reset_thread("t1"));
  EXPECT_FALSE(engine.has_budget("t1"));
  auto resets = Only(engine.take_events(), EventKind::reset);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].thread, "t1");
  EXPECT_EQ(resets[0].path, "/");
  EXPECT_EQ(resets[0].message, "Thread budget reset.");

  auto fresh = engine.get_budget("t1");
  EXPECT_EQ(fresh->total_tokens, 0u);
  EXPECT_EQ(fresh->request_count, 0u);
  EXPECT_EQ(fresh->max_tokens, 2'000u);  // the current default

  EXPECT_FALSE(engine.reset_thread("nobody"));
  EXPECT_TRUE(engine.take_events().empty());
}

TEST_F(ThreadsTest, ResetThreadKeepsTheTokensChargedOnTheProcessAndPath) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  ASSERT_TRUE(engine.consume("t1", 400, 100, "p1").has_value());
  engine.take_events();
  EXPECT_TRUE(engine.reset_thread("t1"));
  auto resets = Only(engine.take_events(), EventKind::reset);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].process, "p1");
  EXPECT_EQ(resets[0].path, "acme");  // the node the thread lived on
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 400u);
  EXPECT_EQ(engine.get_usage("p1")->tokens_out, 100u);
  EXPECT_EQ(Slot("acme", "tokens").used, N(500));
}

TEST_F(ThreadsTest, CleanupThreadReturnsTheFinalBudgetAndRemovesIt) {
  ASSERT_TRUE(engine.allocate("p1").value());
  ASSERT_TRUE(engine.consume("t1", 300, 200, "p1").has_value());
  ASSERT_TRUE(engine.consume("t1", 300, 0).has_value());
  auto final = engine.cleanup_thread("t1");
  ASSERT_TRUE(final.has_value());
  EXPECT_EQ(final->id, "t1");
  EXPECT_EQ(final->prompt_tokens, 600u);
  EXPECT_EQ(final->completion_tokens, 200u);
  EXPECT_EQ(final->total_tokens, 800u);
  EXPECT_EQ(final->remaining, 99'200u);
  EXPECT_EQ(final->max_tokens, 100'000u);
  EXPECT_EQ(final->request_count, 2u);
  EXPECT_EQ(final->process, "p1");
  EXPECT_FALSE(engine.has_budget("t1"));
  EXPECT_TRUE(engine.get_all_thread_usage().empty());
  EXPECT_FALSE(engine.cleanup_thread("t1").has_value());
  EXPECT_FALSE(engine.cleanup_thread("never").has_value());
}

TEST_F(ThreadsTest, ThreadOfAProcessChargesTheProcessAndEveryScopeOnItsPath) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/research").value());
  auto b = engine.get_budget("t1", "p1");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->process, "p1");

  ASSERT_TRUE(engine.consume("t1", 100, 40).has_value());
  ASSERT_TRUE(engine.consume("t1", 20, 0).has_value());
  auto u = engine.get_usage("p1");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->tokens_in, 120u);
  EXPECT_EQ(u->tokens_out, 40u);
  EXPECT_EQ(u->llm_calls, 0u);
  for (const char* path : {"acme/research", "acme", "/"}) {
    SCOPED_TRACE(path);
    EXPECT_EQ(Slot(path, "tokens_in").used, N(120));
    EXPECT_EQ(Slot(path, "tokens_out").used, N(40));
    EXPECT_EQ(Slot(path, "tokens").used, N(160));
  }
  EXPECT_EQ(engine.get_system_usage().system_tokens_in, 120u);
  EXPECT_EQ(engine.get_system_usage().system_tokens_out, 40u);
}

TEST_F(ThreadsTest, ConsumeWithAProcessTiesANewThread) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  auto a = engine.consume("t1", 5, 6, "p1");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->process, "p1");
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 5u);
  EXPECT_EQ(engine.get_usage("p1")->tokens_out, 6u);
  EXPECT_EQ(Slot("acme", "tokens").used, N(11));
}

TEST_F(ThreadsTest, ThreadWithoutProcessChargesTheRootUntilAProcessClaimsIt) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  ASSERT_TRUE(engine.consume("t1", 10, 0).has_value());
  EXPECT_EQ(Slot("/", "tokens_in").used, N(10));
  EXPECT_EQ(Slot("acme", "tokens_in").used, Decimal());
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 0u);

  EXPECT_EQ(engine.get_budget("t1", "p1")->process, "p1");
  ASSERT_TRUE(engine.consume("t1", 5, 0).has_value());
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 5u);
  EXPECT_EQ(Slot("acme", "tokens_in").used, N(5));
  EXPECT_EQ(Slot("/", "tokens_in").used, N(15));
  EXPECT_EQ(engine.get_thread_usage("t1")->total_tokens, 15u);
}

TEST_F(ThreadsTest, AThreadCannotMoveToAnotherProcess) {
  ASSERT_TRUE(engine.allocate("p1").value());
  ASSERT_TRUE(engine.allocate("p2").value());
  ASSERT_TRUE(engine.get_budget("t1", "p1").has_value());

  auto moved = engine.get_budget("t1", "p2");
  ASSERT_FALSE(moved.has_value());
  EXPECT_EQ(moved.error().code, Errc::invalid_argument);
  auto consumed = engine.consume("t1", 10, 10, "p2");
  ASSERT_FALSE(consumed.has_value());
  EXPECT_EQ(consumed.error().code, Errc::invalid_argument);
  auto checked = engine.check_budget("t1", 10, "p2");
  ASSERT_FALSE(checked.has_value());
  EXPECT_EQ(checked.error().code, Errc::invalid_argument);

  // Nothing was charged anywhere, and the thread still belongs to p1.
  EXPECT_EQ(engine.get_thread_usage("t1")->total_tokens, 0u);
  EXPECT_EQ(engine.get_thread_usage("t1")->request_count, 0u);
  EXPECT_EQ(engine.get_usage("p2")->tokens_in, 0u);
  EXPECT_EQ(engine.get_budget("t1")->process, "p1");
  EXPECT_EQ(engine.get_budget("t1", "p1")->process, "p1");
}

TEST_F(ThreadsTest, InvalidIdsAreNamedErrors) {
  const std::string too_long(Engine::kMaxIdLength + 1, 'x');
  for (const std::string& bad : {std::string(), std::string("has space"), std::string("a/b"),
                                 std::string("tab\there"), too_long}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(engine.get_budget(bad).error().code, Errc::invalid_id);
    EXPECT_EQ(engine.check_budget(bad, 1).error().code, Errc::invalid_id);
    EXPECT_EQ(engine.consume(bad, 1, 1).error().code, Errc::invalid_id);
    EXPECT_FALSE(engine.has_budget(bad));
    EXPECT_FALSE(engine.get_thread_usage(bad).has_value());
    EXPECT_FALSE(engine.reset_thread(bad));
    EXPECT_FALSE(engine.cleanup_thread(bad).has_value());
  }
  EXPECT_TRUE(engine.get_all_thread_usage().empty());
  EXPECT_TRUE(engine.get_budget(std::string(Engine::kMaxIdLength, 'x')).has_value());
}

TEST_F(ThreadsTest, AnUnknownProcessIsAnErrorAndCreatesNothing) {
  auto r = engine.get_budget("t1", "ghost");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::unknown_process);
  EXPECT_EQ(engine.consume("t1", 1, 1, "ghost").error().code, Errc::unknown_process);
  EXPECT_EQ(engine.check_budget("t1", 1, "ghost").error().code, Errc::unknown_process);
  EXPECT_FALSE(engine.has_budget("t1"));
}

TEST_F(ThreadsTest, CheckBudgetAlsoAsksTheScopePath) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  SetHard("acme", res::tokens, 1'000);
  ASSERT_TRUE(engine.consume("t1", 600, 0, "p1").has_value());
  EXPECT_FALSE(engine.check_budget("t1", 400).value().has_value());
  auto r = engine.check_budget("t1", 401);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ((*r)->path, "acme");
  EXPECT_EQ((*r)->resource, "tokens");
  EXPECT_EQ((*r)->used, N(600));
  EXPECT_EQ((*r)->limit, N(1'000));
}

TEST_F(ThreadsTest, CheckBudgetAlsoAsksTheProcessQuota) {
  ResourceQuota q;
  q.max_tokens = 500;
  ASSERT_TRUE(engine.allocate("p1", q).value());
  ASSERT_TRUE(engine.consume("t1", 200, 100, "p1").has_value());
  EXPECT_FALSE(engine.check_budget("t1", 200).value().has_value());
  auto r = engine.check_budget("t1", 201);
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->reason, Reason::max_tokens_exceeded);
  EXPECT_EQ((*r)->used, N(300));
  EXPECT_EQ((*r)->limit, N(500));
}

TEST_F(ThreadsTest, ThreadRefusalWinsAndNamesTheThreadsNode) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  SetHard("acme", res::tokens, 50);
  engine.configure(100);
  ASSERT_TRUE(engine.consume("t1", 100, 0, "p1").has_value());  // both exhausted
  auto r = engine.check_budget("t1", 1);
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->reason, Reason::thread_budget_exhausted);
  EXPECT_EQ((*r)->path, "acme");
  EXPECT_EQ((*r)->used, N(100));
  EXPECT_EQ((*r)->limit, N(100));
}

// The estimate is a total (prompt + completion): it is not judged against the per-call
// input cap (default 4096), which only an actual report can split into input and output.
TEST_F(ThreadsTest, EstimateIsATotalNotInputTokens) {
  ASSERT_TRUE(engine.allocate("p1").value());
  ASSERT_TRUE(engine.get_budget("t1", "p1").has_value());
  auto r = engine.check_budget("t1", 5'000);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value()) << reason_name((*r)->reason);
}

TEST_F(ThreadsTest, ReservedTokensCountAgainstCheckBudget) {
  engine.configure(1'000);
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, N(700)).has_value());
  Target t;
  t.thread = "t1";
  auto held = engine.reserve(t, est);
  ASSERT_TRUE(held.has_value());
  ASSERT_TRUE(held->admitted);
  EXPECT_EQ(engine.get_thread_usage("t1")->reserved, 700u);
  EXPECT_FALSE(engine.check_budget("t1", 300).value().has_value());
  auto r = engine.check_budget("t1", 301);
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->reason, Reason::thread_budget_exhausted);
  EXPECT_EQ((*r)->used, N(700));
  EXPECT_EQ((*r)->limit, N(1'000));
}

TEST_F(ThreadsTest, TheNumberOfThreadsIsBounded) {
  EngineConfig cfg;
  cfg.max_threads = 2;
  Engine e(clock, cfg);
  ASSERT_TRUE(e.get_budget("t1").has_value());
  ASSERT_TRUE(e.consume("t2", 1, 1).has_value());
  EXPECT_EQ(e.get_budget("t3").error().code, Errc::capacity_exceeded);
  EXPECT_EQ(e.consume("t3", 1, 1).error().code, Errc::capacity_exceeded);
  EXPECT_EQ(e.check_budget("t3", 1).error().code, Errc::capacity_exceeded);
  EXPECT_FALSE(e.has_budget("t3"));
  // Existing threads still work, and a cleaned-up one frees its place.
  ASSERT_TRUE(e.get_budget("t1").has_value());
  ASSERT_TRUE(e.cleanup_thread("t1").has_value());
  EXPECT_TRUE(e.get_budget("t3").has_value());
}

// Counts near 2^64 saturate: a huge report must never wrap the thread's total back to a
// small number (which would make an exhausted thread look fresh).
TEST_F(ThreadsTest, HugeCountsSaturateInsteadOfWrapping) {
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  auto u = engine.consume("t1", kMax, 1);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->total_tokens, kMax);
  EXPECT_EQ(u->remaining, 0u);
  auto all = engine.get_all_thread_usage();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].total_tokens, kMax);
  auto r = engine.check_budget("t1", 0);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ((*r)->reason, Reason::thread_budget_exhausted);
}

}  // namespace
}  // namespace budgetd
