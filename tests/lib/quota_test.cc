// Seed 002's ResourceQuota and ResourceUsage: defaults, field names and parsing, bounds,
// exceeds_quota order, action names.
#include "lib/quota.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace budgetd {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

Decimal D(const char* s) { return *Decimal::parse(s); }

std::string FieldText(const ResourceQuota& q, std::string_view name) {
  for (const auto& [n, v] : q.fields())
    if (n == name) return v;
  return "<absent>";
}

void ExpectSetError(std::string_view name, std::string_view value, Errc code) {
  ResourceQuota q;
  const ResourceQuota before = q;
  auto r = q.set_field(name, value);
  ASSERT_FALSE(r.has_value()) << name << "=" << value << " was accepted";
  EXPECT_EQ(errc_name(r.error().code), errc_name(code))
      << name << "=" << value << ": " << r.error().message();
  EXPECT_EQ(q, before) << name << "=" << value << " changed the quota despite failing";
}

TEST(ResourceQuotaTest, DefaultsAreExactlySeed002s) {
  ResourceQuota q;
  EXPECT_EQ(q.max_input_tokens, 4096u);
  EXPECT_EQ(q.max_output_tokens, 2048u);
  EXPECT_EQ(q.max_context_tokens, 16384u);
  EXPECT_EQ(q.max_llm_calls, 10u);
  EXPECT_EQ(q.max_tool_calls, 50u);
  EXPECT_EQ(q.max_agent_hops, 21u);
  EXPECT_EQ(q.max_iterations, 3u);
  EXPECT_EQ(q.timeout_seconds, 300u);
  EXPECT_EQ(q.soft_timeout_seconds, 240u);
  EXPECT_EQ(q.max_tokens, kUnlimited);
  EXPECT_EQ(q.max_cost, kUnlimitedAmount);
  EXPECT_EQ(q.on_timeout, Action::none);
  EXPECT_EQ(q.on_violation, Action::none);
  EXPECT_EQ(q.kill_grace_seconds, 10u);
  EXPECT_EQ(kUnlimited, kU64Max);
  EXPECT_EQ(kUnlimitedAmount, Decimal::max());
}

TEST(ResourceQuotaTest, FieldNamesInStableOrder) {
  const std::vector<std::string_view> expected = {
      "max_input_tokens", "max_output_tokens",    "max_context_tokens", "max_llm_calls",
      "max_tool_calls",   "max_agent_hops",       "max_iterations",     "max_tokens",
      "timeout_seconds",  "soft_timeout_seconds", "kill_grace_seconds", "max_cost",
      "on_timeout",       "on_violation"};
  EXPECT_EQ(ResourceQuota::field_names(), expected);
  // fields() names every field, in the same order.
  ResourceQuota q;
  auto f = q.fields();
  ASSERT_EQ(f.size(), expected.size());
  for (std::size_t i = 0; i < f.size(); ++i) EXPECT_EQ(f[i].first, expected[i]) << i;
}

TEST(ResourceQuotaTest, FieldsTextOfDefaults) {
  ResourceQuota q;
  const std::vector<std::pair<std::string_view, std::string>> expected = {
      {"max_input_tokens", "4096"},    {"max_output_tokens", "2048"},
      {"max_context_tokens", "16384"}, {"max_llm_calls", "10"},
      {"max_tool_calls", "50"},        {"max_agent_hops", "21"},
      {"max_iterations", "3"},         {"max_tokens", "unlimited"},
      {"timeout_seconds", "300"},      {"soft_timeout_seconds", "240"},
      {"kill_grace_seconds", "10"},    {"max_cost", "unlimited"},
      {"on_timeout", "none"},          {"on_violation", "none"}};
  EXPECT_EQ(q.fields(), expected);
}

