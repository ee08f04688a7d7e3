// Helpers shared by the engine's unit tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "lib/engine.h"

namespace budgetd::testing_support {

inline Decimal N(uint64_t n) { return Decimal::from_int(n); }

// The scope slot of `resource` at `path`, or an all-zero, unlimited view when it has none.
inline SlotView slot_of(const Engine& engine, std::string_view path, std::string_view resource) {
  auto v = engine.get_scope(path);
  EXPECT_TRUE(v.has_value()) << path;
  if (v)
    for (const auto& s : v->resources)
      if (s.resource == resource) return s;
  return SlotView{std::string(resource), Decimal(),        Decimal(),
                  kUnlimitedAmount,      kUnlimitedAmount, kUnlimitedAmount};
}

inline void set_hard(Engine& engine, std::string_view path, ResourceId id, uint64_t hard) {
  ScopeUpdate u;
  u.limits[id].hard = N(hard);
  ASSERT_TRUE(engine.set_limits(path, u).has_value());
}

}  // namespace budgetd::testing_support
