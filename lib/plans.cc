#include "lib/plans.h"

namespace budgetd {

namespace {
LimitSpec hard(uint64_t v) { return LimitSpec{Decimal::from_int(v), std::nullopt, std::nullopt}; }
LimitSpec unlimited() { return LimitSpec{kUnlimitedAmount, std::nullopt, std::nullopt}; }
}  // namespace

std::vector<LimitTemplate> shipped_templates(const ResourceRegistry&) {
  std::vector<LimitTemplate> t;
  // Seed 004 "Plan Limits" table.
  t.push_back({"free", TemplateKind::plan,
               {{res::agent_execution, hard(1'000)}, {res::tokens, hard(100'000)}, {res::storage, hard(1)},
                {res::api_call, hard(10'000)}},
               ResetPeriod::monthly});
  t.push_back({"pro", TemplateKind::plan,
               {{res::agent_execution, hard(10'000)}, {res::tokens, hard(1'000'000)}, {res::storage, hard(10)},
                {res::api_call, hard(100'000)}},
               ResetPeriod::monthly});
  t.push_back({"enterprise", TemplateKind::plan,
               {{res::agent_execution, unlimited()}, {res::tokens, unlimited()}, {res::storage, unlimited()},
                {res::api_call, unlimited()}},
               ResetPeriod::monthly});
  // Seed 001 quota_config.json "users" tiers, daily_limit in tokens.
  t.push_back({"free", TemplateKind::tier, {{res::tokens, hard(100)}}, ResetPeriod::daily});
  t.push_back({"standard", TemplateKind::tier, {{res::tokens, hard(500)}}, ResetPeriod::daily});
  t.push_back({"enterprise", TemplateKind::tier, {{res::tokens, unlimited()}}, ResetPeriod::daily});
  return t;
}

}  // namespace budgetd
