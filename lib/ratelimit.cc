#include "lib/ratelimit.h"

#include <algorithm>
#include <utility>

#include "lib/state.h"

namespace budgetd {
namespace {

static_assert(kMinuteWindow % SlidingWindow::kDefaultBucketCount == Duration::zero());
static_assert(kHourWindow % SlidingWindow::kDefaultBucketCount == Duration::zero());
static_assert(kDayWindow % SlidingWindow::kDefaultBucketCount == Duration::zero());
static_assert(kBurstWindow % SlidingWindow::kDefaultBucketCount == Duration::zero());

// Division rounding toward minus infinity, so times before the epoch still land in the
// bucket that contains them.
int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

Duration window_length(RateWindow w) {
  switch (w) {
    case RateWindow::minute:
      return kMinuteWindow;
    case RateWindow::hour:
      return kHourWindow;
    case RateWindow::day:
      return kDayWindow;
    case RateWindow::burst:
      return kBurstWindow;
  }
  return kMinuteWindow;
}

// The lengths are compile-time constants checked by the static_asserts above, so create()
// cannot fail here.
SlidingWindow make_window(RateWindow w) { return *SlidingWindow::create(window_length(w)); }

int64_t ceil_seconds(Duration d) {
  constexpr int64_t kMicrosPerSecond = 1'000'000;
  return (d.count() + kMicrosPerSecond - 1) / kMicrosPerSecond;
}

std::string hex_byte(unsigned char c) {
  constexpr char kDigits[] = "0123456789abcdef";
  return std::string("0x") + kDigits[c >> 4] + kDigits[c & 0xf];
}

Result<void> check_id(std::string_view id, std::string_view what) {
  std::string label(what);
  if (id.empty()) return fail(Errc::invalid_id, label + ": empty");
  if (id.size() > RateLimiter::kMaxIdLength) {
    return fail(Errc::invalid_id, label + ": " + std::to_string(id.size()) + " bytes, limit " +
                                      std::to_string(RateLimiter::kMaxIdLength));
  }
  for (std::size_t i = 0; i < id.size(); ++i) {
    const auto c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c == 0x7f) {
      return fail(Errc::invalid_id,
                  label + ": control byte " + hex_byte(c) + " at offset " + std::to_string(i));
    }
  }
  return {};
}

}  // namespace

// ---- SlidingWindow ----------------------------------------------------------------------

Result<SlidingWindow> SlidingWindow::create(Duration window, std::size_t bucket_count) {
  if (window <= Duration::zero()) {
    return fail(Errc::invalid_argument, "window must be positive");
  }
  if (bucket_count == 0 || bucket_count > kMaxBucketCount) {
    return fail(Errc::invalid_argument, "bucket_count " + std::to_string(bucket_count) +
                                            " outside 1.." + std::to_string(kMaxBucketCount));
  }
  if (window.count() % static_cast<int64_t>(bucket_count) != 0) {
    return fail(Errc::invalid_argument, "window of " + std::to_string(window.count()) +
                                            " us is not a multiple of " +
                                            std::to_string(bucket_count) + " us");
  }
  return SlidingWindow(window, bucket_count);
}

SlidingWindow::SlidingWindow(Duration window, std::size_t bucket_count)
    : window_(window),
      width_(window / static_cast<int64_t>(bucket_count)),
      ring_(bucket_count + 1),
      newest_(INT64_MIN) {}

int64_t SlidingWindow::effective_bucket(TimePoint t) const {
  return std::max(floor_div(t.time_since_epoch().count(), width_.count()), newest_);
}

int64_t SlidingWindow::oldest_counted(int64_t current) const {
  return current - static_cast<int64_t>(bucket_count());
}

std::size_t SlidingWindow::slot_of(int64_t index) const {
  const auto size = static_cast<int64_t>(ring_.size());
  return static_cast<std::size_t>(((index % size) + size) % size);
}

uint64_t SlidingWindow::count_in(int64_t index) const {
  const Bucket& b = ring_[slot_of(index)];
  return b.index == index ? b.count : 0;
}

uint64_t SlidingWindow::count_at(int64_t current) const {
  const int64_t oldest = oldest_counted(current);
  uint64_t total = 0;
  for (const Bucket& b : ring_) {
    if (b.count > 0 && b.index >= oldest && b.index <= current) total += b.count;
  }
  return total;
}

uint64_t SlidingWindow::record(TimePoint t) {
  const int64_t current = effective_bucket(t);
  newest_ = current;
  Bucket& b = ring_[slot_of(current)];
  if (b.index != current) b = Bucket{current, 0};  // the slot held a bucket long slid out
  ++b.count;
  return count_at(current);
}

