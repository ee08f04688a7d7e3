#include "lib/error.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace budgetd {
namespace {

constexpr std::pair<Errc, std::string_view> kCodes[] = {
    {Errc::invalid_argument, "invalid_argument"},
    {Errc::malformed_decimal, "malformed_decimal"},
    {Errc::negative_amount, "negative_amount"},
    {Errc::overflow, "overflow"},
    {Errc::invalid_id, "invalid_id"},
    {Errc::unknown_process, "unknown_process"},
    {Errc::unknown_thread, "unknown_thread"},
    {Errc::unknown_scope, "unknown_scope"},
    {Errc::unknown_plan, "unknown_plan"},
    {Errc::unknown_resource, "unknown_resource"},
    {Errc::unknown_reservation, "unknown_reservation"},
    {Errc::unknown_request, "unknown_request"},
    {Errc::unknown_field, "unknown_field"},
    {Errc::already_exists, "already_exists"},
    {Errc::capacity_exceeded, "capacity_exceeded"},
    {Errc::invalid_state, "invalid_state"},
};

TEST(ErrcName, EveryCodeHasItsExactName) {
  for (const auto& [code, name] : kCodes)
    EXPECT_EQ(errc_name(code), name) << static_cast<int>(code);
}

TEST(ErrcName, EveryEnumeratorIsCoveredAndDistinct) {
  EXPECT_EQ(static_cast<int>(Errc::invalid_state) + 1, static_cast<int>(std::size(kCodes)));
  std::set<std::string_view> seen;
  for (int i = 0; i <= static_cast<int>(Errc::invalid_state); ++i)
    EXPECT_TRUE(seen.insert(errc_name(static_cast<Errc>(i))).second) << i;
  EXPECT_EQ(seen.size(), 16u);
}

TEST(ErrcName, OutOfRangeValueIsNamedNotUndefined) {
  EXPECT_EQ(errc_name(static_cast<Errc>(200)), "unknown_error");
}

TEST(ErrorMessage, CodeOnlyWithoutDetail) {
  Error e{Errc::unknown_process, ""};
  EXPECT_EQ(e.message(), "unknown_process");
}

TEST(ErrorMessage, CodeColonDetail) {
  Error e{Errc::unknown_process, "4242"};
  EXPECT_EQ(e.message(), "unknown_process: 4242");
  Error f{Errc::invalid_id, "scope path deeper than 16"};
  EXPECT_EQ(f.message(), "invalid_id: scope path deeper than 16");
}

TEST(Fail, BuildsAnUnexpectedWithCodeAndDetail) {
  Result<int> r = fail(Errc::overflow, "tokens");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::overflow);
  EXPECT_EQ(r.error().detail, "tokens");
  EXPECT_EQ(r.error().message(), "overflow: tokens");

  Result<void> v = fail(Errc::capacity_exceeded);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, Errc::capacity_exceeded);
  EXPECT_EQ(v.error().detail, "");
  EXPECT_EQ(v.error().message(), "capacity_exceeded");
}

}  // namespace
}  // namespace budgetd
