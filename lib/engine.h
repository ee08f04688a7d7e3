// The budget engine: the budget tree, process quotas (seed 002 ResourceTracker), thread
// budgets (seed 003), consumption with approval (seed 000), two-phase reservations,
// calendar resets, thresholds, timeouts and events.
//
// Single-threaded by design. The daemon's event loop owns the one Engine and calls it
// from the loop thread only; that serialisation is what makes it safe for any number of
// concurrent clients, with no locks on the hot path (where seed 002 took an RLock per call).
//
// Time comes from the injected Clock. Every public call first applies whatever fell due
// up to now (resets, expiries, timeouts), so results never depend on how often the daemon
// calls advance(); advance() exists so the daemon can fire events at the exact deadline.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <absl/container/flat_hash_map.h>

#include "lib/calendar.h"
#include "lib/clock.h"
#include "lib/decimal.h"
#include "lib/error.h"
#include "lib/event.h"
#include "lib/quota.h"
#include "lib/ratelimit.h"
#include "lib/reason.h"
#include "lib/resource.h"
#include "lib/state.h"

namespace budgetd {

// ---------------------------------------------------------------------------------------
// Limits on scope nodes, plans and tiers.

// One resource's limits. In an override, nullopt means "inherit from the tier, then the
// plan"; kUnlimitedAmount means "explicitly unlimited".
struct LimitSpec {
  std::optional<Decimal> hard;      // admission refused once used >= hard
  std::optional<Decimal> soft;      // a warning when crossed (seed 001 soft limit)
  std::optional<Decimal> approval;  // a consumption above this waits for an operator

