// Request-rate limiting per (user, endpoint): sliding windows of a minute, an hour and a
// day, plus a short burst window (seed 002 `RateLimiter`).
//
// Single-threaded by design: the daemon's event loop owns the RateLimiter and is the only
// caller, so there is no lock (the seed's RLock has no job here). Time comes only from the
// injected Clock; nothing here logs, sleeps or reads a wall clock.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/clock.h"
#include "lib/error.h"

namespace budgetd {

// Durable records (lib/state.h), which includes this header.
struct RateLimitRecord;
struct RateWindowRecord;
struct EngineChanges;

// Counts requests over a sliding window of fixed length in a fixed ring of buckets, so its
// memory does not depend on the request rate.
//
// Time is cut into aligned buckets of width w = window / bucket_count (bucket j covers
// [j*w, (j+1)*w) from the Unix epoch). count(t) sums the bucket holding t and the
// bucket_count buckets before it: bucket_count + 1 counters, the extra one being the bucket
// that is sliding out. Keeping it makes the count err toward refusing rather than admitting.
//
// Error bound, exactly: a request recorded at r is counted at every t with
//   r <= t < end(r) = (floor(r/w) + bucket_count + 1) * w,
// where r + window < end(r) <= r + window + w.
// So count(t) includes every request with t - r <= window (it never under-counts), and may
// include requests up to one bucket width older (t - r < window + w). A limit enforced on it
// is never exceeded in any span of length `window`; a used slot may stay taken for up to w
// longer than an exact window would keep it.
//
// A clock that steps backwards never frees a slot: a time before the newest recorded bucket
// is treated as lying in that bucket.
class SlidingWindow {
 public:
  static constexpr std::size_t kDefaultBucketCount = 10;
  // Bounds the ring, and so the memory of one window, whatever a caller asks for.
  static constexpr std::size_t kMaxBucketCount = 1000;

  // Errc::invalid_argument unless window > 0, 1 <= bucket_count <= kMaxBucketCount, and
  // window is a whole number of microseconds per bucket (so the bound above is exact).
  static Result<SlidingWindow> create(Duration window,
                                      std::size_t bucket_count = kDefaultBucketCount);

  // Counts one request at t and returns count(t), this request included.
  uint64_t record(TimePoint t);
  uint64_t count(TimePoint t) const;
  // How long after t, with no further records, until count < limit: zero if that already
  // holds or if limit == 0 (unlimited); otherwise exact to the microsecond, since slots only
  // free up when a bucket slides out, at a bucket boundary.
  Duration time_until_slot_available(TimePoint t, uint64_t limit) const;
  // How long after t until every request now counted has slid out; zero if count(t) == 0.
  Duration time_until_empty(TimePoint t) const;
  void clear();

  // The durable form: (bucket index, count) of every non-empty bucket, in ring order, and
  // the newest bucket recorded into. restore() puts back exactly what these returned.
  std::vector<std::pair<int64_t, uint64_t>> buckets() const;
  int64_t newest_bucket() const { return newest_; }
  // Errc::invalid_argument for a zero count, two buckets in one ring slot, or a bucket
  // newer than `newest`; the window is unchanged then.
  Result<void> restore(std::span<const std::pair<int64_t, uint64_t>> buckets, int64_t newest);

  Duration window() const { return window_; }
  Duration bucket_width() const { return width_; }
  std::size_t bucket_count() const { return ring_.size() - 1; }

 private:
  struct Bucket {
    int64_t index = 0;  // bucket number since the epoch; meaningful only when count > 0
    uint64_t count = 0;
  };

  SlidingWindow(Duration window, std::size_t bucket_count);

  int64_t effective_bucket(TimePoint t) const;
  int64_t oldest_counted(int64_t current) const;
  uint64_t count_in(int64_t index) const;
  uint64_t count_at(int64_t current) const;
  std::size_t slot_of(int64_t index) const;