TEST(ResourceQuotaTest, SetFieldSetsEveryCountField) {
  struct Case {
    const char* name;
    uint64_t ResourceQuota::*member;
  };
  const Case cases[] = {
      {"max_input_tokens", &ResourceQuota::max_input_tokens},
      {"max_output_tokens", &ResourceQuota::max_output_tokens},
      {"max_context_tokens", &ResourceQuota::max_context_tokens},
      {"max_llm_calls", &ResourceQuota::max_llm_calls},
      {"max_tool_calls", &ResourceQuota::max_tool_calls},
      {"max_agent_hops", &ResourceQuota::max_agent_hops},
      {"max_iterations", &ResourceQuota::max_iterations},
      {"max_tokens", &ResourceQuota::max_tokens},
      {"timeout_seconds", &ResourceQuota::timeout_seconds},
      {"soft_timeout_seconds", &ResourceQuota::soft_timeout_seconds},
      {"kill_grace_seconds", &ResourceQuota::kill_grace_seconds},
  };
  for (const auto& c : cases) {
    ResourceQuota q;
    ASSERT_TRUE(q.set_field(c.name, "777").has_value()) << c.name;
    EXPECT_EQ(q.*c.member, 777u) << c.name;
    EXPECT_EQ(FieldText(q, c.name), "777") << c.name;
    // Only that field changed.
    ResourceQuota expected;
    expected.*c.member = 777;
    EXPECT_EQ(q, expected) << c.name;

    ASSERT_TRUE(q.set_field(c.name, "0").has_value()) << c.name;
    EXPECT_EQ(q.*c.member, 0u) << c.name;

    ASSERT_TRUE(q.set_field(c.name, "unlimited").has_value()) << c.name;
    EXPECT_EQ(q.*c.member, kUnlimited) << c.name;
    EXPECT_EQ(FieldText(q, c.name), "unlimited") << c.name;

    // The largest count is the unlimited value itself.
    ASSERT_TRUE(q.set_field(c.name, "18446744073709551615").has_value()) << c.name;
    EXPECT_EQ(q.*c.member, kU64Max) << c.name;
    ASSERT_TRUE(q.set_field(c.name, "18446744073709551614").has_value()) << c.name;
    EXPECT_EQ(q.*c.member, kU64Max - 1) << c.name;
    EXPECT_EQ(FieldText(q, c.name), "18446744073709551614") << c.name;
  }
}

TEST(ResourceQuotaTest, SetFieldMaxCost) {
  ResourceQuota q;
  ASSERT_TRUE(q.set_field("max_cost", "2.50").has_value());
  EXPECT_EQ(q.max_cost, D("2.5"));
  EXPECT_EQ(FieldText(q, "max_cost"), "2.5");
  ASSERT_TRUE(q.set_field("max_cost", "0.000000000001").has_value());
  EXPECT_EQ(q.max_cost, Decimal::from_raw(1));
  EXPECT_EQ(FieldText(q, "max_cost"), "0.000000000001");
  ASSERT_TRUE(q.set_field("max_cost", "0").has_value());
  EXPECT_TRUE(q.max_cost.is_zero());
  ASSERT_TRUE(q.set_field("max_cost", "unlimited").has_value());
  EXPECT_EQ(q.max_cost, kUnlimitedAmount);
  EXPECT_EQ(FieldText(q, "max_cost"), "unlimited");
}

TEST(ResourceQuotaTest, SetFieldActions) {
  ResourceQuota q;
  ASSERT_TRUE(q.set_field("on_timeout", "terminate").has_value());
  EXPECT_EQ(q.on_timeout, Action::terminate);
  EXPECT_EQ(q.on_violation, Action::none);
  ASSERT_TRUE(q.set_field("on_violation", "pause").has_value());
  EXPECT_EQ(q.on_violation, Action::pause);
  EXPECT_EQ(q.on_timeout, Action::terminate);
  EXPECT_EQ(FieldText(q, "on_timeout"), "terminate");
  EXPECT_EQ(FieldText(q, "on_violation"), "pause");
  ASSERT_TRUE(q.set_field("on_timeout", "none").has_value());
  EXPECT_EQ(q.on_timeout, Action::none);
}

TEST(ResourceQuotaTest, SetFieldRejectsBadCounts) {
  for (const char* name :
       {"max_input_tokens", "max_output_tokens", "max_context_tokens", "max_llm_calls",
        "max_tool_calls", "max_agent_hops", "max_iterations", "max_tokens", "timeout_seconds",
        "soft_timeout_seconds", "kill_grace_seconds"}) {
    SCOPED_TRACE(name);
    ExpectSetError(name, "-1", Errc::negative_amount);
    ExpectSetError(name, "-0", Errc::negative_amount);
    ExpectSetError(name, "18446744073709551616", Errc::overflow);
    ExpectSetError(name, "99999999999999999999999", Errc::overflow);
    ExpectSetError(name, "abc", Errc::invalid_argument);
    ExpectSetError(name, "", Errc::invalid_argument);
    ExpectSetError(name, "1.5", Errc::invalid_argument);
    ExpectSetError(name, "12abc", Errc::invalid_argument);
    ExpectSetError(name, " 5", Errc::invalid_argument);
    ExpectSetError(name, "5 ", Errc::invalid_argument);
    ExpectSetError(name, "+5", Errc::invalid_argument);
    ExpectSetError(name, "0x10", Errc::invalid_argument);
    ExpectSetError(name, "Unlimited", Errc::invalid_argument);
    ExpectSetError(name, "terminate", Errc::invalid_argument);
  }
}

TEST(ResourceQuotaTest, SetFieldRejectsBadCost) {
  ExpectSetError("max_cost", "-1", Errc::negative_amount);
  ExpectSetError("max_cost", "-0.01", Errc::negative_amount);
  ExpectSetError("max_cost", "abc", Errc::malformed_decimal);
  ExpectSetError("max_cost", "", Errc::malformed_decimal);
  ExpectSetError("max_cost", "1e3", Errc::malformed_decimal);
  ExpectSetError("max_cost", "1.0000000000001", Errc::malformed_decimal);
  ExpectSetError("max_cost", "999999999999999999999999999999", Errc::overflow);
}

