#include "lib/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace budgetd {
namespace {

namespace ch = std::chrono;
using namespace std::chrono_literals;

constexpr std::string_view kExceeded = "Quota exceeded. Upgrade your plan or wait for the reset.";

TimePoint at(int y, unsigned m, unsigned d, int h = 0, int mi = 0, int s = 0) {
  return TimePoint(ch::sys_days(ch::year(y) / ch::month(m) / ch::day(d))) + ch::hours(h) +
         ch::minutes(mi) + ch::seconds(s);
}

Decimal D(uint64_t v) { return Decimal::from_int(v); }
Decimal P(std::string_view s) { return Decimal::parse(s).value(); }

// A quota that never refuses, so only the scope tree decides.
ResourceQuota unlimited_quota() {
  ResourceQuota q;
  q.max_input_tokens = q.max_output_tokens = q.max_context_tokens = kUnlimited;
  q.max_llm_calls = q.max_tool_calls = q.max_agent_hops = q.max_iterations = kUnlimited;
  q.max_tokens = kUnlimited;
  q.max_cost = kUnlimitedAmount;
  q.timeout_seconds = q.soft_timeout_seconds = kUnlimited;
  return q;
}

UsageReport tokens_report(uint64_t in, uint64_t out = 0) {
  UsageReport r;
  r.llm_calls = 1;
  r.tokens_in = in;
  r.tokens_out = out;
  return r;
}

std::optional<SlotView> slot_of(const ScopeView& v, std::string_view name) {
  for (const auto& s : v.resources)
    if (s.resource == name) return s;
  return std::nullopt;
}

// Used amount of `resource` on `path` (zero when the node lists no such slot).
Decimal used_on(const Engine& e, std::string_view path, std::string_view resource) {
  auto v = e.get_scope(path);
  EXPECT_TRUE(v.has_value()) << path;
  if (!v) return Decimal::max();
  auto s = slot_of(*v, resource);
  return s ? s->used : Decimal();
}

std::vector<Event> of_kind(const std::vector<Event>& events, EventKind k) {
  std::vector<Event> out;
  std::copy_if(events.begin(), events.end(), std::back_inserter(out),
               [k](const Event& e) { return e.kind == k; });
  return out;
}

ScopeUpdate with_tier(std::string tier) {
  ScopeUpdate u;
  u.tier = std::move(tier);
  return u;
}
ScopeUpdate with_plan(std::string plan) {
  ScopeUpdate u;
  u.plan = std::move(plan);
  return u;
}
ScopeUpdate with_hard(ResourceId id, Decimal hard) {
  ScopeUpdate u;
  u.limits[id].hard = hard;
  return u;
}

// ---- Identifiers and paths ----------------------------------------------------------

TEST(NormalizePath, RootForms) {
  EXPECT_EQ(normalize_path("/").value(), "/");
  EXPECT_EQ(normalize_path("").value(), "/");
}

TEST(NormalizePath, LeadingAndTrailingSlashAreDropped) {
  EXPECT_EQ(normalize_path("acme/research/alice").value(), "acme/research/alice");
  EXPECT_EQ(normalize_path("/acme/research/alice").value(), "acme/research/alice");
  EXPECT_EQ(normalize_path("acme/research/").value(), "acme/research");
  EXPECT_EQ(normalize_path("/acme/").value(), "acme");
  EXPECT_EQ(normalize_path("org:acme/user@alice/env-1.2_x").value(),
            "org:acme/user@alice/env-1.2_x");
}

TEST(NormalizePath, EmptySegmentIsInvalid) {
  for (std::string_view bad : {"acme//alice", "//acme", "acme/research//", "/acme//", "a///b"}) {
    auto r = normalize_path(bad);
    ASSERT_FALSE(r.has_value()) << bad << " gave " << r.value();
    EXPECT_EQ(r.error().code, Errc::invalid_id) << bad;
  }
}

TEST(NormalizePath, BadCharactersAreInvalid) {
  for (std::string_view bad : {"acme/re search", "acme/r*", "acme/a\tb", "acme\\alice",
                               "acme/\xc3\xa9", "acme/a\x01", "acme/a,b", "acme/a#b"}) {
    auto r = normalize_path(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_id) << bad;
  }
}

TEST(NormalizePath, DepthSixteenIsTheMaximum) {
  std::string p16 = "s";
  for (int i = 1; i < 16; ++i) p16 += "/s";
  EXPECT_EQ(normalize_path(p16).value(), p16);
  auto r = normalize_path(p16 + "/s");  // 17 deep
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_id);
}

TEST(NormalizePath, LengthTwoHundredFiftySixIsTheMaximum) {
  const std::string p256(256, 'a');
  EXPECT_EQ(normalize_path(p256).value(), p256);
  auto r = normalize_path(std::string(257, 'a'));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_id);
  // Also with segments: 257 bytes of "aaaa/aaaa/..." is too long.
  std::string segs;
  while (segs.size() < 257) segs += segs.empty() ? "a" : "/a";
  segs.resize(257);
  if (segs.back() == '/') segs.back() = 'b';
  EXPECT_EQ(normalize_path(segs).error().code, Errc::invalid_id);
}

TEST(ValidateId, Bounds) {
  EXPECT_TRUE(validate_id("4242").has_value());
  EXPECT_TRUE(validate_id("env-123").has_value());
  EXPECT_TRUE(validate_id(std::string(128, 'x')).has_value());
  for (std::string bad : {std::string(""), std::string(129, 'x'), std::string("a b"),
                          std::string("a/b"), std::string("a\nb"), std::string("a\x7f")}) {
    auto r = validate_id(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_id) << bad;
  }
}

// ---- The tree -----------------------------------------------------------------------

TEST(ScopeTree, RootExistsFromTheStart) {
  FakeClock clock(at(2024, 3, 10, 12));
  Engine e(clock);
  auto root = e.get_scope("/").value();
  EXPECT_EQ(root.path, "/");
  EXPECT_EQ(root.reset, ResetPeriod::never);
  EXPECT_EQ(root.last_reset_at, at(2024, 3, 10, 12));
  EXPECT_EQ(root.next_reset_at, TimePoint::max());
  EXPECT_TRUE(root.resources.empty());
  EXPECT_EQ(e.list_scopes().size(), 1u);
}