uint64_t SlidingWindow::count(TimePoint t) const { return count_at(effective_bucket(t)); }

Duration SlidingWindow::time_until_slot_available(TimePoint t, uint64_t limit) const {
  if (limit == 0) return Duration::zero();
  const int64_t current = effective_bucket(t);
  const uint64_t total = count_at(current);
  if (total < limit) return Duration::zero();

  // Buckets slide out oldest first; find the one whose departure brings the count under
  // the limit. Bucket j stops being counted once the current bucket is j + bucket_count + 1.
  const uint64_t must_leave = total - limit + 1;
  uint64_t left = 0;
  for (int64_t j = oldest_counted(current); j <= current; ++j) {
    left += count_in(j);
    if (left >= must_leave) {
      const int64_t freed_at_bucket = j + static_cast<int64_t>(bucket_count()) + 1;
      return Duration(freed_at_bucket * width_.count()) - t.time_since_epoch();
    }
  }
  return Duration::zero();  // unreachable: must_leave <= total because limit >= 1
}

Duration SlidingWindow::time_until_empty(TimePoint t) const {
  return time_until_slot_available(t, 1);
}

void SlidingWindow::clear() {
  std::fill(ring_.begin(), ring_.end(), Bucket{});
  newest_ = INT64_MIN;
}

std::vector<std::pair<int64_t, uint64_t>> SlidingWindow::buckets() const {
  std::vector<std::pair<int64_t, uint64_t>> out;
  for (const Bucket& b : ring_)
    if (b.count > 0) out.emplace_back(b.index, b.count);
  return out;
}

Result<void> SlidingWindow::restore(std::span<const std::pair<int64_t, uint64_t>> buckets,
                                    int64_t newest) {
  std::vector<Bucket> ring(ring_.size());
  for (const auto& [index, count] : buckets) {
    if (count == 0) return fail(Errc::invalid_argument, "window bucket with a zero count");
    if (index > newest) return fail(Errc::invalid_argument, "window bucket newer than the newest");
    Bucket& b = ring[slot_of(index)];
    if (b.count != 0) return fail(Errc::invalid_argument, "two window buckets in one slot");
    b = Bucket{index, count};
  }
  ring_ = std::move(ring);
  newest_ = newest;
  return {};
}

// ---- RateLimitConfig --------------------------------------------------------------------

std::string_view rate_window_name(RateWindow w) {
  switch (w) {
    case RateWindow::minute:
      return "minute";
    case RateWindow::hour:
      return "hour";
    case RateWindow::day:
      return "day";
    case RateWindow::burst:
      return "burst";
  }
  return "unknown";
}

uint64_t RateLimitConfig::limit(RateWindow w) const {
  switch (w) {
    case RateWindow::minute:
      return requests_per_minute;
    case RateWindow::hour:
      return requests_per_hour;
    case RateWindow::day:
      return requests_per_day;
    case RateWindow::burst:
      return burst;
  }
  return 0;
}

// ---- RateLimiter ------------------------------------------------------------------------

RateLimiter::RateLimiter(const Clock& clock, RateLimitConfig default_config)
    : clock_(clock), default_config_(default_config) {}

Result<void> RateLimiter::validate_id(std::string_view id) { return check_id(id, "id"); }

void RateLimiter::set_default_config(RateLimitConfig config) { default_config_ = config; }

Result<void> RateLimiter::set_user_limits(std::string user, RateLimitConfig config) {
  if (auto ok = check_id(user, "user"); !ok) return ok;
  dirty_limits_.emplace(false, user);
  user_limits_.insert_or_assign(std::move(user), config);
  return {};
}

Result<void> RateLimiter::set_endpoint_limits(std::string endpoint, RateLimitConfig config) {
  if (auto ok = check_id(endpoint, "endpoint"); !ok) return ok;
  dirty_limits_.emplace(true, endpoint);
  endpoint_limits_.insert_or_assign(std::move(endpoint), config);
  return {};
}

Result<bool> RateLimiter::clear_user_limits(std::string_view user) {
  if (auto ok = check_id(user, "user"); !ok) return std::unexpected(ok.error());
  const auto it = user_limits_.find(user);
  if (it == user_limits_.end()) return false;
  dirty_limits_.emplace(false, it->first);
  user_limits_.erase(it);
  return true;
}

