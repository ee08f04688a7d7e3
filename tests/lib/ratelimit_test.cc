#include "lib/ratelimit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <string>

namespace budgetd {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// 2024-01-01 00:00:00 UTC: a multiple of every bucket width (0.6 s, 6 s, 360 s, 8640 s), so
// the expected boundaries below are plain offsets from it.
constexpr TimePoint kStart = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1};
constexpr microseconds kOneMicro{1};

RateLimitConfig Limits(uint64_t per_minute, uint64_t per_hour, uint64_t per_day, uint64_t burst) {
  return RateLimitConfig{per_minute, per_hour, per_day, burst};
}

SlidingWindow MinuteWindow() { return *SlidingWindow::create(minutes(1)); }

// ---- SlidingWindow ------------------------------------------------------------------------

TEST(SlidingWindow, CreateRejectsBadShapes) {
  EXPECT_EQ(SlidingWindow::create(Duration::zero()).error().code, Errc::invalid_argument);
  EXPECT_EQ(SlidingWindow::create(seconds(-1)).error().code, Errc::invalid_argument);
  EXPECT_EQ(SlidingWindow::create(seconds(60), 0).error().code, Errc::invalid_argument);
  EXPECT_EQ(SlidingWindow::create(seconds(60), SlidingWindow::kMaxBucketCount + 1).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(SlidingWindow::create(microseconds(10), 3).error().code, Errc::invalid_argument);
  ASSERT_TRUE(SlidingWindow::create(seconds(60), SlidingWindow::kMaxBucketCount).has_value());

  const SlidingWindow w = MinuteWindow();
  EXPECT_EQ(w.window(), seconds(60));
  EXPECT_EQ(w.bucket_count(), 10u);
  EXPECT_EQ(w.bucket_width(), seconds(6));
}

TEST(SlidingWindow, RecordReturnsCountIncludingTheRequest) {
  SlidingWindow w = MinuteWindow();
  EXPECT_EQ(w.count(kStart), 0u);
  EXPECT_EQ(w.record(kStart), 1u);
  EXPECT_EQ(w.record(kStart + seconds(1)), 2u);
  EXPECT_EQ(w.record(kStart + seconds(30)), 3u);
  EXPECT_EQ(w.count(kStart + seconds(30)), 3u);
}

// A request at r is counted exactly while t < (floor(r/w) + bucket_count + 1) * w.
TEST(SlidingWindow, ErrorBoundAtMostOneBucketWidthBeyondTheWindow) {
  // Recorded at the start of a bucket: counted for window + w, the maximum.
  SlidingWindow at_start = MinuteWindow();
  at_start.record(kStart);
  EXPECT_EQ(at_start.count(kStart + seconds(66) - kOneMicro), 1u);
  EXPECT_EQ(at_start.count(kStart + seconds(66)), 0u);

  // Recorded in the last microsecond of a bucket: counted for window + 1 us, the minimum.
  SlidingWindow at_end = MinuteWindow();
  const TimePoint r = kStart + seconds(6) - kOneMicro;
  at_end.record(r);
  EXPECT_EQ(at_end.count(r + seconds(60)), 1u);  // never under-counts the last window
  EXPECT_EQ(at_end.count(r + seconds(60) + kOneMicro), 0u);

  // Mid-bucket: 2.5 s into bucket 0, so 3.5 s beyond the window.
  SlidingWindow mid = MinuteWindow();
  mid.record(kStart + milliseconds(2500));
  EXPECT_EQ(mid.count(kStart + milliseconds(2500) + seconds(60) + milliseconds(3500) - kOneMicro),
            1u);
  EXPECT_EQ(mid.count(kStart + seconds(66)), 0u);
}

TEST(SlidingWindow, RingReusesSlotsAndStaysExact) {
  SlidingWindow w = MinuteWindow();
  // One request per bucket for 50 buckets: the count settles at bucket_count + 1.
  for (int64_t j = 0; j < 50; ++j) {
    const uint64_t expected = static_cast<uint64_t>(std::min<int64_t>(j + 1, 11));
    EXPECT_EQ(w.record(kStart + seconds(6 * j) + seconds(1)), expected) << "bucket " << j;
  }
  // Then silence: one bucket slides out every 6 s.
  const TimePoint last = kStart + seconds(6 * 49);
  EXPECT_EQ(w.count(last + seconds(6)), 10u);
  EXPECT_EQ(w.count(last + seconds(60)), 1u);
  EXPECT_EQ(w.count(last + seconds(66)), 0u);
}

TEST(SlidingWindow, TimeUntilSlotAvailableIsExact) {
  SlidingWindow w = MinuteWindow();
  for (int i = 0; i < 3; ++i) w.record(kStart + seconds(1));   // bucket 0
  for (int i = 0; i < 2; ++i) w.record(kStart + seconds(13));  // bucket 2
  const TimePoint t = kStart + seconds(20);
  EXPECT_EQ(w.time_until_slot_available(t, 0), Duration::zero());  // unlimited
  EXPECT_EQ(w.time_until_slot_available(t, 6), Duration::zero());  // 5 < 6
  // Full at 5: bucket 0 leaves at 66 s.
  EXPECT_EQ(w.time_until_slot_available(t, 5), seconds(46));
  EXPECT_EQ(w.time_until_slot_available(t, 3), seconds(46));
  // Needs both buckets gone: bucket 2 leaves at 78 s.
  EXPECT_EQ(w.time_until_slot_available(t, 2), seconds(58));
  EXPECT_EQ(w.time_until_slot_available(t, 1), seconds(58));
  EXPECT_EQ(w.time_until_empty(t), seconds(58));
  EXPECT_EQ(w.time_until_empty(kStart + seconds(78)), Duration::zero());
  // Sub-second precision: the seed's 5.2 s.
  EXPECT_EQ(w.time_until_slot_available(kStart + milliseconds(60'800), 5), milliseconds(5200));
}

TEST(SlidingWindow, ClockSteppingBackFreesNothing) {
  SlidingWindow w = MinuteWindow();
  w.record(kStart + seconds(100));
  // An earlier time is read as the newest bucket (96..102 s), not as "nothing recorded yet".
  EXPECT_EQ(w.count(kStart), 1u);
  EXPECT_EQ(w.record(kStart), 2u);
  EXPECT_EQ(w.count(kStart + seconds(162) - kOneMicro), 2u);
  EXPECT_EQ(w.count(kStart + seconds(162)), 0u);
  // Measured from the (earlier) time asked about.
  EXPECT_EQ(w.time_until_empty(kStart + seconds(50)), seconds(112));
}

TEST(SlidingWindow, ClearForgetsEverything) {
  SlidingWindow w = MinuteWindow();
  w.record(kStart + seconds(100));
  w.clear();
  EXPECT_EQ(w.count(kStart + seconds(100)), 0u);
  EXPECT_EQ(w.record(kStart), 1u);  // no memory of the newer bucket either
  EXPECT_EQ(w.count(kStart + seconds(66)), 0u);
}

TEST(SlidingWindow, TimesBeforeTheEpochUseFloorBuckets) {
  SlidingWindow w = MinuteWindow();
  const TimePoint r = TimePoint{} - seconds(1);  // bucket -1 covers [-6 s, 0)
  w.record(r);
  EXPECT_EQ(w.count(TimePoint{} + seconds(60) - kOneMicro), 1u);
  EXPECT_EQ(w.count(TimePoint{} + seconds(60)), 0u);
}

// ---- RateLimiter: ids and configuration ---------------------------------------------------

class RateLimiterTest : public ::testing::Test {
 protected:
  FakeClock clock{kStart};
};

TEST_F(RateLimiterTest, ValidateId) {
  EXPECT_TRUE(RateLimiter::validate_id("user-1").has_value());
  EXPECT_TRUE(RateLimiter::validate_id(std::string(256, 'a')).has_value());
  EXPECT_EQ(RateLimiter::validate_id("").error().code, Errc::invalid_id);
  EXPECT_EQ(RateLimiter::validate_id(std::string(257, 'a')).error().code, Errc::invalid_id);
  EXPECT_EQ(RateLimiter::validate_id("a\nb").error().code, Errc::invalid_id);
  EXPECT_EQ(RateLimiter::validate_id(std::string_view("a\0b", 3)).error().code, Errc::invalid_id);
  EXPECT_EQ(RateLimiter::validate_id("a\x7f").error().code, Errc::invalid_id);
  EXPECT_EQ(RateLimiter::validate_id("a\nb").error().detail, "id: control byte 0x0a at offset 1");
  EXPECT_EQ(RateLimiter::validate_id(std::string(300, 'a')).error().detail,
            "id: 300 bytes, limit 256");
  EXPECT_TRUE(RateLimiter::validate_id("/api/analyze").has_value());
  EXPECT_TRUE(RateLimiter::validate_id("ünïcode").has_value());
}

TEST_F(RateLimiterTest, EveryMethodTakingAnIdRejectsInvalidOnes) {
  RateLimiter limiter(clock);
  const std::string too_long(257, 'x');
  EXPECT_EQ(limiter.check_rate_limit("").error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.check_rate_limit(too_long).error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.check_rate_limit("alice", "").error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.check_rate_limit("alice", too_long).error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.check_rate_limit("").error().detail, "user: empty");
  EXPECT_EQ(limiter.check_rate_limit("alice", "").error().detail, "endpoint: empty");
  EXPECT_EQ(limiter.get_usage("").error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.get_usage("alice", too_long).error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.get_config("").error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.get_config("alice", too_long).error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.reset_user("").error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.set_user_limits("", {}).error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.set_endpoint_limits(too_long, {}).error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.clear_user_limits("").error().code, Errc::invalid_id);
  EXPECT_EQ(limiter.clear_endpoint_limits("").error().code, Errc::invalid_id);
  EXPECT_TRUE(limiter.user_limits().empty());
  EXPECT_TRUE(limiter.endpoint_limits().empty());
  EXPECT_EQ(limiter.tracked_pairs(), 0u);
}

TEST_F(RateLimiterTest, EndpointOverridesUserOverridesDefault) {
  RateLimiter limiter(clock, Limits(10, 100, 1000, 0));
  ASSERT_TRUE(limiter.set_user_limits("alice", Limits(5, 50, 500, 0)).has_value());
  ASSERT_TRUE(limiter.set_endpoint_limits("/x", Limits(2, 0, 0, 0)).has_value());

  EXPECT_EQ(*limiter.get_config("bob"), Limits(10, 100, 1000, 0));
  EXPECT_EQ(*limiter.get_config("alice"), Limits(5, 50, 500, 0));
  EXPECT_EQ(*limiter.get_config("alice", "/y"), Limits(5, 50, 500, 0));
  EXPECT_EQ(*limiter.get_config("bob", "/y"), Limits(10, 100, 1000, 0));
  // The endpoint's config replaces the user's whole config: hour and day become unlimited.
  EXPECT_EQ(*limiter.get_config("alice", "/x"), Limits(2, 0, 0, 0));
  EXPECT_EQ(*limiter.get_config("bob", "/x"), Limits(2, 0, 0, 0));

  // And enforcement follows the effective config, with separate windows per endpoint.
  EXPECT_FALSE(limiter.check_rate_limit("alice", "/x")->exceeded);
  EXPECT_FALSE(limiter.check_rate_limit("alice", "/x")->exceeded);
  const auto refused = *limiter.check_rate_limit("alice", "/x");
  EXPECT_TRUE(refused.exceeded);
  EXPECT_EQ(refused.limit, 2u);
  EXPECT_EQ(limiter.check_rate_limit("alice", "/y")->remaining, 4u);  // 5 - 1
  EXPECT_EQ(limiter.check_rate_limit("bob", "/y")->remaining, 9u);    // 10 - 1
  EXPECT_EQ(limiter.check_rate_limit("bob", "/x")->remaining, 1u);    // own window on /x

  limiter.set_default_config(Limits(7, 0, 0, 0));
  EXPECT_EQ(limiter.default_config(), Limits(7, 0, 0, 0));
  EXPECT_EQ(*limiter.get_config("carol"), Limits(7, 0, 0, 0));
}

TEST_F(RateLimiterTest, ClearLimitsFallsBackAndListsWhatIsConfigured) {
  RateLimiter limiter(clock, Limits(10, 0, 0, 0));
  ASSERT_TRUE(limiter.set_user_limits("alice", Limits(5, 0, 0, 0)).has_value());
  ASSERT_TRUE(limiter.set_user_limits("bob", Limits(6, 0, 0, 0)).has_value());
  ASSERT_TRUE(limiter.set_user_limits("alice", Limits(4, 0, 0, 0)).has_value());  // replaces
  ASSERT_TRUE(limiter.set_endpoint_limits("/x", Limits(2, 0, 0, 0)).has_value());

  ASSERT_EQ(limiter.user_limits().size(), 2u);
  EXPECT_EQ(limiter.user_limits().at("alice"), Limits(4, 0, 0, 0));
  EXPECT_EQ(limiter.user_limits().at("bob"), Limits(6, 0, 0, 0));
  ASSERT_EQ(limiter.endpoint_limits().size(), 1u);
  EXPECT_EQ(limiter.endpoint_limits().begin()->first, "/x");

  EXPECT_EQ(*limiter.clear_endpoint_limits("/x"), true);
  EXPECT_EQ(*limiter.clear_endpoint_limits("/x"), false);
  EXPECT_EQ(*limiter.get_config("alice", "/x"), Limits(4, 0, 0, 0));
  EXPECT_EQ(*limiter.clear_user_limits("alice"), true);
  EXPECT_EQ(*limiter.clear_user_limits("alice"), false);
  EXPECT_EQ(*limiter.clear_user_limits("nobody"), false);
  EXPECT_EQ(*limiter.get_config("alice", "/x"), Limits(10, 0, 0, 0));
  EXPECT_EQ(limiter.user_limits().size(), 1u);
  EXPECT_TRUE(limiter.endpoint_limits().empty());
}

TEST_F(RateLimiterTest, DefaultConfigMatchesTheSeed) {
  RateLimiter limiter(clock);
  EXPECT_EQ(*limiter.get_config("anyone"), Limits(60, 1000, 10000, 10));
}

// ---- RateLimiter: each window refusing ----------------------------------------------------

TEST_F(RateLimiterTest, MinuteLimitSeedExample) {
  RateLimiter limiter(clock, Limits(60, 0, 0, 0));
  for (int i = 0; i < 60; ++i) {
    const auto r = *limiter.check_rate_limit("user-1");
    ASSERT_FALSE(r.exceeded) << i;
    EXPECT_EQ(r.remaining, static_cast<uint64_t>(59 - i));
    EXPECT_EQ(r.limit_type, "");
    EXPECT_EQ(r.retry_after, Duration::zero());
  }
  clock.advance(milliseconds(60'800));
  const auto r = *limiter.check_rate_limit("user-1");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "minute");
  EXPECT_EQ(r.current, 60u);
  EXPECT_EQ(r.limit, 60u);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_EQ(r.retry_after, milliseconds(5200));

  // retry_after is exact: one microsecond early is still refused, on time is admitted.
  clock.advance(r.retry_after - kOneMicro);
  EXPECT_TRUE(limiter.check_rate_limit("user-1")->exceeded);
  clock.advance(kOneMicro);
  const auto again = *limiter.check_rate_limit("user-1");
  EXPECT_FALSE(again.exceeded);
  EXPECT_EQ(again.remaining, 59u);
}

TEST_F(RateLimiterTest, HourLimit) {
  RateLimiter limiter(clock, Limits(0, 2, 0, 0));
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  clock.advance(seconds(100));
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "hour");
  EXPECT_EQ(r.current, 2u);
  EXPECT_EQ(r.limit, 2u);
  EXPECT_EQ(r.retry_after, seconds(3960 - 100));  // 11 buckets of 360 s
}

TEST_F(RateLimiterTest, DayLimit) {
  RateLimiter limiter(clock, Limits(0, 0, 1, 0));
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  clock.advance(hours(1));
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "day");
  EXPECT_EQ(r.current, 1u);
  EXPECT_EQ(r.limit, 1u);
  EXPECT_EQ(r.retry_after, seconds(95'040 - 3600));  // 11 buckets of 8640 s
  clock.advance(r.retry_after);
  EXPECT_FALSE(limiter.check_rate_limit("u")->exceeded);
}

TEST_F(RateLimiterTest, BurstLimitBoundary) {
  RateLimiter limiter(clock, Limits(0, 0, 0, 3));
  // Exactly `burst` requests pass at one instant; the next is refused.
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded) << i;
  clock.advance(milliseconds(100));
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "burst");
  EXPECT_EQ(r.current, 3u);
  EXPECT_EQ(r.limit, 3u);
  EXPECT_EQ(r.retry_after, milliseconds(6600 - 100));  // 11 buckets of 0.6 s
  clock.set(kStart + milliseconds(6600) - kOneMicro);
  EXPECT_TRUE(limiter.check_rate_limit("u")->exceeded);
  clock.set(kStart + milliseconds(6600));
  const auto after = *limiter.check_rate_limit("u");
  EXPECT_FALSE(after.exceeded);
  EXPECT_EQ(after.remaining, 2u);
}

TEST_F(RateLimiterTest, BurstIsASlidingWindowNotAFixedInterval) {
  RateLimiter limiter(clock, Limits(0, 0, 0, 3));
  clock.set(kStart);
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  clock.set(kStart + seconds(3));
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  // 6.5 s: the request at 0 s is still inside the burst window, so this is the third.
  clock.set(kStart + milliseconds(6500));
  const auto third = *limiter.check_rate_limit("u");
  ASSERT_FALSE(third.exceeded);
  EXPECT_EQ(third.remaining, 0u);
  const auto fourth = *limiter.check_rate_limit("u");
  EXPECT_TRUE(fourth.exceeded);
  EXPECT_EQ(fourth.retry_after, milliseconds(100));
  // 6.6 s: the request at 0 s has slid out.
  clock.set(kStart + milliseconds(6600));
  EXPECT_FALSE(limiter.check_rate_limit("u")->exceeded);
}

TEST_F(RateLimiterTest, BurstThenMinuteWithTheSeedDefaults) {
  RateLimiter limiter(clock);  // 60/min, burst 10
  // Six bursts of 10, each as soon as the burst window allows: 6.6 s apart.
  for (int b = 0; b < 6; ++b) {
    clock.set(kStart + milliseconds(6600 * b));
    for (int i = 0; i < 10; ++i) ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
    const auto r = *limiter.check_rate_limit("u");
    ASSERT_TRUE(r.exceeded);
    if (b < 5) {
      EXPECT_EQ(r.limit_type, "burst") << b;
      EXPECT_EQ(r.retry_after, milliseconds(6600)) << b;
    } else {
      // Burst and minute are both full; the minute frees later (66 s), so it is reported.
      EXPECT_EQ(r.limit_type, "minute");
      EXPECT_EQ(r.current, 60u);
      EXPECT_EQ(r.retry_after, milliseconds(66'000 - 33'000));
    }
  }
  // 39.6 s: the burst window is empty again but the minute holds 60.
  clock.set(kStart + milliseconds(39'600));
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "minute");
  EXPECT_EQ(r.current, 60u);
  EXPECT_EQ(r.limit, 60u);
  EXPECT_EQ(r.retry_after, milliseconds(66'000 - 39'600));  // the 10 of bucket 0 leave at 66 s
}

TEST_F(RateLimiterTest, RefusalReportsTheWindowThatFreesLast) {
  RateLimiter limiter(clock, Limits(2, 2, 0, 0));
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  clock.advance(seconds(1));
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "hour");  // the minute frees at 66 s, the hour only at 3960 s
  EXPECT_EQ(r.retry_after, seconds(3959));
}

TEST_F(RateLimiterTest, RemainingIsTheTightestWindow) {
  RateLimiter limiter(clock, Limits(5, 3, 100, 0));
  EXPECT_EQ(limiter.check_rate_limit("u")->remaining, 2u);  // hour: 3 - 1
  EXPECT_EQ(limiter.check_rate_limit("u")->remaining, 1u);
  EXPECT_EQ(limiter.check_rate_limit("u")->remaining, 0u);
  EXPECT_TRUE(limiter.check_rate_limit("u")->exceeded);
}

TEST_F(RateLimiterTest, ZeroMeansUnlimited) {
  RateLimiter limiter(clock, Limits(0, 0, 0, 0));
  for (int i = 0; i < 1000; ++i) {
    const auto r = *limiter.check_rate_limit("u");
    ASSERT_FALSE(r.exceeded);
    ASSERT_EQ(r.remaining, kUnlimitedRemaining);
  }
  const auto usage = *limiter.get_usage("u");
  EXPECT_EQ(usage.at("minute").current, 1000u);
  EXPECT_EQ(usage.at("minute").limit, 0u);
  EXPECT_EQ(usage.at("minute").remaining, kUnlimitedRemaining);

  // Counts were kept, so a limit set later applies to the traffic already seen.
  limiter.set_default_config(Limits(0, 1000, 0, 0));
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.limit_type, "hour");
  EXPECT_EQ(r.current, 1000u);
}

TEST_F(RateLimiterTest, RefusedRequestsAreNotRecorded) {
  RateLimiter limiter(clock, Limits(2, 0, 0, 0));
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  for (int i = 0; i < 50; ++i) {
    clock.advance(seconds(1));
    ASSERT_TRUE(limiter.check_rate_limit("u")->exceeded);
  }
  EXPECT_EQ(limiter.get_usage("u")->at("minute").current, 2u);
  EXPECT_EQ(limiter.get_usage("u")->at("hour").current, 2u);
  // The refusals did not push the recovery back: the slots free at 66 s as they would have.
  clock.set(kStart + seconds(66));
  EXPECT_EQ(limiter.check_rate_limit("u")->remaining, 1u);
}

TEST_F(RateLimiterTest, RecordFalseOnlyAsks) {
  RateLimiter limiter(clock, Limits(2, 0, 0, 0));
  for (int i = 0; i < 5; ++i) {
    const auto r = *limiter.check_rate_limit("u", "default", false);
    ASSERT_FALSE(r.exceeded);
    EXPECT_EQ(r.remaining, 2u);  // nothing taken by asking
  }
  EXPECT_EQ(limiter.tracked_pairs(), 0u);  // probing creates no state
  EXPECT_EQ(limiter.get_usage("u")->at("minute").current, 0u);

  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  EXPECT_EQ(limiter.check_rate_limit("u", "default", false)->remaining, 1u);
  ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  const auto full = *limiter.check_rate_limit("u", "default", false);
  EXPECT_TRUE(full.exceeded);
  EXPECT_EQ(full.limit_type, "minute");
  EXPECT_EQ(full.current, 2u);
  EXPECT_EQ(full.retry_after, seconds(66));
  EXPECT_EQ(limiter.get_usage("u")->at("minute").current, 2u);
}

// Hammer the limiter every 100 ms for 5 minutes and check the admitted timestamps against
// the documented bound: never more than the limit in any 60 s span, and a refusal only when
// at least `limit` requests were admitted within the last 66 s (window + one bucket).
TEST_F(RateLimiterTest, AdmissionsRespectTheWindowBound) {
  constexpr uint64_t kLimit = 10;
  RateLimiter limiter(clock, Limits(kLimit, 0, 0, 0));
  std::deque<TimePoint> admitted;
  for (int step = 0; step < 3000; ++step) {
    clock.set(kStart + milliseconds(100 * step) + microseconds(step % 7));
    const TimePoint now = clock.now();
    const auto r = *limiter.check_rate_limit("u");
    auto within = [&](Duration span) {
      return static_cast<uint64_t>(std::count_if(admitted.begin(), admitted.end(),
                                                 [&](TimePoint a) { return now - a < span; }));
    };
    if (r.exceeded) {
      ASSERT_GE(within(seconds(66)), kLimit) << "refused too early at step " << step;
    } else {
      ASSERT_LT(within(seconds(60)), kLimit) << "admitted too many at step " << step;
      admitted.push_back(now);
    }
  }
  EXPECT_GE(admitted.size(), 5 * kLimit * 60 / 66);
}

// ---- RateLimiter: usage, reset, cleanup, capacity -----------------------------------------

TEST_F(RateLimiterTest, GetUsagePerWindow) {
  RateLimiter limiter(clock, Limits(60, 1000, 10000, 10));
  for (int i = 0; i < 4; ++i) ASSERT_FALSE(limiter.check_rate_limit("u", "/a")->exceeded);
  clock.advance(milliseconds(10'500));
  const auto usage = *limiter.get_usage("u", "/a");
  ASSERT_EQ(usage.size(), 4u);

  const WindowUsage& minute = usage.at("minute");
  EXPECT_EQ(minute.current, 4u);
  EXPECT_EQ(minute.limit, 60u);
  EXPECT_EQ(minute.remaining, 56u);
  EXPECT_EQ(minute.reset_in_seconds, 56);  // 66 - 10.5 = 55.5, rounded up

  const WindowUsage& hour = usage.at("hour");
  EXPECT_EQ(hour.current, 4u);
  EXPECT_EQ(hour.remaining, 996u);
  EXPECT_EQ(hour.reset_in_seconds, 3950);

  const WindowUsage& day = usage.at("day");
  EXPECT_EQ(day.current, 4u);
  EXPECT_EQ(day.limit, 10000u);
  EXPECT_EQ(day.remaining, 9996u);
  EXPECT_EQ(day.reset_in_seconds, 95'030);

  const WindowUsage& burst = usage.at("burst");  // slid out after 6.6 s
  EXPECT_EQ(burst.current, 0u);
  EXPECT_EQ(burst.remaining, 10u);
  EXPECT_EQ(burst.reset_in_seconds, 0);

  // Another endpoint and an unknown user have nothing counted.
  const auto other = *limiter.get_usage("u", "/b");
  EXPECT_EQ(other.at("minute").current, 0u);
  EXPECT_EQ(other.at("minute").remaining, 60u);
  EXPECT_EQ(other.at("day").reset_in_seconds, 0);
  EXPECT_EQ(limiter.get_usage("nobody")->at("hour").current, 0u);
}

TEST_F(RateLimiterTest, GetUsageRemainingIsZeroWhenALimitWasLowered) {
  RateLimiter limiter(clock, Limits(10, 0, 0, 0));
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(limiter.check_rate_limit("u")->exceeded);
  limiter.set_default_config(Limits(3, 0, 0, 0));
  const auto usage = *limiter.get_usage("u");
  EXPECT_EQ(usage.at("minute").current, 5u);
  EXPECT_EQ(usage.at("minute").remaining, 0u);
  const auto r = *limiter.check_rate_limit("u");
  EXPECT_TRUE(r.exceeded);
  EXPECT_EQ(r.current, 5u);
  EXPECT_EQ(r.limit, 3u);
}

TEST_F(RateLimiterTest, ResetUserCountsWindowsCleared) {
  RateLimiter limiter(clock, Limits(1, 0, 0, 0));
  ASSERT_FALSE(limiter.check_rate_limit("alice", "/a")->exceeded);
  ASSERT_FALSE(limiter.check_rate_limit("alice", "/b")->exceeded);
  ASSERT_FALSE(limiter.check_rate_limit("bob", "/a")->exceeded);
  ASSERT_TRUE(limiter.check_rate_limit("alice", "/a")->exceeded);
  EXPECT_EQ(limiter.tracked_pairs(), 3u);

  EXPECT_EQ(*limiter.reset_user("alice"), 8u);  // 2 endpoints x (minute, hour, day, burst)
  EXPECT_EQ(*limiter.reset_user("alice"), 0u);
  EXPECT_EQ(*limiter.reset_user("nobody"), 0u);
  EXPECT_EQ(limiter.tracked_pairs(), 1u);
  EXPECT_FALSE(limiter.check_rate_limit("alice", "/a")->exceeded);
  EXPECT_TRUE(limiter.check_rate_limit("bob", "/a")->exceeded);  // bob untouched

  // Windows already dropped by cleanup are not counted again.
  clock.advance(seconds(7));  // burst windows are empty now
  EXPECT_EQ(limiter.cleanup_expired(), 2u);
  EXPECT_EQ(*limiter.reset_user("alice"), 3u);
}

TEST_F(RateLimiterTest, CleanupExpiredDropsEachWindowWhenItEmpties) {
  RateLimiter limiter(clock, Limits(0, 0, 0, 0));
  ASSERT_FALSE(limiter.check_rate_limit("u", "/a")->exceeded);
  EXPECT_EQ(limiter.cleanup_expired(), 0u);

  const struct {
    Duration empty_at;
    const char* window;
  } steps[] = {{milliseconds(6600), "burst"},
               {seconds(66), "minute"},
               {seconds(3960), "hour"},
               {seconds(95'040), "day"}};
  for (const auto& step : steps) {
    clock.set(kStart + step.empty_at - kOneMicro);
    EXPECT_EQ(limiter.cleanup_expired(), 0u) << step.window;
    EXPECT_EQ(limiter.get_usage("u", "/a")->at(step.window).current, 1u) << step.window;
    clock.set(kStart + step.empty_at);
    EXPECT_EQ(limiter.cleanup_expired(), 1u) << step.window;
    EXPECT_EQ(limiter.get_usage("u", "/a")->at(step.window).current, 0u) << step.window;
  }
  EXPECT_EQ(limiter.tracked_pairs(), 0u);
  EXPECT_EQ(*limiter.reset_user("u"), 0u);

  // Several pairs at once, and a pair still in use keeps its live windows.
  ASSERT_FALSE(limiter.check_rate_limit("u", "/a")->exceeded);
  ASSERT_FALSE(limiter.check_rate_limit("v", "/a")->exceeded);
  clock.advance(seconds(60));
  ASSERT_FALSE(limiter.check_rate_limit("v", "/a")->exceeded);
  clock.advance(seconds(7));
  EXPECT_EQ(limiter.cleanup_expired(), 3u);  // u: burst, minute; v: burst
  EXPECT_EQ(limiter.tracked_pairs(), 2u);
}

TEST_F(RateLimiterTest, TrackedPairsAreBounded) {
  RateLimiter limiter(clock, Limits(0, 0, 0, 0));
  EXPECT_EQ(limiter.max_tracked_pairs(), RateLimiter::kDefaultMaxTrackedPairs);
  EXPECT_EQ(limiter.set_max_tracked_pairs(0).error().code, Errc::invalid_argument);
  ASSERT_TRUE(limiter.set_max_tracked_pairs(2).has_value());

  ASSERT_TRUE(limiter.check_rate_limit("u", "/a").has_value());
  clock.advance(hours(3));  // day bucket 1: /b outlives /a's day window
  ASSERT_TRUE(limiter.check_rate_limit("u", "/b").has_value());
  const auto full = limiter.check_rate_limit("u", "/c");
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, Errc::capacity_exceeded);
  EXPECT_EQ(full.error().detail, "rate limiter tracks 2 (user, endpoint) pairs, limit 2");
  EXPECT_EQ(limiter.tracked_pairs(), 2u);
  // Existing pairs and record = false still work at capacity.
  EXPECT_TRUE(limiter.check_rate_limit("u", "/b").has_value());
  EXPECT_TRUE(limiter.check_rate_limit("u", "/c", false).has_value());

  // /a's last request (0 s) leaves its day window at 95040 s: one microsecond before, there
  // is still no room; from then on, recording a new pair drops /a to make room.
  clock.set(kStart + seconds(95'040) - kOneMicro);
  EXPECT_EQ(limiter.check_rate_limit("u", "/c").error().code, Errc::capacity_exceeded);
  clock.set(kStart + seconds(95'040));
  ASSERT_TRUE(limiter.check_rate_limit("u", "/c").has_value());
  EXPECT_EQ(limiter.tracked_pairs(), 2u);  // /b and /c
  EXPECT_EQ(limiter.check_rate_limit("u", "/a").error().code, Errc::capacity_exceeded);
}

}  // namespace
}  // namespace budgetd