TEST(ScopeTree, SetLimitsCreatesTheNodeAndItsAncestors) {
  FakeClock clock(at(2024, 3, 10, 12));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("/acme/research/alice/", with_hard(res::tokens, D(1000))).has_value());
  for (auto p : {"acme", "acme/research", "acme/research/alice"}) {
    auto v = e.get_scope(p);
    ASSERT_TRUE(v.has_value()) << p;
    EXPECT_EQ(v->path, p);
    EXPECT_EQ(v->last_reset_at, at(2024, 3, 10, 12));
  }
  EXPECT_EQ(slot_of(e.get_scope("acme/research/alice").value(), "tokens")->hard, D(1000));
  EXPECT_TRUE(e.get_scope("acme/research").value().resources.empty());  // ancestors get no limit
  EXPECT_EQ(e.get_scope("acme/other").error().code, Errc::unknown_scope);
  EXPECT_EQ(e.get_scope("acme//other").error().code, Errc::invalid_id);

  std::vector<std::string> paths;
  for (const auto& v : e.list_scopes()) paths.push_back(v.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"/", "acme", "acme/research", "acme/research/alice"}));

  auto events = e.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::limit_changed);
  EXPECT_EQ(events[0].path, "acme/research/alice");
  EXPECT_EQ(events[0].at, at(2024, 3, 10, 12));
}

TEST(ScopeTree, SetLimitsRejectsBadInputAndCreatesNothing) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  EXPECT_EQ(e.set_limits("acme/a b", {}).error().code, Errc::invalid_id);
  EXPECT_EQ(e.set_limits("acme//b", {}).error().code, Errc::invalid_id);
  EXPECT_EQ(e.set_limits("acme/b//", {}).error().code, Errc::invalid_id);
  ScopeUpdate unknown;
  unknown.limits[static_cast<ResourceId>(999)].hard = D(1);
  EXPECT_EQ(e.set_limits("acme", unknown).error().code, Errc::unknown_resource);
  EXPECT_EQ(e.get_scope("acme").error().code, Errc::unknown_scope);
}

TEST(ScopeTree, NegativeLimitIsRefused) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  auto minus = Decimal::parse("-5", /*allow_negative=*/true).value();
  for (int field = 0; field < 3; ++field) {
    ScopeUpdate u;
    LimitSpec& s = u.limits[res::cost];
    (field == 0 ? s.hard : field == 1 ? s.soft : s.approval) = minus;
    auto r = e.set_limits("acme", u);
    ASSERT_FALSE(r.has_value()) << field;
    EXPECT_EQ(r.error().code, Errc::negative_amount) << field;
  }
  EXPECT_EQ(e.get_scope("acme").error().code, Errc::unknown_scope);
}

TEST(ScopeTree, UsageIsChargedToEveryAncestorInTheSameStep) {
  FakeClock clock(at(2024, 3, 10, 12));
  Engine e(clock);
  ASSERT_TRUE(e.allocate("4242", unlimited_quota(), "acme/research/alice").value());
  ASSERT_TRUE(e.allocate("bob-1", unlimited_quota(), "acme/research/bob").value());
  UsageReport r = tokens_report(30, 12);
  r.tool_calls = 2;
  r.cost = P("0.25");
  auto rec = e.record_usage("4242", r);
  ASSERT_TRUE(rec.has_value()) << rec.error().message();
  EXPECT_TRUE(rec->violations.empty());
  EXPECT_EQ(rec->usage.tokens_in, 30u);
  EXPECT_EQ(rec->usage.tokens_out, 12u);

  for (auto path : {"acme/research/alice", "acme/research", "acme", "/"}) {
    EXPECT_EQ(used_on(e, path, "tokens_in"), D(30)) << path;
    EXPECT_EQ(used_on(e, path, "tokens_out"), D(12)) << path;
    EXPECT_EQ(used_on(e, path, "tokens"), D(42)) << path;
    EXPECT_EQ(used_on(e, path, "llm_calls"), D(1)) << path;
    EXPECT_EQ(used_on(e, path, "tool_calls"), D(2)) << path;
    EXPECT_EQ(used_on(e, path, "cost"), P("0.25")) << path;
  }
  // A sibling is not charged.
  EXPECT_TRUE(e.get_scope("acme/research/bob").value().resources.empty());

  // The sibling's report adds to the shared ancestors only.
  ASSERT_TRUE(e.record_usage("bob-1", tokens_report(8)).has_value());
  EXPECT_EQ(used_on(e, "acme/research/alice", "tokens"), D(42));
  EXPECT_EQ(used_on(e, "acme/research/bob", "tokens"), D(8));
  EXPECT_EQ(used_on(e, "acme/research", "tokens"), D(50));
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(50));
  EXPECT_EQ(used_on(e, "/", "tokens"), D(50));
  EXPECT_EQ(used_on(e, "/", "llm_calls"), D(2));
  auto sys = e.get_system_usage();
  EXPECT_EQ(sys.system_tokens_in, 38u);
  EXPECT_EQ(sys.system_tokens_out, 12u);
  EXPECT_EQ(sys.system_llm_calls, 2u);
}

TEST(ScopeTree, ScopeCountIsBounded) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  // The root is one node; fill the rest with single-segment paths.
  for (std::size_t i = 1; i < Engine::kMaxScopes; ++i)
    ASSERT_TRUE(e.set_limits("n" + std::to_string(i), {}).has_value()) << i;
  (void)e.take_events();
  EXPECT_TRUE(e.get_scope("n99999").has_value());
  auto r = e.set_limits("one-more", {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::capacity_exceeded);
  auto a = e.allocate("p1", unlimited_quota(), "one-more");
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, Errc::capacity_exceeded);
  // Existing nodes are still usable.
  EXPECT_TRUE(e.set_limits("n7", with_hard(res::tokens, D(5))).has_value());
  EXPECT_TRUE(e.allocate("p1", unlimited_quota(), "n7").value());
}

