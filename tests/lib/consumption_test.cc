// Consumption: seed 000's ConsumptionManager on the budget tree, through the Engine.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "lib/engine.h"
#include "tests/lib/engine_test_support.h"

namespace budgetd {
namespace {

using testing_support::N;
using testing_support::slot_of;

using std::chrono::hours;
using std::chrono::microseconds;

constexpr TimePoint kStart = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1};

Decimal D(std::string_view s) { return Decimal::parse(s).value(); }

std::vector<Event> Only(const std::vector<Event>& events, EventKind kind) {
  std::vector<Event> out;
  for (const auto& e : events)
    if (e.kind == kind) out.push_back(e);
  return out;
}

ConsumeRequest Req(std::string consumer, std::string resource, Decimal amount,
                   bool allow_partial = false) {
  ConsumeRequest r;
  r.target.scope = std::move(consumer);
  r.resource = std::move(resource);
  r.amount = amount;
  r.allow_partial = allow_partial;
  return r;
}

class ConsumptionTest : public ::testing::Test {
 protected:
  SlotView Slot(std::string_view path, std::string_view resource) {
    return slot_of(engine, path, resource);
  }
  void SetApproval(std::string_view path, ResourceId id, Decimal approval) {
    ScopeUpdate u;
    u.limits[id].approval = approval;
    ASSERT_TRUE(engine.set_limits(path, u).has_value());
  }
  ConsumeResult Consume(const ConsumeRequest& r) {
    auto out = engine.consume(r);
    EXPECT_TRUE(out.has_value()) << out.error().message();
    return out ? *out : ConsumeResult{};
  }

  FakeClock clock{kStart};
  Engine engine{clock};
};

TEST_F(ConsumptionTest, AddQuotaForEveryResourceTypeWithADecimalMax) {
  for (const char* r : {"api_call", "compute", "storage", "bandwidth", "token", "gpu_seconds"}) {
    SCOPED_TRACE(r);
    ASSERT_TRUE(engine.add_quota("user_001", r, D("100.25")).has_value());
    auto q = engine.get_consumer_usage("user_001", r);
    ASSERT_TRUE(q.has_value());
    EXPECT_EQ(q->consumer, "user_001");
    EXPECT_EQ(q->resource, r);
    EXPECT_EQ(q->max_amount, D("100.25"));
    EXPECT_EQ(q->consumed, Decimal());
    EXPECT_EQ(q->remaining, D("100.25"));
  }
  // The custom name was interned as a resource.
  EXPECT_TRUE(engine.resources().find("gpu_seconds").has_value());
  auto r = Consume(Req("user_001", "gpu_seconds", D("0.25")));
  EXPECT_EQ(r.status, ConsumeStatus::approved);
  EXPECT_EQ(r.remaining, N(100));
}

TEST_F(ConsumptionTest, AddQuotaRejectsBadInput) {
  EXPECT_EQ(engine.add_quota("user_001", "Not A Name", N(1)).error().code, Errc::unknown_resource);
  EXPECT_EQ(engine.add_quota("user_001", "compute", *Decimal::parse("-1", true)).error().code,
            Errc::negative_amount);
  EXPECT_EQ(engine.add_quota("bad path!", "compute", N(1)).error().code, Errc::invalid_id);
}

TEST_F(ConsumptionTest, ConsumeApprovedWithRemaining) {
  ASSERT_TRUE(engine.add_quota("user_001", "api_call", N(100)).has_value());
  ConsumeRequest req = Req("user_001", "api_call", N(1));
  req.context = "symboliq_api";
  auto r = Consume(req);
  EXPECT_EQ(r.status, ConsumeStatus::approved);
  EXPECT_EQ(consume_status_name(r.status), "APPROVED");
  EXPECT_TRUE(r.approved());
  EXPECT_EQ(r.granted, N(1));
  EXPECT_EQ(r.remaining, N(99));
  EXPECT_FALSE(r.refusal.has_value());
  EXPECT_EQ(r.request_id, 0u);
  auto q = engine.get_consumer_usage("user_001", "api_call");
  EXPECT_EQ(q->consumed, N(1));
  EXPECT_EQ(q->remaining, N(99));
  EXPECT_EQ(q->max_amount, N(100));
  // The whole path is charged.
  EXPECT_EQ(Slot("/", "api_call").used, N(1));
}

TEST_F(ConsumptionTest, DeniedWhenItWouldPassTheLimit) {
  ASSERT_TRUE(engine.add_quota("user_001", "api_call", N(100)).has_value());
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(99))).remaining, N(1));
  auto denied = Consume(Req("user_001", "api_call", N(2)));
  EXPECT_EQ(denied.status, ConsumeStatus::denied);
  EXPECT_EQ(consume_status_name(denied.status), "DENIED");
  EXPECT_FALSE(denied.approved());
  EXPECT_EQ(denied.granted, Decimal());
  EXPECT_EQ(denied.remaining, N(1));
  ASSERT_TRUE(denied.refusal.has_value());
  EXPECT_EQ(denied.refusal->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(denied.refusal->path, "user_001");
  EXPECT_EQ(denied.refusal->resource, "api_call");
  EXPECT_EQ(denied.refusal->used, N(99));
  EXPECT_EQ(denied.refusal->limit, N(100));
  EXPECT_EQ(engine.get_consumer_usage("user_001", "api_call")->consumed, N(99));

  auto last = Consume(Req("user_001", "api_call", N(1)));
  EXPECT_EQ(last.status, ConsumeStatus::approved);
  EXPECT_EQ(last.remaining, Decimal());
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(1))).status, ConsumeStatus::denied);
  EXPECT_EQ(Consume(Req("user_001", "api_call", Decimal())).status, ConsumeStatus::denied);
}

