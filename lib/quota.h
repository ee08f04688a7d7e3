// Seed 002's ResourceQuota and ResourceUsage, extended with tokens, money and actions.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/decimal.h"
#include "lib/error.h"
#include "lib/reason.h"

namespace budgetd {

// Any count limit may be unlimited; this is its value. On the wire it is "unlimited".
inline constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();
inline constexpr Decimal kUnlimitedAmount = Decimal::max();

// What the daemon does when a process times out or violates a hard limit. The engine only
// names the action in the event; the daemon carries it out (pidfd signals).
enum class Action : uint8_t {
  none,
  terminate,  // SIGTERM, then SIGKILL after kill_grace_seconds
  pause,      // SIGSTOP until Admin.Resume
};
std::string_view action_name(Action a);
Result<Action> parse_action(std::string_view s);

struct ResourceQuota {
  // Per-call token caps: one LLM call may not exceed them (like a memory limit).
  uint64_t max_input_tokens = 4096;
  uint64_t max_output_tokens = 2048;
  uint64_t max_context_tokens = 16384;
  // Cumulative caps (like CPU time).
  uint64_t max_llm_calls = 10;
  uint64_t max_tool_calls = 50;
  uint64_t max_agent_hops = 21;
  uint64_t max_iterations = 3;
  uint64_t max_tokens = kUnlimited;
  Decimal max_cost = kUnlimitedAmount;
  // Wall time from allocation.
  uint64_t timeout_seconds = 300;
  uint64_t soft_timeout_seconds = 240;  // warn before the hard timeout
  Action on_timeout = Action::none;
  Action on_violation = Action::none;
  uint64_t kill_grace_seconds = 10;

  // Seed 002's is_within_bounds: every given count strictly below its limit.
  bool is_within_bounds(uint64_t llm_calls, uint64_t tool_calls, uint64_t agent_hops,
                        uint64_t iterations) const;

  // Sets one field by its wire name ("max_llm_calls", "timeout_seconds", "on_timeout", ...)
  // from text: a decimal integer, "unlimited", or an action name.
  Result<void> set_field(std::string_view name, std::string_view value);
  // Every field as (name, text) in a stable order, for views and the wire.
  std::vector<std::pair<std::string_view, std::string>> fields() const;
  static const std::vector<std::string_view>& field_names();

  friend bool operator==(const ResourceQuota&, const ResourceQuota&) = default;
};

struct ResourceUsage {
  uint64_t llm_calls = 0;
  uint64_t tool_calls = 0;
  uint64_t agent_hops = 0;
  uint64_t iterations = 0;
  uint64_t tokens_in = 0;
  uint64_t tokens_out = 0;
  Decimal cost;

  uint64_t tokens() const;  // saturating in + out

  // Seed 002's exceeds_quota: the first limit with usage >= limit, in the seed's order
  // (llm, tool, hops, iterations), then tokens and cost. Time is checked by the tracker.
  Reason exceeds_quota(const ResourceQuota& q) const;

  friend bool operator==(const ResourceUsage&, const ResourceUsage&) = default;
};

// Formats a count limit for views: "unlimited" or the number.
std::string limit_text(uint64_t v);
std::string limit_text(Decimal v);

}  // namespace budgetd
