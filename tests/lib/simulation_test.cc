// Deterministic simulation of the engine against a plain reference model.
//
// Each seed drives a std::mt19937_64 through a random sequence of engine calls: allocate,
// release, record_usage, reserve, commit, cancel, hold expiry, adjust_quota, set_limits
// (hard limits, approval thresholds and hourly/daily resets), reset_scope, consume,
// approve/deny and time advances that land on, just before and just past hour and day
// boundaries. The model is deliberately naive: a list of charges (when, which node, how
// much) and a list of open holds. A node's usage is the sum of the charges made to it or
// below it since its last reset; its reservation is the sum of the open holds at or below
// it. After every step the engine's views must equal the model, and every admission must
// leave each node on its path within its hard limits.
//
// Durable state rides along on a second random stream (so the main sequence of a seed is
// unchanged): thread budgets, reservations through threads, rate limits, live templates,
// reloads and restarts. After every step the engine's take_changes() is applied to a mirror
// of the store, which must equal export_state() (a mutation that forgot to mark its entity
// shows up here); a restart exports, imports into a fresh engine, compares the two exports
// and goes on with the fresh engine, so the model checks the recovered engine too.
//
// Replay: a failure names its seed. BUDGETD_SIM_SEED=N runs that seed alone and
// BUDGETD_SIM_TRACE=1 prints every operation of it; BUDGETD_SIM_SEEDS=K runs seeds 1..K
// (default 3000), BUDGETD_SIM_STEPS=S sets the steps per seed (default 200, 120 under
// ASan). BUDGETD_SIM_COVERAGE=1 prints how often each outcome was reached, and
// BUDGETD_SIM_KNOWN_BUGS=1 runs the KnownBug_ tests instead of skipping them.
//
// The generator uses `rng() % n`, never std::uniform_int_distribution, whose output
// differs between standard libraries: a seed must replay the same sequence everywhere.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lib/engine.h"
#include "tests/lib/state_test_support.h"

namespace budgetd {
namespace {

// ---- Plumbing ---------------------------------------------------------------------------

struct SimFailure {
  std::string what;
};

#define SIM_CHECK(cond, msg)                                                       \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::ostringstream sim_os_;                                                  \
      sim_os_ << msg;                                                              \
      throw SimFailure{std::string("check `" #cond "` failed: ") + sim_os_.str()}; \
    }                                                                              \
  } while (0)

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  // Modulo, not a std distribution: identical on every standard library. The bias is
  // irrelevant for a test generator.
  uint64_t below(uint64_t n) { return g_() % n; }
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }
  bool chance(unsigned percent) { return below(100) < percent; }

 private:
  std::mt19937_64 g_;
};

std::optional<uint64_t> env_u64(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::strtoull(v, nullptr, 10);
}

constexpr int kNodeCount = 5;
constexpr std::array<const char*, kNodeCount> kPaths = {"/", "a", "a/b", "a/c", "d"};
constexpr std::array<int, kNodeCount> kParent = {-1, 0, 1, 1, 0};
constexpr int kPidCount = 8;
constexpr std::size_t kRes = res::kBuiltinCount;  // the simulation never interns custom names
using Amounts = std::array<Decimal, kRes>;

constexpr int64_t kHourUs = int64_t{3600} * 1'000'000;
constexpr int64_t kDayUs = 24 * kHourUs;