TEST_F(ConsumptionTest, ATighterAncestorDenies) {
  ASSERT_TRUE(engine.add_quota("org", "compute", N(50)).has_value());
  ASSERT_TRUE(engine.add_quota("org/team", "compute", N(100)).has_value());
  auto r = Consume(Req("org/team", "compute", N(60)));
  EXPECT_EQ(r.status, ConsumeStatus::denied);
  EXPECT_EQ(r.remaining, N(50));
  EXPECT_EQ(r.refusal->path, "org");
  EXPECT_EQ(r.refusal->limit, N(50));
  auto ok = Consume(Req("org/team", "compute", N(20)));
  EXPECT_EQ(ok.status, ConsumeStatus::approved);
  EXPECT_EQ(ok.remaining, N(30));  // the tightest node: org
  EXPECT_EQ(engine.get_consumer_usage("org/team", "compute")->remaining, N(80));
  EXPECT_EQ(engine.get_consumer_usage("org", "compute")->consumed, N(20));
}

TEST_F(ConsumptionTest, PartialGrantsExactlyWhatIsLeft) {
  ASSERT_TRUE(engine.add_quota("user_001", "compute", N(100)).has_value());
  EXPECT_EQ(Consume(Req("user_001", "compute", D("99.5"))).remaining, D("0.5"));
  auto p = Consume(Req("user_001", "compute", N(2), true));
  EXPECT_EQ(p.status, ConsumeStatus::partial);
  EXPECT_EQ(consume_status_name(p.status), "PARTIAL");
  EXPECT_TRUE(p.approved());
  EXPECT_EQ(p.granted, D("0.5"));
  EXPECT_EQ(p.remaining, Decimal());
  ASSERT_TRUE(p.refusal.has_value());
  EXPECT_EQ(p.refusal->reason, Reason::scope_limit_exceeded);
  auto q = engine.get_consumer_usage("user_001", "compute");
  EXPECT_EQ(q->consumed, N(100));
  EXPECT_EQ(q->remaining, Decimal());
  // Nothing left: partial becomes denied.
  auto none = Consume(Req("user_001", "compute", D("0.1"), true));
  EXPECT_EQ(none.status, ConsumeStatus::denied);
  EXPECT_EQ(none.granted, Decimal());
}

TEST_F(ConsumptionTest, PartialIsNotNeededWhenTheAmountFits) {
  ASSERT_TRUE(engine.add_quota("user_001", "compute", N(100)).has_value());
  auto r = Consume(Req("user_001", "compute", N(100), true));
  EXPECT_EQ(r.status, ConsumeStatus::approved);
  EXPECT_EQ(r.granted, N(100));
  EXPECT_EQ(r.remaining, Decimal());
}