// ---- Admission along the path -------------------------------------------------------

TEST(Admission, AncestorAtItsLimitRefusesWithItsPathAndRetryAfter) {
  FakeClock clock(at(2024, 3, 10, 18, 30));
  Engine e(clock);
  ScopeUpdate acme = with_hard(res::tokens, D(100));
  acme.reset = ResetPeriod::daily;
  ASSERT_TRUE(e.set_limits("acme", acme).has_value());
  ASSERT_TRUE(e.allocate("4242", unlimited_quota(), "acme/research/alice").value());
  ASSERT_TRUE(e.record_usage("4242", tokens_report(60, 40)).has_value());

  auto ref = e.check_quota("4242");
  ASSERT_TRUE(ref.has_value());
  ASSERT_TRUE(ref->has_value()) << "an exhausted ancestor must refuse the process";
  EXPECT_EQ((*ref)->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ((*ref)->path, "acme");
  EXPECT_EQ((*ref)->resource, "tokens");
  EXPECT_EQ((*ref)->used, D(100));
  EXPECT_EQ((*ref)->limit, D(100));
  EXPECT_EQ((*ref)->retry_after, 5h + 30min);  // to 2024-03-11T00:00Z
  EXPECT_EQ((*ref)->message, kExceeded);

  // The same refusal for an admission of tokens on the child's own scope.
  ConsumeRequest req;
  req.target.scope = "acme/research/alice";
  req.resource = "tokens";
  req.amount = D(1);
  auto c = e.consume(req).value();
  EXPECT_EQ(c.status, ConsumeStatus::denied);
  ASSERT_TRUE(c.refusal.has_value());
  EXPECT_EQ(c.refusal->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(c.refusal->path, "acme");
  EXPECT_EQ(c.refusal->resource, "tokens");
  EXPECT_EQ(c.refusal->retry_after, 5h + 30min);

  // A reservation of input tokens is judged on the `tokens` sum too.
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, D(1)).has_value());
  Target t;
  t.process = "4242";
  auto rv = e.reserve(t, est).value();
  EXPECT_FALSE(rv.admitted);
  ASSERT_TRUE(rv.refusal.has_value());
  EXPECT_EQ(rv.refusal->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(rv.refusal->path, "acme");
  EXPECT_EQ(e.hold_count(), 0u);

  // One hour later the wait is an hour shorter.
  clock.advance(1h);
  EXPECT_EQ((*e.check_quota("4242").value()).retry_after, 4h + 30min);
}

TEST(Admission, RetryAfterIsTheRefusingNodesResetNotTheChilds) {
  FakeClock clock(at(2024, 3, 10, 18, 30));
  Engine e(clock);
  // acme: monthly plan with a small token override; alice: standard tier, daily.
  ScopeUpdate acme = with_plan("free");
  acme.limits[res::tokens].hard = D(300);
  ASSERT_TRUE(e.set_limits("acme", acme).has_value());
  ASSERT_TRUE(e.set_limits("acme/research/alice", with_tier("standard")).has_value());
  ASSERT_TRUE(e.allocate("4242", unlimited_quota(), "acme/research/alice").value());
  ASSERT_TRUE(e.record_usage("4242", tokens_report(300)).has_value());
  auto ref = e.check_quota("4242").value();
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->path, "acme");
  EXPECT_EQ(ref->resource, "tokens");
  EXPECT_EQ(ref->retry_after, at(2024, 4, 1) - at(2024, 3, 10, 18, 30));
}

TEST(Admission, NodeWithoutResetHasNoRetryAfter) {
  FakeClock clock(at(2024, 3, 10, 18, 30));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::cost, P("1.5"))).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/x").value());
  UsageReport r;
  r.cost = P("1.5");
  ASSERT_TRUE(e.record_usage("p", r).has_value());
  auto ref = e.check_quota("p").value();
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->path, "acme");
  EXPECT_EQ(ref->resource, "cost");
  EXPECT_EQ(ref->used, P("1.5"));
  EXPECT_EQ(ref->limit, P("1.5"));
  EXPECT_EQ(ref->retry_after, Duration{0});
}

TEST(Admission, LowestRefusingNodeIsNamedAndRoomIsExact) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::tokens, D(100))).has_value());
  ASSERT_TRUE(e.set_limits("acme/research", with_hard(res::tokens, D(50))).has_value());
  ASSERT_TRUE(e.set_limits("acme/research/alice", {}).has_value());
  ConsumeRequest req;
  req.target.scope = "acme/research/alice";
  req.resource = "tokens";
  req.amount = D(40);
  EXPECT_EQ(e.consume(req).value().status, ConsumeStatus::approved);
  // 40 of 50 used on research: 10 fit, 11 do not.
  auto fits = e.check_quota("acme/research/alice", "tokens", D(10)).value();
  EXPECT_TRUE(fits.first);
  EXPECT_EQ(fits.second, D(10));
  auto no = e.check_quota("acme/research/alice", "tokens", D(11)).value();
  EXPECT_FALSE(no.first);
  req.amount = D(11);
  auto c = e.consume(req).value();
  EXPECT_EQ(c.status, ConsumeStatus::denied);
  EXPECT_EQ(c.refusal->path, "acme/research");
  EXPECT_EQ(c.refusal->used, D(40));
  EXPECT_EQ(c.refusal->limit, D(50));
  // A sibling under acme only still has acme's 60 left.
  ASSERT_TRUE(e.set_limits("acme/sales", {}).has_value());
  req.target.scope = "acme/sales";
  req.amount = D(61);
  auto s = e.consume(req).value();
  EXPECT_EQ(s.status, ConsumeStatus::denied);
  EXPECT_EQ(s.refusal->path, "acme");
  req.amount = D(60);
  EXPECT_EQ(e.consume(req).value().status, ConsumeStatus::approved);
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(100));
}