TEST(ResourceQuotaTest, SetFieldRejectsUnknownActions) {
  for (const char* name : {"on_timeout", "on_violation"}) {
    SCOPED_TRACE(name);
    ExpectSetError(name, "kill", Errc::invalid_argument);
    ExpectSetError(name, "TERMINATE", Errc::invalid_argument);
    ExpectSetError(name, "", Errc::invalid_argument);
    ExpectSetError(name, "5", Errc::invalid_argument);
  }
}

TEST(ResourceQuotaTest, SetFieldRejectsUnknownNames) {
  for (const char* name :
       {"max_llm_call", "MAX_LLM_CALLS", "", "rate_limit", "elapsed", "max_llm_calls "}) {
    SCOPED_TRACE(name);
    ExpectSetError(name, "5", Errc::unknown_field);
  }
}

TEST(ResourceQuotaTest, FieldsRoundTripThroughSetField) {
  ResourceQuota q;
  q.max_input_tokens = 1;
  q.max_output_tokens = 2;
  q.max_context_tokens = kUnlimited;
  q.max_llm_calls = 4;
  q.max_tool_calls = 5;
  q.max_agent_hops = 0;
  q.max_iterations = 7;
  q.max_tokens = 123456789012345ull;
  q.max_cost = D("3.14159");
  q.timeout_seconds = 900;
  q.soft_timeout_seconds = kUnlimited;
  q.on_timeout = Action::terminate;
  q.on_violation = Action::pause;
  q.kill_grace_seconds = 3;

  ResourceQuota copy;
  ASSERT_NE(copy, q);
  for (const auto& [name, text] : q.fields()) {
    ASSERT_TRUE(copy.set_field(name, text).has_value()) << name << "=" << text;
  }
  EXPECT_EQ(copy, q);
  EXPECT_EQ(copy.fields(), q.fields());

  // And the defaults round-trip onto a changed quota.
  ResourceQuota defaults;
  for (const auto& [name, text] : defaults.fields()) {
    ASSERT_TRUE(copy.set_field(name, text).has_value()) << name << "=" << text;
  }
  EXPECT_EQ(copy, defaults);

  // Every name in field_names() is accepted by set_field with its own text.
  for (std::string_view name : ResourceQuota::field_names()) {
    ResourceQuota t;
    EXPECT_TRUE(t.set_field(name, FieldText(q, name)).has_value()) << name;
  }
}

TEST(ResourceQuotaTest, IsWithinBoundsIsStrictlyBelowEveryLimit) {
  ResourceQuota q;  // 10 / 50 / 21 / 3
  EXPECT_TRUE(q.is_within_bounds(0, 0, 0, 0));
  EXPECT_TRUE(q.is_within_bounds(9, 49, 20, 2));
  EXPECT_FALSE(q.is_within_bounds(10, 0, 0, 0));
  EXPECT_FALSE(q.is_within_bounds(0, 50, 0, 0));
  EXPECT_FALSE(q.is_within_bounds(0, 0, 21, 0));
  EXPECT_FALSE(q.is_within_bounds(0, 0, 0, 3));
  EXPECT_FALSE(q.is_within_bounds(11, 51, 22, 4));

  ResourceQuota zero;
  zero.max_llm_calls = 0;
  EXPECT_FALSE(zero.is_within_bounds(0, 0, 0, 0));

  // Unlimited is never reached, even by a saturated counter.
  ResourceQuota open;
  open.max_llm_calls = open.max_tool_calls = open.max_agent_hops = open.max_iterations = kUnlimited;
  EXPECT_TRUE(open.is_within_bounds(kU64Max - 1, kU64Max - 1, kU64Max - 1, kU64Max - 1));
  EXPECT_TRUE(open.is_within_bounds(kU64Max, kU64Max, kU64Max, kU64Max));
}

TEST(ResourceUsageTest, DefaultsAreZero) {
  ResourceUsage u;
  EXPECT_EQ(u.llm_calls, 0u);
  EXPECT_EQ(u.tool_calls, 0u);
  EXPECT_EQ(u.agent_hops, 0u);
  EXPECT_EQ(u.iterations, 0u);
  EXPECT_EQ(u.tokens_in, 0u);
  EXPECT_EQ(u.tokens_out, 0u);
  EXPECT_TRUE(u.cost.is_zero());
  EXPECT_EQ(u.tokens(), 0u);
  EXPECT_EQ(u.exceeds_quota(ResourceQuota{}), Reason::none);
}