TEST_F(ConsumptionTest, PartialRoundsDownForIntegerResources) {
  ASSERT_TRUE(engine.add_quota("user_001", "llm_calls", D("10.5")).has_value());
  EXPECT_EQ(Consume(Req("user_001", "llm_calls", N(7))).remaining, D("3.5"));
  auto p = Consume(Req("user_001", "llm_calls", N(5), true));
  EXPECT_EQ(p.status, ConsumeStatus::partial);
  EXPECT_EQ(p.granted, N(3));
  EXPECT_EQ(p.remaining, D("0.5"));
  EXPECT_EQ(engine.get_consumer_usage("user_001", "llm_calls")->consumed, N(10));
  // Half a call is no call.
  auto none = Consume(Req("user_001", "llm_calls", N(1), true));
  EXPECT_EQ(none.status, ConsumeStatus::denied);
  EXPECT_EQ(none.granted, Decimal());
  EXPECT_EQ(none.remaining, D("0.5"));
}

TEST_F(ConsumptionTest, PendingAboveTheApprovalThresholdIsHeldUntilApproved) {
  ASSERT_TRUE(engine.add_quota("acme", "compute", N(120)).has_value());
  SetApproval("acme", res::compute, N(50));
  EXPECT_EQ(Slot("acme", "compute").approval, N(50));
  // At the threshold: approved outright.
  EXPECT_EQ(Consume(Req("acme", "compute", N(50))).status, ConsumeStatus::approved);
  engine.take_events();

  ConsumeRequest req = Req("acme", "compute", N(60));
  req.context = "batch-7";
  auto p = Consume(req);
  EXPECT_EQ(p.status, ConsumeStatus::pending);
  EXPECT_EQ(consume_status_name(p.status), "PENDING");
  EXPECT_FALSE(p.approved());
  EXPECT_NE(p.request_id, 0u);
  EXPECT_EQ(p.expires_at, kStart + hours(1));
  EXPECT_EQ(p.granted, Decimal());
  EXPECT_EQ(p.remaining, N(10));  // 120 - 50 used - 60 held
  ASSERT_TRUE(p.refusal.has_value());
  EXPECT_EQ(p.refusal->reason, Reason::approval_required);
  EXPECT_EQ(reason_name(p.refusal->reason), "approval_required");
  EXPECT_EQ(p.refusal->path, "acme");
  EXPECT_EQ(p.refusal->used, N(60));
  EXPECT_EQ(p.refusal->limit, N(50));

  auto created = Only(engine.take_events(), EventKind::pending_created);
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].ref, p.request_id);
  EXPECT_EQ(created[0].path, "acme");
  EXPECT_EQ(created[0].resource, "compute");
  EXPECT_EQ(created[0].used, N(60));
  EXPECT_EQ(created[0].limit, N(50));
  EXPECT_EQ(created[0].reason, Reason::approval_required);

  auto pending = engine.list_pending();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].id, p.request_id);
  EXPECT_EQ(pending[0].scope, "acme");
  EXPECT_EQ(pending[0].resource, "compute");
  EXPECT_EQ(pending[0].context, "batch-7");
  EXPECT_EQ(pending[0].amount, N(60));
  EXPECT_EQ(pending[0].created_at, kStart);
  EXPECT_EQ(pending[0].expires_at, kStart + hours(1));
  EXPECT_EQ(engine.get_stats().pending, 1u);

  // Held, not consumed.
  EXPECT_EQ(Slot("acme", "compute").used, N(50));
  EXPECT_EQ(Slot("acme", "compute").reserved, N(60));
  EXPECT_EQ(engine.get_consumer_usage("acme", "compute")->consumed, N(50));
  EXPECT_EQ(engine.get_consumer_usage("acme", "compute")->remaining, N(10));

  // While pending, the held amount blocks others.
  auto blocked = Consume(Req("acme", "compute", N(20)));
  EXPECT_EQ(blocked.status, ConsumeStatus::denied);
  EXPECT_EQ(blocked.refusal->used, N(110));
  EXPECT_EQ(blocked.remaining, N(10));
  auto chk = engine.check_quota("acme", "compute", N(11));
  EXPECT_FALSE(chk->first);
  EXPECT_EQ(chk->second, N(10));
  EXPECT_EQ(Consume(Req("acme", "compute", N(10))).status, ConsumeStatus::approved);

  engine.take_events();
  auto a = engine.approve(p.request_id);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->status, ConsumeStatus::approved);
  EXPECT_EQ(a->granted, N(60));
  EXPECT_EQ(a->request_id, p.request_id);
  EXPECT_EQ(Slot("acme", "compute").used, N(120));
  EXPECT_EQ(Slot("acme", "compute").reserved, Decimal());
  EXPECT_EQ(Slot("/", "compute").used, N(120));
  EXPECT_EQ(Slot("/", "compute").reserved, Decimal());
  auto decided = Only(engine.take_events(), EventKind::pending_decided);
  ASSERT_EQ(decided.size(), 1u);
  EXPECT_EQ(decided[0].outcome, "approved");
  EXPECT_EQ(decided[0].ref, p.request_id);
  EXPECT_EQ(decided[0].used, N(60));
  EXPECT_EQ(decided[0].resource, "compute");
  EXPECT_TRUE(engine.list_pending().empty());
  EXPECT_EQ(engine.hold_count(), 0u);

  // Twice: unknown_request, and nothing more is charged.
  auto twice = engine.approve(p.request_id);
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code, Errc::unknown_request);
  EXPECT_EQ(engine.deny(p.request_id).error().code, Errc::unknown_request);
  EXPECT_EQ(Slot("acme", "compute").used, N(120));

  auto s = engine.get_stats();
  EXPECT_EQ(s.total_events, 4u);
  EXPECT_EQ(s.consumed_count, 3u);  // 50, 10, and 60 after approval
  EXPECT_EQ(s.rejected_count, 1u);
  EXPECT_EQ(s.partial, 0u);
  EXPECT_EQ(s.pending, 0u);
}

