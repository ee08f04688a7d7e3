#include "lib/plans.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/engine.h"

namespace budgetd {
namespace {

namespace ch = std::chrono;

Decimal D(uint64_t v) { return Decimal::from_int(v); }

TimePoint at(int y, unsigned m, unsigned d, int h = 0, int mi = 0) {
  return TimePoint(ch::sys_days(ch::year(y) / ch::month(m) / ch::day(d))) + ch::hours(h) +
         ch::minutes(mi);
}

const LimitTemplate* find(const std::vector<LimitTemplate>& ts, TemplateKind kind,
                          std::string_view name) {
  for (const auto& t : ts)
    if (t.kind == kind && t.name == name) return &t;
  return nullptr;
}

// The hard limit a template gives a resource, or nullopt when it names none.
std::optional<Decimal> hard_of(const LimitTemplate& t, ResourceId id) {
  auto it = t.limits.find(id);
  if (it == t.limits.end()) return std::nullopt;
  return it->second.hard;
}

std::optional<SlotView> slot_of(const ScopeView& v, std::string_view name) {
  for (const auto& s : v.resources)
    if (s.resource == name) return s;
  return std::nullopt;
}

ResourceQuota unlimited_quota() {
  ResourceQuota q;
  q.max_input_tokens = q.max_output_tokens = q.max_context_tokens = kUnlimited;
  q.max_llm_calls = q.max_tool_calls = q.max_agent_hops = q.max_iterations = kUnlimited;
  q.max_tokens = kUnlimited;
  q.max_cost = kUnlimitedAmount;
  q.timeout_seconds = q.soft_timeout_seconds = kUnlimited;
  return q;
}

// ---- The shipped table itself -------------------------------------------------------

TEST(ShippedTemplates, ThreePlansAndThreeTiers) {
  ResourceRegistry r;
  auto ts = shipped_templates(r);
  EXPECT_EQ(ts.size(), 6u);
  for (auto name : {"free", "pro", "enterprise"})
    EXPECT_NE(find(ts, TemplateKind::plan, name), nullptr) << name;
  for (auto name : {"free", "standard", "enterprise"})
    EXPECT_NE(find(ts, TemplateKind::tier, name), nullptr) << name;
}

TEST(ShippedTemplates, SeedFourPlanLimitsTable) {
  ResourceRegistry r;
  auto ts = shipped_templates(r);
  struct Row {
    std::string_view plan;
    Decimal executions, tokens, storage_gb, api_calls;
  };
  const Row rows[] = {
      {"free", D(1'000), D(100'000), D(1), D(10'000)},
      {"pro", D(10'000), D(1'000'000), D(10), D(100'000)},
      {"enterprise", kUnlimitedAmount, kUnlimitedAmount, kUnlimitedAmount, kUnlimitedAmount},
  };
  for (const auto& row : rows) {
    const LimitTemplate* t = find(ts, TemplateKind::plan, row.plan);
    ASSERT_NE(t, nullptr) << row.plan;
    EXPECT_EQ(t->reset, ResetPeriod::monthly) << row.plan;
    EXPECT_EQ(t->limits.size(), 4u) << row.plan;
    EXPECT_EQ(hard_of(*t, res::agent_execution), row.executions) << row.plan;
    EXPECT_EQ(hard_of(*t, res::tokens), row.tokens) << row.plan;
    EXPECT_EQ(hard_of(*t, res::storage), row.storage_gb) << row.plan;
    EXPECT_EQ(hard_of(*t, res::api_call), row.api_calls) << row.plan;
    for (const auto& [id, spec] : t->limits) {
      EXPECT_FALSE(spec.soft.has_value()) << row.plan;
      EXPECT_FALSE(spec.approval.has_value()) << row.plan;
    }
  }
}

TEST(ShippedTemplates, SeedOneTiersAreDailyTokenLimits) {
  ResourceRegistry r;
  auto ts = shipped_templates(r);
  struct Row {
    std::string_view tier;
    Decimal daily_tokens;
  };
  const Row rows[] = {{"free", D(100)}, {"standard", D(500)}, {"enterprise", kUnlimitedAmount}};
  for (const auto& row : rows) {
    const LimitTemplate* t = find(ts, TemplateKind::tier, row.tier);
    ASSERT_NE(t, nullptr) << row.tier;
    EXPECT_EQ(t->reset, ResetPeriod::daily) << row.tier;
    EXPECT_EQ(t->limits.size(), 1u) << row.tier;
    EXPECT_EQ(hard_of(*t, res::tokens), row.daily_tokens) << row.tier;
  }
}

TEST(TemplateKindName, PlanAndTier) {
  EXPECT_EQ(template_kind_name(TemplateKind::plan), "plan");
  EXPECT_EQ(template_kind_name(TemplateKind::tier), "tier");
}

// ---- The engine ships them ----------------------------------------------------------

TEST(EngineTemplates, EngineStartsWithTheShippedTemplates) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  auto all = e.list_templates();
  ASSERT_EQ(all.size(), 6u);
  // Plans first, then tiers, each by name.
  std::vector<std::string> got;
  for (const auto* t : all) got.push_back(std::string(template_kind_name(t->kind)) + ":" + t->name);
  EXPECT_EQ(got, (std::vector<std::string>{"plan:enterprise", "plan:free", "plan:pro",
                                           "tier:enterprise", "tier:free", "tier:standard"}));
  const LimitTemplate* pro = e.get_template(TemplateKind::plan, "pro");
  ASSERT_NE(pro, nullptr);
  EXPECT_EQ(hard_of(*pro, res::tokens), D(1'000'000));
  EXPECT_EQ(e.get_template(TemplateKind::tier, "pro"), nullptr);
  EXPECT_EQ(e.get_template(TemplateKind::plan, "standard"), nullptr);
  EXPECT_EQ(e.get_template(TemplateKind::plan, "gold"), nullptr);
}

TEST(EngineTemplates, NodeOnProPlanGetsSeedFourLimitsAndMonthlyReset) {
  FakeClock clock(at(2024, 3, 10, 18, 30));
  Engine e(clock);
  ScopeUpdate u;
  u.plan = "pro";
  ASSERT_TRUE(e.set_limits("acme", u).has_value());
  auto v = e.get_scope("acme").value();
  EXPECT_EQ(v.plan, "pro");
  EXPECT_EQ(v.tier, "");
  EXPECT_EQ(v.reset, ResetPeriod::monthly);
  EXPECT_EQ(v.next_reset_at, at(2024, 4, 1));
  ASSERT_EQ(v.resources.size(), 4u);
  EXPECT_EQ(slot_of(v, "agent_execution")->hard, D(10'000));
  EXPECT_EQ(slot_of(v, "tokens")->hard, D(1'000'000));
  EXPECT_EQ(slot_of(v, "storage")->hard, D(10));
  EXPECT_EQ(slot_of(v, "api_call")->hard, D(100'000));
  EXPECT_EQ(slot_of(v, "tokens")->soft, kUnlimitedAmount);
}

TEST(EngineTemplates, EnterprisePlanIsUnlimited) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u;
  u.plan = "enterprise";
  ASSERT_TRUE(e.set_limits("bigco", u).has_value());
  auto v = e.get_scope("bigco").value();
  EXPECT_EQ(v.reset, ResetPeriod::monthly);
  EXPECT_TRUE(v.resources.empty());  // nothing limited, nothing used
  ASSERT_TRUE(e.allocate("p1", unlimited_quota(), "bigco").value());
  UsageReport rep;
  rep.llm_calls = 1;
  rep.tokens_in = 50'000'000;
  auto rec = e.record_usage("p1", rep).value();
  EXPECT_TRUE(rec.violations.empty());
  EXPECT_FALSE(e.check_quota("p1").value().has_value());
}

TEST(EngineTemplates, FreeTierRefusesAfterOneHundredTokensADay) {
  FakeClock clock(at(2024, 3, 10, 20, 0));
  Engine e(clock);
  ScopeUpdate u;
  u.tier = "free";
  ASSERT_TRUE(e.set_limits("acme/bob", u).has_value());
  ConsumeRequest req;
  req.target.scope = "acme/bob";
  req.resource = "tokens";
  req.amount = D(100);
  auto ok = e.consume(req).value();
  EXPECT_EQ(ok.status, ConsumeStatus::approved);
  EXPECT_EQ(ok.remaining, Decimal());
  req.amount = D(1);
  auto no = e.consume(req).value();
  EXPECT_EQ(no.status, ConsumeStatus::denied);
  ASSERT_TRUE(no.refusal.has_value());
  EXPECT_EQ(no.refusal->reason, Reason::scope_limit_exceeded);
  EXPECT_EQ(no.refusal->path, "acme/bob");
  EXPECT_EQ(no.refusal->resource, "tokens");
  EXPECT_EQ(no.refusal->used, D(100));
  EXPECT_EQ(no.refusal->limit, D(100));
  EXPECT_EQ(no.refusal->retry_after, ch::hours(4));
  EXPECT_EQ(no.refusal->message, "Quota exceeded. Upgrade your plan or wait for the reset.");
  // Tomorrow at 00:00 UTC the day's budget is back.
  clock.set(at(2024, 3, 11));
  req.amount = D(100);
  EXPECT_EQ(e.consume(req).value().status, ConsumeStatus::approved);
}

TEST(EngineTemplates, UnknownPlanOrTierIsUnknownPlanAndCreatesNothing) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u;
  u.plan = "gold";
  auto r = e.set_limits("acme", u);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::unknown_plan);
  EXPECT_EQ(e.get_scope("acme").error().code, Errc::unknown_scope);

  ScopeUpdate t;
  t.tier = "pro";  // a plan name, not a tier
  auto r2 = e.set_limits("acme", t);
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().code, Errc::unknown_plan);
  EXPECT_EQ(e.get_scope("acme").error().code, Errc::unknown_scope);
}

TEST(EngineTemplates, EmptyPlanNameClearsThePlan) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u;
  u.plan = "free";
  ASSERT_TRUE(e.set_limits("acme", u).has_value());
  ScopeUpdate clear;
  clear.plan = "";
  ASSERT_TRUE(e.set_limits("acme", clear).has_value());
  auto v = e.get_scope("acme").value();
  EXPECT_EQ(v.plan, "");
  EXPECT_EQ(v.reset, ResetPeriod::never);
  EXPECT_EQ(v.next_reset_at, TimePoint::max());
  EXPECT_TRUE(v.resources.empty());
}

TEST(EngineTemplates, SetTemplateUpdatesEveryNodeThatReferencesIt) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate pro;
  pro.plan = "pro";
  ASSERT_TRUE(e.set_limits("acme", pro).has_value());
  ASSERT_TRUE(e.set_limits("globex", pro).has_value());
  ScopeUpdate free;
  free.plan = "free";
  ASSERT_TRUE(e.set_limits("initech", free).has_value());

