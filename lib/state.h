// The engine's durable state as plain records: what the store writes and what recovery
// reads back. Derived values are not here: resolved limits come from the templates and
// overrides, reserved amounts from the open holds, deadlines from the times below. That
// keeps a record small and a restored engine unable to disagree with itself.
//
// Resources are named, not numbered: a custom resource's id depends on the order names were
// interned in, which a restart does not preserve.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lib/calendar.h"
#include "lib/clock.h"
#include "lib/decimal.h"
#include "lib/quota.h"
#include "lib/ratelimit.h"

namespace budgetd {

using NamedAmounts = std::vector<std::pair<std::string, Decimal>>;  // resource name -> amount

struct ProcessRecord {
  std::string id;
  std::string scope;   // normalized path
  std::string parent;  // delegating process id, "" when none
  // nullopt: the engine's default quota (so a reload's new default still applies to it).
  std::optional<ResourceQuota> quota;
  ResourceUsage usage;
  TimePoint allocated_at;
  uint32_t owner = 0;
  std::array<uint8_t, 6> fired{};
  bool soft_fired = false;
  bool hard_fired = false;
  friend bool operator==(const ProcessRecord&, const ProcessRecord&) = default;
};

struct LimitRecord {
  std::string resource;
  std::optional<Decimal> hard, soft, approval;
  friend bool operator==(const LimitRecord&, const LimitRecord&) = default;
};

struct SlotRecord {
  std::string resource;
  Decimal used;
  uint8_t fired = 0;
  friend bool operator==(const SlotRecord&, const SlotRecord&) = default;
};

struct ScopeRecord {
  std::string path;
  std::string plan, tier;
  std::vector<LimitRecord> overrides;
  std::optional<ResetPeriod> reset_override;
  TimePoint last_reset_at;
  std::vector<SlotRecord> slots;  // only slots with usage or fired bits
  // When the current reset period took effect (the node's creation, or the set_limits or
  // template change that gave it this period). The next reset is the first boundary after
  // the later of this and last_reset_at: a daily period set at 15:00 resets at midnight,
  // not at once on recovery because yesterday's boundary lies after an older last reset.
  TimePoint period_since;
  friend bool operator==(const ScopeRecord&, const ScopeRecord&) = default;
};

struct TemplateRecord {
  std::string name;
  uint8_t kind = 0;  // TemplateKind
  std::vector<LimitRecord> limits;
  ResetPeriod reset = ResetPeriod::never;
  friend bool operator==(const TemplateRecord&, const TemplateRecord&) = default;
};

struct ThreadRecord {
  std::string id;
  uint64_t max_tokens = 0, prompt_tokens = 0, completion_tokens = 0, request_count = 0;
  std::string process;
  std::string scope;  // where its tokens go once the process is gone ("" = none)
  friend bool operator==(const ThreadRecord&, const ThreadRecord&) = default;
};

struct HoldRecord {
  uint64_t id = 0;
  uint8_t kind = 0;  // 0 reservation, 1 pending consumption
  std::string process, thread, scope;
  NamedAmounts amount;
  TimePoint created_at, expires_at;
  std::string resource, context;  // pending only
  friend bool operator==(const HoldRecord&, const HoldRecord&) = default;
};

struct RateWindowRecord {  // one (user, endpoint) pair's windows
  std::string user, endpoint;
  // Per RateWindow (minute, hour, day, burst): (bucket index, count) of non-empty buckets.
  std::array<std::vector<std::pair<int64_t, uint64_t>>, 4> buckets;
  std::array<int64_t, 4> newest{};
  std::array<bool, 4> present{};
  friend bool operator==(const RateWindowRecord&, const RateWindowRecord&) = default;
};

struct RateLimitRecord {  // a per-user or per-endpoint limit set live
  bool endpoint = false;
  std::string name;
  RateLimitConfig config;
  friend bool operator==(const RateLimitRecord&, const RateLimitRecord&) = default;
};

struct CountersRecord {  // engine-wide scalars
  uint64_t next_hold_id = 1;
  uint64_t total_events = 0, consumed_count = 0, rejected_count = 0, partial = 0;
  uint64_t thread_default_max_tokens = 0;
  friend bool operator==(const CountersRecord&, const CountersRecord&) = default;
};

// Everything, for a full load (recovery) and for tests.
struct EngineState {
  std::vector<TemplateRecord> templates;  // set live (config templates come from config)
  std::vector<ScopeRecord> scopes;
  std::vector<ProcessRecord> processes;
  std::vector<ThreadRecord> threads;
  std::vector<HoldRecord> holds;
  std::vector<RateLimitRecord> rate_limits;
  std::vector<RateWindowRecord> rate_windows;
  CountersRecord counters;
};

// What changed since the last take_changes(): full records to upsert, keys to delete. A
// key appears at most once per batch (the newest state wins).
struct EngineChanges {
  std::vector<TemplateRecord> templates;
  std::vector<ScopeRecord> scopes;
  std::vector<ProcessRecord> processes;
  std::vector<std::string> released_processes;
  std::vector<ThreadRecord> threads;
  std::vector<std::string> removed_threads;
  std::vector<HoldRecord> holds;
  std::vector<uint64_t> removed_holds;
  std::vector<RateLimitRecord> rate_limits;
  std::vector<RateLimitRecord> removed_rate_limits;  // config ignored
  std::vector<RateWindowRecord> rate_windows;
  std::vector<std::pair<std::string, std::string>> removed_rate_windows;  // (user, endpoint)
  std::optional<CountersRecord> counters;
  bool empty() const;
};

}  // namespace budgetd
