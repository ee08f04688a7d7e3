// Stable reason codes. The strings are part of the wire contract: agents and operators
// match on them (seed 002 names the first five verbatim).
#pragma once

#include <cstdint>
#include <string_view>

namespace budgetd {

enum class Reason : uint8_t {
  none,
  max_llm_calls_exceeded,
  max_tool_calls_exceeded,
  max_agent_hops_exceeded,
  max_iterations_exceeded,
  timeout_exceeded,
  max_tokens_exceeded,
  max_input_tokens_exceeded,
  max_output_tokens_exceeded,
  max_context_tokens_exceeded,
  max_cost_exceeded,
  thread_budget_exhausted,
  rate_limited,
  scope_limit_exceeded,
  reservation_expired,
  approval_required,
};

// "" for Reason::none.
std::string_view reason_name(Reason r);

// Seed 001's sentences, verbatim where the seed gives one.
inline constexpr std::string_view kQuotaExceededMessage =
    "Quota exceeded. Upgrade your plan or wait for the reset.";

}  // namespace budgetd