TEST_F(ConsumptionTest, DenyFreesTheHold) {
  ASSERT_TRUE(engine.add_quota("acme", "storage", N(100)).has_value());
  SetApproval("acme", res::storage, N(10));
  auto p = Consume(Req("acme", "storage", D("10.5")));
  ASSERT_EQ(p.status, ConsumeStatus::pending);
  engine.take_events();
  auto d = engine.deny(p.request_id);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->status, ConsumeStatus::denied);
  EXPECT_EQ(d->granted, Decimal());
  EXPECT_EQ(Slot("acme", "storage").used, Decimal());
  EXPECT_EQ(Slot("acme", "storage").reserved, Decimal());
  EXPECT_EQ(engine.get_consumer_usage("acme", "storage")->remaining, N(100));
  auto decided = Only(engine.take_events(), EventKind::pending_decided);
  ASSERT_EQ(decided.size(), 1u);
  EXPECT_EQ(decided[0].outcome, "denied");
  EXPECT_EQ(decided[0].used, D("10.5"));
  EXPECT_EQ(engine.approve(p.request_id).error().code, Errc::unknown_request);
  EXPECT_EQ(engine.deny(p.request_id).error().code, Errc::unknown_request);
  auto s = engine.get_stats();
  EXPECT_EQ(s.total_events, 1u);
  EXPECT_EQ(s.consumed_count, 0u);
  EXPECT_EQ(s.rejected_count, 1u);
  EXPECT_EQ(s.pending, 0u);
}

TEST_F(ConsumptionTest, PendingExpiresAfterPendingTtl) {
  ASSERT_TRUE(engine.add_quota("acme", "bandwidth", N(100)).has_value());
  SetApproval("acme", res::bandwidth, N(10));
  auto p = Consume(Req("acme", "bandwidth", N(40)));
  ASSERT_EQ(p.status, ConsumeStatus::pending);
  EXPECT_EQ(engine.next_deadline(), kStart + hours(1));
  engine.take_events();

  clock.advance(hours(1) - microseconds(1));
  engine.advance();
  EXPECT_TRUE(engine.take_events().empty());
  EXPECT_EQ(Slot("acme", "bandwidth").reserved, N(40));
  EXPECT_EQ(engine.get_stats().pending, 1u);

  clock.advance(microseconds(1));
  engine.advance();
  auto events = engine.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::pending_decided);
  EXPECT_EQ(events[0].outcome, "expired");
  EXPECT_EQ(events[0].ref, p.request_id);
  EXPECT_EQ(events[0].path, "acme");
  EXPECT_EQ(events[0].at, kStart + hours(1));
  EXPECT_EQ(Slot("acme", "bandwidth").reserved, Decimal());
  EXPECT_EQ(Slot("acme", "bandwidth").used, Decimal());
  EXPECT_TRUE(engine.list_pending().empty());
  EXPECT_EQ(engine.approve(p.request_id).error().code, Errc::unknown_request);
  auto s = engine.get_stats();
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.rejected_count, 1u);
  EXPECT_EQ(s.consumed_count, 0u);
}

