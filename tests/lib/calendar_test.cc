#include "lib/calendar.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace budgetd {
namespace {

using namespace std::chrono_literals;
namespace ch = std::chrono;

// Builds instants through std::chrono rather than parse_utc, so the boundary tests do not
// depend on the parser under test.
TimePoint at(ch::year_month_day ymd, int h = 0, int m = 0, int s = 0, int64_t us = 0) {
  return TimePoint(ch::sys_days(ymd)) + ch::hours(h) + ch::minutes(m) + ch::seconds(s) +
         ch::microseconds(us);
}

constexpr ch::year_month_day ymd(int y, unsigned m, unsigned d) {
  return ch::year(y) / ch::month(m) / ch::day(d);
}

constexpr ResetPeriod kAllPeriods[] = {ResetPeriod::never, ResetPeriod::hourly, ResetPeriod::daily,
                                       ResetPeriod::weekly, ResetPeriod::monthly};
constexpr ResetPeriod kCalendarPeriods[] = {ResetPeriod::hourly, ResetPeriod::daily,
                                            ResetPeriod::weekly, ResetPeriod::monthly};

TEST(ResetPeriodName, RoundTripsEveryPeriod) {
  for (ResetPeriod p : kAllPeriods) {
    auto parsed = parse_reset_period(reset_period_name(p));
    ASSERT_TRUE(parsed.has_value()) << reset_period_name(p);
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_EQ(reset_period_name(ResetPeriod::never), "never");
  EXPECT_EQ(reset_period_name(ResetPeriod::hourly), "hourly");
  EXPECT_EQ(reset_period_name(ResetPeriod::daily), "daily");
  EXPECT_EQ(reset_period_name(ResetPeriod::weekly), "weekly");
  EXPECT_EQ(reset_period_name(ResetPeriod::monthly), "monthly");
}

TEST(ResetPeriodName, RejectsUnknownText) {
  for (std::string_view text : {"", "Daily", "DAILY", "yearly", "daily ", " daily", "day"}) {
    auto parsed = parse_reset_period(text);
    ASSERT_FALSE(parsed.has_value()) << text;
    EXPECT_EQ(parsed.error().code, Errc::invalid_argument) << text;
  }
}

TEST(Calendar, DailyAcrossMonthEnds) {
  EXPECT_EQ(period_start(ResetPeriod::daily, at(ymd(2024, 1, 31), 15, 30)), at(ymd(2024, 1, 31)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2024, 1, 31), 15, 30)), at(ymd(2024, 2, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2024, 4, 30), 23, 59, 59)), at(ymd(2024, 5, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2023, 12, 31), 23, 59, 59, 999999)),
            at(ymd(2024, 1, 1)));
}

TEST(Calendar, MonthlyAcrossMonthAndYearEnds) {
  EXPECT_EQ(period_start(ResetPeriod::monthly, at(ymd(2024, 1, 31), 12)), at(ymd(2024, 1, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2024, 1, 31), 12)), at(ymd(2024, 2, 1)));
  EXPECT_EQ(period_start(ResetPeriod::monthly, at(ymd(2023, 12, 31), 23, 59, 59, 999999)),
            at(ymd(2023, 12, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2023, 12, 31), 23, 59, 59, 999999)),
            at(ymd(2024, 1, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2023, 12, 1))), at(ymd(2024, 1, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2024, 1, 1))), at(ymd(2024, 2, 1)));
}

TEST(Calendar, LeapDays) {
  // 2024 is a leap year: Feb 28 -> Feb 29 -> Mar 1.
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2024, 2, 28), 10)), at(ymd(2024, 2, 29)));
  EXPECT_EQ(period_start(ResetPeriod::daily, at(ymd(2024, 2, 29), 10)), at(ymd(2024, 2, 29)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2024, 2, 29), 10)), at(ymd(2024, 3, 1)));
  EXPECT_EQ(period_start(ResetPeriod::monthly, at(ymd(2024, 2, 29), 10)), at(ymd(2024, 2, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2024, 2, 29), 10)), at(ymd(2024, 3, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2024, 2, 1))), at(ymd(2024, 3, 1)));
  // 2023 is not: Feb 28 -> Mar 1.
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2023, 2, 28), 10)), at(ymd(2023, 3, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(2023, 2, 28), 10)), at(ymd(2023, 3, 1)));
  // Centuries are leap only when divisible by 400.
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2100, 2, 28), 10)), at(ymd(2100, 3, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2000, 2, 28), 10)), at(ymd(2000, 2, 29)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(2000, 2, 29), 10)), at(ymd(2000, 3, 1)));
  // A leap year is 366 days, from the monthly grid's point of view too.
  TimePoint t = at(ymd(2024, 1, 1));
  for (int month = 0; month < 12; ++month) t = next_reset(ResetPeriod::monthly, t);
  EXPECT_EQ(t, at(ymd(2025, 1, 1)));
  EXPECT_EQ(t - at(ymd(2024, 1, 1)), ch::days(366));
}