TEST(Admission, BareCheckCountsHoldsOnThePath) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::tokens, D(100))).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, D(100)).has_value());
  Target t;
  t.process = "p";
  auto rv = e.reserve(t, est).value();
  ASSERT_TRUE(rv.admitted);
  // Nothing used yet, but every token is held: no room is left for anything.
  auto ref = e.check_quota("p").value();
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(ref->path, "acme");
  EXPECT_EQ(ref->resource, "tokens");
  EXPECT_EQ(ref->used, D(100));
  ASSERT_TRUE(e.cancel(rv.id).has_value());
  EXPECT_FALSE(e.check_quota("p").value().has_value());
}

TEST(Admission, ProcessStateShowsTheScopeRefusal) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::llm_calls, D(2))).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(1)).has_value());
  EXPECT_FALSE(e.check_quota("p").value().has_value());
  EXPECT_EQ(e.get_process("p")->state, Reason::none);
  ASSERT_TRUE(e.record_usage("p", tokens_report(1)).has_value());
  auto ref = e.check_quota("p").value();
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->resource, "llm_calls");
  EXPECT_EQ(e.get_process("p")->state, Reason::scope_limit_exceeded);
}

// ---- Effective limits ---------------------------------------------------------------

TEST(EffectiveLimit, OverrideThenTierThenPlan) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_plan("pro")).has_value());
  EXPECT_EQ(slot_of(e.get_scope("acme").value(), "tokens")->hard, D(1'000'000));
  ASSERT_TRUE(e.set_limits("acme", with_tier("standard")).has_value());
  auto v = e.get_scope("acme").value();
  EXPECT_EQ(slot_of(v, "tokens")->hard, D(500));  // tier beats plan
  EXPECT_EQ(slot_of(v, "storage")->hard, D(10));  // the plan still gives the rest
  EXPECT_EQ(v.reset, ResetPeriod::daily);         // and the tier's period
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::tokens, D(42))).has_value());
  EXPECT_EQ(slot_of(e.get_scope("acme").value(), "tokens")->hard, D(42));  // override beats both
  // Removing the tier leaves override over plan.
  ASSERT_TRUE(e.set_limits("acme", with_tier("")).has_value());
  v = e.get_scope("acme").value();
  EXPECT_EQ(slot_of(v, "tokens")->hard, D(42));
  EXPECT_EQ(v.reset, ResetPeriod::monthly);
  // Clearing overrides falls back to the plan.
  ScopeUpdate clear;
  clear.clear_overrides = true;
  ASSERT_TRUE(e.set_limits("acme", clear).has_value());
  EXPECT_EQ(slot_of(e.get_scope("acme").value(), "tokens")->hard, D(1'000'000));
}

TEST(EffectiveLimit, ExplicitUnlimitedOverrideBeatsAPlanLimit) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u = with_plan("free");
  u.limits[res::tokens].hard = kUnlimitedAmount;
  ASSERT_TRUE(e.set_limits("acme", u).has_value());
  auto v = e.get_scope("acme").value();
  EXPECT_FALSE(slot_of(v, "tokens").has_value());  // unlimited and unused: not listed
  EXPECT_EQ(slot_of(v, "agent_execution")->hard, D(1000));
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  auto rec = e.record_usage("p", tokens_report(250'000)).value();
  EXPECT_TRUE(rec.violations.empty());
  EXPECT_FALSE(e.check_quota("p").value().has_value());
  EXPECT_EQ(slot_of(e.get_scope("acme").value(), "tokens")->hard, kUnlimitedAmount);
  // The plan itself is unchanged.
  EXPECT_EQ(e.get_template(TemplateKind::plan, "free")->limits.at(res::tokens).hard, D(100'000));
}

TEST(EffectiveLimit, SoftOnlyOverrideInheritsTheHardLimit) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u = with_tier("standard");
  u.limits[res::tokens].soft = D(300);
  ASSERT_TRUE(e.set_limits("acme/alice", u).has_value());
  auto s = slot_of(e.get_scope("acme/alice").value(), "tokens");
  EXPECT_EQ(s->hard, D(500));
  EXPECT_EQ(s->soft, D(300));
  EXPECT_EQ(s->approval, kUnlimitedAmount);
}

TEST(EffectiveLimit, OverrideMergesPerField) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::cost, D(10))).has_value());
  ScopeUpdate soft;
  soft.limits[res::cost].soft = D(8);
  ASSERT_TRUE(e.set_limits("acme", soft).has_value());
  auto s = slot_of(e.get_scope("acme").value(), "cost");
  EXPECT_EQ(s->hard, D(10));
  EXPECT_EQ(s->soft, D(8));
}

// ---- Calendar resets ----------------------------------------------------------------

TEST(Reset, DailyAtMidnightUtcNotTwentyFourHoursAfterFirstUse) {
  FakeClock clock(at(2024, 2, 28, 23, 0));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme/alice", with_tier("standard")).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(120)).has_value());
  auto v = e.get_scope("acme/alice").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, D(120));
  EXPECT_EQ(v.last_reset_at, at(2024, 2, 28, 23, 0));
  EXPECT_EQ(v.next_reset_at, at(2024, 2, 29));
  EXPECT_EQ(e.next_deadline(), at(2024, 2, 29));
  (void)e.take_events();

  clock.set(at(2024, 2, 28, 23, 59, 59));
  e.advance();
  EXPECT_EQ(used_on(e, "acme/alice", "tokens"), D(120));
  EXPECT_TRUE(e.take_events().empty());

  clock.set(at(2024, 2, 29));
  e.advance();
  v = e.get_scope("acme/alice").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, Decimal());
  EXPECT_EQ(slot_of(v, "tokens")->hard, D(500));
  EXPECT_EQ(v.last_reset_at, at(2024, 2, 29));
  EXPECT_EQ(format_utc(v.last_reset_at), "2024-02-29T00:00:00Z");
  EXPECT_EQ(v.next_reset_at, at(2024, 3, 1));
  auto resets = of_kind(e.take_events(), EventKind::reset);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].path, "acme/alice");
  EXPECT_EQ(resets[0].at, at(2024, 2, 29));
  EXPECT_EQ(resets[0].message, "Budget reset.");
  EXPECT_EQ(event_severity(resets[0].kind), Severity::info);
  // Nodes without a period keep their usage; the process keeps its own.
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(120));
  EXPECT_EQ(used_on(e, "/", "tokens"), D(120));
  EXPECT_EQ(e.get_usage("p")->tokens_in, 120u);
  // 24 h after the first use is not a boundary.
  ASSERT_TRUE(e.record_usage("p", tokens_report(7)).has_value());
  clock.set(at(2024, 2, 29, 23, 0));
  e.advance();
  EXPECT_EQ(used_on(e, "acme/alice", "tokens"), D(7));
  EXPECT_TRUE(of_kind(e.take_events(), EventKind::reset).empty());
}

