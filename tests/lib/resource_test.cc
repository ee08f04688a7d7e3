#include "lib/resource.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>

namespace budgetd {
namespace {

constexpr std::pair<ResourceId, std::string_view> kBuiltins[] = {
    {res::llm_calls, "llm_calls"},   {res::tool_calls, "tool_calls"},
    {res::agent_hops, "agent_hops"}, {res::iterations, "iterations"},
    {res::tokens_in, "tokens_in"},   {res::tokens_out, "tokens_out"},
    {res::tokens, "tokens"},         {res::cost, "cost"},
    {res::compute, "compute"},       {res::storage, "storage"},
    {res::bandwidth, "bandwidth"},   {res::api_call, "api_call"},
    {res::token, "token"},           {res::agent_execution, "agent_execution"},
};

Decimal D(uint64_t v) { return Decimal::from_int(v); }
Decimal P(std::string_view s) { return Decimal::parse(s).value(); }

TEST(ResourceRegistry, BuiltinsHaveFixedIdsAndNames) {
  ResourceRegistry r;
  EXPECT_EQ(r.size(), 14u);
  EXPECT_EQ(res::kBuiltinCount, 14u);
  for (const auto& [id, name] : kBuiltins) {
    EXPECT_EQ(r.name(id), name);
    auto found = r.find(name);
    ASSERT_TRUE(found.has_value()) << name;
    EXPECT_EQ(*found, id) << name;
  }
}

TEST(ResourceRegistry, FindUnknownIsNullopt) {
  ResourceRegistry r;
  EXPECT_FALSE(r.find("gpu_seconds").has_value());
  EXPECT_FALSE(r.find("").has_value());
  EXPECT_FALSE(r.find("LLM_CALLS").has_value());
}

TEST(ResourceRegistry, IntegerResourcesAreTheCounts) {
  for (ResourceId id = res::llm_calls; id <= res::tokens; ++id)
    EXPECT_TRUE(ResourceRegistry::is_integer(id)) << id;
  for (ResourceId id = res::cost; id < res::kBuiltinCount; ++id)
    EXPECT_FALSE(ResourceRegistry::is_integer(id)) << id;
  EXPECT_FALSE(ResourceRegistry::is_integer(res::kBuiltinCount));  // customs are decimals
}

TEST(ResourceRegistry, InternCustomGetsTheNextIdOnce) {
  ResourceRegistry r;
  auto gpu = r.intern("gpu_seconds");
  ASSERT_TRUE(gpu.has_value()) << gpu.error().message();
  EXPECT_EQ(*gpu, res::kBuiltinCount);
  EXPECT_EQ(r.name(*gpu), "gpu_seconds");
  EXPECT_EQ(r.size(), 15u);
  // Interning again finds the same id and grows nothing.
  EXPECT_EQ(r.intern("gpu_seconds").value(), res::kBuiltinCount);
  EXPECT_EQ(r.size(), 15u);
  EXPECT_EQ(r.find("gpu_seconds").value(), res::kBuiltinCount);
  auto second = r.intern("vector.db-reads");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*second, res::kBuiltinCount + 1);
}

TEST(ResourceRegistry, InternOfABuiltinReturnsTheBuiltin) {
  ResourceRegistry r;
  EXPECT_EQ(r.intern("tokens").value(), res::tokens);
  EXPECT_EQ(r.intern("agent_execution").value(), res::agent_execution);
  EXPECT_EQ(r.size(), 14u);
}

TEST(ResourceRegistry, BadNamesAreRefused) {
  ResourceRegistry r;
  const std::string too_long(ResourceRegistry::kMaxNameLength + 1, 'a');
  for (std::string_view bad :
       {std::string_view(""), std::string_view("GPU"), std::string_view("gpu seconds"),
        std::string_view("gpu/seconds"), std::string_view("gpu\nseconds"),
        std::string_view("gpu\0s", 5), std::string_view("gpu:s"),
        std::string_view("\xc3\xa9t\xc3\xa9"), std::string_view(too_long)}) {
    auto id = r.intern(bad);
    ASSERT_FALSE(id.has_value()) << bad;
    EXPECT_EQ(id.error().code, Errc::unknown_resource) << bad;
  }
  EXPECT_EQ(r.size(), 14u);
}

TEST(ResourceRegistry, NameOfExactlyMaxLengthIsAccepted) {
  ResourceRegistry r;
  const std::string name(ResourceRegistry::kMaxNameLength, 'z');
  auto id = r.intern(name);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(r.name(*id), name);
}

TEST(ResourceRegistry, AtMost256Customs) {
  ResourceRegistry r;
  for (std::size_t i = 0; i < ResourceRegistry::kMaxCustom; ++i) {
    auto id = r.intern("custom_" + std::to_string(i));
    ASSERT_TRUE(id.has_value()) << i;
    EXPECT_EQ(*id, res::kBuiltinCount + i);
  }
  EXPECT_EQ(r.size(), res::kBuiltinCount + 256u);
  auto over = r.intern("custom_256");
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, Errc::capacity_exceeded);
  EXPECT_EQ(r.size(), res::kBuiltinCount + 256u);
  EXPECT_FALSE(r.find("custom_256").has_value());
  // Names already interned, and built-ins, still resolve when full.
  EXPECT_EQ(r.intern("custom_255").value(), res::kBuiltinCount + 255);
  EXPECT_EQ(r.intern("cost").value(), res::cost);
}