  friend bool operator==(const LimitSpec&, const LimitSpec&) = default;
};
using LimitMap = std::map<ResourceId, LimitSpec>;

enum class TemplateKind : uint8_t { plan, tier };
std::string_view template_kind_name(TemplateKind k);

// A named limit template (seed 004 plans, seed 001 tiers).
struct LimitTemplate {
  std::string name;
  TemplateKind kind = TemplateKind::plan;
  LimitMap limits;
  ResetPeriod reset = ResetPeriod::never;
};

// A change to a scope node. Absent fields keep their current value.
struct ScopeUpdate {
  LimitMap limits;                    // merged into the node's overrides
  std::optional<std::string> plan;    // "" clears
  std::optional<std::string> tier;    // "" clears
  std::optional<ResetPeriod> reset;
  bool clear_overrides = false;       // drop all overrides before merging `limits`
};

// ---------------------------------------------------------------------------------------
// Inputs and results.

// One usage report (seed 002 record_usage), possibly about one or more LLM calls.
struct UsageReport {
  uint64_t llm_calls = 0;
  uint64_t tool_calls = 0;
  uint64_t agent_hops = 0;
  uint64_t iterations = 0;
  uint64_t tokens_in = 0;
  uint64_t tokens_out = 0;
  // Context window used by the call; defaults to tokens_in + tokens_out when absent.
  std::optional<uint64_t> context_tokens;
  Decimal cost;
  std::string thread;  // optional: also charge this thread's budget
  ChargeList extra;    // custom / seed-000 resources charged to the scope path
};

// Why an admission was refused, or which limit a recorded usage reached.
struct Refusal {
  Reason reason = Reason::none;
  std::string path;      // scope path, or "" for the process level
  std::string resource;  // resource name
  Decimal used;          // usage (plus holds) at the time
  Decimal limit;
  Duration retry_after{0};  // time to the node's next reset, when it has one
  std::string message;
};
using Violation = Refusal;

struct RecordResult {
  ResourceUsage usage;                // the process's usage after the report
  std::vector<Violation> violations;  // limits this report reached or passed
  double elapsed_seconds = 0;         // the process's wall time since allocation
  bool created = false;               // the report created the process (record_usage)
  std::string_view scope;             // the process's scope path (valid until the next call)
};

struct RemainingBudget {
  uint64_t llm_calls, tool_calls, agent_hops, iterations;
  int64_t time_seconds;
  uint64_t tokens;
  Decimal cost;
};

struct SystemUsage {
  uint64_t total_processes;   // tracked now
  uint64_t active_processes;  // tracked and within quota and time
  uint64_t system_llm_calls, system_tool_calls, system_tokens_in, system_tokens_out;
  Decimal system_cost;
};

struct ProcessView {
  std::string id;
  std::string scope;
  std::string parent;  // the delegating process, if any
  ResourceQuota quota;
  ResourceUsage usage;
  ResourceUsage reserved;
  TimePoint allocated_at;
  double elapsed_seconds;
  uint32_t owner;
  Reason state;  // check_quota's answer now
};

struct ThreadUsage {
  std::string id;
  uint64_t prompt_tokens, completion_tokens, total_tokens, remaining, max_tokens,
      request_count, reserved;
  std::string process;
};

struct SlotView {
  std::string resource;
  Decimal used, reserved, hard, soft, approval;
};
struct ScopeView {
  std::string path;
  std::string plan, tier;
  ResetPeriod reset;
  TimePoint last_reset_at, next_reset_at;
  std::vector<SlotView> resources;  // every resource that has usage or a limit
};

// Whose budget an admission is charged to. Resolution: a thread charges its process (if
// it has one), and a process charges its scope; `scope` alone targets a scope node.
struct Target {
  std::string process;
  std::string thread;
  std::string scope;
};

struct ReserveResult {
  bool admitted = false;
  uint64_t id = 0;
  TimePoint expires_at;
  std::optional<Refusal> refusal;
};

struct CommitResult {
  bool expired = false;  // the hold had expired; the usage was still recorded
  Reason reason = Reason::none;  // reservation_expired when expired
  std::vector<Violation> violations;
  std::string process, thread, scope;  // whom the reservation charged (for the ledger)
};

enum class ConsumeStatus : uint8_t { approved, denied, partial, pending };
std::string_view consume_status_name(ConsumeStatus s);

struct ConsumeRequest {
  Target target;
  std::string resource;  // a built-in or interned custom resource name
  Decimal amount;
  bool allow_partial = false;
  std::string context;
};

struct ConsumeResult {
  ConsumeStatus status = ConsumeStatus::denied;
  Decimal granted;
  Decimal remaining;  // on the tightest node after this consumption
  std::optional<Refusal> refusal;
  uint64_t request_id = 0;  // for pending
  TimePoint expires_at;     // for pending
  bool approved() const { return status == ConsumeStatus::approved || status == ConsumeStatus::partial; }
};

struct ConsumptionStats {
  uint64_t total_events = 0;
  uint64_t consumed_count = 0;  // approved (including approved after pending)
  uint64_t rejected_count = 0;  // denied (including denied or expired after pending)
  uint64_t partial = 0;
  uint64_t pending = 0;  // currently awaiting a decision
};

struct QuotaView {  // seed 000 Quota
  std::string consumer;
  std::string resource;
  Decimal max_amount, consumed, remaining;
};

struct PendingView {
  uint64_t id;
  std::string process, thread, scope, resource, context;
  Decimal amount;
  TimePoint created_at, expires_at;
};

struct EngineConfig {
  ResourceQuota default_quota;
  uint64_t thread_default_max_tokens = 100'000;
  std::vector<uint32_t> thresholds{80, 90};  // percent of a hard limit; at most 6
  std::size_t max_processes = 1'000'000;
  std::size_t max_threads = 1'000'000;
  std::size_t max_holds = 1'000'000;  // reservations + pending requests
  Duration default_reservation_ttl = std::chrono::minutes(5);
  Duration max_reservation_ttl = std::chrono::hours(24);
  Duration pending_ttl = std::chrono::hours(1);
  Duration expired_id_retention = std::chrono::hours(1);  // commit-after-expiry answers
};

// Identifiers: 1..128 bytes of printable ASCII without spaces or '/'.
Result<void> validate_id(std::string_view id);
// Scope paths: "/" (the root) or segments of [A-Za-z0-9_.:@-] joined by '/', at most 16
// deep and 256 bytes. A leading '/' is accepted and dropped.
Result<std::string> normalize_path(std::string_view path);

// ---------------------------------------------------------------------------------------

class Engine {
 public:
  static constexpr std::size_t kMaxIdLength = 128;
  static constexpr std::size_t kMaxPathLength = 256;
  static constexpr std::size_t kMaxPathDepth = 16;
  static constexpr std::size_t kMaxScopes = 100'000;

