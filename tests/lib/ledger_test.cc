#include "lib/ledger.h"

#include <gtest/gtest.h>

#include <array>
#include <random>
#include <set>
#include <string>

namespace budgetd {
namespace {

TEST(LedgerNames, KindsRoundTrip) {
  const std::array<std::pair<LedgerKind, std::string_view>, 6> kinds = {{
      {LedgerKind::usage, "usage"},
      {LedgerKind::consumption, "consumption"},
      {LedgerKind::commit, "commit"},
      {LedgerKind::reservation, "reservation"},
      {LedgerKind::thread, "thread"},
      {LedgerKind::audit, "audit"},
  }};
  for (auto [kind, name] : kinds) {
    EXPECT_EQ(ledger_kind_name(kind), name);
    EXPECT_EQ(parse_ledger_kind(name), kind) << name;
  }
  EXPECT_EQ(parse_ledger_kind(""), std::nullopt);
  EXPECT_EQ(parse_ledger_kind("Usage"), std::nullopt);
  EXPECT_EQ(parse_ledger_kind("usages"), std::nullopt);
}

TEST(LedgerNames, GroupByRoundTrip) {
  const std::array<std::pair<GroupBy, std::string_view>, 6> groups = {{
      {GroupBy::resource, "resource"},
      {GroupBy::agent, "agent"},
      {GroupBy::model, "model"},
      {GroupBy::thread, "thread"},
      {GroupBy::process, "process"},
      {GroupBy::scope, "scope"},
  }};
  for (auto [g, name] : groups) {
    EXPECT_EQ(group_by_name(g), name);
    EXPECT_EQ(parse_group_by(name), g) << name;
  }
  EXPECT_EQ(parse_group_by("user"), std::nullopt);
  EXPECT_EQ(parse_group_by("RESOURCE"), std::nullopt);
}

// Checks the RFC 4122 shape: 8-4-4-4-12 lowercase hex, version nibble 4, variant 10xx.
void expect_v4(const std::string& g) {
  ASSERT_EQ(g.size(), 36u) << g;
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      EXPECT_EQ(g[i], '-') << g;
    } else {
      EXPECT_TRUE((g[i] >= '0' && g[i] <= '9') || (g[i] >= 'a' && g[i] <= 'f')) << g;
    }
  }
  EXPECT_EQ(g[14], '4') << g;
  EXPECT_NE(std::string_view("89ab").find(g[19]), std::string_view::npos) << g;
}

TEST(LedgerGuid, AllZeroAndAllOneBytes) {
  std::array<uint8_t, 16> zero{};
  EXPECT_EQ(format_guid(zero), "00000000-0000-4000-8000-000000000000");
  std::array<uint8_t, 16> ones;
  ones.fill(0xff);
  EXPECT_EQ(format_guid(ones), "ffffffff-ffff-4fff-bfff-ffffffffffff");
  expect_v4(format_guid(zero));
  expect_v4(format_guid(ones));
}

TEST(LedgerGuid, KeepsTheOther122BitsInOrder) {
  std::array<uint8_t, 16> b = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                               0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  // Byte 6 (0xcd) keeps its low nibble under version 4; byte 8 (0x01) keeps its low six
  // bits under variant 10.
  EXPECT_EQ(format_guid(b), "01234567-89ab-4def-8123-456789abcdef");
}

TEST(LedgerGuid, RandomBytesGiveDistinctWellFormedIds) {
  std::mt19937_64 rng(42);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::array<uint8_t, 16> b;
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    std::string g = format_guid(b);
    expect_v4(g);
    seen.insert(g);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

}  // namespace
}  // namespace budgetd
