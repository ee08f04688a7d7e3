// Two-phase reservations: reserve an estimate on the thread, the process and every scope
// node (or none), commit the actual figures, cancel, expire.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "lib/engine.h"
#include "tests/lib/engine_test_support.h"

namespace budgetd {
namespace {

using testing_support::N;
using testing_support::set_hard;
using testing_support::slot_of;

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr TimePoint kStart = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1};

std::vector<Event> Only(const std::vector<Event>& events, EventKind kind) {
  std::vector<Event> out;
  for (const auto& e : events)
    if (e.kind == kind) out.push_back(e);
  return out;
}

ChargeList Tokens(uint64_t in, uint64_t llm_calls = 0) {
  ChargeList c;
  if (in) {
    EXPECT_TRUE(c.add(res::tokens_in, N(in)).has_value());
  }
  if (llm_calls) {
    EXPECT_TRUE(c.add(res::llm_calls, N(llm_calls)).has_value());
  }
  return c;
}

Target ForProcess(std::string p) {
  Target t;
  t.process = std::move(p);
  return t;
}
Target ForScope(std::string s) {
  Target t;
  t.scope = std::move(s);
  return t;
}

UsageReport Actual(uint64_t in, uint64_t out, uint64_t llm_calls = 1) {
  UsageReport r;
  r.llm_calls = llm_calls;
  r.tokens_in = in;
  r.tokens_out = out;
  return r;
}

class ReservationsTest : public ::testing::Test {
 protected:
  SlotView Slot(std::string_view path, std::string_view resource) {
    return slot_of(engine, path, resource);
  }
  void SetHard(std::string_view path, ResourceId id, uint64_t hard) {
    set_hard(engine, path, id, hard);
  }
  // Nothing is held anywhere on p1's path (acme/team), on p1, or on thread t1.
  void ExpectNothingHeld() {
    for (const char* path : {"acme/team", "acme", "/"}) {
      SCOPED_TRACE(path);
      EXPECT_EQ(Slot(path, "tokens_in").reserved, Decimal());
      EXPECT_EQ(Slot(path, "tokens").reserved, Decimal());
      EXPECT_EQ(Slot(path, "llm_calls").reserved, Decimal());
    }
    if (auto p = engine.get_process("p1")) {
      EXPECT_EQ(p->reserved, ResourceUsage{});
    }
    if (auto t = engine.get_thread_usage("t1")) {
      EXPECT_EQ(t->reserved, 0u);
    }
    EXPECT_EQ(engine.hold_count(), 0u);
  }

  FakeClock clock{kStart};
  Engine engine{clock};
};

TEST_F(ReservationsTest, ThreadTargetHoldsOnThreadProcessAndPath) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(1'000, 1));
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->admitted);
  EXPECT_FALSE(r->refusal.has_value());
  EXPECT_NE(r->id, 0u);
  EXPECT_EQ(r->expires_at, kStart + minutes(5));  // the default ttl
  EXPECT_EQ(engine.hold_count(), 1u);