TEST(Reset, GetScopeShowsADueResetWithoutAdvance) {
  // "Results never depend on how often the daemon calls advance()".
  FakeClock clock(at(2024, 2, 28, 23, 0));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme/alice", with_tier("standard")).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(120)).has_value());
  clock.set(at(2024, 2, 29, 0, 5));
  auto v = e.get_scope("acme/alice").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, Decimal());
  EXPECT_EQ(v.last_reset_at, at(2024, 2, 29));
  EXPECT_EQ(v.next_reset_at, at(2024, 3, 1));
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(120));
  // Applying it for real gives the same view.
  e.advance();
  auto w = e.get_scope("acme/alice").value();
  EXPECT_EQ(slot_of(w, "tokens")->used, Decimal());
  EXPECT_EQ(w.last_reset_at, at(2024, 2, 29));
  EXPECT_EQ(w.next_reset_at, at(2024, 3, 1));
}

TEST(Reset, AdmissionAfterABoundaryNeedsNoAdvance) {
  FakeClock clock(at(2024, 2, 28, 23, 0));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme/alice", with_tier("free")).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(100)).has_value());
  ASSERT_TRUE(e.check_quota("p").value().has_value());
  clock.set(at(2024, 2, 29));
  EXPECT_FALSE(e.check_quota("p").value().has_value());
}

struct MonthlyCase {
  TimePoint start, before, boundary, next;
};

class MonthlyReset : public ::testing::TestWithParam<MonthlyCase> {};

TEST_P(MonthlyReset, ResetsOnTheFirstAtMidnightUtc) {
  const MonthlyCase c = GetParam();
  FakeClock clock(c.start);
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_plan("free")).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(1234)).has_value());
  EXPECT_EQ(e.get_scope("acme")->next_reset_at, c.boundary);
  (void)e.take_events();
  clock.set(c.before);
  e.advance();
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(1234));
  EXPECT_TRUE(e.take_events().empty());
  clock.set(c.boundary);
  e.advance();
  auto v = e.get_scope("acme").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, Decimal());
  EXPECT_EQ(v.last_reset_at, c.boundary);
  EXPECT_EQ(v.next_reset_at, c.next);
  auto events = e.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::reset);
  EXPECT_EQ(events[0].path, "acme");
}

INSTANTIATE_TEST_SUITE_P(MonthEnds, MonthlyReset,
                         ::testing::Values(
                             // Jan 31 -> Feb 1.
                             MonthlyCase{at(2024, 1, 31, 12), at(2024, 1, 31, 23, 59, 59),
                                         at(2024, 2, 1), at(2024, 3, 1)},
                             // Leap day: Feb 29 2024 -> Mar 1.
                             MonthlyCase{at(2024, 2, 29, 8), at(2024, 2, 29, 23, 59, 59),
                                         at(2024, 3, 1), at(2024, 4, 1)},
                             // Non-leap February: Feb 28 2023 -> Mar 1.
                             MonthlyCase{at(2023, 2, 28, 8), at(2023, 2, 28, 23, 59, 59),
                                         at(2023, 3, 1), at(2023, 4, 1)},
                             // Year end: Dec 31 -> Jan 1.
                             MonthlyCase{at(2024, 12, 31, 23), at(2024, 12, 31, 23, 59, 59),
                                         at(2025, 1, 1), at(2025, 2, 1)},
                             // A 30-day month.
                             MonthlyCase{at(2024, 4, 1), at(2024, 4, 30, 23, 59, 59),
                                         at(2024, 5, 1), at(2024, 6, 1)}));

TEST(Reset, DailyAcrossTheLeapDay) {
  FakeClock clock(at(2024, 2, 29, 13));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("u", with_tier("free")).has_value());
  EXPECT_EQ(e.get_scope("u")->next_reset_at, at(2024, 3, 1));
  clock.set(at(2024, 3, 1));
  e.advance();
  EXPECT_EQ(e.get_scope("u")->last_reset_at, at(2024, 3, 1));
  EXPECT_EQ(e.get_scope("u")->next_reset_at, at(2024, 3, 2));
}

TEST(Reset, WeeklyOnMondayMidnightUtc) {
  FakeClock clock(at(2024, 3, 6, 10));  // a Wednesday
  Engine e(clock);
  ScopeUpdate u = with_hard(res::tokens, D(1000));
  u.reset = ResetPeriod::weekly;
  ASSERT_TRUE(e.set_limits("team", u).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "team").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(10)).has_value());
  auto v = e.get_scope("team").value();
  EXPECT_EQ(v.reset, ResetPeriod::weekly);
  EXPECT_EQ(v.next_reset_at, at(2024, 3, 11));  // Monday
  clock.set(at(2024, 3, 10, 23, 59, 59));       // Sunday night
  e.advance();
  EXPECT_EQ(used_on(e, "team", "tokens"), D(10));
  clock.set(at(2024, 3, 11));
  e.advance();
  v = e.get_scope("team").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, Decimal());
  EXPECT_EQ(v.last_reset_at, at(2024, 3, 11));
  EXPECT_EQ(v.next_reset_at, at(2024, 3, 18));
}