TEST_F(ConsumptionTest, PendingTtlComesFromTheConfig) {
  EngineConfig cfg;
  cfg.pending_ttl = std::chrono::minutes(2);
  Engine e(clock, cfg);
  ScopeUpdate u;
  u.limits[res::compute].approval = N(1);
  ASSERT_TRUE(e.set_limits("acme", u).has_value());
  auto p = e.consume(Req("acme", "compute", N(2)));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->status, ConsumeStatus::pending);
  EXPECT_EQ(p->expires_at, kStart + std::chrono::minutes(2));
}

TEST_F(ConsumptionTest, PendingAndReservationIdsAreNotInterchangeable) {
  SetApproval("acme", res::compute, N(1));
  auto p = Consume(Req("acme", "compute", N(2)));
  ASSERT_EQ(p.status, ConsumeStatus::pending);
  UsageReport rep;
  rep.tokens_in = 1;
  EXPECT_EQ(engine.commit(p.request_id, rep).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.cancel(p.request_id).error().code, Errc::unknown_reservation);
  EXPECT_EQ(engine.list_pending().size(), 1u);

  Target t;
  t.scope = "acme";
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, N(1)).has_value());
  auto r = engine.reserve(t, est);
  ASSERT_TRUE(r->admitted);
  EXPECT_EQ(engine.approve(r->id).error().code, Errc::unknown_request);
  EXPECT_EQ(engine.deny(r->id).error().code, Errc::unknown_request);
  EXPECT_EQ(engine.hold_count(), 2u);
}

TEST_F(ConsumptionTest, APartialGrantAboveTheApprovalThresholdWaitsForApproval) {
  ASSERT_TRUE(engine.add_quota("acme", "compute", N(100)).has_value());
  SetApproval("acme", res::compute, N(50));
  EXPECT_EQ(Consume(Req("acme", "compute", N(20))).status, ConsumeStatus::approved);
  // 80 are left; granting them would pass the threshold without an operator.
  auto p = Consume(Req("acme", "compute", N(500), true));
  EXPECT_EQ(p.status, ConsumeStatus::pending);
  EXPECT_EQ(p.granted, Decimal());
  EXPECT_EQ(Slot("acme", "compute").used, N(20));
  EXPECT_EQ(Slot("acme", "compute").reserved, N(80));
  ASSERT_EQ(engine.list_pending().size(), 1u);
  EXPECT_EQ(engine.list_pending()[0].amount, N(80));
  auto a = engine.approve(p.request_id);
  EXPECT_EQ(a->granted, N(80));
  EXPECT_EQ(Slot("acme", "compute").used, N(100));
}

TEST_F(ConsumptionTest, CheckQuotaReturnsAllowedAndRemaining) {
  ASSERT_TRUE(engine.add_quota("user_001", "api_call", N(100)).has_value());
  auto a = engine.check_quota("user_001", "api_call", N(10));
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->first);
  EXPECT_EQ(a->second, N(100));
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(95))).status, ConsumeStatus::approved);
  auto b = engine.check_quota("user_001", "api_call", N(10));
  EXPECT_FALSE(b->first);
  EXPECT_EQ(b->second, N(5));
  auto c = engine.check_quota("user_001", "api_call", N(5));
  EXPECT_TRUE(c->first);
  EXPECT_EQ(c->second, N(5));
  // A check consumes nothing.
  EXPECT_EQ(engine.get_consumer_usage("user_001", "api_call")->consumed, N(95));
  EXPECT_EQ(engine.get_stats().total_events, 1u);

  // Unlimited everywhere: allowed, remaining is the unlimited amount.
  auto u = engine.check_quota("/", "compute", N(1'000'000));
  EXPECT_TRUE(u->first);
  EXPECT_EQ(u->second, kUnlimitedAmount);

  EXPECT_EQ(engine.check_quota("nobody", "api_call", N(1)).error().code, Errc::unknown_scope);
  EXPECT_EQ(engine.check_quota("user_001", "nope", N(1)).error().code, Errc::unknown_resource);
  EXPECT_EQ(engine.check_quota("user_001", "api_call", *Decimal::parse("-1", true)).error().code,
            Errc::negative_amount);
}

