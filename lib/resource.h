// Resource identities. Built-in resources have fixed small ids so the per-report path
// indexes arrays instead of hashing names; named custom resources (seed 000's CUSTOM) are
// interned once by the registry and get ids after the built-ins.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lib/decimal.h"
#include "lib/error.h"

namespace budgetd {

using ResourceId = uint16_t;

namespace res {
// Process-level counters (seed 002) and money.
inline constexpr ResourceId llm_calls = 0;
inline constexpr ResourceId tool_calls = 1;
inline constexpr ResourceId agent_hops = 2;
inline constexpr ResourceId iterations = 3;
inline constexpr ResourceId tokens_in = 4;
inline constexpr ResourceId tokens_out = 5;
// tokens = tokens_in + tokens_out; charged alongside them on every scope node.
inline constexpr ResourceId tokens = 6;
inline constexpr ResourceId cost = 7;
// Seed 000 resource types and seed 004's agent_execution: decimal amounts on scopes.
inline constexpr ResourceId compute = 8;
inline constexpr ResourceId storage = 9;
inline constexpr ResourceId bandwidth = 10;
inline constexpr ResourceId api_call = 11;
inline constexpr ResourceId token = 12;
inline constexpr ResourceId agent_execution = 13;
inline constexpr ResourceId kBuiltinCount = 14;
}  // namespace res

// Names of custom resources: [a-z0-9_.-], 1..64 bytes. At most kMaxCustom of them, so a
// client cannot grow every scope node without bound by inventing names.
class ResourceRegistry {
 public:
  static constexpr std::size_t kMaxNameLength = 64;
  static constexpr std::size_t kMaxCustom = 256;

  ResourceRegistry();

  std::optional<ResourceId> find(std::string_view name) const;
  // The fixed id of a built-in name, without a registry (a price table keys its hot lines
  // by these before any registry exists).
  static std::optional<ResourceId> builtin(std::string_view name);
  // Finds or interns a custom resource name.
  Result<ResourceId> intern(std::string_view name);
  std::string_view name(ResourceId id) const { return names_[id]; }
  std::size_t size() const { return names_.size(); }
  // Counted resources hold whole numbers only; money and seed-000 amounts are decimals.
  static bool is_integer(ResourceId id) { return id <= res::tokens; }

 private:
  // Transparent, so find() looks a string_view up without building a std::string.
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::string> names_;
  std::unordered_map<std::string, ResourceId, NameHash, std::equal_to<>> by_name_;
};

// A set of (resource, amount) pairs for one admission or charge. Fixed capacity and no
// heap allocation: it sits on the per-report hot path.
struct Charge {
  ResourceId id;
  Decimal amount;
};

class ChargeList {
 public:
  static constexpr std::size_t kCapacity = 16;

  // Adds to an existing entry of the same resource. Errc::overflow or capacity errors.
  Result<void> add(ResourceId id, Decimal amount);
  // Appends a resource known not to be listed yet, into a list known to have room (the
  // fixed counters of a usage report, first into a fresh list): no search, no checks.
  void append_new(ResourceId id, Decimal amount) { items_[size_++] = Charge{id, amount}; }
  const Charge* begin() const { return items_.data(); }
  const Charge* end() const { return items_.data() + size_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  Decimal get(ResourceId id) const;

 private:
  std::array<Charge, kCapacity> items_{};
  uint8_t size_ = 0;
};

}  // namespace budgetd