  Engine(const Clock& clock, EngineConfig config = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineConfig& config() const { return config_; }
  // Applies a new configuration live (a reload): new processes get the new default quota,
  // new threads the new default budget; thresholds and bounds change at once. Usage and
  // existing processes' quotas are kept.
  void reconfigure(const EngineConfig& config);
  ResourceRegistry& resources() { return resources_; }
  const ResourceRegistry& resources() const { return resources_; }
  TimePoint now() const { return clock_.now(); }
  // Seed 002's RateLimiter, on the engine's clock.
  RateLimiter& rate_limiter() { return rate_limiter_; }
  const RateLimiter& rate_limiter() const { return rate_limiter_; }

  // ---- Processes (seed 002 ResourceTracker) -------------------------------------------
  // false when the pid is already allocated. `scope` places it in the tree (default: the
  // root); `owner` is an opaque id the daemon uses for authorization (the caller's uid).
  Result<bool> allocate(std::string_view pid, const ResourceQuota& quota, std::string_view scope = "/",
                        uint32_t owner = 0);
  // Delegation, as with cgroups: `child` is nested under the tracked process `parent`. Its
  // usage and holds count against the parent too, and an admission must fit in both, so a
  // child can never spend more than its parent has left. `scope` "" means the parent's.
  Result<bool> allocate_child(std::string_view parent, std::string_view child, const ResourceQuota& quota,
                              std::string_view scope = "", uint32_t owner = 0);
  Result<bool> allocate(std::string_view pid) { return allocate(pid, config_.default_quota); }
  bool release(std::string_view pid);
  std::optional<ResourceQuota> get_quota(std::string_view pid) const;
  // Applies every (field, value) or none of them. Takes effect at once: a raised limit
  // re-admits, a lowered timeout can fire now.
  Result<ResourceQuota> adjust_quota(std::string_view pid,
                                     std::span<const std::pair<std::string, std::string>> fields);
  // Auto-creates the pid with the default quota (at the root). Always records: the usage
  // happened. Returns the violations this report caused.
  // `owner` is recorded when the report creates the process (as allocate's).
  Result<RecordResult> record_usage(std::string_view pid, const UsageReport& report, uint32_t owner = 0);
  std::optional<ResourceUsage> get_usage(std::string_view pid) const;
  std::vector<std::pair<std::string, ResourceUsage>> get_all_usage() const;
  std::optional<double> update_elapsed_time(std::string_view pid);
  // None when within quota, else the first reason (seed order), then the scope path.
  Result<std::optional<Refusal>> check_quota(std::string_view pid);
  std::optional<RemainingBudget> get_remaining_budget(std::string_view pid) const;
  SystemUsage get_system_usage() const;
  bool is_tracked(std::string_view pid) const;
  std::optional<ProcessView> get_process(std::string_view pid) const;
  // Views, in pid order, paged.
  std::vector<ProcessView> list_processes(std::size_t offset = 0, std::size_t limit = 1000) const;
  std::size_t process_count() const { return index_.size(); }
  // Zeroes a process's usage and restarts its clock (an operator action).
  Result<void> reset_process(std::string_view pid);

  // ---- Scopes (the budget tree) -------------------------------------------------------
  Result<void> set_limits(std::string_view path, const ScopeUpdate& update);
  Result<ScopeView> get_scope(std::string_view path) const;
  std::vector<ScopeView> list_scopes() const;
  Result<void> reset_scope(std::string_view path);  // zero its usage now
  Result<void> set_template(LimitTemplate t);
  const LimitTemplate* get_template(TemplateKind kind, std::string_view name) const;
  std::vector<const LimitTemplate*> list_templates() const;

  // ---- Thread budgets (seed 003 ThreadBudgetRegistry) ----------------------------------
  // New threads get this many tokens; existing threads keep theirs.
  void configure(uint64_t max_tokens_per_thread);
  uint64_t max_tokens_per_thread() const { return thread_default_; }
  // Creates the thread when absent (seed get_budget). `process` ties it to a process.
  Result<ThreadUsage> get_budget(std::string_view thread, std::string_view process = {});
  // None when the estimate fits; else thread_budget_exhausted with used and max (also
  // checks the owning process and its scope path for the estimated tokens).
  Result<std::optional<Refusal>> check_budget(std::string_view thread, uint64_t estimated_tokens,
                                              std::string_view process = {});
  Result<ThreadUsage> consume(std::string_view thread, uint64_t prompt_tokens,
                              uint64_t completion_tokens, std::string_view process = {});
  bool has_budget(std::string_view thread) const;
  std::optional<ThreadUsage> get_thread_usage(std::string_view thread) const;
  std::vector<ThreadUsage> get_all_thread_usage() const;
  bool reset_thread(std::string_view thread);
  std::optional<ThreadUsage> cleanup_thread(std::string_view thread);

  // ---- Two-phase reservations ---------------------------------------------------------
  // Holds `estimate` on the thread, the process and every scope node up to the root, or on
  // none of them. ttl 0 means the configured default.
  Result<ReserveResult> reserve(const Target& target, const ChargeList& estimate, Duration ttl = Duration{0});
  // Frees the hold and records the actual usage (always). After expiry, still records and
  // says so.
  Result<CommitResult> commit(uint64_t id, const UsageReport& actual);
  Result<void> cancel(uint64_t id);
  std::size_t hold_count() const { return holds_.size(); }

  // ---- Consumption (seed 000 ConsumptionManager) ---------------------------------------
  Result<void> add_quota(std::string_view consumer, std::string_view resource, Decimal max_amount);
  Result<void> update_quota(std::string_view consumer, std::string_view resource, Decimal new_max);
  Result<void> reset_quota(std::string_view consumer, std::string_view resource);
  Result<QuotaView> get_consumer_usage(std::string_view consumer, std::string_view resource) const;
  // (allowed, remaining) on the tightest node of the consumer's path.
  Result<std::pair<bool, Decimal>> check_quota(std::string_view consumer, std::string_view resource,
                                               Decimal amount);
  Result<ConsumeResult> consume(const ConsumeRequest& request);
  Result<ConsumeResult> approve(uint64_t request_id);
  Result<ConsumeResult> deny(uint64_t request_id);
  std::vector<PendingView> list_pending() const;
  ConsumptionStats get_stats() const;

  // ---- Time and events ----------------------------------------------------------------
  // The earliest instant at which something falls due, for the daemon's one timer.
  std::optional<TimePoint> next_deadline() const;
  // Applies everything due up to now: resets, expiries, soft timeouts, then timeouts.
  void advance();
  std::vector<Event> take_events();
  const std::vector<Event>& pending_events() const { return events_; }

  // ---- Durable state (state_engine.cc; the records are in lib/state.h) ------------------
  // Everything a restart needs, each list in key order. Templates: only those set with
  // set_template (the shipped ones come back with the binary).
  EngineState export_state() const;
  // What changed since the last call, as full records to upsert and keys to delete, and
  // forgets it. The daemon calls it after every loop batch: it costs what changed, not
  // what is tracked (every mutation marks its entity dirty once per batch).
  EngineChanges take_changes();
  // Did anything change since the last take_changes()? Cheap: the daemon asks after every
  // call, to hold the reply of a call that changed durable state until it is on disk.
  bool has_changes() const {
    return !dirty_.scopes.empty() || !dirty_.processes.empty() || !dirty_.released.empty() ||
           !dirty_.threads.empty() || !dirty_.holds.empty() || !dirty_.templates.empty() ||
           dirty_.counters || rate_limiter_.has_changes();
  }
  // Restores an export into this engine, freshly constructed (its configuration applied;
  // shipped and configured templates and scopes may exist: a record overrides a scope's
  // usage, overrides, plan and tier). All or nothing: every record is checked first, and on
  // an error (a bad id or path, a duplicate, an unknown parent, plan or thread) the engine
  // is unchanged. Nothing is fired here: timeouts run from the recorded allocated_at,
  // holds expire at their recorded instant and missed calendar resets apply, with their
  // events, on the next catch-up (any call, or advance()).
  Result<void> import_state(const EngineState& state);

 private:
  struct Slot {
    Decimal used;
    Decimal reserved;
    Decimal hard = kUnlimitedAmount;
    Decimal soft = kUnlimitedAmount;
    Decimal approval = kUnlimitedAmount;
    uint8_t fired = 0;  // thresholds already reported in this crossing
  };
  struct ScopeNode {
    std::string path;
    ScopeNode* parent = nullptr;
    std::string plan, tier;
    LimitMap overrides;
    std::optional<ResetPeriod> reset_override;
    ResetPeriod reset = ResetPeriod::never;
    TimePoint last_reset_at;
    TimePoint next_reset_at = TimePoint::max();
    // When the current reset period took effect; the next reset is the first boundary
    // after the later of this and last_reset_at (a period set mid-way through a day does
    // not reset at once).
    TimePoint period_since;
    std::vector<Slot> slots;  // indexed by ResourceId, grown on demand
    bool dirty = false;       // listed in dirty_.scopes
    Slot& slot(ResourceId id);
    const Slot* find_slot(ResourceId id) const;
  };
  // Compact: one of these per tracked process (the 1M-process budget is 512 B each).
  struct Process {
    std::string id;
    ScopeNode* scope = nullptr;
    std::shared_ptr<const ResourceQuota> quota;  // shared with the default until adjusted
    ResourceUsage usage;
    ResourceUsage reserved;
    TimePoint allocated_at;
    uint32_t generation = 0;  // bumped on reuse of the slot, so stale deadlines are ignored
    uint32_t owner = 0;
    // The delegating process (cgroups-style nesting): its usage and holds include this
    // one's, and admission here also asks it. kNoParent when allocated directly.
    uint32_t parent_index = kNoParent;
    uint32_t parent_generation = 0;
    // Processes ever delegated from this one (never decremented): a release with none
    // skips the scan for children whose records name it as their parent.
    uint32_t children = 0;
    std::array<uint8_t, 6> fired{};  // per counted resource, as Slot::fired
    bool live = false;
    bool soft_fired = false;
    bool hard_fired = false;
    bool dirty = false;  // listed in dirty_.processes
  };
  static constexpr uint32_t kNoParent = UINT32_MAX;
  Process* parent_of(const Process& p);
  const Process* parent_of(const Process& p) const;
  struct Thread {
    uint64_t max_tokens = 0;
    uint64_t prompt_tokens = 0;
    uint64_t completion_tokens = 0;
    uint64_t request_count = 0;
    uint64_t reserved = 0;
    std::string process;  // owning process id, or ""
    ScopeNode* scope = nullptr;  // where its tokens go once the process is gone
    bool dirty = false;  // listed in dirty_.threads
  };
  enum class HoldKind : uint8_t { reservation, pending };
  struct Hold {
    HoldKind kind;
    std::string process, thread;
    ScopeNode* scope;  // the first node charged (the process's scope, or the target node)
    ChargeList amount;
    TimePoint created_at, expires_at;
    std::string resource, context;  // pending consumption only
    // The process's generation when the hold was placed: a later process that reuses the
    // id (after a release) is not the one the held call belonged to.
    uint32_t process_generation = 0;
  };
  enum class DeadlineKind : uint8_t { soft_timeout, hard_timeout, hold_expiry, scope_reset };
  struct Deadline {
    TimePoint when;
    DeadlineKind kind;
    uint32_t generation;
    uint64_t key;
    // Min-heap order: earliest first, and at one instant soft before hard.
    bool operator>(const Deadline& o) const {
      return when != o.when ? when > o.when : kind > o.kind;
    }
  };
  // Where a Target resolved to.
  struct Resolved {
    Process* process = nullptr;
    Thread* thread = nullptr;
    ScopeNode* scope = nullptr;
    std::string_view thread_id;
  };

  // Core (engine.cc).
  void catch_up();
  Result<ScopeNode*> find_or_create_scope(std::string_view path);
  ScopeNode* find_scope(std::string_view normalized) const;
  void resolve_limits(ScopeNode& n);
  void rearm_node(ScopeNode& n);
  void reset_node(ScopeNode& n, TimePoint boundary, bool emit);
  Result<Resolved> resolve(const Target& t, bool create_thread);
  // Checks that `c` fits everywhere on the path, holds included. amount 0 means "is there
  // any room left" (used >= limit refuses).
  std::optional<Refusal> admit(const Resolved& r, const ChargeList& c) const;
  std::optional<Refusal> admit_process(const Process& p, const ChargeList& c) const;
  std::optional<Refusal> admit_path(const ScopeNode* n, const ChargeList& c) const;
  std::optional<Refusal> per_call_caps(const ResourceQuota& q, const ChargeList& c,
                                       std::optional<uint64_t> context) const;
  // Adds `c` to usage on the thread, process and path; fires thresholds and violations.
  void charge(const Resolved& r, const ChargeList& c, std::vector<Violation>* out);
  void hold(const Resolved& r, const ChargeList& c, bool add);
  void charge_process(Process& p, const ChargeList& c, std::vector<Violation>* out);
  void charge_node(ScopeNode& n, const Resolved& r, ResourceId id, Decimal amount,
                   std::vector<Violation>* out);
  uint8_t crossed_bits(Decimal used, Decimal hard, Decimal soft) const;
  void emit_crossings(uint8_t fresh, const std::string& path, const Resolved& r, ResourceId id,
                      Decimal used, Decimal hard, Decimal soft, ResetPeriod period,
                      std::vector<Violation>* out);
  void rearm_process_fired(Process& p);
  Refusal scope_refusal(const ScopeNode& n, ResourceId id, Decimal used, Decimal limit) const;
  void push_event(Event e);
  Event process_event(EventKind k, const Process& p) const;

  // Processes (tracker.cc).
  Process* find_process(std::string_view pid);
  const Process* find_process(std::string_view pid) const;
  Result<Process*> create_process(std::string_view pid, std::shared_ptr<const ResourceQuota> quota,
                                  ScopeNode* scope, uint32_t owner);
  // Pushes the process's pending timeouts on the heap, or appends them to `staged`.
  void arm_timeouts(Process& p, uint32_t index, std::vector<Deadline>* staged = nullptr);
  void fire_timeout(uint32_t index, uint32_t generation, DeadlineKind kind, TimePoint when);
  ProcessView view(const Process& p) const;
  Result<ChargeList> report_charges(const UsageReport& r) const;
  Result<RecordResult> record_resolved(Resolved r, const UsageReport& report, std::optional<Refusal> extra);

  // Threads (threads.cc).
  Thread* find_thread(std::string_view id);
  const Thread* find_thread(std::string_view id) const;
  Result<Thread*> ensure_thread(std::string_view id, std::string_view process);
  ThreadUsage thread_view(std::string_view id, const Thread& t) const;

  // Holds (reservations.cc, consumption.cc).
  Result<uint64_t> add_hold(Hold h);
  void drop_hold(uint64_t id);
  Resolved resolve_hold(const Hold& h);
  void expire_hold(uint64_t id, TimePoint when);
  ConsumeResult decide(uint64_t id, bool approve, std::string_view outcome);
  Result<ResourceId> resource_id(std::string_view name) const;
  // What is left of `id` on the tightest node from `n` up (kUnlimitedAmount: nothing limits).
  Decimal path_headroom(const ScopeNode* n, ResourceId id) const;
  // A seed-000 consumer (an existing scope path) and resource, or the named error.
  Result<std::pair<ScopeNode*, ResourceId>> consumer_slot(std::string_view consumer, std::string_view resource) const;

  // Dirty tracking (state_engine.cc). A flag on the entity makes a repeated mark one test.
  struct Dirty {
    std::vector<ScopeNode*> scopes;  // nodes never die
    // Slots of processes_ (stable addresses); a slot listed twice, or released, is
    // recognised by its flag and liveness when taken.
    std::vector<Process*> processes;
    std::unordered_set<std::string> released;  // deleted unless live again when taken
    std::unordered_set<std::string> threads;   // upserted if present when taken, else deleted
    // Ids of holds placed, changed or dropped: a push per hold operation, sorted and
    // deduplicated when taken (cheaper on the reserve/commit path than a set insertion).
    std::vector<uint64_t> holds;
    std::set<std::pair<TemplateKind, std::string>> templates;
    bool counters = false;
  };
  void mark(ScopeNode& n) {
    if (n.dirty) return;
    n.dirty = true;
    dirty_.scopes.push_back(&n);
  }
  void mark(Process& p) {
    if (p.dirty) return;
    p.dirty = true;
    dirty_.processes.push_back(&p);
  }
  void mark_thread(std::string_view id, Thread& t) {
    if (t.dirty) return;
    t.dirty = true;
    dirty_.threads.emplace(id);
  }
  void mark_released(Process& p);
  void mark_hold(uint64_t id) { dirty_.holds.push_back(id); }
  void mark_counters() { dirty_.counters = true; }
  void clear_changes();
  ScopeRecord scope_record(const ScopeNode& n) const;
  ProcessRecord process_record(const Process& p) const;
  ThreadRecord thread_record(const std::string& id, const Thread& t) const;
  HoldRecord hold_record(uint64_t id, const Hold& h) const;
  TemplateRecord template_record(const LimitTemplate& t) const;
  CountersRecord counters_record() const;

  const Clock& clock_;
  EngineConfig config_;
  ResourceRegistry resources_;
  RateLimiter rate_limiter_;
  uint64_t thread_default_;
  std::shared_ptr<const ResourceQuota> default_quota_;
  std::shared_ptr<const ResourceQuota> last_custom_quota_;

  std::map<std::string, std::unique_ptr<ScopeNode>, std::less<>> scopes_;  // nodes never die
  ScopeNode* root_;
  std::map<std::string, LimitTemplate, std::less<>> plans_, tiers_;
  // Templates set with set_template, as opposed to the shipped ones the constructor set:
  // only these are durable state.
  std::set<std::pair<TemplateKind, std::string>> live_templates_;
  bool constructed_ = false;

  // A deque keeps Process addresses stable, so the index can key on views of Process::id.
  std::deque<Process> processes_;
  std::vector<uint32_t> free_slots_;
  absl::flat_hash_map<std::string_view, uint32_t> index_;

  std::unordered_map<std::string, Thread> threads_;

  std::unordered_map<uint64_t, Hold> holds_;
  uint64_t next_hold_id_ = 1;
  // Ids of reservations that expired, so a late commit can say reservation_expired.
  std::unordered_map<uint64_t, Hold> expired_ids_;
  std::deque<std::pair<TimePoint, uint64_t>> expired_order_;

  ConsumptionStats stats_;

  // The deadline heap. A restore fills it in one step (append, then make_heap: linear)
  // instead of two heap pushes per restored process.
  struct DeadlineHeap : std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> {
    void push_all(std::vector<Deadline>&& more) {
      c.insert(c.end(), more.begin(), more.end());
      std::make_heap(c.begin(), c.end(), comp);
    }
  };
  DeadlineHeap deadlines_;
  std::vector<Event> events_;
  Dirty dirty_;
};

}  // namespace budgetd