TEST_F(ConsumptionTest, CheckQuotaAsksEveryAncestor) {
  ASSERT_TRUE(engine.add_quota("org", "compute", N(50)).has_value());
  ASSERT_TRUE(engine.add_quota("org/team", "compute", N(100)).has_value());
  auto r = engine.check_quota("org/team", "compute", N(60));
  EXPECT_FALSE(r->first);
  EXPECT_EQ(r->second, N(50));
  EXPECT_TRUE(engine.check_quota("org/team", "compute", N(50))->first);
}

TEST_F(ConsumptionTest, GetConsumerUsage) {
  ASSERT_TRUE(engine.add_quota("user_001", "token", D("1000.5")).has_value());
  EXPECT_EQ(Consume(Req("user_001", "token", D("0.25"))).status, ConsumeStatus::approved);
  auto q = engine.get_consumer_usage("user_001", "token");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->max_amount, D("1000.5"));
  EXPECT_EQ(q->consumed, D("0.25"));
  EXPECT_EQ(q->remaining, D("1000.25"));
  // A node without a limit on the resource: unlimited.
  auto root = engine.get_consumer_usage("/", "token");
  EXPECT_EQ(root->consumer, "/");
  EXPECT_EQ(root->max_amount, kUnlimitedAmount);
  EXPECT_EQ(root->consumed, D("0.25"));
  EXPECT_EQ(root->remaining, kUnlimitedAmount);
  EXPECT_EQ(engine.get_consumer_usage("nobody", "token").error().code, Errc::unknown_scope);
  EXPECT_EQ(engine.get_consumer_usage("user_001", "nope").error().code, Errc::unknown_resource);
}

TEST_F(ConsumptionTest, ResetQuotaZeroesTheConsumer) {
  ASSERT_TRUE(engine.add_quota("user_001", "api_call", N(100)).has_value());
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(100))).status, ConsumeStatus::approved);
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(1))).status, ConsumeStatus::denied);
  engine.take_events();
  ASSERT_TRUE(engine.reset_quota("user_001", "api_call").has_value());
  auto resets = Only(engine.take_events(), EventKind::reset);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].path, "user_001");
  EXPECT_EQ(resets[0].resource, "api_call");
  auto q = engine.get_consumer_usage("user_001", "api_call");
  EXPECT_EQ(q->consumed, Decimal());
  EXPECT_EQ(q->remaining, N(100));
  EXPECT_EQ(q->max_amount, N(100));
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(1))).remaining, N(99));
  EXPECT_EQ(engine.reset_quota("nobody", "api_call").error().code, Errc::unknown_scope);
  EXPECT_EQ(engine.reset_quota("user_001", "nope").error().code, Errc::unknown_resource);
}

TEST_F(ConsumptionTest, UpdateQuotaTakesEffectAtOnce) {
  ASSERT_TRUE(engine.add_quota("user_001", "api_call", N(100)).has_value());
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(100))).status, ConsumeStatus::approved);
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(1))).status, ConsumeStatus::denied);
  ASSERT_TRUE(engine.update_quota("user_001", "api_call", N(200)).has_value());
  auto q = engine.get_consumer_usage("user_001", "api_call");
  EXPECT_EQ(q->max_amount, N(200));
  EXPECT_EQ(q->consumed, N(100));
  EXPECT_EQ(q->remaining, N(100));
  auto r = Consume(Req("user_001", "api_call", N(1)));
  EXPECT_EQ(r.status, ConsumeStatus::approved);
  EXPECT_EQ(r.remaining, N(99));
  // Lowered below use: refused, remaining 0.
  ASSERT_TRUE(engine.update_quota("user_001", "api_call", N(50)).has_value());
  EXPECT_EQ(engine.get_consumer_usage("user_001", "api_call")->remaining, Decimal());
  EXPECT_EQ(Consume(Req("user_001", "api_call", N(1))).status, ConsumeStatus::denied);

  auto unknown = engine.update_quota("nobody", "api_call", N(1));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, Errc::unknown_scope);
  EXPECT_FALSE(engine.get_scope("nobody").has_value());  // not created either
  EXPECT_EQ(engine.update_quota("user_001", "nope", N(1)).error().code, Errc::unknown_resource);
  EXPECT_EQ(engine.update_quota("user_001", "api_call", *Decimal::parse("-1", true)).error().code,
            Errc::negative_amount);
}

