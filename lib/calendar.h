// Calendar periods for scope resets, and the UTC text form of instants.
//
// Every boundary is computed in UTC from the TimePoint alone: no time zone database, no
// wall clock read. Boundaries are half-open intervals [period_start, next_reset), so an
// instant exactly on a boundary belongs to the period it opens.
//
// Results that fall outside TimePoint's range (only near its extremes, ~292,000 years
// from 1970) clamp to TimePoint::min() / TimePoint::max() instead of wrapping, so callers
// never see a boundary on the wrong side of t.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lib/clock.h"
#include "lib/error.h"

namespace budgetd {

enum class ResetPeriod { never, hourly, daily, weekly, monthly };

// "never", "hourly", "daily", "weekly", "monthly".
std::string_view reset_period_name(ResetPeriod p);
// The exact lowercase names above; anything else is Errc::invalid_argument.
Result<ResetPeriod> parse_reset_period(std::string_view text);

// The last boundary at or before t: top of the hour, 00:00 UTC, Monday 00:00 UTC (ISO
// week) or the 1st of the month 00:00 UTC. For never there is no boundary, and the result
// is TimePoint::min(), which no real last_reset_at precedes.
TimePoint period_start(ResetPeriod p, TimePoint t);

// The first boundary strictly after t; TimePoint::max() for never.
TimePoint next_reset(ResetPeriod p, TimePoint t);

// Returned by seconds_until_reset for never: no reset is scheduled.
inline constexpr int64_t kNoReset = -1;

// Whole seconds from now until next_reset, rounded up so that waiting that long always
// reaches the boundary; at least 1. kNoReset for never.
int64_t seconds_until_reset(ResetPeriod p, TimePoint now);

// True when a boundary lies in (last_reset_at, now]: the scope must reset before use.
// Never false for never.
bool reset_due(ResetPeriod p, TimePoint last_reset_at, TimePoint now);

// ISO-8601 UTC: "2024-02-29T00:00:00Z", with ".250000" microseconds only when non-zero.
// Years outside 0000..9999 use the ISO expanded form with a sign ("+10000-01-01...",
// "-0001-12-31..."), so that TimePoint::min() and max() still format and round-trip.
std::string format_utc(TimePoint t);

// Accepts what format_utc writes, a fraction of 1 to 6 digits, and a plain date
// "2024-02-29" meaning 00:00:00Z. Strict otherwise: 'T' and 'Z' are required, no offsets,
// no leap second, no lowercase. Errc::invalid_argument on malformed text, impossible dates
// (2023-02-29) or instants outside TimePoint's range.
Result<TimePoint> parse_utc(std::string_view text);

}  // namespace budgetd