TEST(ResourceUsageTest, TokensIsSaturatingSum) {
  ResourceUsage u;
  u.tokens_in = 500;
  u.tokens_out = 200;
  EXPECT_EQ(u.tokens(), 700u);
  u.tokens_in = kU64Max;
  u.tokens_out = 1;
  EXPECT_EQ(u.tokens(), kU64Max);
  u.tokens_out = kU64Max;
  EXPECT_EQ(u.tokens(), kU64Max);
}

TEST(ResourceUsageTest, ExceedsQuotaInSeedOrder) {
  ResourceQuota q;
  q.max_tokens = 1000;
  q.max_cost = D("1.5");
  // Everything at its limit: the seed's first reason wins, then each one in turn.
  ResourceUsage u;
  u.llm_calls = 10;
  u.tool_calls = 50;
  u.agent_hops = 21;
  u.iterations = 3;
  u.tokens_in = 600;
  u.tokens_out = 400;
  u.cost = D("1.5");
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_llm_calls_exceeded);
  u.llm_calls = 9;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_tool_calls_exceeded);
  u.tool_calls = 49;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_agent_hops_exceeded);
  u.agent_hops = 20;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_iterations_exceeded);
  u.iterations = 2;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_tokens_exceeded);
  u.tokens_out = 399;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_cost_exceeded);
  u.cost = D("1.499999999999");
  EXPECT_EQ(u.exceeds_quota(q), Reason::none);
  EXPECT_EQ(reason_name(u.exceeds_quota(q)), "");
}

TEST(ResourceUsageTest, ExceedsQuotaIsUsageAtOrAboveLimit) {
  ResourceQuota q;
  ResourceUsage u;
  u.llm_calls = 9;
  EXPECT_EQ(u.exceeds_quota(q), Reason::none);
  u.llm_calls = 10;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_llm_calls_exceeded);
  u.llm_calls = 11;
  EXPECT_EQ(u.exceeds_quota(q), Reason::max_llm_calls_exceeded);
  EXPECT_EQ(reason_name(u.exceeds_quota(q)), "max_llm_calls_exceeded");

  ResourceUsage t;
  t.tool_calls = 50;
  EXPECT_EQ(reason_name(t.exceeds_quota(q)), "max_tool_calls_exceeded");
  ResourceUsage h;
  h.agent_hops = 21;
  EXPECT_EQ(reason_name(h.exceeds_quota(q)), "max_agent_hops_exceeded");
  ResourceUsage i;
  i.iterations = 3;
  EXPECT_EQ(reason_name(i.exceeds_quota(q)), "max_iterations_exceeded");

  // A zero limit is hit before anything is used.
  ResourceQuota zero;
  zero.max_iterations = 0;
  EXPECT_EQ(ResourceUsage{}.exceeds_quota(zero), Reason::max_iterations_exceeded);
}

TEST(ResourceUsageTest, UnlimitedIsNeverExceededEvenWhenSaturated) {
  ResourceQuota q;
  q.max_llm_calls = q.max_tool_calls = q.max_agent_hops = q.max_iterations = kUnlimited;
  ResourceUsage u;
  u.llm_calls = u.tool_calls = u.agent_hops = u.iterations = kU64Max;
  u.tokens_in = kU64Max;
  u.tokens_out = kU64Max;
  u.cost = Decimal::max();
  // max_tokens and max_cost are unlimited by default.
  EXPECT_EQ(u.exceeds_quota(q), Reason::none);
}

TEST(ActionTest, NamesAndParse) {
  EXPECT_EQ(action_name(Action::none), "none");
  EXPECT_EQ(action_name(Action::terminate), "terminate");
  EXPECT_EQ(action_name(Action::pause), "pause");
  for (Action a : {Action::none, Action::terminate, Action::pause}) {
    auto p = parse_action(action_name(a));
    ASSERT_TRUE(p.has_value()) << action_name(a);
    EXPECT_EQ(*p, a);
  }
  for (const char* bad : {"", "kill", "Terminate", "none ", "sigterm", "stop"}) {
    auto p = parse_action(bad);
    ASSERT_FALSE(p.has_value()) << bad;
    EXPECT_EQ(errc_name(p.error().code), "invalid_argument") << bad;
  }
}

TEST(LimitTextTest, FormatsCountsAndAmounts) {
  EXPECT_EQ(limit_text(uint64_t{0}), "0");
  EXPECT_EQ(limit_text(uint64_t{4096}), "4096");
  EXPECT_EQ(limit_text(kUnlimited), "unlimited");
  EXPECT_EQ(limit_text(kU64Max - 1), "18446744073709551614");
  EXPECT_EQ(limit_text(D("0.25")), "0.25");
  EXPECT_EQ(limit_text(Decimal()), "0");
  EXPECT_EQ(limit_text(kUnlimitedAmount), "unlimited");
}

}  // namespace
}  // namespace budgetd