TEST(Calendar, WeeklyStartsOnIsoMonday) {
  // 2024-12-31 is a Tuesday; the ISO week runs Monday 2024-12-30 .. Sunday 2025-01-05.
  EXPECT_EQ(period_start(ResetPeriod::weekly, at(ymd(2024, 12, 31), 8)), at(ymd(2024, 12, 30)));
  EXPECT_EQ(next_reset(ResetPeriod::weekly, at(ymd(2024, 12, 31), 8)), at(ymd(2025, 1, 6)));
  EXPECT_EQ(period_start(ResetPeriod::weekly, at(ymd(2025, 1, 5), 23, 59, 59)),
            at(ymd(2024, 12, 30)));
  // 2021-01-01 is a Friday: its week began in December 2020.
  EXPECT_EQ(period_start(ResetPeriod::weekly, at(ymd(2021, 1, 1))), at(ymd(2020, 12, 28)));
  EXPECT_EQ(next_reset(ResetPeriod::weekly, at(ymd(2021, 1, 1))), at(ymd(2021, 1, 4)));
  // Across a month boundary, in a leap February: Friday 2024-03-01.
  EXPECT_EQ(period_start(ResetPeriod::weekly, at(ymd(2024, 3, 1), 12)), at(ymd(2024, 2, 26)));
  EXPECT_EQ(next_reset(ResetPeriod::weekly, at(ymd(2024, 3, 1), 12)), at(ymd(2024, 3, 4)));
  // The epoch was a Thursday, so the first week boundary is not the epoch itself.
  EXPECT_EQ(period_start(ResetPeriod::weekly, TimePoint{}), at(ymd(1969, 12, 29)));
  EXPECT_EQ(next_reset(ResetPeriod::weekly, TimePoint{}), at(ymd(1970, 1, 5)));
}