TEST(Reset, HourlyAtTheTopOfTheHour) {
  FakeClock clock(at(2024, 3, 6, 10, 15));
  Engine e(clock);
  ScopeUpdate u = with_hard(res::llm_calls, D(100));
  u.reset = ResetPeriod::hourly;
  ASSERT_TRUE(e.set_limits("svc", u).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "svc").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(1)).has_value());
  EXPECT_EQ(e.next_deadline(), at(2024, 3, 6, 11));
  clock.set(at(2024, 3, 6, 10, 59, 59));
  e.advance();
  EXPECT_EQ(used_on(e, "svc", "llm_calls"), D(1));
  clock.set(at(2024, 3, 6, 11));
  e.advance();
  EXPECT_EQ(used_on(e, "svc", "llm_calls"), Decimal());
  EXPECT_EQ(e.get_scope("svc")->last_reset_at, at(2024, 3, 6, 11));
  EXPECT_EQ(e.next_deadline(), at(2024, 3, 6, 12));
}

TEST(Reset, DaemonDownAcrossSeveralBoundariesResetsOnceToTheLatest) {
  FakeClock clock(at(2024, 2, 28, 23, 0));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme/alice", with_tier("standard")).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(450)).has_value());
  (void)e.take_events();
  clock.advance(ch::days(3) + 13h);  // 2024-03-03T12:00, three boundaries later
  e.advance();
  auto v = e.get_scope("acme/alice").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, Decimal());
  EXPECT_EQ(v.last_reset_at, at(2024, 3, 3));
  EXPECT_EQ(v.next_reset_at, at(2024, 3, 4));
  auto events = e.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::reset);
  EXPECT_EQ(events[0].path, "acme/alice");
  EXPECT_EQ(e.next_deadline(), at(2024, 3, 4));
}

TEST(Reset, ResetScopeZeroesThatNodeNow) {
  FakeClock clock(at(2024, 3, 10, 9, 30));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme/alice", with_tier("standard")).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(480)).has_value());
  (void)e.take_events();
  clock.advance(15min);
  ASSERT_TRUE(e.reset_scope("/acme/alice").has_value());
  auto v = e.get_scope("acme/alice").value();
  EXPECT_EQ(slot_of(v, "tokens")->used, Decimal());
  EXPECT_EQ(v.last_reset_at, at(2024, 3, 10, 9, 45));
  EXPECT_EQ(v.next_reset_at, at(2024, 3, 11));  // the calendar is unchanged
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(480));
  auto events = e.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::reset);
  EXPECT_EQ(events[0].path, "acme/alice");
  EXPECT_EQ(e.reset_scope("acme/bob").error().code, Errc::unknown_scope);
  EXPECT_EQ(e.reset_scope("acme bob").error().code, Errc::invalid_id);
  // The thresholds are armed again: 400 of 500 warns once more.
  ASSERT_TRUE(e.record_usage("p", tokens_report(400)).has_value());
  auto warn = of_kind(e.take_events(), EventKind::threshold_crossed);
  ASSERT_EQ(warn.size(), 1u);
  EXPECT_EQ(warn[0].percent, 80u);
}

TEST(Reset, ChangingThePeriodReschedules) {
  FakeClock clock(at(2024, 3, 10, 9, 30));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_tier("standard")).has_value());
  ScopeUpdate hourly;
  hourly.reset = ResetPeriod::hourly;
  ASSERT_TRUE(e.set_limits("acme", hourly).has_value());
  EXPECT_EQ(e.get_scope("acme")->next_reset_at, at(2024, 3, 10, 10));
  ScopeUpdate never;
  never.reset = ResetPeriod::never;
  ASSERT_TRUE(e.set_limits("acme", never).has_value());
  EXPECT_EQ(e.get_scope("acme")->next_reset_at, TimePoint::max());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(5)).has_value());
  (void)e.take_events();
  clock.advance(ch::days(2));
  e.advance();
  EXPECT_EQ(used_on(e, "acme", "tokens"), D(5));
  EXPECT_TRUE(of_kind(e.take_events(), EventKind::reset).empty());
}

// ---- Thresholds, soft and hard limits on scopes ------------------------------------

class ScopeThresholds : public ::testing::Test {
 protected:
  ScopeThresholds() : clock_(at(2024, 3, 10, 9)), e_(clock_) {
    EXPECT_TRUE(e_.set_limits("acme/alice", with_tier("standard")).has_value());
    EXPECT_TRUE(e_.allocate("p", unlimited_quota(), "acme/alice").value());
    (void)e_.take_events();
  }
  RecordResult record(uint64_t tokens) {
    auto r = e_.record_usage("p", tokens_report(tokens));
    EXPECT_TRUE(r.has_value());
    return r.value_or(RecordResult{});
  }
  std::vector<Event> crossings() { return of_kind(e_.take_events(), EventKind::threshold_crossed); }

  FakeClock clock_;
  Engine e_;
};

TEST_F(ScopeThresholds, EightyAndNinetyPercentFireOncePerCrossing) {
  record(399);
  EXPECT_TRUE(crossings().empty());
  record(1);  // 400 of 500
  auto w = crossings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].path, "acme/alice");
  EXPECT_EQ(w[0].process, "p");
  EXPECT_EQ(w[0].resource, "tokens");
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(w[0].used, D(400));
  EXPECT_EQ(w[0].limit, D(500));
  EXPECT_EQ(w[0].reason, Reason::none);
  EXPECT_EQ(w[0].message, "Approaching daily limit.");
  EXPECT_EQ(event_severity(w[0].kind), Severity::warning);
  record(1);
  record(48);  // 449
  EXPECT_TRUE(crossings().empty());
  record(1);  // 450
  w = crossings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 90u);
  EXPECT_EQ(w[0].used, D(450));
  EXPECT_EQ(w[0].message, "Approaching daily limit.");
  record(49);  // 499
  EXPECT_TRUE(crossings().empty());
}

