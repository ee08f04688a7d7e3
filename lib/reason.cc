#include "lib/reason.h"

namespace budgetd {

std::string_view reason_name(Reason r) {
  switch (r) {
    case Reason::none: return "";
    case Reason::max_llm_calls_exceeded: return "max_llm_calls_exceeded";
    case Reason::max_tool_calls_exceeded: return "max_tool_calls_exceeded";
    case Reason::max_agent_hops_exceeded: return "max_agent_hops_exceeded";
    case Reason::max_iterations_exceeded: return "max_iterations_exceeded";
    case Reason::timeout_exceeded: return "timeout_exceeded";
    case Reason::max_tokens_exceeded: return "max_tokens_exceeded";
    case Reason::max_input_tokens_exceeded: return "max_input_tokens_exceeded";
    case Reason::max_output_tokens_exceeded: return "max_output_tokens_exceeded";
    case Reason::max_context_tokens_exceeded: return "max_context_tokens_exceeded";
    case Reason::max_cost_exceeded: return "max_cost_exceeded";
    case Reason::thread_budget_exhausted: return "thread_budget_exhausted";
    case Reason::rate_limited: return "rate_limited";
    case Reason::scope_limit_exceeded: return "scope_limit_exceeded";
    case Reason::reservation_expired: return "reservation_expired";
    case Reason::approval_required: return "approval_required";
  }
  return "";
}

}  // namespace budgetd
