#include "lib/decimal.h"

#include <gtest/gtest.h>

namespace budgetd {
namespace {

Decimal D(const char* s) { return *Decimal::parse(s); }

TEST(Decimal, ParsesAndFormatsShortestExactForm) {
  EXPECT_EQ(D("0").to_string(), "0");
  EXPECT_EQ(D("1.50").to_string(), "1.5");
  EXPECT_EQ(D("0.000002").to_string(), "0.000002");
  EXPECT_EQ(D("+3").to_string(), "3");
  EXPECT_EQ(D("0.000000000001").to_string(), "0.000000000001");
}
}  // namespace
}  // namespace budgetd