  LimitTemplate t;
  t.name = "pro";
  t.kind = TemplateKind::plan;
  t.limits[res::tokens] = LimitSpec{D(2'000'000), D(1'500'000), std::nullopt};
  t.reset = ResetPeriod::weekly;
  ASSERT_TRUE(e.set_template(t).has_value());

  for (auto path : {"acme", "globex"}) {
    auto v = e.get_scope(path).value();
    EXPECT_EQ(v.reset, ResetPeriod::weekly) << path;
    EXPECT_EQ(v.next_reset_at, at(2024, 3, 11)) << path;  // Sunday -> Monday 00:00
    ASSERT_EQ(v.resources.size(), 1u) << path;            // the old pro limits are gone
    EXPECT_EQ(slot_of(v, "tokens")->hard, D(2'000'000)) << path;
    EXPECT_EQ(slot_of(v, "tokens")->soft, D(1'500'000)) << path;
  }
  // A node on another plan is untouched.
  auto v = e.get_scope("initech").value();
  EXPECT_EQ(v.reset, ResetPeriod::monthly);
  EXPECT_EQ(slot_of(v, "tokens")->hard, D(100'000));
}

TEST(EngineTemplates, SetTemplateOnATierUpdatesItsNodes) {
  FakeClock clock(at(2024, 3, 10, 12));
  Engine e(clock);
  ScopeUpdate u;
  u.tier = "standard";
  ASSERT_TRUE(e.set_limits("acme/alice", u).has_value());
  LimitTemplate t;
  t.name = "standard";
  t.kind = TemplateKind::tier;
  t.limits[res::tokens] = LimitSpec{D(750), std::nullopt, std::nullopt};
  t.reset = ResetPeriod::daily;
  ASSERT_TRUE(e.set_template(t).has_value());
  EXPECT_EQ(slot_of(e.get_scope("acme/alice").value(), "tokens")->hard, D(750));
  EXPECT_EQ(e.get_template(TemplateKind::tier, "standard")->limits.at(res::tokens).hard, D(750));
}

TEST(EngineTemplates, NewTemplateCanBeReferenced) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  LimitTemplate t;
  t.name = "startup";
  t.kind = TemplateKind::plan;
  t.limits[res::cost] = LimitSpec{Decimal::parse("49.99").value(), std::nullopt, std::nullopt};
  t.reset = ResetPeriod::monthly;
  ASSERT_TRUE(e.set_template(t).has_value());
  EXPECT_EQ(e.list_templates().size(), 7u);
  ScopeUpdate u;
  u.plan = "startup";
  ASSERT_TRUE(e.set_limits("acme", u).has_value());
  EXPECT_EQ(slot_of(e.get_scope("acme").value(), "cost")->hard, Decimal::parse("49.99").value());
}

TEST(EngineTemplates, TemplateNameMustBeAnId) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  for (std::string bad :
       {std::string(""), std::string("a b"), std::string("a/b"), std::string(129, 'p')}) {
    LimitTemplate t;
    t.name = bad;
    auto r = e.set_template(t);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_id) << bad;
  }
  EXPECT_EQ(e.list_templates().size(), 6u);
}