TEST_F(ScopeThresholds, OneStepPastBothThresholdsWarnsOnceAtTheHigher) {
  record(460);
  auto w = crossings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 90u);
}

TEST_F(ScopeThresholds, HardLimitIsAViolationWithSeedOnesSentence) {
  record(450);
  (void)e_.take_events();
  auto rec = record(50);  // exactly 500: usage >= limit is a hit
  ASSERT_EQ(rec.violations.size(), 1u);
  const Violation& v = rec.violations[0];
  EXPECT_EQ(v.reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(v.path, "acme/alice");
  EXPECT_EQ(v.resource, "tokens");
  EXPECT_EQ(v.used, D(500));
  EXPECT_EQ(v.limit, D(500));
  EXPECT_EQ(v.message, kExceeded);
  auto events = e_.take_events();
  auto viol = of_kind(events, EventKind::violation);
  ASSERT_EQ(viol.size(), 1u);
  EXPECT_EQ(viol[0].path, "acme/alice");
  EXPECT_EQ(viol[0].process, "p");
  EXPECT_EQ(viol[0].resource, "tokens");
  EXPECT_EQ(viol[0].reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(viol[0].used, D(500));
  EXPECT_EQ(viol[0].limit, D(500));
  EXPECT_EQ(viol[0].percent, 100u);
  EXPECT_EQ(viol[0].message, kExceeded);
  EXPECT_TRUE(of_kind(events, EventKind::threshold_crossed).empty());
  // The next admission is refused.
  auto ref = e_.check_quota("p").value();
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(ref->retry_after, 15h);
  // Recording more still records, and the crossing is not reported twice.
  auto again = record(10);
  EXPECT_TRUE(again.violations.empty());
  EXPECT_TRUE(of_kind(e_.take_events(), EventKind::violation).empty());
  EXPECT_EQ(used_on(e_, "acme/alice", "tokens"), D(510));
}

TEST_F(ScopeThresholds, OneReportFromZeroToPastTheLimitIsOneViolationOnly) {
  auto rec = record(600);
  ASSERT_EQ(rec.violations.size(), 1u);
  EXPECT_EQ(rec.violations[0].used, D(600));
  auto events = e_.take_events();
  EXPECT_TRUE(of_kind(events, EventKind::threshold_crossed).empty());
  EXPECT_EQ(of_kind(events, EventKind::violation).size(), 1u);
}

TEST_F(ScopeThresholds, AfterAResetThresholdsFireAgain) {
  record(400);
  ASSERT_EQ(crossings().size(), 1u);
  record(100);
  (void)e_.take_events();
  clock_.set(at(2024, 3, 11));
  e_.advance();
  (void)e_.take_events();
  record(400);
  auto w = crossings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(w[0].used, D(400));
  auto rec = record(100);
  ASSERT_EQ(rec.violations.size(), 1u);
  EXPECT_EQ(rec.violations[0].reason, Reason::scope_limit_exceeded);
}

TEST_F(ScopeThresholds, RaisingTheLimitRearmsThresholds) {
  record(400);
  ASSERT_EQ(crossings().size(), 1u);
  ASSERT_TRUE(e_.set_limits("acme/alice", with_hard(res::tokens, D(1000))).has_value());
  (void)e_.take_events();
  record(1);  // 401 of 1000: below every threshold now
  EXPECT_TRUE(crossings().empty());
  record(399);  // 800 of 1000
  auto w = crossings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(w[0].limit, D(1000));
  EXPECT_EQ(w[0].used, D(800));
}

TEST_F(ScopeThresholds, ExplicitSoftLimitWarns) {
  ScopeUpdate soft;
  soft.limits[res::tokens].soft = D(300);
  ASSERT_TRUE(e_.set_limits("acme/alice", soft).has_value());
  (void)e_.take_events();
  record(299);
  EXPECT_TRUE(crossings().empty());
  record(1);
  auto w = crossings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].path, "acme/alice");
  EXPECT_EQ(w[0].resource, "tokens");
  EXPECT_EQ(w[0].limit, D(300));
  EXPECT_EQ(w[0].used, D(300));
  EXPECT_EQ(w[0].percent, 60u);  // of the hard limit
  EXPECT_EQ(w[0].message, "Approaching daily limit.");
  record(10);
  EXPECT_TRUE(crossings().empty());
  // A soft limit never refuses.
  EXPECT_FALSE(e_.check_quota("p").value().has_value());
}

TEST(ScopeSoftLimit, SoftOnlyNodeWarnsAndNeverRefuses) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate soft;
  soft.limits[res::cost].soft = P("2.5");
  ASSERT_TRUE(e.set_limits("lab", soft).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "lab").value());
  (void)e.take_events();
  UsageReport r;
  r.cost = P("2.49");
  ASSERT_TRUE(e.record_usage("p", r).has_value());
  EXPECT_TRUE(of_kind(e.take_events(), EventKind::threshold_crossed).empty());
  r.cost = P("0.01");
  auto rec = e.record_usage("p", r).value();
  EXPECT_TRUE(rec.violations.empty());
  auto w = of_kind(e.take_events(), EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].resource, "cost");
  EXPECT_EQ(w[0].limit, P("2.5"));
  EXPECT_EQ(w[0].used, P("2.5"));
  EXPECT_EQ(w[0].message, "Approaching limit.");
  r.cost = P("100");
  EXPECT_TRUE(e.record_usage("p", r).value().violations.empty());
  EXPECT_FALSE(e.check_quota("p").value().has_value());
}