  Duration window_;
  Duration width_;
  std::vector<Bucket> ring_;  // bucket_count + 1 slots, sized once, never grows
  int64_t newest_;            // newest bucket recorded into; guards against a clock stepping back
};

enum class RateWindow : std::size_t { minute, hour, day, burst };
inline constexpr std::array<RateWindow, 4> kAllRateWindows = {RateWindow::minute, RateWindow::hour,
                                                              RateWindow::day, RateWindow::burst};
// "minute", "hour", "day", "burst": the limit_type and get_usage keys.
std::string_view rate_window_name(RateWindow w);

inline constexpr Duration kMinuteWindow = std::chrono::minutes(1);
inline constexpr Duration kHourWindow = std::chrono::hours(1);
inline constexpr Duration kDayWindow = std::chrono::hours(24);
// One bucket width of the minute window: 60 s / 10 = 6 s.
inline constexpr Duration kBurstWindow = kMinuteWindow / SlidingWindow::kDefaultBucketCount;

// Request limits for one (user, endpoint). Every field is a maximum count of admitted
// requests; 0 makes that window unlimited.
struct RateLimitConfig {
  uint64_t requests_per_minute = 60;
  uint64_t requests_per_hour = 1000;
  uint64_t requests_per_day = 10000;
  // The most requests admitted within the burst window: the last kBurstWindow (6 s, one
  // bucket width of the minute window), so a client cannot spend its whole minute in one
  // instant. With the defaults: 60 per minute, of which at most 10 per 6 s. The burst window
  // is a SlidingWindow of its own (10 buckets of 0.6 s) with the same error bound: an
  // admitted request holds a burst slot for more than 6 s and at most 6.6 s. A request is
  // admitted while fewer than `burst` requests are counted there, so exactly `burst`
  // requests pass at one instant and the next is refused with limit_type "burst".
  uint64_t burst = 10;

  uint64_t limit(RateWindow w) const;
  friend bool operator==(const RateLimitConfig&, const RateLimitConfig&) = default;
};

struct RateLimitResult {
  bool exceeded = false;
  // Requests that would still be admitted now, after this call's own effect: the minimum
  // of limit - current over the limited windows; kUnlimitedRemaining when no window has a
  // limit; 0 when exceeded.
  uint64_t remaining = 0;
  // When exceeded: the window that refused ("minute", "hour", "day" or "burst"), its count
  // and limit. If several are full, the one that frees last, so that retry_after is the
  // time until every window has room (ties go to the first of minute, hour, day, burst).
  // Empty and zero when admitted.
  std::string limit_type;
  uint64_t current = 0;
  uint64_t limit = 0;
  // When exceeded: exactly how long until the same request would be admitted, if nothing
  // else is recorded meanwhile. Zero when admitted.
  Duration retry_after{0};
};

struct WindowUsage {
  uint64_t current = 0;
  uint64_t limit = 0;      // 0: unlimited
  uint64_t remaining = 0;  // kUnlimitedRemaining when unlimited; 0 when current >= limit
  // Seconds, rounded up, until every request now counted has slid out; 0 when none is.
  int64_t reset_in_seconds = 0;
};

inline constexpr uint64_t kUnlimitedRemaining = UINT64_MAX;

// Windows are per (user, endpoint); limits are the endpoint's if it has any, else the
// user's, else the default. An override replaces the whole config, not single fields.
// Memory: one set of four SlidingWindows (minute, hour, day, burst) per tracked pair, at
// most max_tracked_pairs() pairs; a window is dropped by cleanup_expired once it is empty.
class RateLimiter {
 public:
  using ConfigMap = std::map<std::string, RateLimitConfig, std::less<>>;

  // User and endpoint ids come from clients: 1..kMaxIdLength bytes, no ASCII control bytes
  // (they end up in journal fields and error details).
  static constexpr std::size_t kMaxIdLength = 256;
  // About 1 KiB per pair; a client inventing endpoint names cannot grow memory past this.
  static constexpr std::size_t kDefaultMaxTrackedPairs = 65'536;

  explicit RateLimiter(const Clock& clock, RateLimitConfig default_config = {});

  // Errc::invalid_id for an empty id, one longer than kMaxIdLength, or one with a control
  // byte (< 0x20 or 0x7f).
  static Result<void> validate_id(std::string_view id);

  void set_default_config(RateLimitConfig config);
  const RateLimitConfig& default_config() const { return default_config_; }
  Result<void> set_user_limits(std::string user, RateLimitConfig config);
  Result<void> set_endpoint_limits(std::string endpoint, RateLimitConfig config);
  // True if the id had its own limits (now removed); it falls back to the next level.
  Result<bool> clear_user_limits(std::string_view user);
  Result<bool> clear_endpoint_limits(std::string_view endpoint);
  const ConfigMap& user_limits() const { return user_limits_; }
  const ConfigMap& endpoint_limits() const { return endpoint_limits_; }