TEST(EngineTemplates, TemplateLimitsAreValidatedLikeNodeLimits) {
  FakeClock clock(at(2024, 3, 10));
  Engine e(clock);
  ScopeUpdate u;
  u.plan = "pro";
  ASSERT_TRUE(e.set_limits("acme", u).has_value());

  LimitTemplate unknown;
  unknown.name = "pro";
  unknown.limits[static_cast<ResourceId>(999)] = LimitSpec{D(1), std::nullopt, std::nullopt};
  auto r = e.set_template(unknown);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::unknown_resource);

  LimitTemplate negative;
  negative.name = "pro";
  negative.limits[res::tokens] =
      LimitSpec{std::nullopt, Decimal::parse("-1", /*allow_negative=*/true).value(), std::nullopt};
  auto n = e.set_template(negative);
  ASSERT_FALSE(n.has_value());
  EXPECT_EQ(n.error().code, Errc::negative_amount);

  // Neither reached the table nor the node.
  EXPECT_EQ(hard_of(*e.get_template(TemplateKind::plan, "pro"), res::tokens), D(1'000'000));
  auto v = e.get_scope("acme").value();
  EXPECT_EQ(v.resources.size(), 4u);
  EXPECT_EQ(slot_of(v, "tokens")->hard, D(1'000'000));
  EXPECT_EQ(slot_of(v, "tokens")->soft, kUnlimitedAmount);
}

}  // namespace
}  // namespace budgetd