TEST(Calendar, ExactBoundaryOpensItsPeriod) {
  const TimePoint midnight = at(ymd(2024, 3, 1));
  EXPECT_EQ(period_start(ResetPeriod::hourly, midnight), midnight);
  EXPECT_EQ(next_reset(ResetPeriod::hourly, midnight), at(ymd(2024, 3, 1), 1));
  EXPECT_EQ(period_start(ResetPeriod::daily, midnight), midnight);
  EXPECT_EQ(next_reset(ResetPeriod::daily, midnight), at(ymd(2024, 3, 2)));
  EXPECT_EQ(period_start(ResetPeriod::monthly, midnight), midnight);
  EXPECT_EQ(next_reset(ResetPeriod::monthly, midnight), at(ymd(2024, 4, 1)));
  const TimePoint monday = at(ymd(2024, 3, 4));
  EXPECT_EQ(period_start(ResetPeriod::weekly, monday), monday);
  EXPECT_EQ(next_reset(ResetPeriod::weekly, monday), at(ymd(2024, 3, 11)));

  // One microsecond earlier still belongs to the previous period.
  const TimePoint before = midnight - 1us;
  EXPECT_EQ(period_start(ResetPeriod::daily, before), at(ymd(2024, 2, 29)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, before), midnight);
  EXPECT_EQ(period_start(ResetPeriod::monthly, before), at(ymd(2024, 2, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, before), midnight);
  EXPECT_EQ(next_reset(ResetPeriod::weekly, monday - 1us), monday);
  EXPECT_EQ(period_start(ResetPeriod::weekly, monday - 1us), at(ymd(2024, 2, 26)));
}

TEST(Calendar, HourlyAroundMidnight) {
  EXPECT_EQ(period_start(ResetPeriod::hourly, at(ymd(2023, 12, 31), 23, 30)),
            at(ymd(2023, 12, 31), 23));
  EXPECT_EQ(next_reset(ResetPeriod::hourly, at(ymd(2023, 12, 31), 23, 30)), at(ymd(2024, 1, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::hourly, at(ymd(2023, 12, 31), 23, 59, 59, 999999)),
            at(ymd(2024, 1, 1)));
  EXPECT_EQ(period_start(ResetPeriod::hourly, at(ymd(2024, 1, 1), 0, 0, 0, 1)),
            at(ymd(2024, 1, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::hourly, at(ymd(2024, 1, 1))), at(ymd(2024, 1, 1), 1));
}

TEST(Calendar, BeforeTheEpochFloorsDownward) {
  // Truncating division would round these toward 1970, into the following period.
  EXPECT_EQ(period_start(ResetPeriod::daily, at(ymd(1969, 12, 31), 12)), at(ymd(1969, 12, 31)));
  EXPECT_EQ(next_reset(ResetPeriod::daily, at(ymd(1969, 12, 31), 12)), at(ymd(1970, 1, 1)));
  EXPECT_EQ(period_start(ResetPeriod::hourly, TimePoint{} - 1us), at(ymd(1969, 12, 31), 23));
  EXPECT_EQ(period_start(ResetPeriod::monthly, at(ymd(1969, 12, 15))), at(ymd(1969, 12, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(1969, 12, 15))), at(ymd(1970, 1, 1)));
  EXPECT_EQ(period_start(ResetPeriod::monthly, at(ymd(1900, 2, 28), 5)), at(ymd(1900, 2, 1)));
  EXPECT_EQ(next_reset(ResetPeriod::monthly, at(ymd(1900, 2, 28), 5)), at(ymd(1900, 3, 1)));
}

TEST(Calendar, NeverHasNoBoundary) {
  const TimePoint t = at(ymd(2024, 5, 17), 9);
  EXPECT_EQ(period_start(ResetPeriod::never, t), TimePoint::min());
  EXPECT_EQ(next_reset(ResetPeriod::never, t), TimePoint::max());
  EXPECT_EQ(seconds_until_reset(ResetPeriod::never, t), kNoReset);
  EXPECT_FALSE(reset_due(ResetPeriod::never, TimePoint::min(), t));
  EXPECT_FALSE(reset_due(ResetPeriod::never, at(ymd(1970, 1, 1)), t));
}

TEST(Calendar, SecondsUntilResetRoundsUp) {
  EXPECT_EQ(seconds_until_reset(ResetPeriod::daily, at(ymd(2024, 2, 29))), 86400);
  EXPECT_EQ(seconds_until_reset(ResetPeriod::daily, at(ymd(2024, 2, 29), 12)), 43200);
  EXPECT_EQ(seconds_until_reset(ResetPeriod::daily, at(ymd(2024, 2, 29), 23, 59, 59, 500000)), 1);
  EXPECT_EQ(seconds_until_reset(ResetPeriod::daily, at(ymd(2024, 2, 29), 23, 59, 58, 1)), 2);
  EXPECT_EQ(seconds_until_reset(ResetPeriod::hourly, at(ymd(2024, 2, 29), 10, 59)), 60);
  EXPECT_EQ(seconds_until_reset(ResetPeriod::monthly, at(ymd(2024, 2, 1))), 29 * 86400);
  EXPECT_EQ(seconds_until_reset(ResetPeriod::weekly, at(ymd(2024, 3, 4))), 7 * 86400);
  EXPECT_GE(seconds_until_reset(ResetPeriod::daily, TimePoint::max()), 1);
}

TEST(Calendar, ResetDueOnlyAfterCrossingABoundary) {
  const TimePoint last = at(ymd(2024, 1, 31));
  EXPECT_FALSE(reset_due(ResetPeriod::daily, last, last));
  EXPECT_FALSE(reset_due(ResetPeriod::daily, last, at(ymd(2024, 1, 31), 23, 59, 59, 999999)));
  EXPECT_TRUE(reset_due(ResetPeriod::daily, last, at(ymd(2024, 2, 1))));
  EXPECT_FALSE(reset_due(ResetPeriod::monthly, at(ymd(2024, 1, 1)), at(ymd(2024, 1, 31), 23)));
  EXPECT_TRUE(reset_due(ResetPeriod::monthly, at(ymd(2024, 1, 1)), at(ymd(2024, 2, 1))));
  // A scope that was never reset is due at once.
  EXPECT_TRUE(reset_due(ResetPeriod::hourly, TimePoint::min(), last));
  // A clock stepping backwards does not trigger a reset.
  EXPECT_FALSE(reset_due(ResetPeriod::hourly, last, last - 5min));
}

TEST(Calendar, ExtremesClampInsteadOfWrapping) {
  for (ResetPeriod p : kCalendarPeriods) {
    SCOPED_TRACE(std::string(reset_period_name(p)));
    EXPECT_EQ(period_start(p, TimePoint::min()), TimePoint::min());
    EXPECT_GT(next_reset(p, TimePoint::min()), TimePoint::min());
    EXPECT_EQ(next_reset(p, TimePoint::max()), TimePoint::max());
    EXPECT_LE(period_start(p, TimePoint::max()), TimePoint::max());
    EXPECT_GT(period_start(p, TimePoint::max()), TimePoint::max() - ch::days(32));
  }
  EXPECT_EQ(next_reset(ResetPeriod::daily, TimePoint::min()), ch::ceil<ch::days>(TimePoint::min()));
}

// For every period: start <= t < next, both are boundaries, and no boundary lies between.
TEST(Calendar, BoundariesBracketEveryInstant) {
  // An odd step (not a divisor of any period) visits many different offsets in each period.
  const auto step = ch::hours(37) + ch::minutes(13) + ch::seconds(7) + 123457us;
  for (TimePoint t = at(ymd(1960, 1, 1)); t < at(ymd(2110, 1, 1)); t += step) {
    for (ResetPeriod p : kCalendarPeriods) {
      const TimePoint start = period_start(p, t);
      const TimePoint next = next_reset(p, t);
      ASSERT_LE(start, t) << reset_period_name(p) << " " << format_utc(t);
      ASSERT_GT(next, t) << reset_period_name(p) << " " << format_utc(t);
      ASSERT_EQ(period_start(p, start), start);
      ASSERT_EQ(period_start(p, next), next);
      ASSERT_EQ(next_reset(p, next - 1us), next);
      ASSERT_EQ(period_start(p, next - 1us), start);
    }
    const ch::year_month_day civil{ch::floor<ch::days>(t)};
    ASSERT_EQ(period_start(ResetPeriod::daily, t), TimePoint(ch::floor<ch::days>(t)));
    ASSERT_EQ(period_start(ResetPeriod::monthly, t),
              TimePoint(ch::sys_days(civil.year() / civil.month() / 1)));
    ASSERT_EQ(ch::weekday(ch::floor<ch::days>(period_start(ResetPeriod::weekly, t))), ch::Monday);
  }
}

TEST(FormatUtc, WritesIsoWithOptionalMicroseconds) {
  EXPECT_EQ(format_utc(TimePoint{}), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_utc(at(ymd(2024, 2, 29))), "2024-02-29T00:00:00Z");
  EXPECT_EQ(format_utc(at(ymd(2024, 2, 29), 0, 0, 0, 250000)), "2024-02-29T00:00:00.250000Z");
  EXPECT_EQ(format_utc(at(ymd(2024, 2, 29), 13, 5, 9, 1)), "2024-02-29T13:05:09.000001Z");
  EXPECT_EQ(format_utc(at(ymd(2023, 12, 31), 23, 59, 59, 999999)), "2023-12-31T23:59:59.999999Z");
  EXPECT_EQ(format_utc(TimePoint{} - 1us), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(format_utc(at(ymd(1, 1, 1))), "0001-01-01T00:00:00Z");
  EXPECT_EQ(format_utc(at(ymd(0, 3, 1))), "0000-03-01T00:00:00Z");
  EXPECT_EQ(format_utc(at(ymd(-1, 12, 31))), "-0001-12-31T00:00:00Z");
  EXPECT_EQ(format_utc(at(ymd(9999, 12, 31), 23, 59, 59)), "9999-12-31T23:59:59Z");
  EXPECT_EQ(format_utc(at(ymd(10000, 1, 1))), "+10000-01-01T00:00:00Z");
}

TEST(ParseUtc, AcceptsDatesTimesAndFractions) {
  EXPECT_EQ(parse_utc("2024-02-29").value(), at(ymd(2024, 2, 29)));
  EXPECT_EQ(parse_utc("2024-02-29T00:00:00Z").value(), at(ymd(2024, 2, 29)));
  EXPECT_EQ(parse_utc("2000-02-29T12:34:56Z").value(), at(ymd(2000, 2, 29), 12, 34, 56));
  EXPECT_EQ(parse_utc("2024-02-29T00:00:00.25Z").value(), at(ymd(2024, 2, 29), 0, 0, 0, 250000));
  EXPECT_EQ(parse_utc("2024-02-29T00:00:00.250000Z").value(),
            at(ymd(2024, 2, 29), 0, 0, 0, 250000));
  EXPECT_EQ(parse_utc("2024-02-29T00:00:00.000001Z").value(), at(ymd(2024, 2, 29), 0, 0, 0, 1));
  EXPECT_EQ(parse_utc("2024-02-29T00:00:00.000000Z").value(), at(ymd(2024, 2, 29)));
  EXPECT_EQ(parse_utc("1969-12-31T23:59:59.999999Z").value(), TimePoint{} - 1us);
  EXPECT_EQ(parse_utc("+10000-01-01T00:00:00Z").value(), at(ymd(10000, 1, 1)));
  EXPECT_EQ(parse_utc("-0001-12-31").value(), at(ymd(-1, 12, 31)));
}

TEST(ParseUtc, RoundTripsFormat) {
  const std::vector<TimePoint> samples = {
      TimePoint{},
      TimePoint{} - 1us,
      at(ymd(2024, 2, 29), 0, 0, 0, 250000),
      at(ymd(2100, 3, 1), 7, 8, 9, 10),
      at(ymd(1600, 2, 29), 23, 59, 59, 999999),
      TimePoint::min(),
      TimePoint::max(),
      TimePoint::min() + 1us,
      TimePoint::max() - 1us,
  };
  for (TimePoint t : samples) {
    const std::string text = format_utc(t);
    auto back = parse_utc(text);
    ASSERT_TRUE(back.has_value()) << text << ": " << back.error().message();
    EXPECT_EQ(*back, t) << text;
  }
  const auto step = ch::hours(1001) + ch::seconds(13) + 7777us;
  for (TimePoint t = at(ymd(1890, 1, 1)); t < at(ymd(2210, 1, 1)); t += step) {
    const std::string text = format_utc(t);
    auto back = parse_utc(text);
    ASSERT_TRUE(back.has_value()) << text;
    ASSERT_EQ(*back, t) << text;
  }
}

TEST(ParseUtc, RejectsMalformedText) {
  for (std::string_view text : {
           "",
           "2024",
           "2024-02",
           "2024-2-29",
           "2024-02-9",
           "24-02-29",
           "12024-01-01",  // more than 4 year digits needs the expanded form's sign
           "+123-01-01",   // the expanded form still has at least 4 digits
           "2024/02/29",
           "2024-02-29T",
           "2024-02-29Z",
           "2024-02-29T12:00Z",
           "2024-02-29T12:00:00",
           "2024-02-29T1:00:00Z",
           "2024-02-29 12:00:00Z",
           "2024-02-29t12:00:00Z",
           "2024-02-29T12:00:00z",
           "2024-02-29T12:00:00.Z",
           "2024-02-29T12:00:00.1234567Z",  // below a microsecond would be lost
           "2024-02-29T12:00:00+00:00",
           "2024-02-29T12:00:00ZZ",
           "2024-02-29T12:00:00Z ",
           " 2024-02-29",
           "2024-02-29 ",
           "abcd-ef-gh",
           "-2024",
           "+",
       }) {
    auto parsed = parse_utc(text);
    ASSERT_FALSE(parsed.has_value()) << text;
    EXPECT_EQ(parsed.error().code, Errc::invalid_argument) << text;
  }
}

TEST(ParseUtc, RejectsImpossibleDatesAndTimes) {
  for (std::string_view text : {
           "2023-02-29",
           "2100-02-29",
           "1900-02-29",
           "2024-02-30",
           "2024-04-31",
           "2024-13-01",
           "2024-00-10",
           "2024-01-00",
           "2024-01-32",
           "2024-02-29T24:00:00Z",
           "2024-02-29T12:60:00Z",
           "2024-02-29T12:00:60Z",  // no leap seconds in a sys_time
           "+300000-01-01T00:00:00Z",
           "-300000-01-01T00:00:00Z",
           "+999999-12-31",
       }) {
    auto parsed = parse_utc(text);
    ASSERT_FALSE(parsed.has_value()) << text;
    EXPECT_EQ(parsed.error().code, Errc::invalid_argument) << text;
  }
  EXPECT_TRUE(parse_utc("2024-02-29").has_value());
  EXPECT_TRUE(parse_utc("2000-02-29").has_value());
}

}  // namespace
}  // namespace budgetd