  // The effective limits; an empty endpoint means "no endpoint" (user or default limits).
  Result<RateLimitConfig> get_config(std::string_view user, std::string_view endpoint = "") const;

  // Would one more request of user on endpoint be admitted now? If it would and record is
  // true, it is counted in every window. A refused request is never counted, so hammering a
  // full window does not push back the moment it frees. record = false only asks.
  // Errc::capacity_exceeded when recording needs a new pair beyond max_tracked_pairs() even
  // after dropping expired windows.
  Result<RateLimitResult> check_rate_limit(std::string_view user,
                                           std::string_view endpoint = "default",
                                           bool record = true);

  // Keyed "minute", "hour", "day" (seed 002) and "burst".
  Result<std::map<std::string, WindowUsage>> get_usage(std::string_view user,
                                                       std::string_view endpoint = "default") const;

  // Forgets every window of user, on all endpoints; its limits stay. Returns the number of
  // windows cleared (up to four per endpoint the user was tracked on).
  Result<std::size_t> reset_user(std::string_view user);
  // Drops every window that counts no request any more (see SlidingWindow's bound), and any
  // pair left with none. Returns the number of windows dropped. Call it periodically.
  std::size_t cleanup_expired();

  Result<void> set_max_tracked_pairs(std::size_t max_pairs);
  std::size_t max_tracked_pairs() const { return max_tracked_pairs_; }
  std::size_t tracked_pairs() const { return tracked_pairs_; }

  // ---- Durable state (the Engine's export/import and take_changes) --------------------
  // The per-user and per-endpoint limits (the default comes from the configuration), users
  // first, each in name order.
  std::vector<RateLimitRecord> export_limits() const;
  // Every tracked pair's windows, in (user, endpoint) order.
  std::vector<RateWindowRecord> export_windows() const;
  // Replaces the per-user and per-endpoint limits and every window with the records, or
  // changes nothing (an invalid id, a duplicate, a malformed window).
  Result<void> import_state(std::span<const RateLimitRecord> limits,
                            std::span<const RateWindowRecord> windows);
  // Appends what changed since the last call (limits set or cleared, pairs recorded into
  // or dropped) to `out`, each key once, and forgets it.
  void take_changes(EngineChanges& out);
  bool has_changes() const { return !dirty_limits_.empty() || !dirty_pairs_.empty(); }
  // Forgets what changed without reporting it (after an import: the store has it).
  void clear_changes();

 private:
  // Indexed by RateWindow; a disengaged slot is a window dropped (or never needed) while
  // empty, so it counts zero. `dirty`: already listed in dirty_pairs_ since the last
  // take_changes, so recording into a pair costs one flag test, not a set insertion.
  struct WindowSet : std::array<std::optional<SlidingWindow>, kAllRateWindows.size()> {
    bool dirty = false;
  };
  using EndpointWindows = std::map<std::string, WindowSet, std::less<>>;

  RateLimitConfig effective_config(std::string_view user, std::string_view endpoint) const;
  const WindowSet* find_windows(std::string_view user, std::string_view endpoint) const;
  Result<WindowSet*> windows_for_recording(std::string_view user, std::string_view endpoint);
  void mark_pair(std::string_view user, std::string_view endpoint, WindowSet* windows);

  const Clock& clock_;
  RateLimitConfig default_config_;
  ConfigMap user_limits_;
  ConfigMap endpoint_limits_;
  std::map<std::string, EndpointWindows, std::less<>> windows_;  // user -> endpoint -> windows
  std::size_t tracked_pairs_ = 0;
  std::size_t max_tracked_pairs_ = kDefaultMaxTrackedPairs;
  // Changed since take_changes(): (is endpoint, name) of limits; (user, endpoint) pairs,
  // possibly repeated (a pair dropped and recorded into again), deduplicated on take.
  std::set<std::pair<bool, std::string>> dirty_limits_;
  std::vector<std::pair<std::string, std::string>> dirty_pairs_;
};

}  // namespace budgetd