Result<bool> RateLimiter::clear_endpoint_limits(std::string_view endpoint) {
  if (auto ok = check_id(endpoint, "endpoint"); !ok) return std::unexpected(ok.error());
  const auto it = endpoint_limits_.find(endpoint);
  if (it == endpoint_limits_.end()) return false;
  dirty_limits_.emplace(true, it->first);
  endpoint_limits_.erase(it);
  return true;
}

RateLimitConfig RateLimiter::effective_config(std::string_view user,
                                              std::string_view endpoint) const {
  if (!endpoint.empty()) {
    if (const auto it = endpoint_limits_.find(endpoint); it != endpoint_limits_.end()) {
      return it->second;
    }
  }
  if (const auto it = user_limits_.find(user); it != user_limits_.end()) return it->second;
  return default_config_;
}

Result<RateLimitConfig> RateLimiter::get_config(std::string_view user,
                                                std::string_view endpoint) const {
  if (auto ok = check_id(user, "user"); !ok) return std::unexpected(ok.error());
  if (!endpoint.empty()) {
    if (auto ok = check_id(endpoint, "endpoint"); !ok) return std::unexpected(ok.error());
  }
  return effective_config(user, endpoint);
}

const RateLimiter::WindowSet* RateLimiter::find_windows(std::string_view user,
                                                        std::string_view endpoint) const {
  const auto user_it = windows_.find(user);
  if (user_it == windows_.end()) return nullptr;
  const auto endpoint_it = user_it->second.find(endpoint);
  if (endpoint_it == user_it->second.end()) return nullptr;
  return &endpoint_it->second;
}

Result<RateLimiter::WindowSet*> RateLimiter::windows_for_recording(std::string_view user,
                                                                   std::string_view endpoint) {
  if (const auto user_it = windows_.find(user); user_it != windows_.end()) {
    if (const auto it = user_it->second.find(endpoint); it != user_it->second.end()) {
      return &it->second;
    }
  }
  if (tracked_pairs_ >= max_tracked_pairs_) {
    // Only at capacity, so the O(pairs) scan is paid when it can make room, not per call.
    cleanup_expired();
    if (tracked_pairs_ >= max_tracked_pairs_) {
      return fail(Errc::capacity_exceeded, "rate limiter tracks " + std::to_string(tracked_pairs_) +
                                               " (user, endpoint) pairs, limit " +
                                               std::to_string(max_tracked_pairs_));
    }
  }
  EndpointWindows& endpoints = windows_.try_emplace(std::string(user)).first->second;
  WindowSet& windows = endpoints.try_emplace(std::string(endpoint)).first->second;
  ++tracked_pairs_;
  return &windows;
}

Result<RateLimitResult> RateLimiter::check_rate_limit(std::string_view user,
                                                      std::string_view endpoint, bool record) {
  if (auto ok = check_id(user, "user"); !ok) return std::unexpected(ok.error());
  if (auto ok = check_id(endpoint, "endpoint"); !ok) return std::unexpected(ok.error());

  const RateLimitConfig config = effective_config(user, endpoint);
  const TimePoint now = clock_.now();
  const WindowSet* windows = find_windows(user, endpoint);

  RateLimitResult result;
  result.remaining = kUnlimitedRemaining;
  for (const RateWindow kind : kAllRateWindows) {
    const uint64_t limit = config.limit(kind);
    if (limit == 0) continue;
    const std::optional<SlidingWindow>* window =
        windows != nullptr ? &(*windows)[static_cast<std::size_t>(kind)] : nullptr;
    const bool tracked = window != nullptr && window->has_value();
    const uint64_t current = tracked ? (*window)->count(now) : 0;
    if (current < limit) {
      if (!result.exceeded) result.remaining = std::min(result.remaining, limit - current);
      continue;
    }
    // current >= limit >= 1, so the window is tracked.
    const Duration retry_after = (*window)->time_until_slot_available(now, limit);
    if (!result.exceeded || retry_after > result.retry_after) {
      result = RateLimitResult{true,    0,     std::string(rate_window_name(kind)),
                               current, limit, retry_after};
    }
  }
  if (result.exceeded || !record) return result;

  auto stored = windows_for_recording(user, endpoint);
  if (!stored) return std::unexpected(stored.error());
  mark_pair(user, endpoint, *stored);
  // Every window counts the request, limited or not, so a limit set later takes effect on
  // the traffic already seen.
  for (const RateWindow kind : kAllRateWindows) {
    std::optional<SlidingWindow>& window = (**stored)[static_cast<std::size_t>(kind)];
    if (!window) window = make_window(kind);
    window->record(now);
  }
  if (result.remaining != kUnlimitedRemaining) --result.remaining;  // this request's slot
  return result;
}

