#include "lib/decimal.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace budgetd {
namespace {

Decimal D(const char* s) { return *Decimal::parse(s); }
Decimal Signed(const char* s) { return *Decimal::parse(s, /*allow_negative=*/true); }

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
// 2^127 - 1 with 12 fractional digits.
constexpr const char* kMaxText = "170141183460469231731687303.715884105727";
constexpr __int128 kMinRaw = -Decimal::kMaxRaw - 1;

void ExpectError(const Result<Decimal>& r, Errc code, const std::string& what) {
  ASSERT_FALSE(r.has_value()) << what << " gave " << r->to_string();
  EXPECT_EQ(r.error().code, code) << what << ": " << r.error().message();
}

TEST(Decimal, ParsesAndFormatsShortestExactForm) {
  EXPECT_EQ(D("0").to_string(), "0");
  EXPECT_EQ(D("1.50").to_string(), "1.5");
  EXPECT_EQ(D("0.000002").to_string(), "0.000002");
  EXPECT_EQ(D("+3").to_string(), "3");
  EXPECT_EQ(D("0.000000000001").to_string(), "0.000000000001");
}

TEST(Decimal, RoundTripsCanonicalText) {
  for (const char* text : {"0", "1", "7", "10", "1.5", "0.5", "0.000002", "0.0375", "12.000001",
                           "123456789.123456789012", "18446744073709551615", kMaxText}) {
    auto d = Decimal::parse(text);
    ASSERT_TRUE(d.has_value()) << text;
    EXPECT_EQ(d->to_string(), text);
  }
  for (const char* text :
       {"-1", "-0.5", "-3.25", "-0.000000000001", "-170141183460469231731687303"}) {
    auto d = Decimal::parse(text, /*allow_negative=*/true);
    ASSERT_TRUE(d.has_value()) << text;
    EXPECT_EQ(d->to_string(), text);
  }
}

TEST(Decimal, NormalizesEquivalentForms) {
  EXPECT_EQ(D("007").to_string(), "7");
  EXPECT_EQ(D("1.000000000000").to_string(), "1");
  EXPECT_EQ(D("+0.5").to_string(), "0.5");
  EXPECT_EQ(D("00.010").to_string(), "0.01");
  // Negative zero is zero, so it is not a negative amount.
  EXPECT_EQ(D("-0").to_string(), "0");
  EXPECT_EQ(D("-0.000").raw(), 0);
  EXPECT_EQ(D("1.50"), D("1.5"));
}

TEST(Decimal, RawScaleAndConstructors) {
  EXPECT_EQ(D("1").raw(), Decimal::kOne);
  EXPECT_EQ(D("0.000000000001").raw(), 1);
  EXPECT_EQ(D("0.123456789012").raw(), 123456789012);
  EXPECT_EQ(Decimal::from_int(0), Decimal());
  EXPECT_EQ(Decimal::from_int(42), D("42"));
  EXPECT_EQ(Decimal::from_int(kU64Max).to_string(), "18446744073709551615");
  EXPECT_EQ(Decimal::from_raw(1500000000000).to_string(), "1.5");
  EXPECT_EQ(Decimal::max().to_string(), kMaxText);
  EXPECT_EQ(Decimal::from_raw(kMinRaw).to_string(), "-170141183460469231731687303.715884105728");
}

TEST(Decimal, Predicates) {
  EXPECT_TRUE(Decimal().is_zero());
  EXPECT_TRUE(D("0.0").is_zero());
  EXPECT_FALSE(D("0.000000000001").is_zero());
  EXPECT_TRUE(D("3").is_integer());
  EXPECT_TRUE(D("0").is_integer());
  EXPECT_FALSE(D("3.000000000001").is_integer());
  EXPECT_TRUE(Signed("-2").is_integer());
  EXPECT_FALSE(Signed("-2.5").is_integer());
  EXPECT_TRUE(Signed("-0.1").is_negative());
  EXPECT_FALSE(D("0").is_negative());
  EXPECT_FALSE(D("0.1").is_negative());
}

TEST(Decimal, TwelveFractionalDigitsAcceptedThirteenRejected) {
  EXPECT_EQ(D("0.999999999999").raw(), 999999999999);
  EXPECT_EQ(D("5.000000000001").raw(), 5 * Decimal::kOne + 1);
  ExpectError(Decimal::parse("0.1234567890123"), Errc::malformed_decimal, "13 digits");
  // Even trailing zeros: the rule is about the text, so a caller never depends on rounding.
  ExpectError(Decimal::parse("1.0000000000000"), Errc::malformed_decimal, "13 zeros");
  ExpectError(Decimal::parse("-0.1234567890123", true), Errc::malformed_decimal, "negative 13");
}

TEST(Decimal, NegativeRejectedUnlessAllowed) {
  for (const char* text : {"-1", "-0.5", "-0.000000000001", "-100"}) {
    ExpectError(Decimal::parse(text), Errc::negative_amount, text);
    auto allowed = Decimal::parse(text, /*allow_negative=*/true);
    ASSERT_TRUE(allowed.has_value()) << text;
    EXPECT_TRUE(allowed->is_negative()) << text;
  }
  EXPECT_EQ(Signed("-0.5").raw(), -Decimal::kOne / 2);
  EXPECT_EQ(Signed("+0.5").raw(), Decimal::kOne / 2);
}

TEST(Decimal, MalformedTextRejected) {
  for (const char* text :
       {"",     ".",   "1.",  ".5",  "1e3", "1E3",  "abc",   "1.2.3", " 1",   "1 ",   "--1",
        "+-1",  "-+1", "-",   "+",   "1,5", "0x10", "1_000", "1..2",  "1.-2", "+.5",  "-.5",
        "1.5a", "\t1", "inf", "nan", "1/2", "1-",   "١",     "1.5.",  "++1",  "1 000"}) {
    ExpectError(Decimal::parse(text), Errc::malformed_decimal, std::string("'") + text + "'");
    ExpectError(Decimal::parse(text, /*allow_negative=*/true), Errc::malformed_decimal,
                std::string("signed '") + text + "'");
  }
  ExpectError(Decimal::parse(std::string_view("1\0", 2)), Errc::malformed_decimal, "NUL");
}

TEST(Decimal, OverLongTextRejected) {
  const std::string at_limit = std::string(Decimal::kMaxTextLength - 1, '0') + "7";
  ASSERT_EQ(at_limit.size(), Decimal::kMaxTextLength);
  EXPECT_EQ(D(at_limit.c_str()), D("7"));
  ExpectError(Decimal::parse("0" + at_limit), Errc::malformed_decimal, "65 chars");
  ExpectError(Decimal::parse(std::string(1000, '1')), Errc::malformed_decimal, "1000 chars");
  ExpectError(Decimal::parse("0." + std::string(100, '0')), Errc::malformed_decimal, "long frac");
}

TEST(Decimal, HugeIntegerPartsOverflow) {
  EXPECT_EQ(D(kMaxText), Decimal::max());
  ExpectError(Decimal::parse("170141183460469231731687303.715884105728"), Errc::overflow,
              "max + 1e-12");
  ExpectError(Decimal::parse("170141183460469231731687304"), Errc::overflow, "max whole + 1");
  ExpectError(Decimal::parse("1000000000000000000000000000"), Errc::overflow, "1e27");
  ExpectError(Decimal::parse(std::string(41, '9')), Errc::overflow, "41 nines");
  ExpectError(Decimal::parse(std::string(64, '9')), Errc::overflow, "64 nines");
  ExpectError(Decimal::parse("-" + std::string(40, '9'), true), Errc::overflow, "-40 nines");
  // The largest integer part that fits.
  EXPECT_EQ(D("170141183460469231731687303").to_string(), "170141183460469231731687303");
}

TEST(Decimal, CheckedAddAndSub) {
  EXPECT_EQ(D("0.1").checked_add(D("0.2")).value(), D("0.3"));
  EXPECT_EQ(D("1.999999999999").checked_add(D("0.000000000001")).value(), D("2"));
  EXPECT_EQ(D("5").checked_sub(D("7.5")).value(), Signed("-2.5"));
  EXPECT_EQ(Signed("-1").checked_add(D("1")).value(), Decimal());
  EXPECT_EQ(Decimal::max().checked_sub(Decimal::max()).value(), Decimal());
  ExpectError(Decimal::max().checked_add(D("0.000000000001")), Errc::overflow, "max + tiny");
  ExpectError(Decimal::max().checked_add(Decimal::max()), Errc::overflow, "max + max");
  ExpectError(Decimal::from_raw(kMinRaw).checked_sub(D("0.000000000001")), Errc::overflow,
              "min - tiny");
  ExpectError(Decimal::max().checked_sub(Signed("-1")), Errc::overflow, "max - (-1)");
  EXPECT_EQ(Decimal::from_raw(kMinRaw).checked_add(Decimal::max()).value(),
            Signed("-0.000000000001"));
}

TEST(Decimal, SaturatingAdd) {
  EXPECT_EQ(D("1.5").saturating_add(D("2.25")), D("3.75"));
  EXPECT_EQ(Decimal::max().saturating_add(D("1")), Decimal::max());
  EXPECT_EQ(Decimal::max().saturating_add(Decimal::max()), Decimal::max());
  EXPECT_EQ(D("1").saturating_add(Decimal::max()), Decimal::max());
  EXPECT_EQ(Decimal::from_raw(kMinRaw).saturating_add(Signed("-1")), Decimal::from_raw(kMinRaw));
  EXPECT_EQ(Decimal::max().saturating_add(Signed("-1")).to_string(),
            "170141183460469231731687302.715884105727");
}

TEST(Decimal, SaturatingSubStopsAtZero) {
  EXPECT_EQ(D("5").saturating_sub(D("3")), D("2"));
  EXPECT_EQ(D("3").saturating_sub(D("5")), Decimal());
  EXPECT_EQ(D("3").saturating_sub(D("3")), Decimal());
  EXPECT_EQ(D("0.000000000002").saturating_sub(D("0.000000000001")), D("0.000000000001"));
  EXPECT_EQ(Decimal::max().saturating_sub(D("0.000000000001")).raw(), Decimal::kMaxRaw - 1);
  EXPECT_EQ(Decimal().saturating_sub(Decimal::max()), Decimal());
  EXPECT_EQ(Signed("-1").saturating_sub(D("1")), Decimal());
}

TEST(Decimal, CheckedMulByCount) {
  EXPECT_EQ(D("0.000002").checked_mul(uint64_t{1000}).value(), D("0.002"));
  EXPECT_EQ(D("1.5").checked_mul(uint64_t{0}).value(), Decimal());
  EXPECT_EQ(Signed("-0.25").checked_mul(uint64_t{4}).value(), Signed("-1"));
  EXPECT_EQ(D("1").checked_mul(kU64Max).value(), Decimal::from_int(kU64Max));
  EXPECT_EQ(Decimal::max().checked_mul(uint64_t{1}).value(), Decimal::max());
  ExpectError(Decimal::max().checked_mul(uint64_t{2}), Errc::overflow, "max * 2");
  ExpectError(Decimal::from_int(10'000'000).checked_mul(kU64Max), Errc::overflow, "1e7 * 2^64");
  ExpectError(Decimal::from_int(kU64Max).checked_mul(kU64Max), Errc::overflow, "2^64 * 2^64");
}

TEST(Decimal, MulDivIsExactForPerThousandPrices) {
  // $0.002 per 1000 tokens, one token: 0.000002 exactly, not a float approximation.
  EXPECT_EQ(D("0.002").checked_mul_div(1, 1000).value(), D("0.000002"));
  EXPECT_EQ(D("0.002").checked_mul_div(1, 1000).value().to_string(), "0.000002");
  EXPECT_EQ(D("0.002").checked_mul_div(1234567, 1000).value(), D("2.469134"));
  // $0.0375 per million tokens: 3.75e-8 per token.
  EXPECT_EQ(D("0.0375").checked_mul_div(1, 1'000'000).value(), D("0.0000000375"));
  EXPECT_EQ(D("0.0375").checked_mul_div(3, 1'000'000).value(), D("0.0000001125"));
  EXPECT_EQ(D("15").checked_mul_div(2'500'000, 1'000'000).value(), D("37.5"));
  EXPECT_EQ(D("7").checked_mul_div(0, 3).value(), Decimal());
}

TEST(Decimal, MulDivRoundsHalfAwayFromZero) {
  EXPECT_EQ(D("1").checked_mul_div(1, 3).value(), D("0.333333333333"));
  EXPECT_EQ(D("1").checked_mul_div(2, 3).value(), D("0.666666666667"));
  EXPECT_EQ(Signed("-1").checked_mul_div(2, 3).value(), Signed("-0.666666666667"));
  EXPECT_EQ(D("0.000000000001").checked_mul_div(1, 2).value(), D("0.000000000001"));
  EXPECT_EQ(Signed("-0.000000000001").checked_mul_div(1, 2).value(), Signed("-0.000000000001"));
  EXPECT_EQ(D("0.000000000001").checked_mul_div(1, 3).value(), Decimal());
  EXPECT_EQ(D("0.000000000005").checked_mul_div(1, 10).value(), D("0.000000000001"));
  EXPECT_EQ(D("0.000000000004").checked_mul_div(1, 10).value(), Decimal());
}

TEST(Decimal, MulDivNearTheRangeLimit) {
  EXPECT_EQ(D("0.5").checked_mul_div(1, 0).error().code, Errc::invalid_argument);
  EXPECT_EQ(Decimal::max().checked_mul_div(2, 2).value(), Decimal::max());
  EXPECT_EQ(Decimal::max().checked_mul_div(kU64Max, kU64Max).value(), Decimal::max());
  EXPECT_EQ(Decimal::max().checked_mul_div(1, 2).value().raw(), Decimal::kMaxRaw / 2 + 1);
  EXPECT_EQ(Decimal::max().checked_mul_div(kU64Max - 1, kU64Max).value().raw(),
            Decimal::kMaxRaw - (static_cast<__int128>(1) << 63));  // max - max/(2^64-1), rounded
  // The raw product passes 128 bits, the quotient does not.
  EXPECT_EQ(D("100000000000000000000").checked_mul_div(10'000'000, 1'000'000).value(),
            D("1000000000000000000000"));
  EXPECT_EQ(Decimal::from_int(kU64Max).checked_mul_div(kU64Max, kU64Max).value(),
            Decimal::from_int(kU64Max));
  EXPECT_EQ(Signed("-100000000000000000000").checked_mul_div(kU64Max, kU64Max).value(),
            Signed("-100000000000000000000"));
  ExpectError(Decimal::max().checked_mul_div(3, 2), Errc::overflow, "max * 3/2");
  ExpectError(Decimal::from_int(kU64Max).checked_mul_div(kU64Max, 1), Errc::overflow,
              "2^64 * 2^64");
  ExpectError(Decimal::max().checked_mul_div(kU64Max, kU64Max - 1), Errc::overflow,
              "max * (1 + tiny)");
}

TEST(Decimal, MulDecimalRoundsHalfAwayFromZero) {
  EXPECT_EQ(D("1.5").checked_mul(D("2")).value(), D("3"));
  EXPECT_EQ(D("0.1234").checked_mul(Signed("-2")).value(), Signed("-0.2468"));
  EXPECT_EQ(Signed("-1.5").checked_mul(Signed("-1.5")).value(), D("2.25"));
  EXPECT_EQ(D("0.000001").checked_mul(D("0.000001")).value(), D("0.000000000001"));
  // 5e-13 is exactly half a unit in the last place: away from zero in both signs.
  EXPECT_EQ(D("0.000001").checked_mul(D("0.0000005")).value(), D("0.000000000001"));
  EXPECT_EQ(Signed("-0.000001").checked_mul(D("0.0000005")).value(), Signed("-0.000000000001"));
  EXPECT_EQ(D("0.000001").checked_mul(Signed("-0.0000005")).value(), Signed("-0.000000000001"));
  EXPECT_EQ(D("0.000001").checked_mul(D("0.0000004")).value(), Decimal());
  EXPECT_EQ(D("0.000001").checked_mul(D("0.0000006")).value(), D("0.000000000001"));
  EXPECT_EQ(D("0.333333333333").checked_mul(D("3")).value(), D("0.999999999999"));
  EXPECT_EQ(D("123.456").checked_mul(Decimal()).value(), Decimal());
  EXPECT_EQ(D("0.0000375").checked_mul(D("1000")).value(), D("0.0375"));
}

TEST(Decimal, MulDecimalNearTheRangeLimit) {
  EXPECT_EQ(Decimal::max().checked_mul(D("1")).value(), Decimal::max());
  EXPECT_EQ(D("1").checked_mul(Decimal::max()).value(), Decimal::max());
  // max * 0.5 = 2^126 - 0.5 units in the last place, rounded up.
  EXPECT_EQ(Decimal::max().checked_mul(D("0.5")).value().raw(), Decimal::kMaxRaw / 2 + 1);
  // Small times large: the raw product (1e39) passes 128 bits though the result is small.
  EXPECT_EQ(D("1").checked_mul(D("1000000000000000")).value(), D("1000000000000000"));
  EXPECT_EQ(D("1000").checked_mul(D("1000000000000")).value(), D("1000000000000000"));
  EXPECT_EQ(D("10000000000000").checked_mul(D("10000000000000")).value(),
            D("100000000000000000000000000"));
  EXPECT_EQ(D("0.000000000001").checked_mul(Decimal::max()).value(),
            D("170141183460469.231731687304"));  // max / 10^12: ...303.7158 rounds up
  EXPECT_EQ(Signed("-1").checked_mul(Decimal::max()).value(), Decimal::from_raw(-Decimal::kMaxRaw));
  ExpectError(Decimal::max().checked_mul(D("1.000000000001")), Errc::overflow, "max * (1+tiny)");
  ExpectError(D("100000000000000").checked_mul(D("10000000000000")), Errc::overflow, "1e27");
  ExpectError(Decimal::max().checked_mul(Decimal::max()), Errc::overflow, "max * max");
  ExpectError(Decimal::max().checked_mul(Signed("-2")), Errc::overflow, "max * -2");
}

// Vectors computed independently with Python's exact integers (round half away from zero);
// every raw product here passes 128 bits, so the wide multiplication path is exercised.
TEST(Decimal, MulDecimalMatchesReferenceVectors) {
  struct Case {
    const char* a;
    const char* b;
    const char* product;
  };
  const Case cases[] = {
      {"-695669.038258802149", "1155367498550240623.304493295634",
       "-803753396551923880592313.889829456726"},
      {"-0.000002883911", "-21050564189233570673411765.442743072438",
       "60707953621536776034.329597889747"},
      {"-0.000884585952", "-1182356839087453653.669571047185", "1045896250107886.001487175798"},
      {"140712.061203311137", "-9806789748566091.32692092527",
       "-1379933599308236079426.184326090813"},
      {"157546173284357479781141.690319235128", "-0.00000519435",
       "-818349965199602275.10117333911"},
      {"-388868088.197598089277", "-2044254893.650148693887", "794945492282317524.487961200075"},
      {"599120016054231059526.933827712518", "0.000011825772", "7085056710493676.145283947306"},
      {"262.713092902026", "-1763519600857.245942975535", "-463299688734553.463766416609"},
      {"-20994.178117551962", "77675493740153.378572372214", "-1630733150949572465.523515975081"},
      {"-237180105298.338803444132", "-2270859443.323137232046",
       "538602681885108726736.912095125328"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Signed(c.a).checked_mul(Signed(c.b)).value().to_string(), c.product)
        << c.a << " * " << c.b;
    EXPECT_EQ(Signed(c.b).checked_mul(Signed(c.a)).value().to_string(), c.product)
        << c.b << " * " << c.a;
  }
}

TEST(Decimal, MulDivMatchesReferenceVectors) {
  struct Case {
    const char* a;
    uint64_t num;
    uint64_t den;
    const char* result;
  };
  const Case cases[] = {
      {"-4611574909652017.372458455182", 15772808007039181502u, 3503074255122127411u,
       "-20763900609204896.287274957223"},
      {"35943700503.186385955114", 8238189578454333844u, 2615658569448273026u,
       "113207060873.733711091888"},
      {"-48597076.265933287208", 8356280309292621241u, 13630592132760172439u,
       "-29792600.903536638674"},
      {"287053809871710886.366058057017", 657677712248192468u, 16225109976529599756u,
       "11635600204969126.044838991637"},
      {"532563520457.985216506031", 4310001221363913057u, 5426138762552420430u,
       "423017088959.970518891952"},
      {"-6733503712239237.965957369511", 5131199888064844945u, 18403508568128136883u,
       "-1877411221160447.047208641163"},
      {"-145796897064183952.302854743475", 13982448423563297277u, 9461051791380275815u,
       "-215472617470801054.147973274876"},
      {"3872416293829.602838278513", 5366211252261074013u, 1232731387425099035u,
       "16857041283578.210863461786"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Signed(c.a).checked_mul_div(c.num, c.den).value().to_string(), c.result)
        << c.a << " * " << c.num << " / " << c.den;
  }
}

TEST(Decimal, ToU64FloorAndCeil) {
  EXPECT_EQ(D("1.5").to_u64_floor(), 1u);
  EXPECT_EQ(D("1.5").to_u64_ceil(), 2u);
  EXPECT_EQ(D("2").to_u64_floor(), 2u);
  EXPECT_EQ(D("2").to_u64_ceil(), 2u);
  EXPECT_EQ(D("0").to_u64_floor(), 0u);
  EXPECT_EQ(D("0").to_u64_ceil(), 0u);
  EXPECT_EQ(D("0.000000000001").to_u64_floor(), 0u);
  EXPECT_EQ(D("0.000000000001").to_u64_ceil(), 1u);
  EXPECT_EQ(D("41.999999999999").to_u64_floor(), 41u);
  EXPECT_EQ(D("41.999999999999").to_u64_ceil(), 42u);
  EXPECT_EQ(Signed("-1.5").to_u64_floor(), 0u);
  EXPECT_EQ(Signed("-1.5").to_u64_ceil(), 0u);
  EXPECT_EQ(D("18446744073709551614.5").to_u64_floor(), kU64Max - 1);
  EXPECT_EQ(D("18446744073709551614.5").to_u64_ceil(), kU64Max);
  EXPECT_EQ(D("18446744073709551615").to_u64_ceil(), kU64Max);
  EXPECT_EQ(D("18446744073709551615.5").to_u64_floor(), kU64Max);
  EXPECT_EQ(D("18446744073709551615.5").to_u64_ceil(), kU64Max);
  EXPECT_EQ(D("100000000000000000000").to_u64_floor(), kU64Max);
  EXPECT_EQ(Decimal::max().to_u64_floor(), kU64Max);
  EXPECT_EQ(Decimal::max().to_u64_ceil(), kU64Max);
}

TEST(Decimal, PercentOfRoundsDown) {
  EXPECT_EQ(D("50").percent_of(D("100")), 50u);
  EXPECT_EQ(D("99.999").percent_of(D("100")), 99u);
  EXPECT_EQ(D("100").percent_of(D("100")), 100u);
  EXPECT_EQ(D("150").percent_of(D("100")), 150u);
  EXPECT_EQ(D("1").percent_of(D("3")), 33u);
  EXPECT_EQ(D("2").percent_of(D("3")), 66u);
  EXPECT_EQ(D("100.5").percent_of(D("201")), 50u);
  EXPECT_EQ(D("0.000000000001").percent_of(D("1")), 0u);
  EXPECT_EQ(D("0").percent_of(D("100")), 0u);
  EXPECT_EQ(D("0").percent_of(D("0")), 0u);
  EXPECT_EQ(D("5").percent_of(D("0")), 100u);
  EXPECT_EQ(Signed("-5").percent_of(D("100")), 0u);
  // Capped, so that an absurd overrun still fits the field.
  EXPECT_EQ(D("1000").percent_of(D("1")), 100000u);
  EXPECT_EQ(D("1000000").percent_of(D("0.000000000001")), 100000u);
  EXPECT_EQ(Decimal::max().percent_of(D("1")), 100000u);
}

TEST(Decimal, PercentOfNearTheRangeLimit) {
  EXPECT_EQ(Decimal::max().percent_of(Decimal::max()), 100u);
  EXPECT_EQ(Decimal::from_raw(Decimal::kMaxRaw / 2).percent_of(Decimal::max()), 49u);
  // amount * 100 overflows here; the answer must still round down, not up.
  const __int128 limit = Decimal::kMaxRaw - 10;  // not a multiple of 100
  EXPECT_EQ(Decimal::from_raw(limit - 1).percent_of(Decimal::from_raw(limit)), 99u);
  EXPECT_EQ(Decimal::from_raw(limit).percent_of(Decimal::from_raw(limit)), 100u);
  EXPECT_EQ(Decimal::max().percent_of(Decimal::from_raw(Decimal::kMaxRaw / 2)), 200u);
}

TEST(Decimal, Comparisons) {
  EXPECT_LT(D("0.1"), D("0.100000000001"));
  EXPECT_GT(D("2"), D("1.999999999999"));
  EXPECT_LT(Signed("-1"), D("0"));
  EXPECT_LT(Signed("-2"), Signed("-1"));
  EXPECT_LE(D("1.5"), D("1.50"));
  EXPECT_GE(D("1.5"), D("1.50"));
  EXPECT_EQ(D("1.5"), D("1.50"));
  EXPECT_NE(D("1.5"), D("1.05"));
  EXPECT_GT(Decimal::max(), Decimal::from_int(kU64Max));
  EXPECT_LT(Decimal::from_raw(kMinRaw), Signed("-170141183460469231731687303"));
  EXPECT_EQ(D("3") <=> D("3"), std::strong_ordering::equal);

  std::vector<Decimal> v = {D("10"), D("0.5"), Signed("-3"), D("2"), D("0"), D("0.05")};
  std::sort(v.begin(), v.end());
  std::vector<std::string> texts;
  for (Decimal d : v) texts.push_back(d.to_string());
  EXPECT_EQ(texts, (std::vector<std::string>{"-3", "0", "0.05", "0.5", "2", "10"}));
}

}  // namespace
}  // namespace budgetd
