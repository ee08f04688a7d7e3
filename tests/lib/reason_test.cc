#include "lib/reason.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace budgetd {
namespace {

// The strings are the wire contract: every code, spelled out, so a rename fails here.
constexpr std::pair<Reason, std::string_view> kReasons[] = {
    {Reason::max_llm_calls_exceeded, "max_llm_calls_exceeded"},
    {Reason::max_tool_calls_exceeded, "max_tool_calls_exceeded"},
    {Reason::max_agent_hops_exceeded, "max_agent_hops_exceeded"},
    {Reason::max_iterations_exceeded, "max_iterations_exceeded"},
    {Reason::timeout_exceeded, "timeout_exceeded"},
    {Reason::max_tokens_exceeded, "max_tokens_exceeded"},
    {Reason::max_input_tokens_exceeded, "max_input_tokens_exceeded"},
    {Reason::max_output_tokens_exceeded, "max_output_tokens_exceeded"},
    {Reason::max_context_tokens_exceeded, "max_context_tokens_exceeded"},
    {Reason::max_cost_exceeded, "max_cost_exceeded"},
    {Reason::thread_budget_exhausted, "thread_budget_exhausted"},
    {Reason::rate_limited, "rate_limited"},
    {Reason::scope_limit_exceeded, "scope_limit_exceeded"},
    {Reason::reservation_expired, "reservation_expired"},
    {Reason::approval_required, "approval_required"},
};

TEST(ReasonName, NoneIsEmpty) { EXPECT_EQ(reason_name(Reason::none), ""); }

TEST(ReasonName, SeedTwoReasonsVerbatim) {
  // Seed 002's check_quota answers, letter for letter.
  EXPECT_EQ(reason_name(Reason::max_llm_calls_exceeded), "max_llm_calls_exceeded");
  EXPECT_EQ(reason_name(Reason::max_tool_calls_exceeded), "max_tool_calls_exceeded");
  EXPECT_EQ(reason_name(Reason::max_agent_hops_exceeded), "max_agent_hops_exceeded");
  EXPECT_EQ(reason_name(Reason::max_iterations_exceeded), "max_iterations_exceeded");
  EXPECT_EQ(reason_name(Reason::timeout_exceeded), "timeout_exceeded");
}

TEST(ReasonName, EveryReasonHasItsExactString) {
  for (const auto& [reason, text] : kReasons)
    EXPECT_EQ(reason_name(reason), text) << static_cast<int>(reason);
}

TEST(ReasonName, EveryEnumeratorIsCoveredAndDistinct) {
  // The enum is dense from none (0) to approval_required; the table above must name all.
  EXPECT_EQ(static_cast<int>(Reason::approval_required), static_cast<int>(std::size(kReasons)));
  std::set<std::string_view> seen;
  for (int i = 1; i <= static_cast<int>(Reason::approval_required); ++i) {
    std::string_view name = reason_name(static_cast<Reason>(i));
    EXPECT_FALSE(name.empty()) << i;
    EXPECT_TRUE(seen.insert(name).second) << "duplicate reason string " << name;
  }
  EXPECT_EQ(seen.size(), 15u);
}

TEST(ReasonName, QuotaExceededMessageIsSeedOnesSentence) {
  EXPECT_EQ(kQuotaExceededMessage, "Quota exceeded. Upgrade your plan or wait for the reset.");
}

}  // namespace
}  // namespace budgetd