TEST(ChargeList, StartsEmpty) {
  ChargeList c;
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.begin(), c.end());
  EXPECT_EQ(c.get(res::tokens), Decimal());
}

TEST(ChargeList, AddsMergeBySameResource) {
  ChargeList c;
  ASSERT_TRUE(c.add(res::tokens_in, D(30)).has_value());
  ASSERT_TRUE(c.add(res::cost, P("0.25")).has_value());
  ASSERT_TRUE(c.add(res::tokens_in, D(12)).has_value());
  ASSERT_TRUE(c.add(res::cost, P("0.000000000001")).has_value());
  EXPECT_EQ(c.size(), 2u);
  EXPECT_FALSE(c.empty());
  EXPECT_EQ(c.get(res::tokens_in), D(42));
  EXPECT_EQ(c.get(res::cost), P("0.250000000001"));
  EXPECT_EQ(c.get(res::tokens_out), Decimal());
  // Insertion order is kept.
  EXPECT_EQ(c.begin()[0].id, res::tokens_in);
  EXPECT_EQ(c.begin()[1].id, res::cost);
}

TEST(ChargeList, CapacityIsSixteenDistinctResources) {
  ChargeList c;
  for (ResourceId id = 0; id < ChargeList::kCapacity; ++id)
    ASSERT_TRUE(c.add(id, D(id + 1)).has_value()) << id;
  EXPECT_EQ(c.size(), 16u);
  auto over = c.add(ChargeList::kCapacity, D(1));
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, Errc::invalid_argument);
  EXPECT_EQ(c.size(), 16u);
  EXPECT_EQ(c.get(ChargeList::kCapacity), Decimal());
  // A full list still merges into an existing entry.
  ASSERT_TRUE(c.add(3, D(10)).has_value());
  EXPECT_EQ(c.get(3), D(14));
  EXPECT_EQ(c.size(), 16u);
}

TEST(ChargeList, MergeOverflowIsAnErrorAndKeepsTheOldAmount) {
  ChargeList c;
  ASSERT_TRUE(c.add(res::cost, Decimal::max()).has_value());
  auto r = c.add(res::cost, P("0.000000000001"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::overflow);
  EXPECT_EQ(c.get(res::cost), Decimal::max());
  EXPECT_EQ(c.size(), 1u);
}

}  // namespace
}  // namespace budgetd