  auto th = engine.get_thread_usage("t1");
  ASSERT_TRUE(th.has_value());
  EXPECT_EQ(th->reserved, 1'000u);
  EXPECT_EQ(th->process, "p1");
  EXPECT_EQ(th->total_tokens, 0u);
  auto p = engine.get_process("p1");
  EXPECT_EQ(p->reserved.tokens_in, 1'000u);
  EXPECT_EQ(p->reserved.llm_calls, 1u);
  EXPECT_EQ(p->usage, ResourceUsage{});
  for (const char* path : {"acme/team", "acme", "/"}) {
    SCOPED_TRACE(path);
    EXPECT_EQ(Slot(path, "tokens_in").reserved, N(1'000));
    EXPECT_EQ(Slot(path, "tokens").reserved, N(1'000));
    EXPECT_EQ(Slot(path, "llm_calls").reserved, N(1));
    EXPECT_EQ(Slot(path, "tokens").used, Decimal());
  }
}

TEST_F(ReservationsTest, AnAncestorWithoutRoomRefusesAndNothingIsHeld) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  SetHard("acme", res::tokens, 500);
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(600, 1));
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->admitted);
  EXPECT_EQ(r->id, 0u);
  ASSERT_TRUE(r->refusal.has_value());
  EXPECT_EQ(r->refusal->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(r->refusal->path, "acme");
  EXPECT_EQ(r->refusal->resource, "tokens");
  EXPECT_EQ(r->refusal->used, Decimal());
  EXPECT_EQ(r->refusal->limit, N(500));
  EXPECT_EQ(r->refusal->message, "Quota exceeded. Upgrade your plan or wait for the reset.");
  ExpectNothingHeld();
  // 500 fits exactly.
  auto ok = engine.reserve(t, Tokens(500, 1));
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(ok->admitted);
  EXPECT_EQ(Slot("acme", "tokens").reserved, N(500));
}

TEST_F(ReservationsTest, HeldAmountsCountAgainstOtherAdmissions) {
  SetHard("acme", res::tokens, 1'000);
  auto a = engine.reserve(ForScope("acme"), Tokens(600));
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(a->admitted);
  // The second competitor for the last tokens is refused: 600 held + 500 > 1000.
  auto b = engine.reserve(ForScope("acme"), Tokens(500));
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->admitted);
  ASSERT_TRUE(b->refusal.has_value());
  EXPECT_EQ(b->refusal->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(b->refusal->used, N(600));
  EXPECT_EQ(b->refusal->limit, N(1'000));
  // What is left fits exactly.
  auto c = engine.reserve(ForScope("acme"), Tokens(400));
  ASSERT_TRUE(c->admitted);
  EXPECT_NE(c->id, a->id);
  EXPECT_EQ(Slot("acme", "tokens").reserved, N(1'000));
  EXPECT_EQ(engine.hold_count(), 2u);
  // Nothing left: even a consumption check says no.
  auto q = engine.check_quota("acme", "tokens", N(1));
  ASSERT_TRUE(q.has_value());
  EXPECT_FALSE(q->first);
  EXPECT_EQ(q->second, Decimal());
  // Freeing one lets the refused competitor in.
  ASSERT_TRUE(engine.cancel(a->id).has_value());
  EXPECT_TRUE(engine.reserve(ForScope("acme"), Tokens(500))->admitted);
  EXPECT_EQ(Slot("acme", "tokens").reserved, N(900));
}

TEST_F(ReservationsTest, HeldAmountsCountAgainstTheProcessQuota) {
  ResourceQuota q;
  q.max_tokens = 1'000;
  ASSERT_TRUE(engine.allocate("p1", q).value());
  ASSERT_TRUE(engine.reserve(ForProcess("p1"), Tokens(700))->admitted);
  auto b = engine.reserve(ForProcess("p1"), Tokens(301));
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->admitted);
  ASSERT_TRUE(b->refusal.has_value());
  EXPECT_EQ(b->refusal->reason, Reason::max_tokens_exceeded);
  EXPECT_EQ(b->refusal->used, N(700));
  EXPECT_EQ(b->refusal->limit, N(1'000));
  EXPECT_TRUE(engine.reserve(ForProcess("p1"), Tokens(300))->admitted);
}

TEST_F(ReservationsTest, HeldAmountsCountAgainstTheThreadBudget) {
  engine.configure(1'000);
  Target t;
  t.thread = "t1";
  ASSERT_TRUE(engine.reserve(t, Tokens(800))->admitted);
  auto b = engine.reserve(t, Tokens(201));
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->admitted);
  EXPECT_EQ(b->refusal->reason, Reason::thread_budget_exhausted);
  EXPECT_EQ(b->refusal->used, N(800));
  EXPECT_EQ(b->refusal->limit, N(1'000));
  EXPECT_EQ(engine.get_thread_usage("t1")->reserved, 800u);
  // A thread without a process holds on the root.
  EXPECT_EQ(Slot("/", "tokens").reserved, N(800));
}

TEST_F(ReservationsTest, CommitChargesTheActualAndFreesTheRest) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(800, 1));
  ASSERT_TRUE(r->admitted);
  auto c = engine.commit(r->id, Actual(300, 100));
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->expired);
  EXPECT_EQ(c->reason, Reason::none);
  EXPECT_TRUE(c->violations.empty());
  ExpectNothingHeld();

  auto u = engine.get_usage("p1");
  EXPECT_EQ(u->llm_calls, 1u);
  EXPECT_EQ(u->tokens_in, 300u);
  EXPECT_EQ(u->tokens_out, 100u);
  auto th = engine.get_thread_usage("t1");
  EXPECT_EQ(th->prompt_tokens, 300u);
  EXPECT_EQ(th->completion_tokens, 100u);
  EXPECT_EQ(th->total_tokens, 400u);
  for (const char* path : {"acme/team", "acme", "/"}) {
    SCOPED_TRACE(path);
    EXPECT_EQ(Slot(path, "tokens_in").used, N(300));
    EXPECT_EQ(Slot(path, "tokens_out").used, N(100));
    EXPECT_EQ(Slot(path, "tokens").used, N(400));
    EXPECT_EQ(Slot(path, "llm_calls").used, N(1));
  }
  // A commit is the thread's request, as seed 003's consume after the call.
  EXPECT_EQ(th->request_count, 1u);
}

TEST_F(ReservationsTest, ActualAboveTheEstimateIsChargedWithTheViolation) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  SetHard("acme", res::tokens, 1'000);
  auto r = engine.reserve(ForProcess("p1"), Tokens(500, 1));
  ASSERT_TRUE(r->admitted);
  engine.take_events();
  auto c = engine.commit(r->id, Actual(900, 300));
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->expired);
  ASSERT_EQ(c->violations.size(), 1u);
  EXPECT_EQ(c->violations[0].reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(c->violations[0].path, "acme");
  EXPECT_EQ(c->violations[0].resource, "tokens");
  EXPECT_EQ(c->violations[0].used, N(1'200));
  EXPECT_EQ(c->violations[0].limit, N(1'000));
  EXPECT_EQ(Slot("acme", "tokens").used, N(1'200));
  EXPECT_EQ(Slot("acme", "tokens").reserved, Decimal());
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 900u);
  auto v = Only(engine.take_events(), EventKind::violation);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].path, "acme");
  EXPECT_EQ(v[0].process, "p1");
  EXPECT_EQ(v[0].reason, Reason::scope_limit_exceeded);
  // Past the limit, the next reservation is refused.
  auto next = engine.reserve(ForProcess("p1"), Tokens(1, 1));
  EXPECT_FALSE(next->admitted);
  EXPECT_EQ(next->refusal->reason, Reason::scope_limit_exceeded);
}

TEST_F(ReservationsTest, CommitReportsAPerCallCapPassedByTheActual) {
  ASSERT_TRUE(engine.allocate("p1").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(1'000, 1));
  ASSERT_TRUE(r->admitted);
  auto c = engine.commit(r->id, Actual(5'000, 10));
  ASSERT_TRUE(c.has_value());
  ASSERT_EQ(c->violations.size(), 1u);
  EXPECT_EQ(c->violations[0].reason, Reason::max_input_tokens_exceeded);
  EXPECT_EQ(c->violations[0].used, N(5'000));
  EXPECT_EQ(c->violations[0].limit, N(4'096));
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 5'000u);  // recorded all the same
}

TEST_F(ReservationsTest, CancelFreesTheHold) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(700, 1));
  ASSERT_TRUE(r->admitted);
  ASSERT_TRUE(engine.cancel(r->id).has_value());
  ExpectNothingHeld();
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 0u);
  EXPECT_EQ(engine.get_thread_usage("t1")->total_tokens, 0u);
  EXPECT_EQ(engine.cancel(r->id).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.commit(r->id, Actual(1, 1)).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 0u);
}

TEST_F(ReservationsTest, ExpiryFreesTheHoldAndEmitsReservationExpired) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(700, 1), seconds(30));
  ASSERT_TRUE(r->admitted);
  EXPECT_EQ(r->expires_at, kStart + seconds(30));
  EXPECT_EQ(engine.next_deadline(), kStart + seconds(30));
  engine.take_events();

  clock.advance(seconds(30) - microseconds(1));
  engine.advance();
  EXPECT_TRUE(engine.take_events().empty());
  EXPECT_EQ(engine.hold_count(), 1u);
  EXPECT_EQ(Slot("acme", "tokens").reserved, N(700));

  clock.advance(microseconds(1));
  engine.advance();
  auto events = engine.take_events();
  ASSERT_EQ(events.size(), 1u);
  const Event& e = events[0];
  EXPECT_EQ(e.kind, EventKind::reservation_expired);
  EXPECT_EQ(event_kind_name(e.kind), "reservation_expired");
  EXPECT_EQ(e.reason, Reason::reservation_expired);
  EXPECT_EQ(e.ref, r->id);
  EXPECT_EQ(e.path, "acme/team");
  EXPECT_EQ(e.process, "p1");
  EXPECT_EQ(e.thread, "t1");
  EXPECT_EQ(e.outcome, "expired");
  EXPECT_EQ(e.message, "Reservation expired; its hold was freed.");
  EXPECT_EQ(e.at, kStart + seconds(30));
  ExpectNothingHeld();
}

TEST_F(ReservationsTest, ExpiryAppliesOnTheNextCallWithoutAdvance) {
  SetHard("acme", res::tokens, 1'000);
  auto a = engine.reserve(ForScope("acme"), Tokens(1'000), seconds(10));
  ASSERT_TRUE(a->admitted);
  EXPECT_FALSE(engine.reserve(ForScope("acme"), Tokens(1))->admitted);
  clock.advance(seconds(11));
  // No advance(): the reserve itself applies the expiry first.
  EXPECT_TRUE(engine.reserve(ForScope("acme"), Tokens(1'000))->admitted);
  EXPECT_EQ(Only(engine.take_events(), EventKind::reservation_expired).size(), 1u);
}

TEST_F(ReservationsTest, CommitAfterExpiryStillRecordsAndSaysExpired) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(700, 1), seconds(30));
  ASSERT_TRUE(r->admitted);
  clock.advance(seconds(31));
  auto c = engine.commit(r->id, Actual(400, 50));
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->expired);
  EXPECT_EQ(c->reason, Reason::reservation_expired);
  EXPECT_EQ(reason_name(c->reason), "reservation_expired");
  EXPECT_TRUE(c->violations.empty());
  ExpectNothingHeld();
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 400u);
  EXPECT_EQ(engine.get_usage("p1")->tokens_out, 50u);
  EXPECT_EQ(engine.get_usage("p1")->llm_calls, 1u);
  EXPECT_EQ(engine.get_thread_usage("t1")->total_tokens, 450u);
  EXPECT_EQ(Slot("acme", "tokens").used, N(450));
  // Only once.
  EXPECT_EQ(engine.commit(r->id, Actual(400, 50)).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 400u);
  EXPECT_EQ(engine.cancel(r->id).error().code, Errc::unknown_reservation);
}

TEST_F(ReservationsTest, ExpiredIdsAreForgottenAfterTheRetention) {
  ASSERT_TRUE(engine.allocate("p1").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(10, 1), seconds(30));
  ASSERT_TRUE(r->admitted);
  clock.advance(seconds(30) + hours(1));
  auto c = engine.commit(r->id, Actual(10, 10));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 0u);
}

TEST_F(ReservationsTest, UnknownAndDoubleCommitAreUnknownReservation) {
  EXPECT_EQ(engine.commit(12345, Actual(1, 1)).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.cancel(12345).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.commit(0, Actual(1, 1)).error().code, Errc::unknown_reservation);

  ASSERT_TRUE(engine.allocate("p1").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(100, 1));
  ASSERT_TRUE(r->admitted);
  ASSERT_TRUE(engine.commit(r->id, Actual(50, 10)).has_value());
  auto again = engine.commit(r->id, Actual(50, 10));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::unknown_reservation);
  EXPECT_EQ(again.error().detail, std::to_string(r->id));
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 50u);
  EXPECT_EQ(engine.get_usage("p1")->llm_calls, 1u);
}

TEST_F(ReservationsTest, TtlMustBeWithinZeroAndTheMaximum) {
  SetHard("acme", res::tokens, 1'000);
  auto neg = engine.reserve(ForScope("acme"), Tokens(1), microseconds(-1));
  ASSERT_FALSE(neg.has_value());
  EXPECT_EQ(neg.error().code, Errc::invalid_argument);
  auto big = engine.reserve(ForScope("acme"), Tokens(1), hours(24) + microseconds(1));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code, Errc::invalid_argument);
  EXPECT_EQ(engine.hold_count(), 0u);
  EXPECT_EQ(Slot("acme", "tokens").reserved, Decimal());

  auto max = engine.reserve(ForScope("acme"), Tokens(1), hours(24));
  ASSERT_TRUE(max.has_value());
  EXPECT_EQ(max->expires_at, kStart + hours(24));
  auto dflt = engine.reserve(ForScope("acme"), Tokens(1), Duration{0});
  EXPECT_EQ(dflt->expires_at, kStart + minutes(5));

  EngineConfig cfg;
  cfg.default_reservation_ttl = seconds(7);
  cfg.max_reservation_ttl = seconds(60);
  Engine e(clock, cfg);
  EXPECT_EQ(e.reserve(ForScope("/"), Tokens(1))->expires_at, kStart + seconds(7));
  EXPECT_EQ(e.reserve(ForScope("/"), Tokens(1), seconds(61)).error().code, Errc::invalid_argument);
}

TEST_F(ReservationsTest, ReleasingAProcessFreesItsHolds) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  auto a = engine.reserve(ForProcess("p1"), Tokens(300, 1));
  auto b = engine.reserve(ForProcess("p1"), Tokens(200, 1));
  ASSERT_TRUE(engine.allocate("p2", ResourceQuota{}, "acme/team").value());
  auto other = engine.reserve(ForProcess("p2"), Tokens(50, 1));
  ASSERT_TRUE(a->admitted && b->admitted && other->admitted);
  EXPECT_EQ(Slot("acme", "tokens").reserved, N(550));

  ASSERT_TRUE(engine.release("p1"));
  EXPECT_EQ(engine.hold_count(), 1u);
  EXPECT_EQ(Slot("acme", "tokens").reserved, N(50));
  EXPECT_EQ(Slot("/", "llm_calls").reserved, N(1));
  EXPECT_EQ(engine.commit(a->id, Actual(1, 1)).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.cancel(b->id).error().code, Errc::unknown_reservation);
  // The other process's hold is untouched and still commits.
  EXPECT_TRUE(engine.commit(other->id, Actual(40, 5)).has_value());
  EXPECT_EQ(engine.hold_count(), 0u);
  EXPECT_EQ(Slot("acme", "tokens").reserved, Decimal());
  EXPECT_EQ(Slot("acme", "tokens").used, N(45));
}

TEST_F(ReservationsTest, PerCallCapOnTheEstimate) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(5'000, 1));
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->admitted);
  ASSERT_TRUE(r->refusal.has_value());
  EXPECT_EQ(r->refusal->reason, Reason::max_input_tokens_exceeded);
  EXPECT_EQ(reason_name(r->refusal->reason), "max_input_tokens_exceeded");
  EXPECT_EQ(r->refusal->resource, "tokens_in");
  EXPECT_EQ(r->refusal->used, N(5'000));
  EXPECT_EQ(r->refusal->limit, N(4'096));
  EXPECT_EQ(r->refusal->path, "acme");
  EXPECT_EQ(engine.hold_count(), 0u);
  // Two calls: 2500 each, within the cap.
  EXPECT_TRUE(engine.reserve(ForProcess("p1"), Tokens(5'000, 2))->admitted);
  // Exactly the cap fits.
  EXPECT_TRUE(engine.reserve(ForProcess("p1"), Tokens(4'096, 1))->admitted);
}

TEST_F(ReservationsTest, AProcessPastACumulativeLimitIsRefused) {
  ASSERT_TRUE(engine.allocate("p1").value());  // max_llm_calls 10
  auto r8 = engine.reserve(ForProcess("p1"), Tokens(0, 8));
  ASSERT_TRUE(r8->admitted);
  auto r3 = engine.reserve(ForProcess("p1"), Tokens(0, 3));
  EXPECT_FALSE(r3->admitted);
  EXPECT_EQ(r3->refusal->reason, Reason::max_llm_calls_exceeded);
  EXPECT_EQ(r3->refusal->used, N(8));
  EXPECT_EQ(r3->refusal->limit, N(10));
  EXPECT_TRUE(engine.reserve(ForProcess("p1"), Tokens(0, 2))->admitted);
}

TEST_F(ReservationsTest, BadTargetsAndAmountsAreNamedErrors) {
  EXPECT_EQ(engine.reserve(Target{}, Tokens(1)).error().code, Errc::invalid_argument);
  EXPECT_EQ(engine.reserve(ForScope("nowhere"), Tokens(1)).error().code, Errc::unknown_scope);
  EXPECT_EQ(engine.reserve(ForScope("bad path!"), Tokens(1)).error().code, Errc::invalid_id);
  EXPECT_EQ(engine.reserve(ForProcess("ghost"), Tokens(1)).error().code, Errc::unknown_process);
  Target bad_thread;
  bad_thread.thread = "has space";
  EXPECT_EQ(engine.reserve(bad_thread, Tokens(1)).error().code, Errc::invalid_id);
  // A thread of p1 cannot reserve for p2.
  ASSERT_TRUE(engine.allocate("p1").value());
  ASSERT_TRUE(engine.allocate("p2").value());
  ASSERT_TRUE(engine.get_budget("t1", "p1").has_value());
  Target moved;
  moved.process = "p2";
  moved.thread = "t1";
  EXPECT_EQ(engine.reserve(moved, Tokens(1)).error().code, Errc::invalid_argument);
  EXPECT_EQ(engine.get_process("p2")->reserved, ResourceUsage{});

  ChargeList negative;
  ASSERT_TRUE(negative.add(res::tokens_in, *Decimal::parse("-1", true)).has_value());
  auto n = engine.reserve(ForScope("/"), negative);
  ASSERT_FALSE(n.has_value());
  EXPECT_EQ(n.error().code, Errc::negative_amount);
  EXPECT_EQ(n.error().detail, "tokens_in");

  ChargeList unknown;
  ASSERT_TRUE(unknown.add(static_cast<ResourceId>(999), N(1)).has_value());
  EXPECT_EQ(engine.reserve(ForScope("/"), unknown).error().code, Errc::unknown_resource);
  // An unknown id with a negative amount is still a named error, never an out-of-range read.
  ChargeList both;
  ASSERT_TRUE(both.add(static_cast<ResourceId>(999), *Decimal::parse("-1", true)).has_value());
  EXPECT_EQ(engine.reserve(ForScope("/"), both).error().code, Errc::unknown_resource);
  EXPECT_EQ(engine.hold_count(), 0u);
}

TEST_F(ReservationsTest, CommitWithABadReportIsAnErrorAndKeepsTheHold) {
  ASSERT_TRUE(engine.allocate("p1").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(100, 1));
  ASSERT_TRUE(r->admitted);
  UsageReport bad = Actual(10, 10);
  bad.cost = *Decimal::parse("-0.5", true);
  auto c = engine.commit(r->id, bad);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, Errc::negative_amount);
  // A rejected report consumed nothing, so the hold is still there to commit properly.
  EXPECT_EQ(engine.hold_count(), 1u);
  EXPECT_EQ(engine.get_process("p1")->reserved.tokens_in, 100u);
  ASSERT_TRUE(engine.commit(r->id, Actual(10, 10)).has_value());
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 10u);
  EXPECT_EQ(engine.hold_count(), 0u);
}

TEST_F(ReservationsTest, CommitAfterTheThreadWasCleanedUpStillChargesTheProcess) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  Target t;
  t.process = "p1";
  t.thread = "t1";
  auto r = engine.reserve(t, Tokens(100, 1));
  ASSERT_TRUE(r->admitted);
  auto final = engine.cleanup_thread("t1");
  ASSERT_TRUE(final.has_value());
  EXPECT_EQ(final->reserved, 100u);
  ASSERT_TRUE(engine.commit(r->id, Actual(60, 20)).has_value());
  EXPECT_FALSE(engine.has_budget("t1"));
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 60u);
  EXPECT_EQ(Slot("acme", "tokens").used, N(80));
  EXPECT_EQ(Slot("acme", "tokens").reserved, Decimal());
  EXPECT_EQ(engine.get_process("p1")->reserved, ResourceUsage{});
}

TEST_F(ReservationsTest, CommitAfterExpiryWithABadReportCanBeRetried) {
  ASSERT_TRUE(engine.allocate("p1").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(100, 1), seconds(1));
  ASSERT_TRUE(r->admitted);
  clock.advance(seconds(2));
  UsageReport bad = Actual(10, 10);
  bad.cost = *Decimal::parse("-0.5", true);
  EXPECT_EQ(engine.commit(r->id, bad).error().code, Errc::negative_amount);
  auto c = engine.commit(r->id, Actual(10, 10));
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->expired);
  EXPECT_EQ(engine.get_usage("p1")->tokens_in, 10u);
}

TEST_F(ReservationsTest, CommitWithAnUnknownNegativeExtraResourceIsANamedError) {
  ASSERT_TRUE(engine.allocate("p1").value());
  auto r = engine.reserve(ForProcess("p1"), Tokens(100, 1));
  ASSERT_TRUE(r->admitted);
  UsageReport bad = Actual(10, 10);
  ASSERT_TRUE(bad.extra.add(static_cast<ResourceId>(999), *Decimal::parse("-1", true)).has_value());
  EXPECT_EQ(engine.commit(r->id, bad).error().code, Errc::unknown_resource);
  EXPECT_EQ(engine.hold_count(), 1u);
}

TEST_F(ReservationsTest, OpenHoldsAreBounded) {
  EngineConfig cfg;
  cfg.max_holds = 2;
  Engine e(clock, cfg);
  auto a = e.reserve(ForScope("/"), Tokens(1));
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(e.reserve(ForScope("/"), Tokens(2)).has_value());
  auto full = e.reserve(ForScope("/"), Tokens(4));
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, Errc::capacity_exceeded);
  EXPECT_EQ(e.hold_count(), 2u);
  Decimal held;
  auto root = e.get_scope("/");
  ASSERT_TRUE(root.has_value());
  for (const auto& s : root->resources)
    if (s.resource == "tokens_in") held = s.reserved;
  EXPECT_EQ(held, N(3));
  ASSERT_TRUE(e.cancel(a->id).has_value());
  EXPECT_TRUE(e.reserve(ForScope("/"), Tokens(4)).has_value());
}

}  // namespace
}  // namespace budgetd