Decimal milli(uint64_t m) { return Decimal::from_raw(static_cast<__int128>(m) * 1'000'000'000); }
Decimal units(uint64_t n) { return Decimal::from_int(n); }
Decimal plus(Decimal a, Decimal b) { return a.checked_add(b).value(); }

std::string pid_name(int i) { return "p" + std::to_string(i); }

// The model's own calendar: hour and day grids from the epoch (UTC has no offset). Kept
// independent of lib/calendar so a calendar bug shows up as a mismatch.
int64_t grid_of(ResetPeriod p) { return p == ResetPeriod::hourly ? kHourUs : kDayUs; }
TimePoint model_period_start(ResetPeriod p, TimePoint t) {
  int64_t us = t.time_since_epoch().count();
  return TimePoint(Duration(us - us % grid_of(p)));
}
TimePoint model_next_boundary(ResetPeriod p, TimePoint t) {
  if (p == ResetPeriod::never) return TimePoint::max();
  return model_period_start(p, t) + Duration(grid_of(p));
}

// What a charge list adds to a scope node: each resource as given, and `tokens` also gets
// tokens_in + tokens_out (DESIGN: scope nodes count tokens as in + out).
Amounts node_amounts(const ChargeList& c) {
  Amounts a{};
  for (const auto& ch : c) a[ch.id] = plus(a[ch.id], ch.amount);
  a[res::tokens] = plus(a[res::tokens], plus(c.get(res::tokens_in), c.get(res::tokens_out)));
  return a;
}

// What a charge list adds to a process's counters: unattributed `tokens` count as input.
void add_to_process(ResourceUsage& u, const ChargeList& c) {
  for (const auto& ch : c) {
    uint64_t v = ch.amount.to_u64_ceil();
    switch (ch.id) {
      case res::llm_calls:
        u.llm_calls += v;
        break;
      case res::tool_calls:
        u.tool_calls += v;
        break;
      case res::agent_hops:
        u.agent_hops += v;
        break;
      case res::iterations:
        u.iterations += v;
        break;
      case res::tokens_in:
      case res::tokens:
        u.tokens_in += v;
        break;
      case res::tokens_out:
        u.tokens_out += v;
        break;
      case res::cost:
        u.cost = plus(u.cost, ch.amount);
        break;
      default:
        break;
    }
  }
}

ChargeList report_to_charges(const UsageReport& r) {
  ChargeList c;
  const std::pair<ResourceId, uint64_t> counts[] = {
      {res::llm_calls, r.llm_calls},   {res::tool_calls, r.tool_calls},
      {res::agent_hops, r.agent_hops}, {res::iterations, r.iterations},
      {res::tokens_in, r.tokens_in},   {res::tokens_out, r.tokens_out}};
  for (auto [id, v] : counts)
    if (v) c.add(id, units(v)).value();
  if (!r.cost.is_zero()) c.add(res::cost, r.cost).value();
  for (const auto& ch : r.extra) c.add(ch.id, ch.amount).value();
  return c;
}

std::string describe(const ChargeList& c, const ResourceRegistry& reg) {
  std::string s = "{";
  for (const auto& ch : c) s += std::string(reg.name(ch.id)) + ":" + ch.amount.to_string() + " ";
  return s + "}";
}

std::string describe(const ResourceUsage& u) {
  std::ostringstream os;
  os << "{llm " << u.llm_calls << " tool " << u.tool_calls << " hops " << u.agent_hops << " it "
     << u.iterations << " in " << u.tokens_in << " out " << u.tokens_out << " cost "
     << u.cost.to_string() << "}";
  return os.str();
}

// ---- The simulation -----------------------------------------------------------------------

// How often each outcome happened, summed over seeds: a run that stops reaching an
// outcome (say, every reservation refused) would check far less than it claims to.
struct Coverage {
  std::map<std::string, uint64_t> counts;
  void hit(const std::string& what) { ++counts[what]; }
};

// 3000 seeds of 200 steps take ~2.5 s of CPU in a RelWithDebInfo build; an unoptimised
// ASan+UBSan build is ~30x slower, so there each seed runs 120 steps (~40 s in all).
#if defined(__SANITIZE_ADDRESS__)
constexpr int kDefaultSteps = 120;
#else
constexpr int kDefaultSteps = 200;
#endif

struct SimOptions {
  int steps = kDefaultSteps;
  bool trace = false;
  // get_stats().pending must equal the number of open pending requests.
  bool check_pending_stats = true;
  // get_consumer_usage must agree with get_scope.
  bool check_consumer_view = true;
  // What the engine does today (a bug: KnownBug_LateCommitChargesALaterProcessOfTheSameId):
  // a commit after expiry charges whichever process now has the hold's process id, even a
  // later one allocated after the original was released. Set false once that is fixed.
  bool late_commit_charges_a_later_process = false;
  // Durable state: a mirror of take_changes() must equal export_state(), an import must
  // export the same, and the run goes on across restarts (export, import, swap engines).
  bool check_state_records = true;
};

class Simulation {
 public:
  Simulation(uint64_t seed, SimOptions opt, Coverage* cov)
      : rng_(seed),
        opt_(opt),
        cov_(cov),
        aux_(seed ^ 0x9e3779b97f4a7c15ull),
        clock_(start_time(seed)),
        engine_(std::make_unique<Engine>(clock_, EngineConfig{})) {}

  // Throws SimFailure with the step and the reason.
  void run() {
    // Create every node now, so each one's last_reset_at is the start instant.
    for (int n = 1; n < kNodeCount; ++n) {
      ScopeUpdate u;
      engine_->set_limits(kPaths[n], u).value();
    }
    for (auto& n : nodes_) {
      n.last_reset_at = clock_.now();
      n.hard.fill(kUnlimitedAmount);
      n.approval.fill(kUnlimitedAmount);
    }
    for (int i = 0; i < kPidCount; ++i) procs_[pid_name(i)];
    check_state();
    sync_mirror();
    for (step_ = 0; step_ < opt_.steps; ++step_) {
      random_op();
      if (opt_.check_state_records && aux_.chance(35)) random_state_op();
      (void)engine_->take_events();
      check_state();
      if (opt_.check_state_records) {
        sync_mirror();
        if (step_ % 10 == 9) check_mirror();
      }
    }
    step_ = -1;  // the drain
    drain();
    if (opt_.check_state_records) {
      sync_mirror();
      check_mirror();
      check_reimport();
    }
  }

  int step() const { return step_; }

  // The end state in a few words: the root's usage, the clock, the ids handed out and the
  // number of charges. Two runs of one seed must agree on it.
  std::string fingerprint() const {
    std::ostringstream os;
    os << format_utc(now()) << " holds " << next_hold_id_ << " charges " << charges_.size();
    const ScopeView root = engine_->get_scope("/").value();
    for (const auto& sv : root.resources) os << " " << sv.resource << "=" << sv.used.to_string();
    return os.str();
  }

 private:
  struct MCharge {
    uint64_t seq;
    TimePoint at;
    int node;
    Amounts amounts;
  };
  struct MNode {
    uint64_t reset_seq = 0;  // charges with a larger seq count
    ResetPeriod period = ResetPeriod::never;
    TimePoint next_reset = TimePoint::max();
    TimePoint last_reset_at;
    Amounts hard{}, approval{};
  };
  struct MHold {
    bool pending;
    std::string pid;  // "" for a scope target
    int node;
    ChargeList charges;
    TimePoint expires_at;
  };
  struct MExpired {
    std::string pid;
    int node;
    TimePoint expired_at;
    uint64_t incarnation;  // of its process when it expired
  };
  struct MProcess {
    bool live = false;
    int node = 0;
    ResourceUsage usage;
    uint64_t incarnation = 0;  // which allocation of this id
  };

  static TimePoint start_time(uint64_t seed) {
    using namespace std::chrono;
    // 2024-02-28 + up to a day: hour and day boundaries, the leap day and a month end lie
    // ahead of every run.
    return sys_days{year{2024} / 2 / 28} + seconds(static_cast<int64_t>(seed % 86'400));
  }

  TimePoint now() const { return clock_.now(); }

  template <class F>
  void trace(F&& f) {
    if (!opt_.trace) return;
    std::ostringstream os;
    f(os);
    std::cerr << "[step " << step_ << " t=" << format_utc(now()) << "] " << os.str() << "\n";
  }

  // ---- Model --------------------------------------------------------------------------

  // What the engine's catch_up does on every mutating call: resets that fell due, then
  // holds that expired, then forgetting expired ids after an hour.
  void model_catch_up() {
    const TimePoint t = now();
    for (int n = 0; n < kNodeCount; ++n) {
      MNode& m = nodes_[n];
      if (m.period == ResetPeriod::never || m.next_reset > t) continue;
      m.reset_seq = ++seq_;
      m.last_reset_at = model_period_start(m.period, t);
      m.next_reset = model_next_boundary(m.period, t);
      hit("scheduled reset");
      trace([&](auto& os) { os << "  (model) scheduled reset of " << kPaths[n]; });
    }
    for (auto it = holds_.begin(); it != holds_.end();) {
      if (it->second.expires_at > t) {
        ++it;
        continue;
      }
      if (!it->second.pending)
        expired_[it->first] =
            MExpired{it->second.pid, it->second.node, it->second.expires_at,
                     it->second.pid.empty() ? 0 : procs_[it->second.pid].incarnation};
      hit(it->second.pending ? "pending request expired" : "reservation expired");
      trace([&](auto& os) { os << "  (model) hold " << it->first << " expired"; });
      it = holds_.erase(it);
    }
    for (auto it = expired_.begin(); it != expired_.end();) {
      if (it->second.expired_at + std::chrono::hours(1) <= t)
        it = expired_.erase(it);
      else
        ++it;
    }
  }

  void model_charge(int node, const std::string& pid, const ChargeList& c) {
    charges_.push_back(MCharge{++seq_, now(), node, node_amounts(c)});
    if (!pid.empty() && procs_[pid].live) add_to_process(procs_[pid].usage, c);
  }

  // Summed afresh from the list whenever a charge or a reset happened since the last sum
  // (both advance seq_); the cache only saves recomputing the same sum within one step.
  const std::array<Amounts, kNodeCount>& model_used() const {
    if (used_cache_seq_ == seq_) return used_cache_;
    std::array<Amounts, kNodeCount>& u = used_cache_;
    u = {};
    used_cache_seq_ = seq_;
    for (const auto& ch : charges_) {
      for (int n = ch.node; n >= 0; n = kParent[n]) {
        if (ch.seq <= nodes_[n].reset_seq) continue;
        for (std::size_t r = 0; r < kRes; ++r)
          if (!ch.amounts[r].is_zero()) u[n][r] = plus(u[n][r], ch.amounts[r]);
      }
    }
    return u;
  }

  std::array<Amounts, kNodeCount> model_reserved() const {
    std::array<Amounts, kNodeCount> u{};
    for (const auto& [id, h] : holds_) {
      Amounts a = node_amounts(h.charges);
      for (int n = h.node; n >= 0; n = kParent[n])
        for (std::size_t r = 0; r < kRes; ++r) u[n][r] = plus(u[n][r], a[r]);
    }
    return u;
  }

  ResourceUsage model_process_reserved(const std::string& pid) const {
    ResourceUsage u;
    for (const auto& [id, h] : holds_)
      if (h.pid == pid) add_to_process(u, h.charges);
    return u;
  }

  std::size_t model_pending_count() const {
    std::size_t k = 0;
    for (const auto& [id, h] : holds_) k += h.pending;
    return k;
  }

  // The admission rule on a scope path, from the model alone (scope targets have no
  // process or thread, so this is the whole decision).
  bool model_admits(int node, const ChargeList& c) const {
    const auto& used = model_used();
    auto held = model_reserved();
    std::array<bool, kRes> present{};
    Amounts want{};
    for (const auto& ch : c) {
      present[ch.id] = true;
      want[ch.id] = plus(want[ch.id], ch.amount);
    }
    Decimal io = plus(c.get(res::tokens_in), c.get(res::tokens_out));
    if (!io.is_zero()) {
      present[res::tokens] = true;
      want[res::tokens] = plus(want[res::tokens], io);
    }
    // An empty estimate is a bare "is there any room left?": every limited resource counts.
    if (c.empty()) present.fill(true);
    for (int n = node; n >= 0; n = kParent[n]) {
      for (std::size_t r = 0; r < kRes; ++r) {
        if (!present[r]) continue;
        Decimal hard = nodes_[n].hard[r];
        if (hard == kUnlimitedAmount) continue;
        Decimal h = plus(used[n][r], held[n][r]);
        bool over = want[r].is_zero() ? h >= hard : plus(h, want[r]) > hard;
        if (over) return false;
      }
    }
    return true;
  }

  // Smallest (hard - used - held) of resource r on the path; kUnlimitedAmount when none.
  Decimal model_room(int node, ResourceId r) const {
    const auto& used = model_used();
    auto held = model_reserved();
    Decimal room = kUnlimitedAmount;
    for (int n = node; n >= 0; n = kParent[n]) {
      Decimal hard = nodes_[n].hard[r];
      if (hard == kUnlimitedAmount) continue;
      Decimal left = hard.saturating_sub(plus(used[n][r], held[n][r]));
      if (left < room) room = left;
    }
    return room;
  }

  // ---- Checks -------------------------------------------------------------------------

  // Every node's usage, reservation, limits and reset schedule, every process's usage and
  // reservation, and the hold count, against the model.
  void check_state() {
    SIM_CHECK(engine_->hold_count() == holds_.size(),
              "hold_count " << engine_->hold_count() << " model " << holds_.size());
    const auto& used = model_used();
    const auto held = model_reserved();
    for (int n = 0; n < kNodeCount; ++n) {
      auto view = engine_->get_scope(kPaths[n]);
      SIM_CHECK(view.has_value(), kPaths[n]);
      // get_scope shows a reset that fell due since the last mutating call as applied
      // (it is const and cannot catch up); holds, though, expire only on a catch-up.
      MNode m = nodes_[n];
      Amounts expect_used = used[n];
      if (m.period != ResetPeriod::never && m.next_reset <= now()) {
        hit("view of a reset not yet applied");
        expect_used = Amounts{};
        m.last_reset_at = model_period_start(m.period, now());
        m.next_reset = model_next_boundary(m.period, now());
      }
      SIM_CHECK(view->reset == m.period, "node " << kPaths[n] << " reset period "
                                                 << reset_period_name(view->reset) << " model "
                                                 << reset_period_name(m.period));
      SIM_CHECK(view->next_reset_at == m.next_reset,
                "node " << kPaths[n] << " next_reset_at " << format_utc(view->next_reset_at)
                        << " model " << format_utc(m.next_reset));
      SIM_CHECK(view->last_reset_at == m.last_reset_at,
                "node " << kPaths[n] << " last_reset_at " << format_utc(view->last_reset_at)
                        << " model " << format_utc(m.last_reset_at));
      // The view lists resources in id order.
      std::array<const SlotView*, kRes> got{};
      std::size_t next_id = 0;
      for (const auto& sv : view->resources) {
        while (next_id < kRes &&
               engine_->resources().name(static_cast<ResourceId>(next_id)) != sv.resource)
          ++next_id;
        SIM_CHECK(next_id < kRes,
                  "node " << kPaths[n] << " unexpected or unordered resource " << sv.resource);
        got[next_id++] = &sv;
      }
      for (std::size_t r = 0; r < kRes; ++r) {
        const SlotView* s = got[r];
        Decimal gu = s ? s->used : Decimal(), gr = s ? s->reserved : Decimal();
        Decimal gh = s ? s->hard : kUnlimitedAmount, ga = s ? s->approval : kUnlimitedAmount;
        const auto name = engine_->resources().name(static_cast<ResourceId>(r));
        SIM_CHECK(gu == expect_used[r], "node " << kPaths[n] << " " << name << " used "
                                                << gu.to_string() << " model "
                                                << expect_used[r].to_string());
        SIM_CHECK(gr == held[n][r], "node " << kPaths[n] << " " << name << " reserved "
                                            << gr.to_string() << " model "
                                            << held[n][r].to_string());
        SIM_CHECK(gh == m.hard[r], "node " << kPaths[n] << " " << name << " hard " << limit_text(gh)
                                           << " model " << limit_text(m.hard[r]));
        SIM_CHECK(ga == m.approval[r], "node " << kPaths[n] << " " << name << " approval "
                                               << limit_text(ga) << " model "
                                               << limit_text(m.approval[r]));
      }
      if (opt_.check_consumer_view) {
        // Seed 000's get_usage view of the same node must agree with get_scope.
        for (ResourceId r : {res::compute, res::tokens}) {
          auto q = engine_->get_consumer_usage(kPaths[n], engine_->resources().name(r));
          SIM_CHECK(q.has_value(), "get_consumer_usage " << kPaths[n]);
          SIM_CHECK(q->consumed == expect_used[r],
                    "get_consumer_usage " << kPaths[n] << " " << engine_->resources().name(r)
                                          << " consumed " << q->consumed.to_string() << " model "
                                          << expect_used[r].to_string());
        }
      }
    }
    for (const auto& [pid, mp] : procs_) {
      SIM_CHECK(engine_->is_tracked(pid) == mp.live, pid << " tracked " << engine_->is_tracked(pid));
      if (!mp.live) continue;
      auto v = engine_->get_process(pid);
      SIM_CHECK(v.has_value(), pid);
      SIM_CHECK(v->scope == kPaths[mp.node],
                pid << " scope " << v->scope << " model " << kPaths[mp.node]);
      SIM_CHECK(v->usage == mp.usage,
                pid << " usage " << describe(v->usage) << " model " << describe(mp.usage));
      ResourceUsage r = model_process_reserved(pid);
      SIM_CHECK(v->reserved == r,
                pid << " reserved " << describe(v->reserved) << " model " << describe(r));
    }
    if (opt_.check_pending_stats) {
      auto st = engine_->get_stats();
      SIM_CHECK(st.pending == model_pending_count(), "stats.pending " << st.pending
                                                                      << " open pending requests "
                                                                      << model_pending_count());
    }
  }

  // A process that is at any cumulative limit or past its timeout is admitted for nothing.
  bool process_blocked(const std::string& pid) const {
    auto v = engine_->get_process(pid);
    const ResourceQuota& q = v->quota;
    const ResourceUsage& u = v->usage;
    auto at = [](uint64_t used, uint64_t limit) { return limit != kUnlimited && used >= limit; };
    return at(u.llm_calls, q.max_llm_calls) || at(u.tool_calls, q.max_tool_calls) ||
           at(u.agent_hops, q.max_agent_hops) || at(u.iterations, q.max_iterations) ||
           at(u.tokens(), q.max_tokens) ||
           (q.max_cost != kUnlimitedAmount && u.cost >= q.max_cost) ||
           (q.timeout_seconds != kUnlimited &&
            now() - v->allocated_at >= seconds(static_cast<int64_t>(q.timeout_seconds)));
  }

  // The admission invariant, read from the engine right after an admission: every node on
  // the path (and the process, for a process target) has used + reserved <= hard for each
  // resource the admission asked for.
  void check_admission(int node, const ChargeList& c, const std::string& pid, const char* what) {
    std::array<bool, kRes> asked{};
    for (const auto& ch : c) asked[ch.id] = true;
    if (!plus(c.get(res::tokens_in), c.get(res::tokens_out)).is_zero()) asked[res::tokens] = true;
    for (int n = node; n >= 0; n = kParent[n]) {
      auto view = engine_->get_scope(kPaths[n]).value();
      for (const auto& sv : view.resources) {
        auto id = engine_->resources().find(sv.resource);
        if (!id || *id >= kRes || !asked[*id] || sv.hard == kUnlimitedAmount) continue;
        if (plus(sv.used, sv.reserved) == sv.hard) hit("admitted up to exactly a hard limit");
        SIM_CHECK(plus(sv.used, sv.reserved) <= sv.hard,
                  what << " admitted " << describe(c, engine_->resources())
                       << " past the hard limit of " << kPaths[n] << " " << sv.resource << ": used "
                       << sv.used.to_string() << " + reserved " << sv.reserved.to_string() << " > "
                       << sv.hard.to_string());
      }
    }
    if (pid.empty()) return;
    auto v = engine_->get_process(pid).value();
    const ResourceQuota& q = v.quota;
    auto within = [&](bool is_asked, uint64_t used, uint64_t reserved, uint64_t limit,
                      const char* name) {
      SIM_CHECK(!is_asked || limit == kUnlimited || used + reserved <= limit,
                what << " admitted " << describe(c, engine_->resources()) << " past " << pid << "'s "
                     << name << ": used " << used << " + reserved " << reserved << " > " << limit);
    };
    within(asked[res::llm_calls], v.usage.llm_calls, v.reserved.llm_calls, q.max_llm_calls,
           "max_llm_calls");
    within(asked[res::tool_calls], v.usage.tool_calls, v.reserved.tool_calls, q.max_tool_calls,
           "max_tool_calls");
    within(asked[res::tokens] || asked[res::tokens_in] || asked[res::tokens_out], v.usage.tokens(),
           v.reserved.tokens(), q.max_tokens, "max_tokens");
    if (asked[res::cost] && q.max_cost != kUnlimitedAmount)
      SIM_CHECK(plus(v.usage.cost, v.reserved.cost) <= q.max_cost,
                what << " admitted past " << pid
                     << "'s max_cost: " << plus(v.usage.cost, v.reserved.cost).to_string() << " > "
                     << q.max_cost.to_string());
  }

  // ---- Random inputs ------------------------------------------------------------------

  std::string random_live_pid() {
    std::vector<std::string> live;
    for (const auto& [pid, p] : procs_)
      if (p.live) live.push_back(pid);
    if (live.empty()) return {};
    return live[rng_.below(live.size())];
  }

  ResourceQuota random_quota() {
    ResourceQuota q;  // the default, shared by the engine when unchanged
    if (rng_.chance(10)) return q;
    q.max_llm_calls = rng_.chance(20) ? kUnlimited : rng_.range(2, 40);
    q.max_tool_calls = rng_.chance(30) ? kUnlimited : rng_.range(3, 80);
    q.max_agent_hops = rng_.chance(70) ? kUnlimited : rng_.range(1, 10);
    q.max_iterations = rng_.chance(70) ? kUnlimited : rng_.range(1, 10);
    q.max_tokens = rng_.chance(40) ? kUnlimited : rng_.range(1'000, 30'000);
    q.max_cost = rng_.chance(40) ? kUnlimitedAmount : milli(rng_.range(500, 20'000));
    q.timeout_seconds = rng_.chance(60) ? kUnlimited : rng_.range(60, 48 * 3600);
    q.soft_timeout_seconds = rng_.chance(50) ? kUnlimited : rng_.range(30, 3600);
    return q;
  }

  UsageReport random_report() {
    UsageReport r;
    r.llm_calls = rng_.range(0, 2);
    r.tool_calls = rng_.range(0, 3);
    r.agent_hops = rng_.chance(10) ? 1 : 0;
    r.iterations = rng_.chance(10) ? 1 : 0;
    r.tokens_in = rng_.chance(80) ? rng_.range(0, 1500) : 0;
    r.tokens_out = rng_.chance(80) ? rng_.range(0, 700) : 0;
    if (rng_.chance(50)) r.cost = milli(rng_.range(0, 600));
    if (rng_.chance(20)) r.extra.add(res::compute, milli(rng_.range(1, 5000))).value();
    return r;
  }

  ChargeList random_estimate() {
    ChargeList c;
    if (rng_.chance(85)) c.add(res::tokens_in, units(rng_.range(0, 2000))).value();
    if (rng_.chance(60)) c.add(res::tokens_out, units(rng_.range(0, 1000))).value();
    if (rng_.chance(70)) c.add(res::llm_calls, units(1)).value();
    if (rng_.chance(35)) c.add(res::cost, milli(rng_.range(0, 800))).value();
    if (rng_.chance(15)) c.add(res::compute, milli(rng_.range(1, 4000))).value();
    if (rng_.chance(10)) c.add(res::tokens, units(rng_.range(1, 500))).value();
    // A zero amount asks "is there any room left?" of that resource.
    if (rng_.chance(10)) {
      static constexpr ResourceId kZeroable[] = {res::tokens_in, res::llm_calls, res::cost,
                                                 res::compute};
      c.add(kZeroable[rng_.below(4)], Decimal()).value();
    }
    return c;
  }

  // ---- Operations ---------------------------------------------------------------------

  void random_op() {
    struct Op {
      unsigned weight;
      void (Simulation::*fn)();
    };
    static constexpr Op kOps[] = {
        {8, &Simulation::op_allocate},      {5, &Simulation::op_release},
        {17, &Simulation::op_record},       {14, &Simulation::op_reserve},
        {8, &Simulation::op_commit},        {4, &Simulation::op_cancel},
        {3, &Simulation::op_expire},        {4, &Simulation::op_adjust},
        {6, &Simulation::op_set_limits},    {2, &Simulation::op_reset_scope},
        {12, &Simulation::op_consume},      {3, &Simulation::op_decide},
        {14, &Simulation::op_advance_time}, {3, &Simulation::op_engine_advance},
    };
    unsigned total = 0;
    for (const auto& op : kOps) total += op.weight;
    uint64_t pick = rng_.below(total);
    for (const auto& op : kOps) {
      if (pick < op.weight) {
        (this->*op.fn)();
        return;
      }
      pick -= op.weight;
    }
  }

  void op_allocate() {
    std::string pid = pid_name(static_cast<int>(rng_.below(kPidCount)));
    int node = static_cast<int>(rng_.below(kNodeCount));
    ResourceQuota q = random_quota();
    trace([&](auto& os) { os << "allocate " << pid << " at " << kPaths[node]; });
    model_catch_up();
    auto r = engine_->allocate(pid, q, kPaths[node]);
    SIM_CHECK(r.has_value(), "allocate " << pid << ": " << r.error().message());
    MProcess& p = procs_[pid];
    SIM_CHECK(*r == !p.live, "allocate " << pid << " returned " << *r << " while live=" << p.live);
    if (!p.live) p = MProcess{true, node, {}, ++incarnations_};
  }

  void op_release() {
    std::string pid = pid_name(static_cast<int>(rng_.below(kPidCount)));
    trace([&](auto& os) { os << "release " << pid; });
    model_catch_up();
    bool r = engine_->release(pid);
    MProcess& p = procs_[pid];
    SIM_CHECK(r == p.live, "release " << pid << " returned " << r);
    if (!p.live) return;
    p.live = false;
    for (const auto& [id, h] : holds_)
      if (h.pid == pid)
        hit(h.pending ? "release with a pending request" : "release with a reservation");
    // Its holds (reservations and pending requests) are freed at once.
    for (auto it = holds_.begin(); it != holds_.end();) {
      if (it->second.pid == pid)
        it = holds_.erase(it);
      else
        ++it;
    }
  }

  void op_record() {
    std::string pid = random_live_pid();
    if (pid.empty() || rng_.chance(10)) pid = pid_name(static_cast<int>(rng_.below(kPidCount)));
    UsageReport rep = random_report();
    ChargeList c = report_to_charges(rep);
    trace(
        [&](auto& os) { os << "record_usage " << pid << " " << describe(c, engine_->resources()); });
    model_catch_up();
    auto r = engine_->record_usage(pid, rep);
    SIM_CHECK(r.has_value(), "record_usage " << pid << ": " << r.error().message());
    MProcess& p = procs_[pid];
    if (!p.live) {
      hit("record_usage auto-created a process");
      p = MProcess{true, 0, {}, ++incarnations_};  // at the root with the default quota
    }
    model_charge(p.node, pid, c);
    SIM_CHECK(r->usage == p.usage, "record_usage " << pid << " returned usage "
                                                   << describe(r->usage) << " model "
                                                   << describe(p.usage));
  }

  void op_reserve() {
    Target t;
    std::string pid = rng_.chance(35) ? std::string() : random_live_pid();
    int node;
    if (pid.empty()) {
      node = static_cast<int>(rng_.below(kNodeCount));
      t.scope = kPaths[node];
    } else {
      node = procs_[pid].node;
      t.process = pid;
    }
    ChargeList est = random_estimate();
    Duration ttl{0};
    if (rng_.chance(80)) ttl = seconds(static_cast<int64_t>(rng_.range(1, 900)));
    if (rng_.chance(10)) ttl = Duration(static_cast<int64_t>(rng_.range(1, 2'000'000)));
    trace([&](auto& os) {
      os << "reserve " << (pid.empty() ? std::string("scope ") + kPaths[node] : "process " + pid)
         << " " << describe(est, engine_->resources()) << " ttl " << ttl.count() << "us";
    });
    model_catch_up();
    const bool blocked = !pid.empty() && process_blocked(pid);
    std::optional<bool> predicted;
    if (pid.empty()) predicted = model_admits(node, est);
    auto r = engine_->reserve(t, est, ttl);
    SIM_CHECK(r.has_value(), "reserve: " << r.error().message());
    if (predicted)
      SIM_CHECK(r->admitted == *predicted,
                "reserve on " << kPaths[node] << " admitted=" << r->admitted
                              << " but the model says " << *predicted
                              << (r->refusal ? " refusal: " + r->refusal->message : ""));
    hit(pid.empty()
            ? (r->admitted ? "reserve on a scope admitted" : "reserve on a scope refused")
            : (r->admitted ? "reserve on a process admitted" : "reserve on a process refused"));
    if (!r->admitted) {
      SIM_CHECK(r->refusal.has_value(), "a refused reserve carries its refusal");
      hit("reserve refused for " + std::string(reason_name(r->refusal->reason)));
      return;
    }
    SIM_CHECK(!blocked,
              "reserve admitted " << pid << " although it is at a limit or past its timeout");
    const Duration eff = ttl == Duration{0} ? engine_->config().default_reservation_ttl : ttl;
    SIM_CHECK(r->id == next_hold_id_, "reserve id " << r->id << " expected " << next_hold_id_);
    SIM_CHECK(r->expires_at == now() + eff, "expires_at " << format_utc(r->expires_at));
    ++next_hold_id_;
    holds_[r->id] = MHold{false, pid, node, est, r->expires_at};
    trace([&](auto& os) { os << "  -> hold " << r->id; });
    check_admission(node, est, pid, "reserve");
  }

  // An id to commit or cancel: an open reservation, an expired one, or one that is not a
  // reservation at all.
  uint64_t pick_reservation_id() {
    std::vector<uint64_t> open, gone;
    for (const auto& [id, h] : holds_)
      if (!h.pending) open.push_back(id);
    for (const auto& [id, e] : expired_) gone.push_back(id);
    uint64_t roll = rng_.below(100);
    if (roll < 65 && !open.empty()) return open[rng_.below(open.size())];
    if (roll < 90 && !gone.empty()) return gone[rng_.below(gone.size())];
    if (rng_.chance(50)) {
      for (const auto& [id, h] : holds_)
        if (h.pending) return id;  // a pending request is not a reservation
    }
    return rng_.range(1, next_hold_id_ + 3);
  }

  void op_commit() {
    uint64_t id = pick_reservation_id();
    UsageReport actual = random_report();
    if (rng_.chance(30)) actual.tokens_in = rng_.range(0, 4000);  // sometimes above the estimate
    ChargeList c = report_to_charges(actual);
    trace([&](auto& os) { os << "commit " << id << " " << describe(c, engine_->resources()); });
    model_catch_up();
    auto r = engine_->commit(id, actual);
    auto h = holds_.find(id);
    if (h != holds_.end() && !h->second.pending) {
      SIM_CHECK(r.has_value(), "commit " << id << ": " << r.error().message());
      SIM_CHECK(!r->expired && r->reason == Reason::none, "commit " << id << " said expired");
      MHold hold = h->second;
      holds_.erase(h);
      model_charge(hold.node, hold.pid, c);
      hit("commit");
      return;
    }
    auto e = expired_.find(id);
    if (e != expired_.end()) {
      SIM_CHECK(r.has_value(), "commit of expired " << id << ": " << r.error().message());
      SIM_CHECK(r->expired && r->reason == Reason::reservation_expired,
                "commit " << id << " after expiry must say reservation_expired");
      MExpired ex = e->second;
      expired_.erase(e);
      hit("commit after expiry");
      const bool later =
          !ex.pid.empty() && procs_[ex.pid].live && procs_[ex.pid].incarnation != ex.incarnation;
      if (later) hit("commit after expiry charged a later process of the same id");
      // The usage happened: it is charged to the scope path of the hold, and to its process
      // if that is still tracked (see SimOptions::late_commit_charges_a_later_process).
      const bool charge_process = !later || opt_.late_commit_charges_a_later_process;
      model_charge(ex.node, charge_process ? ex.pid : std::string(), c);
      return;
    }
    SIM_CHECK(!r.has_value() && r.error().code == Errc::unknown_reservation,
              "commit of unknown id " << id << " must fail with unknown_reservation");
    hit("commit of an unknown id");
  }

  void op_cancel() {
    uint64_t id = pick_reservation_id();
    trace([&](auto& os) { os << "cancel " << id; });
    model_catch_up();
    auto r = engine_->cancel(id);
    auto h = holds_.find(id);
    if (h != holds_.end() && !h->second.pending) {
      SIM_CHECK(r.has_value(), "cancel " << id << ": " << r.error().message());
      holds_.erase(h);
      hit("cancel");
      return;
    }
    SIM_CHECK(
        !r.has_value() && r.error().code == Errc::unknown_reservation,
        "cancel of " << id << " (expired, pending or unknown) must fail with unknown_reservation");
  }

  // Moves the clock to a hold's expiry instant, or just past it.
  void op_expire() {
    if (holds_.empty()) return op_advance_time();
    auto it = holds_.begin();
    std::advance(it, static_cast<long>(rng_.below(holds_.size())));
    TimePoint target = it->second.expires_at;
    if (rng_.chance(50)) target += Duration(static_cast<int64_t>(rng_.range(1, 1'000'000)));
    if (target > now()) clock_.set(target);
    trace([&](auto& os) { os << "clock to the expiry of hold " << it->first; });
    if (rng_.chance(50)) engine_advance();
  }

  void op_adjust() {
    std::string pid = rng_.chance(85) ? random_live_pid() : std::string();
    if (pid.empty()) pid = pid_name(static_cast<int>(rng_.below(kPidCount)));
    std::vector<std::pair<std::string, std::string>> fields;
    auto count = [&](uint64_t lo, uint64_t hi) {
      return rng_.chance(20) ? std::string("unlimited") : std::to_string(rng_.range(lo, hi));
    };
    if (rng_.chance(50)) fields.emplace_back("max_llm_calls", count(1, 40));
    if (rng_.chance(40)) fields.emplace_back("max_tokens", count(500, 30'000));
    if (rng_.chance(30))
      fields.emplace_back(
          "max_cost", rng_.chance(20) ? "unlimited" : milli(rng_.range(100, 20'000)).to_string());
    if (rng_.chance(30)) fields.emplace_back("timeout_seconds", count(30, 4 * 3600));
    if (rng_.chance(20)) fields.emplace_back("max_tool_calls", count(1, 80));
    if (rng_.chance(20)) fields.emplace_back("max_iterations", count(1, 10));
    trace([&](auto& os) {
      os << "adjust_quota " << pid;
      for (const auto& [k, v] : fields) os << " " << k << "=" << v;
    });
    model_catch_up();
    auto r = engine_->adjust_quota(pid, fields);
    if (procs_[pid].live) {
      SIM_CHECK(r.has_value(), "adjust_quota " << pid << ": " << r.error().message());
    } else {
      SIM_CHECK(!r.has_value() && r.error().code == Errc::unknown_process,
                "adjust_quota of untracked " << pid);
    }
  }

  void op_set_limits() {
    int node = rng_.chance(10) ? 0 : static_cast<int>(rng_.range(1, kNodeCount - 1));
    const uint64_t scale = node == 0 ? 10 : 1;
    ScopeUpdate u;
    u.clear_overrides = rng_.chance(5);
    model_catch_up();
    const auto& used = model_used();
    const auto held = model_reserved();
    auto hard = [&](ResourceId id, Decimal v) {
      // Often exactly at (or just above) what the node holds now: the `>` vs `>=` edges.
      Decimal now_held = plus(used[node][id], held[node][id]);
      uint64_t roll = rng_.below(100);
      if (roll < 15)
        v = kUnlimitedAmount;
      else if (roll < 35)
        v = now_held;
      else if (roll < 45)
        v = plus(now_held, ResourceRegistry::is_integer(id) ? units(1) : milli(1));
      u.limits[id].hard = v;
    };
    if (rng_.chance(45)) hard(res::tokens, units(rng_.range(500, 30'000) * scale));
    if (rng_.chance(40)) hard(res::llm_calls, units(rng_.range(3, 60) * scale));
    if (rng_.chance(35)) hard(res::cost, milli(rng_.range(500, 30'000) * scale));
    if (rng_.chance(30)) hard(res::compute, milli(rng_.range(1'000, 60'000) * scale));
    if (rng_.chance(30))
      u.limits[res::compute].approval =
          rng_.chance(25) ? kUnlimitedAmount : milli(rng_.range(500, 8'000));
    // Resets on the nodes below the root; the root keeps everything ever charged.
    if (node != 0 && rng_.chance(30)) {
      static constexpr ResetPeriod kPeriods[] = {ResetPeriod::never, ResetPeriod::hourly,
                                                 ResetPeriod::daily};
      u.reset = kPeriods[rng_.below(3)];
    }
    trace([&](auto& os) {
      os << "set_limits " << kPaths[node] << (u.clear_overrides ? " (clear)" : "");
      for (const auto& [id, spec] : u.limits)
        os << " " << engine_->resources().name(id) << "="
           << (spec.hard ? limit_text(*spec.hard) : "-") << "/"
           << (spec.approval ? limit_text(*spec.approval) : "-");
      if (u.reset) os << " reset=" << reset_period_name(*u.reset);
    });
    model_catch_up();
    auto r = engine_->set_limits(kPaths[node], u);
    SIM_CHECK(r.has_value(), "set_limits: " << r.error().message());
    MNode& m = nodes_[node];
    if (u.clear_overrides) {
      m.hard.fill(kUnlimitedAmount);
      m.approval.fill(kUnlimitedAmount);
    }
    for (const auto& [id, spec] : u.limits) {
      if (spec.hard) m.hard[id] = *spec.hard;
      if (spec.approval) m.approval[id] = *spec.approval;
    }
    if (u.reset && *u.reset != m.period) {
      m.period = *u.reset;
      m.next_reset = model_next_boundary(m.period, now());
    }
  }

  void op_reset_scope() {
    int node = static_cast<int>(rng_.range(1, kNodeCount - 1));
    trace([&](auto& os) { os << "reset_scope " << kPaths[node]; });
    model_catch_up();
    auto r = engine_->reset_scope(kPaths[node]);
    SIM_CHECK(r.has_value(), "reset_scope: " << r.error().message());
    nodes_[node].reset_seq = ++seq_;
    nodes_[node].last_reset_at = now();
    hit("reset_scope");
  }

  void op_consume() {
    ConsumeRequest req;
    std::string pid = rng_.chance(45) ? std::string() : random_live_pid();
    int node;
    if (pid.empty()) {
      node = static_cast<int>(rng_.below(kNodeCount));
      req.target.scope = kPaths[node];
    } else {
      node = procs_[pid].node;
      req.target.process = pid;
    }
    ResourceId id;
    switch (rng_.below(4)) {
      case 0:
        id = res::llm_calls;
        req.amount = units(rng_.range(1, 5));
        break;
      case 1:
        id = res::tokens;
        req.amount = units(rng_.range(1, 3000));
        break;
      case 2:
        id = res::cost;
        req.amount = milli(rng_.range(1, 3000));
        break;
      default:
        id = res::compute;
        req.amount = milli(rng_.range(1, 20'000));
        break;
    }
    model_catch_up();
    if (pid.empty() && rng_.chance(15)) {
      // Exactly what is left on the path: admitted, and the next unit is not.
      Decimal room = model_room(node, id);
      if (room != kUnlimitedAmount && !room.is_zero() &&
          (!ResourceRegistry::is_integer(id) || room.is_integer()))
        req.amount = room;
    }
    req.resource = std::string(engine_->resources().name(id));
    req.allow_partial = rng_.chance(50);
    ChargeList want;
    want.add(id, req.amount).value();
    trace([&](auto& os) {
      os << "consume " << (pid.empty() ? std::string("scope ") + kPaths[node] : "process " + pid)
         << " " << req.resource << " " << req.amount.to_string()
         << (req.allow_partial ? " partial-ok" : "");
    });
    model_catch_up();
    const bool blocked = !pid.empty() && process_blocked(pid);
    // For a scope target the model decides the outcome in full.
    std::optional<ConsumeStatus> predicted;
    Decimal predicted_grant;
    if (pid.empty()) {
      if (model_admits(node, want)) {
        predicted = ConsumeStatus::approved;
        predicted_grant = req.amount;
        for (int n = node; n >= 0; n = kParent[n])
          if (nodes_[n].approval[id] != kUnlimitedAmount && req.amount > nodes_[n].approval[id])
            predicted = ConsumeStatus::pending;
      } else {
        predicted = ConsumeStatus::denied;
        Decimal room = model_room(node, id);
        if (ResourceRegistry::is_integer(id) && room != kUnlimitedAmount)
          room = units(room.to_u64_floor());
        if (req.allow_partial && room != kUnlimitedAmount && !room.is_zero() && room < req.amount) {
          predicted = ConsumeStatus::partial;
          predicted_grant = room;
          // A partial grant above an approval threshold waits for an operator too.
          for (int n = node; n >= 0; n = kParent[n])
            if (nodes_[n].approval[id] != kUnlimitedAmount && room > nodes_[n].approval[id])
              predicted = ConsumeStatus::pending;
        }
      }
    }
    auto r = engine_->consume(req);
    SIM_CHECK(r.has_value(), "consume: " << r.error().message());
    hit(std::string(pid.empty() ? "consume on a scope " : "consume on a process ") +
        std::string(consume_status_name(r->status)));
    if (predicted) {
      SIM_CHECK(r->status == *predicted,
                "consume on " << kPaths[node] << " status " << consume_status_name(r->status)
                              << " model " << consume_status_name(*predicted));
      if (*predicted == ConsumeStatus::approved || *predicted == ConsumeStatus::partial)
        SIM_CHECK(r->granted == predicted_grant,
                  "granted " << r->granted.to_string() << " model " << predicted_grant.to_string());
    }
    if (r->status == ConsumeStatus::pending) {
      SIM_CHECK(r->request_id == next_hold_id_,
                "pending id " << r->request_id << " expected " << next_hold_id_);
      ++next_hold_id_;
      // What is held: the whole amount, or what a partial grant would have been.
      SIM_CHECK(r->refusal && r->refusal->reason == Reason::approval_required,
                "a pending result names its threshold");
      ChargeList held;
      held.add(id, r->refusal->used).value();
      if (predicted)
        SIM_CHECK(r->refusal->used == predicted_grant,
                  "pending holds " << r->refusal->used.to_string() << " model "
                                   << predicted_grant.to_string());
      SIM_CHECK(r->refusal->used <= req.amount, "pending holds more than asked");
      holds_[r->request_id] = MHold{true, pid, node, held, r->expires_at};
      SIM_CHECK(r->expires_at == now() + engine_->config().pending_ttl, "pending expiry");
      SIM_CHECK(!blocked,
                "consume held for " << pid << " although it is at a limit or past its timeout");
      check_admission(node, held, pid, "consume (pending)");
      return;
    }
    if (!r->approved()) return;
    SIM_CHECK(!blocked,
              "consume admitted " << pid << " although it is at a limit or past its timeout");
    SIM_CHECK(
        r->status == ConsumeStatus::approved ? r->granted == req.amount : r->granted < req.amount,
        "granted " << r->granted.to_string() << " of " << req.amount.to_string());
    ChargeList got;
    got.add(id, r->granted).value();
    model_charge(node, pid, got);
    check_admission(node, got, pid, "consume");
    if (pid.empty()) {
      Decimal room = model_room(node, id);
      SIM_CHECK(r->remaining == room,
                "remaining " << limit_text(r->remaining) << " model " << limit_text(room));
    }
  }

  void op_decide() {
    std::vector<uint64_t> pending;
    for (const auto& [id, h] : holds_)
      if (h.pending) pending.push_back(id);
    uint64_t id = pending.empty() || rng_.chance(10) ? rng_.range(1, next_hold_id_ + 3)
                                                     : pending[rng_.below(pending.size())];
    bool approve = rng_.chance(60);
    trace([&](auto& os) { os << (approve ? "approve " : "deny ") << id; });
    model_catch_up();
    auto r = approve ? engine_->approve(id) : engine_->deny(id);
    auto h = holds_.find(id);
    if (h == holds_.end() || !h->second.pending) {
      SIM_CHECK(!r.has_value() && r.error().code == Errc::unknown_request,
                "approve/deny of " << id << " (not pending) must fail with unknown_request");
      return;
    }
    SIM_CHECK(r.has_value(), "approve/deny " << id << ": " << r.error().message());
    MHold hold = h->second;
    holds_.erase(h);
    hit(approve ? "approve" : "deny");
    if (approve) {
      SIM_CHECK(r->status == ConsumeStatus::approved,
                "approve gave " << consume_status_name(r->status));
      model_charge(hold.node, hold.pid, hold.charges);
    } else {
      SIM_CHECK(r->status == ConsumeStatus::denied, "deny gave " << consume_status_name(r->status));
    }
  }

  void op_advance_time() {
    Duration d;
    const int64_t t = now().time_since_epoch().count();
    switch (rng_.below(6)) {
      case 0:
        d = Duration(static_cast<int64_t>(rng_.range(1, 120'000'000)));
        break;  // up to 2 min
      case 1:
        d = std::chrono::minutes(static_cast<int64_t>(rng_.range(1, 90)));
        break;  // up to 1.5 h
      case 2:
      case 3: {  // onto an hour or day boundary, or one microsecond either side of it
        int64_t grid = rng_.chance(60) ? kHourUs : kDayUs;
        int64_t next = t - t % grid + grid;
        int64_t jitter = static_cast<int64_t>(rng_.below(3)) - 1;
        d = Duration(std::max<int64_t>(1, next + jitter - t));
        break;
      }
      case 4:
        d = seconds(static_cast<int64_t>(rng_.range(1, 900)));
        break;
      default:
        d = std::chrono::hours(static_cast<int64_t>(rng_.range(1, 30)));
        break;
    }
    clock_.advance(d);
    trace([&](auto& os) { os << "advance the clock by " << d.count() << "us"; });
    if (rng_.chance(50)) engine_advance();
  }

  void engine_advance() {
    trace([&](auto& os) { os << "engine.advance()"; });
    model_catch_up();
    engine_->advance();
  }
  void op_engine_advance() { engine_advance(); }

  // Ends every hold: commit or cancel some, approve or deny some pending requests, and let
  // the rest expire. Afterwards nothing may stay reserved anywhere.
  void drain() {
    std::vector<std::pair<uint64_t, bool>> open;
    for (const auto& [id, h] : holds_) open.emplace_back(id, h.pending);
    for (auto [id, pending] : open) {
      uint64_t roll = rng_.below(3);
      if (roll == 2) continue;  // left to expire
      model_catch_up();
      auto h = holds_.find(id);
      if (h == holds_.end()) continue;
      MHold hold = h->second;
      if (pending) {
        auto r = roll == 0 ? engine_->approve(id) : engine_->deny(id);
        SIM_CHECK(r.has_value(), "drain approve/deny " << id << ": " << r.error().message());
        holds_.erase(h);
        if (roll == 0) model_charge(hold.node, hold.pid, hold.charges);
      } else if (roll == 0) {
        UsageReport actual = random_report();
        auto r = engine_->commit(id, actual);
        SIM_CHECK(r.has_value(), "drain commit " << id << ": " << r.error().message());
        holds_.erase(h);
        model_charge(hold.node, hold.pid, report_to_charges(actual));
      } else {
        auto r = engine_->cancel(id);
        SIM_CHECK(r.has_value(), "drain cancel " << id << ": " << r.error().message());
        holds_.erase(h);
      }
      check_state();
    }
    // Past every ttl (at most 15 min here) and the pending ttl (1 h).
    clock_.advance(std::chrono::hours(25));
    engine_advance();
    (void)engine_->take_events();
    check_state();
    SIM_CHECK(holds_.empty(), "the model still holds " << holds_.size());
    SIM_CHECK(engine_->hold_count() == 0,
              "hold_count " << engine_->hold_count() << " after the drain");
    for (int n = 0; n < kNodeCount; ++n) {
      auto view = engine_->get_scope(kPaths[n]).value();
      for (const auto& sv : view.resources)
        SIM_CHECK(sv.reserved.is_zero(), "node " << kPaths[n] << " " << sv.resource
                                                 << " still reserves " << sv.reserved.to_string());
    }
    for (const auto& pv : engine_->list_processes(0, 1000))
      SIM_CHECK(pv.reserved == ResourceUsage{},
                pv.id << " still reserves " << describe(pv.reserved));
  }

  // ---- Durable state ------------------------------------------------------------------

  void sync_mirror() {
    EngineChanges c = engine_->take_changes();
    const std::string dup = testing_support::Mirror::duplicate_key(c);
    SIM_CHECK(dup.empty(), "take_changes lists " << dup << " twice");
    mirror_.apply(c);
  }

  // A mutation that forgot to mark its entity leaves the store behind the engine.
  void check_mirror() {
    const std::string d = testing_support::diff_state(mirror_.state(), engine_->export_state());
    SIM_CHECK(d.empty(), "the store (take_changes applied) differs from export_state: " << d);
  }

  // A fresh engine imports the export and exports the same.
  std::unique_ptr<Engine> check_reimport() {
    const EngineState s = engine_->export_state();
    auto fresh = std::make_unique<Engine>(clock_, engine_->config());
    auto r = fresh->import_state(s);
    SIM_CHECK(r.has_value(), "import of the export failed: " << r.error().message());
    const std::string d = testing_support::diff_state(s, fresh->export_state());
    SIM_CHECK(d.empty(), "an imported engine exports differently: " << d);
    SIM_CHECK(fresh->take_changes().empty(), "an import left changes for the store");
    SIM_CHECK(fresh->take_events().empty(), "an import raised events");
    return fresh;
  }

  // A restart: the run goes on with an engine built from the store's records, so the model
  // checks that nothing behaves differently after recovery. Expired reservation ids are
  // not durable: a late commit after a restart is an unknown id.
  void restart() {
    trace([&](auto& os) { os << "restart from the store"; });
    sync_mirror();
    check_mirror();
    auto fresh = check_reimport();
    (void)engine_->take_events();
    engine_ = std::move(fresh);
    expired_.clear();
    hit("restart");
  }

  std::string thread_name() { return "t" + std::to_string(aux_.below(4)); }

  void random_state_op() {
    switch (aux_.below(12)) {
      case 0:
      case 1: {  // a thread, tied to a live process or to none
        std::string t = thread_name(), pid = aux_.chance(70) ? random_live_pid_aux() : std::string();
        trace([&](auto& os) { os << "get_budget " << t << " " << pid; });
        model_catch_up();
        auto r = engine_->get_budget(t, pid);
        auto it = threads_.find(t);
        if (it == threads_.end()) {
          SIM_CHECK(r.has_value(), "get_budget " << t << ": " << r.error().message());
          threads_[t] = MThread{pid, pid.empty() ? 0 : procs_[pid].node};
        } else if (it->second.pid.empty() && !pid.empty()) {
          SIM_CHECK(r.has_value(), "get_budget " << t << " claimed by " << pid);
          it->second = MThread{pid, procs_[pid].node};
        } else if (!pid.empty() && it->second.pid != pid) {
          SIM_CHECK(!r.has_value(), "get_budget " << t << " moved to " << pid);
        }
        break;
      }
      case 2:
      case 3: {  // tokens on a thread: its process (whichever now has the id) and path
        if (threads_.empty()) return;
        auto it = threads_.begin();
        std::advance(it, static_cast<long>(aux_.below(threads_.size())));
        const uint64_t in = aux_.range(0, 900), out = aux_.range(0, 300);
        trace([&](auto& os) { os << "consume thread " << it->first << " " << in << "/" << out; });
        model_catch_up();
        auto r = engine_->consume(it->first, in, out);
        SIM_CHECK(r.has_value(), "consume thread " << it->first << ": " << r.error().message());
        ChargeList c;
        if (in) c.add(res::tokens_in, units(in)).value();
        if (out) c.add(res::tokens_out, units(out)).value();
        const std::string& pid = it->second.pid;
        const bool live = !pid.empty() && procs_[pid].live;
        model_charge(live ? procs_[pid].node : it->second.node, live ? pid : std::string(), c);
        hit("thread consume");
        break;
      }
      case 4: {  // a reservation through a thread: the hold names it
        if (threads_.empty()) return;
        auto it = threads_.begin();
        std::advance(it, static_cast<long>(aux_.below(threads_.size())));
        ChargeList est;
        est.add(res::tokens_in, units(aux_.range(1, 400))).value();
        Target t;
        t.thread = it->first;
        trace([&](auto& os) { os << "reserve through thread " << it->first; });
        model_catch_up();
        auto r = engine_->reserve(t, est, seconds(static_cast<int64_t>(aux_.range(1, 900))));
        SIM_CHECK(r.has_value(), "reserve through " << it->first << ": " << r.error().message());
        if (!r->admitted) return;
        const std::string& pid = it->second.pid;
        const bool live = !pid.empty() && procs_[pid].live;
        SIM_CHECK(r->id == next_hold_id_, "reserve id " << r->id << " expected " << next_hold_id_);
        ++next_hold_id_;
        holds_[r->id] = MHold{false, live ? pid : std::string(), live ? procs_[pid].node : it->second.node, est,
                              r->expires_at};
        hit("reserve through a thread");
        break;
      }
      case 5: {  // a thread dropped (its holds lose it)
        std::string t = thread_name();
        trace([&](auto& os) { os << "reset_thread " << t; });
        model_catch_up();
        const bool had = engine_->reset_thread(t);
        SIM_CHECK(had == threads_.contains(t), "reset_thread " << t << " returned " << had);
        threads_.erase(t);
        break;
      }
      case 6:  // configure() does not catch up, so neither does the model
        engine_->configure(aux_.range(100, 20'000));
        break;
      case 7:
      case 8: {  // rate limits: requests, limits set and cleared, resets, cleanup
        RateLimiter& rl = engine_->rate_limiter();
        const std::string user = "u" + std::to_string(aux_.below(3));
        const std::string endpoint = "e" + std::to_string(aux_.below(2));
        switch (aux_.below(6)) {
          case 0:
            (void)rl.set_user_limits(user, RateLimitConfig{aux_.range(1, 20), 100, 1000, aux_.range(1, 5)});
            break;
          case 1:
            (void)rl.set_endpoint_limits(endpoint, RateLimitConfig{aux_.range(1, 20), 100, 1000, 0});
            break;
          case 2:
            (void)(aux_.chance(50) ? rl.clear_user_limits(user) : rl.clear_endpoint_limits(endpoint));
            break;
          case 3:
            (void)(aux_.chance(70) ? rl.reset_user(user) : Result<std::size_t>(rl.cleanup_expired()));
            break;
          default:
            for (uint64_t i = aux_.range(1, 6); i > 0; --i) (void)rl.check_rate_limit(user, endpoint);
            break;
        }
        break;
      }
      case 9: {  // a live template: a plan no node uses, and the shipped tier nodes never use
        LimitTemplate t{aux_.chance(50) ? "sim" : "free", aux_.chance(50) ? TemplateKind::plan : TemplateKind::tier,
                        {}, ResetPeriod::never};
        t.limits[res::compute].hard = units(aux_.range(1, 100));
        SIM_CHECK(engine_->set_template(t).has_value(), "set_template");
        break;
      }
      case 10: {  // a reload with other thresholds: the fired bits of everything change
        EngineConfig cfg;
        cfg.thresholds = aux_.chance(50) ? std::vector<uint32_t>{80, 90} : std::vector<uint32_t>{50, 75, 95};
        model_catch_up();
        engine_->reconfigure(cfg);
        break;
      }
      default:  // nothing is caught up: what fell due is applied after the restart
        restart();
        break;
    }
  }

  std::string random_live_pid_aux() {
    std::vector<std::string> live;
    for (const auto& [pid, p] : procs_)
      if (p.live) live.push_back(pid);
    return live.empty() ? std::string() : live[aux_.below(live.size())];
  }

  void hit(const std::string& what) {
    if (cov_) cov_->hit(what);
  }

  Rng rng_;
  SimOptions opt_;
  Coverage* cov_;
  // Draws for the durable-state operations (threads, rate limits, templates, restarts):
  // a stream of its own, so they do not move the main sequence a replayed seed follows.
  Rng aux_;
  FakeClock clock_;
  std::unique_ptr<Engine> engine_;
  // What the store would hold: the engine's take_changes() applied after every step.
  testing_support::Mirror mirror_;
  struct MThread {
    std::string pid;  // the process it was tied to, live or not ("" for none)
    int node = 0;     // where its tokens go once that process is gone
  };
  std::map<std::string, MThread> threads_;
  int step_ = 0;

  uint64_t seq_ = 0;
  std::vector<MCharge> charges_;
  mutable uint64_t used_cache_seq_ = ~uint64_t{0};
  mutable std::array<Amounts, kNodeCount> used_cache_{};
  std::array<MNode, kNodeCount> nodes_{};
  std::map<uint64_t, MHold> holds_;
  std::map<uint64_t, MExpired> expired_;
  std::map<std::string, MProcess> procs_;
  uint64_t next_hold_id_ = 1;
  uint64_t incarnations_ = 0;
};

// Runs one seed; returns "" on success, else the failure with its seed and step.
std::string run_seed(uint64_t seed, SimOptions opt, Coverage* cov = nullptr,
                     std::string* fingerprint = nullptr) {
  Simulation sim(seed, opt, cov);
  try {
    sim.run();
    if (fingerprint) *fingerprint = sim.fingerprint();
  } catch (const SimFailure& f) {
    std::ostringstream os;
    os << "seed=" << seed << " step=" << sim.step() << ": " << f.what
       << "\n  replay: BUDGETD_SIM_SEED=" << seed
       << " BUDGETD_SIM_TRACE=1 ./lib_tests --gtest_filter='Simulation.*'";
    return os.str();
  }
  return {};
}

SimOptions options_from_env() {
  SimOptions opt;
  if (auto s = env_u64("BUDGETD_SIM_STEPS")) opt.steps = static_cast<int>(*s);
  opt.trace = env_u64("BUDGETD_SIM_TRACE").value_or(0) != 0;
  return opt;
}

TEST(Simulation, RandomSequencesMatchTheReferenceModel) {
  const SimOptions opt = options_from_env();
  std::vector<uint64_t> seeds;
  if (auto one = env_u64("BUDGETD_SIM_SEED")) {
    seeds.push_back(*one);
  } else {
    const uint64_t count = env_u64("BUDGETD_SIM_SEEDS").value_or(3000);
    for (uint64_t s = 1; s <= count; ++s) seeds.push_back(s);
  }
  int failures = 0;
  Coverage cov;
  for (uint64_t seed : seeds) {
    SCOPED_TRACE("seed=" + std::to_string(seed));
    std::string err = run_seed(seed, opt, &cov);
    if (!err.empty()) {
      ADD_FAILURE() << err;
      if (++failures >= 5) break;  // enough to diagnose; the rest would repeat it
    }
  }
  std::ostringstream summary;
  for (const auto& [what, n] : cov.counts) summary << "  " << what << ": " << n << "\n";
  if (opt.trace || env_u64("BUDGETD_SIM_COVERAGE").value_or(0)) std::cerr << summary.str();
  // A full run must reach every outcome; a single replayed seed need not.
  if (seeds.size() >= 1000 && opt.steps >= 100) {
    for (const char* what : {"scheduled reset",
                             "reservation expired",
                             "pending request expired",
                             "view of a reset not yet applied",
                             "admitted up to exactly a hard limit",
                             "record_usage auto-created a process",
                             "reserve on a scope admitted",
                             "reserve on a scope refused",
                             "reserve on a process admitted",
                             "reserve on a process refused",
                             "commit",
                             "commit after expiry",
                             "commit of an unknown id",
                             "cancel",
                             "consume on a scope APPROVED",
                             "consume on a scope DENIED",
                             "consume on a scope PARTIAL",
                             "consume on a scope PENDING",
                             "consume on a process APPROVED",
                             "consume on a process DENIED",
                             "consume on a process PARTIAL",
                             "consume on a process PENDING",
                             "approve",
                             "deny",
                             "release with a pending request",
                             "release with a reservation",
                             "reset_scope",
                             "restart",
                             "thread consume",
                             "reserve through a thread"})
      EXPECT_GE(cov.counts[what], 5u) << "the simulation rarely reaches: " << what << "\n"
                                      << summary.str();
  }
}

// The same seed gives the same run: the replay promise rests on it.
TEST(Simulation, SeedReplaysIdentically) {
  SimOptions opt;
  opt.steps = 60;
  std::string first, second, other;
  for (uint64_t seed : {7u, 1234u}) {
    EXPECT_EQ(run_seed(seed, opt, nullptr, &first), "") << "seed=" << seed;
    EXPECT_EQ(run_seed(seed, opt, nullptr, &second), "") << "seed=" << seed;
    EXPECT_EQ(first, second) << "seed=" << seed;
    EXPECT_EQ(run_seed(seed + 1, opt, nullptr, &other), "") << "seed=" << seed + 1;
    EXPECT_NE(first, other) << "seeds " << seed << " and " << seed + 1 << " ran the same";
  }
  Rng a(42), b(42);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a.below(1'000'003), b.below(1'000'003));
  // mt19937_64's 10000th output is fixed by the standard.
  std::mt19937_64 g(5489u);
  g.discard(9999);
  EXPECT_EQ(g(), 9981545732273789042ull);
}

// ---- Findings of the simulation, as direct tests ----------------------------------------

TimePoint at_utc(const char* text) { return parse_utc(text).value(); }

// Seed 162 found it: release() used to drop a pending consumption without deciding it, so
// stats.pending stayed 1 forever and no pending_decided event said what became of it.
TEST(Simulation, ReleaseDecidesItsPendingRequests) {
  FakeClock clock(at_utc("2024-02-28T10:00:00Z"));
  Engine engine(clock);
  ScopeUpdate u;
  u.limits[res::compute].approval = Decimal::from_int(5);
  ASSERT_TRUE(engine.set_limits("a", u).has_value());
  ASSERT_TRUE(engine.allocate("p1", ResourceQuota{}, "a").value());
  ConsumeRequest req;
  req.target.process = "p1";
  req.resource = "compute";
  req.amount = Decimal::from_int(10);
  auto r = engine.consume(req);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->status, ConsumeStatus::pending);
  EXPECT_EQ(engine.get_stats().pending, 1u);
  ASSERT_TRUE(engine.release("p1"));
  EXPECT_EQ(engine.hold_count(), 0u);
  EXPECT_TRUE(engine.list_pending().empty());
  EXPECT_EQ(engine.get_stats().pending, 0u) << "no request is pending any more";
  EXPECT_EQ(engine.get_stats().rejected_count, 1u);
  int decided = 0;
  for (const auto& e : engine.take_events()) {
    if (e.kind != EventKind::pending_decided) continue;
    ++decided;
    EXPECT_EQ(e.ref, r->request_id);
    EXPECT_EQ(e.outcome, "released");
    EXPECT_EQ(e.path, "a");
    EXPECT_EQ(e.process, "p1");
    EXPECT_EQ(e.resource, "compute");
    EXPECT_EQ(e.used, Decimal::from_int(10));
  }
  EXPECT_EQ(decided, 1) << "the pending request must end with one pending_decided event";
  EXPECT_EQ(run_seed(162, SimOptions{}), "");
}

// Seed 1 found it: get_consumer_usage used to read the slot as it was at the last mutating
// call while get_scope showed a due reset as applied, so after a daily boundary the two
// views of one node disagreed until something called advance().
TEST(Simulation, ConsumerUsageShowsADueResetAsApplied) {
  FakeClock clock(at_utc("2024-02-28T23:00:00Z"));
  Engine engine(clock);
  ScopeUpdate u;
  u.limits[res::compute].hard = Decimal::from_int(100);
  u.reset = ResetPeriod::daily;
  ASSERT_TRUE(engine.set_limits("a", u).has_value());
  ConsumeRequest req;
  req.target.scope = "a";
  req.resource = "compute";
  req.amount = Decimal::from_int(10);
  ASSERT_EQ(engine.consume(req)->status, ConsumeStatus::approved);
  clock.set(at_utc("2024-02-29T00:00:00Z"));
  auto view = engine.get_scope("a").value();
  ASSERT_EQ(view.resources.size(), 1u);
  EXPECT_EQ(view.resources[0].used, Decimal());
  auto q = engine.get_consumer_usage("a", "compute").value();
  EXPECT_EQ(q.consumed, Decimal()) << q.consumed.to_string();
  EXPECT_EQ(q.remaining, Decimal::from_int(100)) << q.remaining.to_string();

  EXPECT_EQ(run_seed(1, SimOptions{}), "");
}

// Seed 285 (step 157) reaches this: a reservation of process p0 expires, p0 is released and
// a new p0 is allocated elsewhere; the late commit then charges the *new* p0's counters
// (Engine::commit -> resolve_hold looks the process up by id) while the scope charge goes
// to the old p0's path. The new process carries usage that its own scope never saw, and
// may be refused for it. Skipped unless BUDGETD_SIM_KNOWN_BUGS=1: lib/reservations.cc is
// not this test's file.
TEST(Simulation, LateCommitDoesNotChargeALaterProcessOfTheSameId) {
  FakeClock clock(at_utc("2024-02-28T10:00:00Z"));
  Engine engine(clock);
  ResourceQuota q;
  q.max_llm_calls = 5;
  ASSERT_TRUE(engine.allocate("p0", q, "d").value());
  Target t;
  t.process = "p0";
  ChargeList est;
  est.add(res::llm_calls, Decimal::from_int(1)).value();
  auto r = engine.reserve(t, est, seconds(10));
  ASSERT_TRUE(r.has_value() && r->admitted);
  clock.advance(seconds(11));
  engine.advance();  // the reservation expires
  ASSERT_TRUE(engine.release("p0"));
  ASSERT_TRUE(engine.allocate("p0", q, "a").value());
  UsageReport actual;
  actual.llm_calls = 3;
  auto c = engine.commit(r->id, actual);
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->expired);
  EXPECT_EQ(c->reason, Reason::reservation_expired);
  // The usage happened under the old p0, on d's path.
  auto d = engine.get_scope("d").value();
  ASSERT_EQ(d.resources.size(), 1u);
  EXPECT_EQ(d.resources[0].resource, "llm_calls");
  EXPECT_EQ(d.resources[0].used, Decimal::from_int(3));
  // The new p0 (under a) made no call: its usage and its scope's must agree, at zero.
  EXPECT_EQ(engine.get_usage("p0")->llm_calls, 0u);
  EXPECT_TRUE(engine.get_scope("a")->resources.empty());

  SimOptions opt;
  opt.late_commit_charges_a_later_process = false;
  EXPECT_EQ(run_seed(285, opt), "");
}

}  // namespace
}  // namespace budgetd
