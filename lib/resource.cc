#include "lib/resource.h"

namespace budgetd {

namespace {
constexpr std::array<std::string_view, res::kBuiltinCount> kBuiltinNames = {
    "llm_calls", "tool_calls", "agent_hops", "iterations", "tokens_in", "tokens_out", "tokens",
    "cost",      "compute",    "storage",    "bandwidth",  "api_call",  "token",      "agent_execution"};

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > ResourceRegistry::kMaxNameLength) return false;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}
}  // namespace

ResourceRegistry::ResourceRegistry() {
  for (auto n : kBuiltinNames) {
    by_name_.emplace(std::string(n), static_cast<ResourceId>(names_.size()));
    names_.emplace_back(n);
  }
}

std::optional<ResourceId> ResourceRegistry::builtin(std::string_view name) {
  for (std::size_t i = 0; i < kBuiltinNames.size(); ++i)
    if (kBuiltinNames[i] == name) return static_cast<ResourceId>(i);
  return std::nullopt;
}

std::optional<ResourceId> ResourceRegistry::find(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

Result<ResourceId> ResourceRegistry::intern(std::string_view name) {
  if (auto id = find(name)) return *id;
  if (!valid_name(name)) return fail(Errc::unknown_resource, "invalid resource name: " + std::string(name.substr(0, 80)));
  if (names_.size() >= res::kBuiltinCount + kMaxCustom)
    return fail(Errc::capacity_exceeded, "too many custom resources");
  auto id = static_cast<ResourceId>(names_.size());
  names_.emplace_back(name);
  by_name_.emplace(std::string(name), id);
  return id;
}

Result<void> ChargeList::add(ResourceId id, Decimal amount) {
  for (std::size_t i = 0; i < size_; ++i) {
    if (items_[i].id == id) {
      __int128 sum;
      if (__builtin_add_overflow(items_[i].amount.raw(), amount.raw(), &sum))
        return fail(Errc::overflow, "decimal addition");  // Decimal::checked_add's error
      items_[i].amount = Decimal::from_raw(sum);
      return {};
    }
  }
  if (size_ == kCapacity) return fail(Errc::invalid_argument, "too many resources in one charge");
  items_[size_++] = Charge{id, amount};
  return {};
}

Decimal ChargeList::get(ResourceId id) const {
  for (const auto& c : *this)
    if (c.id == id) return c.amount;
  return Decimal();
}

}  // namespace budgetd