TEST(ScopeThresholdMessage, MonthlyNodeSaysMonthly) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u = with_plan("free");
  ASSERT_TRUE(e.set_limits("acme", u).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  ASSERT_TRUE(e.record_usage("p", tokens_report(80'000)).has_value());
  auto w = of_kind(e.take_events(), EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].path, "acme");
  EXPECT_EQ(w[0].percent, 80u);
  EXPECT_EQ(w[0].message, "Approaching monthly limit.");
}

TEST(ScopeThresholdConfig, CustomThresholdsAreUsed) {
  FakeClock clock(at(2024, 3, 10));
  EngineConfig cfg;
  cfg.thresholds = {95, 50};  // unsorted on purpose
  Engine e(clock, cfg);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::tokens, D(100))).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  (void)e.take_events();
  ASSERT_TRUE(e.record_usage("p", tokens_report(50)).has_value());
  auto w = of_kind(e.take_events(), EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 50u);
  ASSERT_TRUE(e.record_usage("p", tokens_report(40)).has_value());  // 90: nothing
  EXPECT_TRUE(of_kind(e.take_events(), EventKind::threshold_crossed).empty());
  ASSERT_TRUE(e.record_usage("p", tokens_report(5)).has_value());  // 95
  w = of_kind(e.take_events(), EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].percent, 95u);
}

TEST(ScopeThresholds2, EveryLimitedNodeOnThePathWarnsForItself) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::tokens, D(1000))).has_value());
  ASSERT_TRUE(e.set_limits("acme/alice", with_hard(res::tokens, D(100))).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme/alice").value());
  (void)e.take_events();
  auto rec = e.record_usage("p", tokens_report(100)).value();
  ASSERT_EQ(rec.violations.size(), 1u);
  EXPECT_EQ(rec.violations[0].path, "acme/alice");
  ASSERT_TRUE(e.record_usage("p", tokens_report(700)).has_value());  // acme at 800 of 1000
  auto w = of_kind(e.take_events(), EventKind::threshold_crossed);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].path, "acme");
  EXPECT_EQ(w[0].percent, 80u);
}

// ---- Custom resources on scopes -----------------------------------------------------

TEST(CustomResource, InternedResourceIsLimitedAndChargedOnThePath) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  auto gpu = e.resources().intern("gpu_seconds");
  ASSERT_TRUE(gpu.has_value());
  EXPECT_EQ(*gpu, res::kBuiltinCount);
  ASSERT_TRUE(e.set_limits("lab", with_hard(*gpu, D(10))).has_value());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "lab/run").value());
  UsageReport r;
  ASSERT_TRUE(r.extra.add(*gpu, P("2.5")).has_value());
  ASSERT_TRUE(e.record_usage("p", r).has_value());
  for (auto path : {"lab/run", "lab", "/"})
    EXPECT_EQ(used_on(e, path, "gpu_seconds"), P("2.5")) << path;
  ConsumeRequest req;
  req.target.process = "p";
  req.resource = "gpu_seconds";
  req.amount = P("7.5");
  EXPECT_EQ(e.consume(req).value().status, ConsumeStatus::approved);
  req.amount = P("0.000000000001");
  auto c = e.consume(req).value();
  EXPECT_EQ(c.status, ConsumeStatus::denied);
  EXPECT_EQ(c.refusal->path, "lab");
  EXPECT_EQ(c.refusal->resource, "gpu_seconds");
  req.resource = "tpu_seconds";  // never interned
  EXPECT_EQ(e.consume(req).error().code, Errc::unknown_resource);
}

TEST(CustomResource, BadNamesAndTooManyCustomsThroughTheEngine) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  EXPECT_EQ(e.resources().intern("GPU Seconds").error().code, Errc::unknown_resource);
  for (std::size_t i = 0; i < ResourceRegistry::kMaxCustom; ++i)
    ASSERT_TRUE(e.resources().intern("r" + std::to_string(i)).has_value()) << i;
  EXPECT_EQ(e.resources().intern("r256").error().code, Errc::capacity_exceeded);
  // The last custom resource works on a scope like any other.
  auto last = e.resources().find("r255").value();
  ASSERT_TRUE(e.set_limits("lab", with_hard(last, D(1))).has_value());
  EXPECT_EQ(slot_of(e.get_scope("lab").value(), "r255")->hard, D(1));
}

// ---- Events and deadlines -----------------------------------------------------------

TEST(Events, TakeEventsDrains) {
  FakeClock clock(at(2024, 3, 10, 12));
  Engine e(clock);
  EXPECT_TRUE(e.take_events().empty());
  ASSERT_TRUE(e.allocate("p", unlimited_quota(), "acme").value());
  ASSERT_TRUE(e.set_limits("acme", with_hard(res::tokens, D(10))).has_value());
  ASSERT_EQ(e.pending_events().size(), 2u);
  auto events = e.take_events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, EventKind::allocated);
  EXPECT_EQ(events[0].process, "p");
  EXPECT_EQ(events[0].path, "acme");
  EXPECT_EQ(events[1].kind, EventKind::limit_changed);
  EXPECT_EQ(events[1].path, "acme");
  EXPECT_TRUE(e.pending_events().empty());
  EXPECT_TRUE(e.take_events().empty());
}

TEST(Deadlines, NextDeadlineIsTheEarliestDueThing) {
  FakeClock clock(at(2024, 2, 28, 23, 0));
  Engine e(clock);
  EXPECT_FALSE(e.next_deadline().has_value());  // nothing scheduled yet
  ASSERT_TRUE(e.set_limits("acme/alice", with_tier("standard")).has_value());
  EXPECT_EQ(e.next_deadline(), at(2024, 2, 29));
  ResourceQuota q = unlimited_quota();
  q.soft_timeout_seconds = 240;
  q.timeout_seconds = 300;
  ASSERT_TRUE(e.allocate("p", q, "acme/alice").value());
  EXPECT_EQ(e.next_deadline(), at(2024, 2, 28, 23, 4));
  clock.set(at(2024, 2, 28, 23, 4));
  e.advance();
  EXPECT_EQ(e.next_deadline(), at(2024, 2, 28, 23, 5));
  clock.set(at(2024, 2, 28, 23, 5));
  e.advance();
  EXPECT_EQ(e.next_deadline(), at(2024, 2, 29));
  clock.set(at(2024, 2, 29));
  e.advance();
  EXPECT_EQ(e.next_deadline(), at(2024, 3, 1));
}

}  // namespace
}  // namespace budgetd