TEST_F(ConsumptionTest, StatsCountEveryOutcome) {
  ASSERT_TRUE(engine.add_quota("acme", "compute", N(100)).has_value());
  SetApproval("acme", res::compute, N(30));
  Consume(Req("acme", "compute", N(10)));                 // approved
  Consume(Req("acme", "compute", N(20)));                 // approved
  auto p1 = Consume(Req("acme", "compute", N(40)));       // pending (held 40)
  auto p2 = Consume(Req("acme", "compute", N(31)));       // denied: 30 + 40 + 31 > 100
  auto p3 = Consume(Req("acme", "compute", N(25)));       // approved: 55 used + 40 held
  auto p4 = Consume(Req("acme", "compute", N(9), true));  // partial: 5 left
  EXPECT_EQ(p1.status, ConsumeStatus::pending);
  EXPECT_EQ(p2.status, ConsumeStatus::denied);
  EXPECT_EQ(p3.status, ConsumeStatus::approved);
  EXPECT_EQ(p4.status, ConsumeStatus::partial);
  EXPECT_EQ(p4.granted, N(5));
  auto s = engine.get_stats();
  EXPECT_EQ(s.total_events, 6u);
  EXPECT_EQ(s.consumed_count, 3u);
  EXPECT_EQ(s.rejected_count, 1u);
  EXPECT_EQ(s.partial, 1u);
  EXPECT_EQ(s.pending, 1u);
  ASSERT_TRUE(engine.deny(p1.request_id).has_value());
  s = engine.get_stats();
  EXPECT_EQ(s.total_events, 6u);
  EXPECT_EQ(s.rejected_count, 2u);
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(engine.get_consumer_usage("acme", "compute")->consumed, N(60));
}

TEST_F(ConsumptionTest, BadRequestsAreNamedErrorsAndNotCounted) {
  ASSERT_TRUE(engine.add_quota("acme", "compute", N(100)).has_value());
  auto unknown = engine.consume(Req("acme", "no_such_resource", N(1)));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, Errc::unknown_resource);
  auto negative = engine.consume(Req("acme", "compute", *Decimal::parse("-1", true)));
  ASSERT_FALSE(negative.has_value());
  EXPECT_EQ(negative.error().code, Errc::negative_amount);
  auto fractional = engine.consume(Req("acme", "llm_calls", D("1.5")));
  ASSERT_FALSE(fractional.has_value());
  EXPECT_EQ(fractional.error().code, Errc::invalid_argument);
  EXPECT_EQ(engine.consume(Req("nobody", "compute", N(1))).error().code, Errc::unknown_scope);
  ConsumeRequest no_target = Req("", "compute", N(1));
  EXPECT_EQ(engine.consume(no_target).error().code, Errc::invalid_argument);
  EXPECT_EQ(engine.get_stats().total_events, 0u);
  EXPECT_EQ(engine.get_consumer_usage("acme", "compute")->consumed, Decimal());
  // A whole amount of an integer resource is fine.
  EXPECT_EQ(Consume(Req("acme", "llm_calls", D("2.0"))).status, ConsumeStatus::approved);
}

TEST_F(ConsumptionTest, AProcessTargetChargesTheProcessAndItsPath) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme/team").value());
  ASSERT_TRUE(engine.add_quota("acme", "compute", N(100)).has_value());
  ConsumeRequest req;
  req.target.process = "p1";
  req.resource = "compute";
  req.amount = D("30.5");
  auto r = Consume(req);
  EXPECT_EQ(r.status, ConsumeStatus::approved);
  EXPECT_EQ(r.remaining, D("69.5"));
  for (const char* path : {"acme/team", "acme", "/"}) {
    SCOPED_TRACE(path);
    EXPECT_EQ(Slot(path, "compute").used, D("30.5"));
  }
  // A counted resource also lands on the process.
  req.resource = "tool_calls";
  req.amount = N(3);
  EXPECT_EQ(Consume(req).status, ConsumeStatus::approved);
  EXPECT_EQ(engine.get_usage("p1")->tool_calls, 3u);
  EXPECT_EQ(Slot("acme/team", "tool_calls").used, N(3));
  // ... and the process quota refuses (max_tool_calls 50), partially granting what is left.
  req.amount = N(60);
  req.allow_partial = true;
  auto p = Consume(req);
  EXPECT_EQ(p.status, ConsumeStatus::partial);
  EXPECT_EQ(p.granted, N(47));
  EXPECT_EQ(engine.get_usage("p1")->tool_calls, 50u);
  req.amount = N(1);
  auto d = Consume(req);
  EXPECT_EQ(d.status, ConsumeStatus::denied);
  EXPECT_EQ(d.refusal->reason, Reason::max_tool_calls_exceeded);
}