Result<std::map<std::string, WindowUsage>> RateLimiter::get_usage(std::string_view user,
                                                                  std::string_view endpoint) const {
  if (auto ok = check_id(user, "user"); !ok) return std::unexpected(ok.error());
  if (auto ok = check_id(endpoint, "endpoint"); !ok) return std::unexpected(ok.error());

  const RateLimitConfig config = effective_config(user, endpoint);
  const TimePoint now = clock_.now();
  const WindowSet* windows = find_windows(user, endpoint);

  std::map<std::string, WindowUsage> usage;
  for (const RateWindow kind : kAllRateWindows) {
    const std::optional<SlidingWindow>* window =
        windows != nullptr ? &(*windows)[static_cast<std::size_t>(kind)] : nullptr;
    const bool tracked = window != nullptr && window->has_value();
    WindowUsage u;
    u.limit = config.limit(kind);
    u.current = tracked ? (*window)->count(now) : 0;
    if (u.limit == 0) {
      u.remaining = kUnlimitedRemaining;
    } else {
      u.remaining = u.current >= u.limit ? 0 : u.limit - u.current;
    }
    u.reset_in_seconds = tracked ? ceil_seconds((*window)->time_until_empty(now)) : 0;
    usage.emplace(rate_window_name(kind), u);
  }
  return usage;
}

Result<std::size_t> RateLimiter::reset_user(std::string_view user) {
  if (auto ok = check_id(user, "user"); !ok) return std::unexpected(ok.error());
  const auto user_it = windows_.find(user);
  if (user_it == windows_.end()) return std::size_t{0};
  std::size_t cleared = 0;
  for (const auto& [endpoint, windows] : user_it->second) {
    cleared += static_cast<std::size_t>(
        std::count_if(windows.begin(), windows.end(), [](const auto& w) { return w.has_value(); }));
  }
  tracked_pairs_ -= user_it->second.size();
  for (const auto& [endpoint, windows] : user_it->second) dirty_pairs_.emplace_back(user_it->first, endpoint);
  windows_.erase(user_it);
  return cleared;
}

std::size_t RateLimiter::cleanup_expired() {
  const TimePoint now = clock_.now();
  std::size_t removed = 0;
  for (auto user_it = windows_.begin(); user_it != windows_.end();) {
    EndpointWindows& endpoints = user_it->second;
    for (auto it = endpoints.begin(); it != endpoints.end();) {
      bool any_left = false, any_dropped = false;
      for (std::optional<SlidingWindow>& window : it->second) {
        if (!window) continue;
        if (window->count(now) == 0) {
          window.reset();
          ++removed;
          any_dropped = true;
        } else {
          any_left = true;
        }
      }
      if (any_left) {
        if (any_dropped) mark_pair(user_it->first, it->first, &it->second);
        ++it;
      } else {
        dirty_pairs_.emplace_back(user_it->first, it->first);
        it = endpoints.erase(it);
        --tracked_pairs_;
      }
    }
    user_it = endpoints.empty() ? windows_.erase(user_it) : std::next(user_it);
  }
  return removed;
}

Result<void> RateLimiter::set_max_tracked_pairs(std::size_t max_pairs) {
  if (max_pairs == 0) return fail(Errc::invalid_argument, "max_tracked_pairs must be positive");
  max_tracked_pairs_ = max_pairs;
  return {};
}

// ---- Durable state ----------------------------------------------------------------------

void RateLimiter::mark_pair(std::string_view user, std::string_view endpoint, WindowSet* windows) {
  if (windows->dirty) return;
  windows->dirty = true;
  dirty_pairs_.emplace_back(user, endpoint);
}

namespace {
template <class WindowSetT>
RateWindowRecord window_record(const std::string& user, const std::string& endpoint,
                               const WindowSetT& windows) {
  RateWindowRecord r;
  r.user = user;
  r.endpoint = endpoint;
  for (std::size_t k = 0; k < windows.size(); ++k) {
    if (!windows[k]) continue;
    r.present[k] = true;
    r.buckets[k] = windows[k]->buckets();
    r.newest[k] = windows[k]->newest_bucket();
  }
  return r;
}
}  // namespace

std::vector<RateLimitRecord> RateLimiter::export_limits() const {
  std::vector<RateLimitRecord> out;
  for (const auto& [name, config] : user_limits_) out.push_back({false, name, config});
  for (const auto& [name, config] : endpoint_limits_) out.push_back({true, name, config});
  return out;
}

