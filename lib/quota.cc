#include "lib/quota.h"

#include <charconv>

namespace budgetd {

std::string_view action_name(Action a) {
  switch (a) {
    case Action::none: return "none";
    case Action::terminate: return "terminate";
    case Action::pause: return "pause";
  }
  return "none";
}

Result<Action> parse_action(std::string_view s) {
  if (s == "none") return Action::none;
  if (s == "terminate") return Action::terminate;
  if (s == "pause") return Action::pause;
  return fail(Errc::invalid_argument, "unknown action: " + std::string(s.substr(0, 64)));
}

namespace {

// A limit is hit when used >= limit; an unlimited limit never is, not even by a counter that
// saturated at the same maximum value.
bool reached(uint64_t used, uint64_t limit) { return limit != kUnlimited && used >= limit; }

}  // namespace

bool ResourceQuota::is_within_bounds(uint64_t llm_calls, uint64_t tool_calls, uint64_t agent_hops,
                                     uint64_t iterations) const {
  return !reached(llm_calls, max_llm_calls) && !reached(tool_calls, max_tool_calls) &&
         !reached(agent_hops, max_agent_hops) && !reached(iterations, max_iterations);
}

namespace {

Result<uint64_t> parse_count(std::string_view name, std::string_view v) {
  if (v == "unlimited") return kUnlimited;
  uint64_t out = 0;
  if (v.empty()) return fail(Errc::invalid_argument, std::string(name) + " is empty");
  if (v[0] == '-') return fail(Errc::negative_amount, std::string(name) + " must be a count >= 0");
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec == std::errc::result_out_of_range) return fail(Errc::overflow, std::string(name));
  if (ec != std::errc() || p != v.data() + v.size())
    return fail(Errc::invalid_argument, std::string(name) + " is not a count: " + std::string(v.substr(0, 64)));
  return out;
}

struct CountField {
  std::string_view name;
  uint64_t ResourceQuota::*member;
};
constexpr CountField kCountFields[] = {
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

}  // namespace

Result<void> ResourceQuota::set_field(std::string_view name, std::string_view value) {
  for (const auto& f : kCountFields) {
    if (f.name == name) {
      auto v = parse_count(name, value);
      if (!v) return std::unexpected(v.error());
      this->*f.member = *v;
      return {};
    }
  }
  if (name == "max_cost") {
    if (value == "unlimited") {
      max_cost = kUnlimitedAmount;
      return {};
    }
    auto d = Decimal::parse(value);
    if (!d) return std::unexpected(d.error());
    max_cost = *d;
    return {};
  }
  if (name == "on_timeout" || name == "on_violation") {
    auto a = parse_action(value);
    if (!a) return std::unexpected(a.error());
    (name == "on_timeout" ? on_timeout : on_violation) = *a;
    return {};
  }
  return fail(Errc::unknown_field, std::string(name.substr(0, 64)));
}

const std::vector<std::string_view>& ResourceQuota::field_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> n;
    for (const auto& f : kCountFields) n.push_back(f.name);
    n.push_back("max_cost");
    n.push_back("on_timeout");
    n.push_back("on_violation");
    return n;
  }();
  return names;
}

std::vector<std::pair<std::string_view, std::string>> ResourceQuota::fields() const {
  std::vector<std::pair<std::string_view, std::string>> out;
  for (const auto& f : kCountFields) out.emplace_back(f.name, limit_text(this->*f.member));
  out.emplace_back("max_cost", limit_text(max_cost));
  out.emplace_back("on_timeout", std::string(action_name(on_timeout)));
  out.emplace_back("on_violation", std::string(action_name(on_violation)));
  return out;
}

uint64_t ResourceUsage::tokens() const {
  uint64_t t;
  return __builtin_add_overflow(tokens_in, tokens_out, &t) ? kUnlimited : t;
}

Reason ResourceUsage::exceeds_quota(const ResourceQuota& q) const {
  if (reached(llm_calls, q.max_llm_calls)) return Reason::max_llm_calls_exceeded;
  if (reached(tool_calls, q.max_tool_calls)) return Reason::max_tool_calls_exceeded;
  if (reached(agent_hops, q.max_agent_hops)) return Reason::max_agent_hops_exceeded;
  if (reached(iterations, q.max_iterations)) return Reason::max_iterations_exceeded;
  if (reached(tokens(), q.max_tokens)) return Reason::max_tokens_exceeded;
  if (q.max_cost != kUnlimitedAmount && cost >= q.max_cost) return Reason::max_cost_exceeded;
  return Reason::none;
}

std::string limit_text(uint64_t v) { return v == kUnlimited ? "unlimited" : std::to_string(v); }
std::string limit_text(Decimal v) { return v == kUnlimitedAmount ? "unlimited" : v.to_string(); }

}  // namespace budgetd
