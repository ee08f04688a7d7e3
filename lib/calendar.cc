#include "lib/calendar.h"

#include <limits>
#include <optional>

namespace budgetd {

namespace {

constexpr int64_t kUsPerSecond = 1'000'000;
constexpr int64_t kUsPerMinute = 60 * kUsPerSecond;
constexpr int64_t kUsPerHour = 60 * kUsPerMinute;
constexpr int64_t kUsPerDay = 24 * kUsPerHour;
constexpr int64_t kUsPerWeek = 7 * kUsPerDay;
// 1970-01-01 was a Thursday, so the ISO week grid (Mondays) is offset from the epoch by
// four days: Monday 1970-01-05.
constexpr int64_t kFirstMondayUs = 4 * kUsPerDay;

constexpr int64_t kMinUs = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxUs = std::numeric_limits<int64_t>::max();

int64_t micros(TimePoint t) { return t.time_since_epoch().count(); }
TimePoint from_micros(int64_t us) { return TimePoint(Duration(us)); }

// Mathematical floor division and modulo for m > 0; C++ `/` and `%` truncate toward zero,
// which would put pre-1970 instants into the following period.
int64_t floor_mod(int64_t a, int64_t m) {
  const int64_t r = a % m;
  return r < 0 ? r + m : r;
}
int64_t floor_div(int64_t a, int64_t m) { return a / m - (a % m < 0 ? 1 : 0); }

// Hourly, daily and weekly boundaries are a fixed-length grid: offset + k * period.
struct Grid {
  int64_t period;
  int64_t offset;
};

// How far t lies past the last grid point at or before it, in [0, period). Computed from
// two remainders so that no intermediate (such as t - offset) can overflow.
int64_t since_grid_point(int64_t t, Grid g) {
  const int64_t r = floor_mod(t, g.period) - floor_mod(g.offset, g.period);
  return r < 0 ? r + g.period : r;
}

TimePoint grid_start(int64_t t, Grid g) {
  const int64_t r = since_grid_point(t, g);
  return t < kMinUs + r ? TimePoint::min() : from_micros(t - r);
}

TimePoint grid_next(int64_t t, Grid g) {
  const int64_t step = g.period - since_grid_point(t, g);  // in (0, period]
  return t > kMaxUs - step ? TimePoint::max() : from_micros(t + step);
}

// Proleptic Gregorian conversions (H. Hinnant's algorithms) on int64_t. std::chrono's
// year_month_day stores the year in a short, which cannot hold TimePoint's full range
// (about +-292,000 years), so the engine's sentinels would convert to garbage there.
struct CivilDate {
  int64_t year;
  int64_t month;  // 1..12
  int64_t day;    // 1..31
};

CivilDate civil_from_days(int64_t z) {
  z += 719468;  // shifts the epoch to 0000-03-01, so leap days fall at the end of a year
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;                                       // [0, 146096]
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365]
  const int64_t mp = (5 * doy + 2) / 153;                                     // March = 0
  const int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const int64_t month = mp < 10 ? mp + 3 : mp - 9;
  return {yoe + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

int64_t days_from_civil(CivilDate c) {
  const int64_t y = c.year - (c.month <= 2 ? 1 : 0);
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (c.month > 2 ? c.month - 3 : c.month + 9) + 2) / 5 + c.day - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool is_leap_year(int64_t y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

int64_t days_in_month(int64_t year, int64_t month) {
  static constexpr int64_t kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap_year(year) ? 29 : kDays[month - 1];
}

// `day` (days since the epoch) plus time_of_day, in microseconds; nullopt outside
// int64_t. 128-bit because the first day of TimePoint's range starts before kMinUs, yet
// its later instants are representable.
std::optional<int64_t> day_to_micros(int64_t day, int64_t time_of_day = 0) {
  const __int128 us = static_cast<__int128>(day) * kUsPerDay + time_of_day;
  if (us < kMinUs || us > kMaxUs) return std::nullopt;
  return static_cast<int64_t>(us);
}

TimePoint month_start(int64_t t) {
  const CivilDate c = civil_from_days(floor_div(t, kUsPerDay));
  const auto us = day_to_micros(days_from_civil({c.year, c.month, 1}));
  return us ? from_micros(*us) : TimePoint::min();
}

TimePoint month_next(int64_t t) {
  const CivilDate c = civil_from_days(floor_div(t, kUsPerDay));
  const CivilDate next =
      c.month == 12 ? CivilDate{c.year + 1, 1, 1} : CivilDate{c.year, c.month + 1, 1};
  const auto us = day_to_micros(days_from_civil(next));
  return us ? from_micros(*us) : TimePoint::max();
}

constexpr Grid kHourGrid{kUsPerHour, 0};
constexpr Grid kDayGrid{kUsPerDay, 0};
constexpr Grid kWeekGrid{kUsPerWeek, kFirstMondayUs};

void append_padded(std::string& out, uint64_t value, int width) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  for (int k = n; k < width; ++k) out.push_back('0');
  while (n > 0) out.push_back(buf[--n]);
}

// Reads exactly `count` ASCII digits at `pos`, advancing it; false if any is not a digit.
bool read_digits(std::string_view s, std::size_t& pos, std::size_t count, int64_t& out) {
  if (s.size() - pos < count) return false;
  int64_t v = 0;
  for (std::size_t k = 0; k < count; ++k) {
    const char ch = s[pos + k];
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  pos += count;
  out = v;
  return true;
}

bool expect_char(std::string_view s, std::size_t& pos, char ch) {
  if (pos >= s.size() || s[pos] != ch) return false;
  ++pos;
  return true;
}

std::size_t count_digits(std::string_view s, std::size_t pos) {
  std::size_t n = 0;
  while (pos + n < s.size() && s[pos + n] >= '0' && s[pos + n] <= '9') ++n;
  return n;
}

// Six digits of year already exceed TimePoint's range; the bound only keeps the year
// arithmetic far from int64_t overflow.
constexpr std::size_t kMaxExpandedYearDigits = 6;
constexpr std::size_t kMaxFractionDigits = 6;  // microseconds: more would be silently lost

}  // namespace

std::string_view reset_period_name(ResetPeriod p) {
  switch (p) {
    case ResetPeriod::never:
      return "never";
    case ResetPeriod::hourly:
      return "hourly";
    case ResetPeriod::daily:
      return "daily";
    case ResetPeriod::weekly:
      return "weekly";
    case ResetPeriod::monthly:
      return "monthly";
  }
  return "unknown";
}

Result<ResetPeriod> parse_reset_period(std::string_view text) {
  for (ResetPeriod p : {ResetPeriod::never, ResetPeriod::hourly, ResetPeriod::daily,
                        ResetPeriod::weekly, ResetPeriod::monthly}) {
    if (text == reset_period_name(p)) return p;
  }
  return fail(Errc::invalid_argument, "unknown reset period: " + std::string(text));
}

TimePoint period_start(ResetPeriod p, TimePoint t) {
  switch (p) {
    case ResetPeriod::never:
      return TimePoint::min();
    case ResetPeriod::hourly:
      return grid_start(micros(t), kHourGrid);
    case ResetPeriod::daily:
      return grid_start(micros(t), kDayGrid);
    case ResetPeriod::weekly:
      return grid_start(micros(t), kWeekGrid);
    case ResetPeriod::monthly:
      return month_start(micros(t));
  }
  return TimePoint::min();
}

TimePoint next_reset(ResetPeriod p, TimePoint t) {
  switch (p) {
    case ResetPeriod::never:
      return TimePoint::max();
    case ResetPeriod::hourly:
      return grid_next(micros(t), kHourGrid);
    case ResetPeriod::daily:
      return grid_next(micros(t), kDayGrid);
    case ResetPeriod::weekly:
      return grid_next(micros(t), kWeekGrid);
    case ResetPeriod::monthly:
      return month_next(micros(t));
  }
  return TimePoint::max();
}

int64_t seconds_until_reset(ResetPeriod p, TimePoint now) {
  if (p == ResetPeriod::never) return kNoReset;
  const TimePoint next = next_reset(p, now);
  // Only the clamp at TimePoint::max() can make next == now; report the minimum wait then.
  if (next <= now) return 1;
  const int64_t us = micros(next) - micros(now);  // at most a month: cannot overflow
  return us / kUsPerSecond + (us % kUsPerSecond != 0 ? 1 : 0);
}

bool reset_due(ResetPeriod p, TimePoint last_reset_at, TimePoint now) {
  return p != ResetPeriod::never && period_start(p, now) > last_reset_at;
}

std::string format_utc(TimePoint t) {
  const int64_t us = micros(t);
  const int64_t time_of_day = floor_mod(us, kUsPerDay);
  const CivilDate c = civil_from_days(floor_div(us, kUsPerDay));

  std::string out;
  out.reserve(32);
  if (c.year >= 0 && c.year <= 9999) {
    append_padded(out, static_cast<uint64_t>(c.year), 4);
  } else {
    out.push_back(c.year < 0 ? '-' : '+');
    append_padded(out, static_cast<uint64_t>(c.year < 0 ? -c.year : c.year), 4);
  }
  out.push_back('-');
  append_padded(out, static_cast<uint64_t>(c.month), 2);
  out.push_back('-');
  append_padded(out, static_cast<uint64_t>(c.day), 2);
  out.push_back('T');
  append_padded(out, static_cast<uint64_t>(time_of_day / kUsPerHour), 2);
  out.push_back(':');
  append_padded(out, static_cast<uint64_t>(time_of_day % kUsPerHour / kUsPerMinute), 2);
  out.push_back(':');
  append_padded(out, static_cast<uint64_t>(time_of_day % kUsPerMinute / kUsPerSecond), 2);
  if (const int64_t frac = time_of_day % kUsPerSecond; frac != 0) {
    out.push_back('.');
    append_padded(out, static_cast<uint64_t>(frac), 6);
  }
  out.push_back('Z');
  return out;
}

Result<TimePoint> parse_utc(std::string_view s) {
  auto malformed = [&] {
    return fail(Errc::invalid_argument, "malformed UTC time: " + std::string(s));
  };
  std::size_t pos = 0;

  bool negative_year = false;
  std::size_t year_digits = 4;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative_year = s[0] == '-';
    pos = 1;
    year_digits = count_digits(s, pos);
    if (year_digits < 4 || year_digits > kMaxExpandedYearDigits) return malformed();
  }
  CivilDate date{};
  if (!read_digits(s, pos, year_digits, date.year) || !expect_char(s, pos, '-') ||
      !read_digits(s, pos, 2, date.month) || !expect_char(s, pos, '-') ||
      !read_digits(s, pos, 2, date.day)) {
    return malformed();
  }
  if (negative_year) date.year = -date.year;
  if (date.month < 1 || date.month > 12 || date.day < 1 ||
      date.day > days_in_month(date.year, date.month)) {
    return fail(Errc::invalid_argument, "no such date: " + std::string(s));
  }

  int64_t time_of_day = 0;
  if (pos != s.size()) {
    int64_t hour = 0, minute = 0, second = 0;
    if (!expect_char(s, pos, 'T') || !read_digits(s, pos, 2, hour) || !expect_char(s, pos, ':') ||
        !read_digits(s, pos, 2, minute) || !expect_char(s, pos, ':') ||
        !read_digits(s, pos, 2, second)) {
      return malformed();
    }
    if (hour > 23 || minute > 59 || second > 59) {
      return fail(Errc::invalid_argument, "no such time of day: " + std::string(s));
    }
    int64_t frac = 0;
    if (expect_char(s, pos, '.')) {
      const std::size_t frac_digits = count_digits(s, pos);
      if (frac_digits == 0 || frac_digits > kMaxFractionDigits) return malformed();
      read_digits(s, pos, frac_digits, frac);
      for (std::size_t k = frac_digits; k < kMaxFractionDigits; ++k) frac *= 10;
    }
    if (!expect_char(s, pos, 'Z') || pos != s.size()) return malformed();
    time_of_day = hour * kUsPerHour + minute * kUsPerMinute + second * kUsPerSecond + frac;
  }

  const auto us = day_to_micros(days_from_civil(date), time_of_day);
  if (!us) return fail(Errc::invalid_argument, "UTC time out of range: " + std::string(s));
  return from_micros(*us);
}

}  // namespace budgetd