std::vector<RateWindowRecord> RateLimiter::export_windows() const {
  std::vector<RateWindowRecord> out;
  for (const auto& [user, endpoints] : windows_)
    for (const auto& [endpoint, windows] : endpoints) out.push_back(window_record(user, endpoint, windows));
  return out;
}

Result<void> RateLimiter::import_state(std::span<const RateLimitRecord> limits,
                                       std::span<const RateWindowRecord> windows) {
  // Merged into copies and swapped in, so a bad record changes nothing. A record overrides
  // what the configuration set; what only the configuration set stays (and stays dirty:
  // the store has not seen it).
  ConfigMap users = user_limits_, endpoints = endpoint_limits_;
  std::set<std::pair<bool, std::string>> seen_limits;
  for (const RateLimitRecord& l : limits) {
    const char* what = l.endpoint ? "rate limit endpoint" : "rate limit user";
    if (auto ok = check_id(l.name, what); !ok) return ok;
    if (!seen_limits.emplace(l.endpoint, l.name).second)
      return fail(Errc::already_exists, std::string(what) + " " + l.name + " twice");
    (l.endpoint ? endpoints : users).insert_or_assign(l.name, l.config);
  }
  auto pairs = windows_;
  std::set<std::pair<std::string, std::string>> seen_pairs;
  for (const RateWindowRecord& r : windows) {
    if (auto ok = check_id(r.user, "rate window user"); !ok) return ok;
    if (auto ok = check_id(r.endpoint, "rate window endpoint"); !ok) return ok;
    if (!seen_pairs.emplace(r.user, r.endpoint).second)
      return fail(Errc::already_exists, "rate window " + r.user + "/" + r.endpoint + " twice");
    WindowSet set;
    bool any = false;
    for (const RateWindow kind : kAllRateWindows) {
      const auto k = static_cast<std::size_t>(kind);
      if (!r.present[k]) continue;
      SlidingWindow w = make_window(kind);
      if (auto ok = w.restore(r.buckets[k], r.newest[k]); !ok)
        return fail(ok.error().code, "rate window " + r.user + "/" + r.endpoint + " " +
                                         std::string(rate_window_name(kind)) + ": " + ok.error().detail);
      set[k] = std::move(w);
      any = true;
    }
    if (any) pairs[r.user].insert_or_assign(r.endpoint, std::move(set));  // a pair with no window is not tracked
  }
  std::size_t count = 0;
  for (const auto& [user, endpoints_of_user] : pairs) count += endpoints_of_user.size();
  user_limits_ = std::move(users);
  endpoint_limits_ = std::move(endpoints);
  windows_ = std::move(pairs);
  // A restart may bring back more pairs than the bound allows: they are kept (dropping
  // them would forget admitted requests); new pairs wait until cleanup makes room.
  tracked_pairs_ = count;
  for (const auto& key : seen_limits) dirty_limits_.erase(key);
  std::erase_if(dirty_pairs_, [&](const auto& key) { return seen_pairs.contains(key); });
  return {};
}

void RateLimiter::take_changes(EngineChanges& out) {
  for (const auto& [endpoint, name] : dirty_limits_) {
    const ConfigMap& m = endpoint ? endpoint_limits_ : user_limits_;
    if (auto it = m.find(name); it != m.end())
      out.rate_limits.push_back({endpoint, name, it->second});
    else
      out.removed_rate_limits.push_back({endpoint, name, {}});
  }
  dirty_limits_.clear();
  if (dirty_pairs_.empty()) return;
  std::sort(dirty_pairs_.begin(), dirty_pairs_.end());
  dirty_pairs_.erase(std::unique(dirty_pairs_.begin(), dirty_pairs_.end()), dirty_pairs_.end());
  for (auto& [user, endpoint] : dirty_pairs_) {
    WindowSet* windows = nullptr;
    if (auto u = windows_.find(user); u != windows_.end())
      if (auto e = u->second.find(endpoint); e != u->second.end()) windows = &e->second;
    if (windows) {
      out.rate_windows.push_back(window_record(user, endpoint, *windows));
      windows->dirty = false;
    } else {
      out.removed_rate_windows.emplace_back(std::move(user), std::move(endpoint));
    }
  }
  dirty_pairs_.clear();
}

void RateLimiter::clear_changes() {
  dirty_limits_.clear();
  for (const auto& [user, endpoint] : dirty_pairs_)
    if (auto u = windows_.find(user); u != windows_.end())
      if (auto e = u->second.find(endpoint); e != u->second.end()) e->second.dirty = false;
  dirty_pairs_.clear();
}

}  // namespace budgetd