// A pending request on a process or thread holds on them too; every decision frees it there.
TEST_F(ConsumptionTest, PendingOnAProcessOrThreadFreesEveryHoldWhenDecided) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());  // max_tool_calls 50
  SetApproval("acme", res::tool_calls, N(2));
  SetApproval("acme", res::tokens, N(10));
  ConsumeRequest req;
  req.target.process = "p1";
  req.resource = "tool_calls";
  req.amount = N(5);
  ConsumeRequest tok;
  tok.target.process = "p1";
  tok.target.thread = "t1";
  tok.resource = "tokens";
  tok.amount = N(40);

  auto approved = Consume(req);
  ASSERT_EQ(approved.status, ConsumeStatus::pending);
  EXPECT_EQ(engine.get_process("p1")->reserved.tool_calls, 5u);
  auto denied = Consume(req);
  auto expired = Consume(req);
  auto thread = Consume(tok);
  ASSERT_EQ(thread.status, ConsumeStatus::pending);
  EXPECT_EQ(engine.get_process("p1")->reserved.tool_calls, 15u);
  EXPECT_EQ(engine.get_thread_usage("t1")->reserved, 40u);

  ASSERT_TRUE(engine.approve(approved.request_id).has_value());
  EXPECT_EQ(engine.get_process("p1")->reserved.tool_calls, 10u);
  EXPECT_EQ(engine.get_usage("p1")->tool_calls, 5u);
  ASSERT_TRUE(engine.deny(denied.request_id).has_value());
  EXPECT_EQ(engine.get_process("p1")->reserved.tool_calls, 5u);
  ASSERT_TRUE(engine.approve(thread.request_id).has_value());
  EXPECT_EQ(engine.get_thread_usage("t1")->reserved, 0u);
  EXPECT_EQ(engine.get_thread_usage("t1")->total_tokens, 40u);
  clock.advance(hours(1));
  engine.advance();
  EXPECT_EQ(engine.get_process("p1")->reserved, ResourceUsage{});
  EXPECT_EQ(Slot("acme", "tool_calls").reserved, Decimal());
  EXPECT_EQ(Slot("acme", "tool_calls").used, N(5));
  EXPECT_EQ(engine.get_stats().pending, 0u);
  (void)expired;
}

TEST_F(ConsumptionTest, PendingOnAReleasedProcessIsDecided) {
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "acme").value());
  SetApproval("acme", res::compute, N(1));
  ConsumeRequest req;
  req.target.process = "p1";
  req.resource = "compute";
  req.amount = N(5);
  auto p = Consume(req);
  ASSERT_EQ(p.status, ConsumeStatus::pending);
  EXPECT_EQ(engine.list_pending()[0].process, "p1");
  ASSERT_TRUE(engine.release("p1"));
  EXPECT_EQ(Slot("acme", "compute").reserved, Decimal());
  EXPECT_TRUE(engine.list_pending().empty());
  EXPECT_EQ(engine.approve(p.request_id).error().code, Errc::unknown_request);
  EXPECT_EQ(engine.get_stats().rejected_count, 1u);
}

TEST_F(ConsumptionTest, ListPendingIsInRequestOrder) {
  SetApproval("acme", res::compute, N(1));
  SetApproval("beta", res::storage, N(1));
  auto a = Consume(Req("beta", "storage", N(3)));
  auto b = Consume(Req("acme", "compute", D("2.5")));
  auto c = Consume(Req("beta", "storage", N(4)));
  auto list = engine.list_pending();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].id, a.request_id);
  EXPECT_EQ(list[1].id, b.request_id);
  EXPECT_EQ(list[2].id, c.request_id);
  EXPECT_LT(a.request_id, b.request_id);
  EXPECT_EQ(list[1].scope, "acme");
  EXPECT_EQ(list[1].amount, D("2.5"));
  EXPECT_EQ(list[2].resource, "storage");
  ASSERT_TRUE(engine.deny(b.request_id).has_value());
  list = engine.list_pending();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, a.request_id);
  EXPECT_EQ(list[1].id, c.request_id);
  EXPECT_EQ(engine.get_stats().pending, 2u);
}

}  // namespace
}  // namespace budgetd
