// The engine's core: the scope tree, admission along a path, charging with thresholds,
// deadlines and events. Processes, threads, holds and consumption have files of their own.
#include "lib/engine.h"

#include <algorithm>
#include <limits>

#include "lib/plans.h"

namespace budgetd {

namespace {

constexpr uint8_t kSoftBit = 1u << 6;
constexpr uint8_t kHardBit = 1u << 7;

bool id_char(char c) { return c > ' ' && c < 127 && c != '/'; }
bool path_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '@' || c == '-';
}

uint64_t sat_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<uint64_t>::max() : r;
}

std::string period_phrase(ResetPeriod p) {
  if (p == ResetPeriod::never) return "Approaching limit.";
  return "Approaching " + std::string(reset_period_name(p)) + " limit.";
}

}  // namespace

Result<void> validate_id(std::string_view id) {
  if (id.empty()) return fail(Errc::invalid_id, "empty id");
  if (id.size() > Engine::kMaxIdLength) return fail(Errc::invalid_id, "id longer than 128 bytes");
  for (char c : id)
    if (!id_char(c)) return fail(Errc::invalid_id, "id has a space, '/' or a control byte");
  return {};
}

Result<std::string> normalize_path(std::string_view path) {
  if (path.size() > Engine::kMaxPathLength) return fail(Errc::invalid_id, "scope path longer than 256 bytes");
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.empty()) return std::string("/");
  std::size_t depth = 1, seg = 0;
  for (char c : path) {
    if (c == '/') {
      if (seg == 0) return fail(Errc::invalid_id, "empty segment in scope path");
      seg = 0;
      if (++depth > Engine::kMaxPathDepth) return fail(Errc::invalid_id, "scope path deeper than 16");
      continue;
    }
    if (!path_char(c)) return fail(Errc::invalid_id, "scope path has a character outside [A-Za-z0-9_.:@-]");
    ++seg;
  }
  // Only one trailing '/' is dropped: "a//" ends in an empty segment.
  if (seg == 0) return fail(Errc::invalid_id, "empty segment in scope path");
  return std::string(path);
}

std::string_view template_kind_name(TemplateKind k) { return k == TemplateKind::plan ? "plan" : "tier"; }

std::string_view consume_status_name(ConsumeStatus s) {
  switch (s) {
    case ConsumeStatus::approved: return "APPROVED";
    case ConsumeStatus::denied: return "DENIED";
    case ConsumeStatus::partial: return "PARTIAL";
    case ConsumeStatus::pending: return "PENDING";
  }
  return "DENIED";
}

Engine::Slot& Engine::ScopeNode::slot(ResourceId id) {
  if (id >= slots.size()) slots.resize(id + 1);
  return slots[id];
}

const Engine::Slot* Engine::ScopeNode::find_slot(ResourceId id) const {
  return id < slots.size() ? &slots[id] : nullptr;
}

Engine::Engine(const Clock& clock, EngineConfig config)
    : clock_(clock),
      config_(std::move(config)),
      rate_limiter_(clock),
      thread_default_(config_.thread_default_max_tokens),
      default_quota_(std::make_shared<const ResourceQuota>(config_.default_quota)) {
  if (config_.thresholds.size() > 6) config_.thresholds.resize(6);
  std::sort(config_.thresholds.begin(), config_.thresholds.end());
  auto root = std::make_unique<ScopeNode>();
  root->path = "/";
  root->last_reset_at = root->period_since = clock_.now();
  root_ = root.get();
  scopes_.emplace("/", std::move(root));
  mark(*root_);
  mark_counters();  // the configured thread budget is state from the start
  for (auto& t : shipped_templates(resources_)) set_template(std::move(t)).value();
  constructed_ = true;
}

Engine::~Engine() = default;

void Engine::push_event(Event e) {
  e.at = clock_.now();
  // Every event about a live process names its owner, whichever path raised it, so the
  // daemon can route it to that owner's watchers.
  if (!e.owner && !e.process.empty())
    if (const Process* p = find_process(e.process)) e.owner = p->owner;
  events_.push_back(std::move(e));
}

std::vector<Event> Engine::take_events() {
  std::vector<Event> out;
  out.swap(events_);
  return out;
}

// ---- Scopes -------------------------------------------------------------------------

Engine::ScopeNode* Engine::find_scope(std::string_view normalized) const {
  auto it = scopes_.find(normalized);
  return it == scopes_.end() ? nullptr : it->second.get();
}

Result<Engine::ScopeNode*> Engine::find_or_create_scope(std::string_view path) {
  auto norm = normalize_path(path);
  if (!norm) return std::unexpected(norm.error());
  if (auto* n = find_scope(*norm)) return n;
  if (scopes_.size() >= kMaxScopes) return fail(Errc::capacity_exceeded, "too many scope nodes");
  ScopeNode* parent = root_;
  std::size_t pos = 0;
  const std::string& p = *norm;
  while (pos <= p.size()) {
    std::size_t slash = p.find('/', pos);
    if (slash == std::string::npos) slash = p.size();
    std::string prefix = p.substr(0, slash);
    ScopeNode* n = find_scope(prefix);
    if (!n) {
      auto node = std::make_unique<ScopeNode>();
      node->path = prefix;
      node->parent = parent;
      node->last_reset_at = node->period_since = clock_.now();
      n = node.get();
      scopes_.emplace(prefix, std::move(node));
      mark(*n);
    }
    parent = n;
    pos = slash + 1;
  }
  return parent;
}

// The effective limit of each resource: the node's override, else its tier's, else its
// plan's, else unlimited. Cached on the node so admission never walks templates.
void Engine::resolve_limits(ScopeNode& n) {
  const LimitTemplate* tier = n.tier.empty() ? nullptr : get_template(TemplateKind::tier, n.tier);
  const LimitTemplate* plan = n.plan.empty() ? nullptr : get_template(TemplateKind::plan, n.plan);
  for (auto& s : n.slots) s.hard = s.soft = s.approval = kUnlimitedAmount;
  auto apply = [&](const LimitMap& m) {
    for (const auto& [id, spec] : m) {
      Slot& s = n.slot(id);
      if (spec.hard) s.hard = *spec.hard;
      if (spec.soft) s.soft = *spec.soft;
      if (spec.approval) s.approval = *spec.approval;
    }
  };
  // Lowest precedence first, so later layers overwrite.
  if (plan) apply(plan->limits);
  if (tier) apply(tier->limits);
  apply(n.overrides);
  ResetPeriod period = ResetPeriod::never;
  if (plan) period = plan->reset;
  if (tier) period = tier->reset;
  if (n.reset_override) period = *n.reset_override;
  if (period != n.reset) {
    n.reset = period;
    n.period_since = clock_.now();
    rearm_node(n);
  }
  // A changed limit re-arms its thresholds: a raised limit may put usage back below them.
  for (auto& s : n.slots) s.fired = crossed_bits(s.used, s.hard, s.soft);
  mark(n);
}

void Engine::rearm_node(ScopeNode& n) {
  n.next_reset_at = next_reset(n.reset, clock_.now());
  if (n.reset != ResetPeriod::never)
    deadlines_.push({n.next_reset_at, DeadlineKind::scope_reset, 0, reinterpret_cast<uintptr_t>(&n)});
}

void Engine::reset_node(ScopeNode& n, TimePoint boundary, bool emit) {
  for (auto& s : n.slots) {
    s.used = Decimal();
    s.fired = crossed_bits(s.used, s.hard, s.soft);
  }
  n.last_reset_at = boundary;
  mark(n);
  if (emit) {
    Event e = make_event(EventKind::reset, n.path);
    e.message = "Budget reset.";
    push_event(std::move(e));
  }
}

Result<void> Engine::set_limits(std::string_view path, const ScopeUpdate& u) {
  catch_up();
  if (u.plan && !u.plan->empty() && !get_template(TemplateKind::plan, *u.plan))
    return fail(Errc::unknown_plan, "plan " + *u.plan);
  if (u.tier && !u.tier->empty() && !get_template(TemplateKind::tier, *u.tier))
    return fail(Errc::unknown_plan, "tier " + *u.tier);
  for (const auto& [id, spec] : u.limits) {
    if (id >= resources_.size()) return fail(Errc::unknown_resource, std::to_string(id));
    for (const auto& v : {spec.hard, spec.soft, spec.approval})
      if (v && v->is_negative()) return fail(Errc::negative_amount, std::string(resources_.name(id)));
  }
  auto node = find_or_create_scope(path);
  if (!node) return std::unexpected(node.error());
  ScopeNode& n = **node;
  if (u.clear_overrides) n.overrides.clear();
  for (const auto& [id, spec] : u.limits) {
    LimitSpec& o = n.overrides[id];
    if (spec.hard) o.hard = spec.hard;
    if (spec.soft) o.soft = spec.soft;
    if (spec.approval) o.approval = spec.approval;
  }
  if (u.plan) n.plan = *u.plan;
  if (u.tier) n.tier = *u.tier;
  if (u.reset) n.reset_override = *u.reset;
  resolve_limits(n);
  Event e = make_event(EventKind::limit_changed, n.path);
  e.message = "Limits changed.";
  push_event(std::move(e));
  return {};
}

Result<ScopeView> Engine::get_scope(std::string_view path) const {
  auto norm = normalize_path(path);
  if (!norm) return std::unexpected(norm.error());
  const ScopeNode* n = find_scope(*norm);
  if (!n) return fail(Errc::unknown_scope, *norm);
  ScopeView v{n->path, n->plan, n->tier, n->reset, n->last_reset_at, n->next_reset_at, {}};
  // A reset that fell due since the last mutating call is shown as applied (this is const
  // and cannot catch up), so the view never depends on how often advance() runs.
  const TimePoint now = clock_.now();
  const bool reset_pending = n->reset != ResetPeriod::never && n->next_reset_at <= now;
  if (reset_pending) {
    v.last_reset_at = period_start(n->reset, now);
    v.next_reset_at = next_reset(n->reset, now);
  }
  for (ResourceId id = 0; id < n->slots.size(); ++id) {
    const Slot& s = n->slots[id];
    const Decimal used = reset_pending ? Decimal() : s.used;
    bool limited = s.hard != kUnlimitedAmount || s.soft != kUnlimitedAmount || s.approval != kUnlimitedAmount;
    if (!limited && used.is_zero() && s.reserved.is_zero()) continue;
    v.resources.push_back({std::string(resources_.name(id)), used, s.reserved, s.hard, s.soft, s.approval});
  }
  return v;
}

std::vector<ScopeView> Engine::list_scopes() const {
  std::vector<ScopeView> out;
  for (const auto& [path, n] : scopes_) out.push_back(*get_scope(path));
  return out;
}

Result<void> Engine::reset_scope(std::string_view path) {
  catch_up();
  auto norm = normalize_path(path);
  if (!norm) return std::unexpected(norm.error());
  ScopeNode* n = find_scope(*norm);
  if (!n) return fail(Errc::unknown_scope, *norm);
  reset_node(*n, clock_.now(), true);
  return {};
}

Result<void> Engine::set_template(LimitTemplate t) {
  auto id = validate_id(t.name);
  if (!id) return id;
  // Checked as set_limits checks a node's limits: an unknown id would later index past
  // the registry's names (get_scope), and a negative limit makes no sense.
  for (const auto& [rid, spec] : t.limits) {
    if (rid >= resources_.size()) return fail(Errc::unknown_resource, std::to_string(rid));
    for (const auto& v : {spec.hard, spec.soft, spec.approval})
      if (v && v->is_negative()) return fail(Errc::negative_amount, std::string(resources_.name(rid)));
  }
  const TemplateKind kind = t.kind;
  const std::string name = t.name;
  auto& table = kind == TemplateKind::plan ? plans_ : tiers_;
  table[name] = std::move(t);
  // The shipped templates come back with the binary; one set after construction (by the
  // configuration or an operator) is durable state.
  if (constructed_) {
    live_templates_.emplace(kind, name);
    dirty_.templates.emplace(kind, name);
  }
  // Nodes that reference the template see the change at once, and say so.
  for (auto& [path, n] : scopes_) {
    if ((kind == TemplateKind::plan ? n->plan : n->tier) != name) continue;
    resolve_limits(*n);
    Event e = make_event(EventKind::limit_changed, n->path);
    e.message = "Limits changed: " + std::string(template_kind_name(kind)) + " " + name + " was updated.";
    push_event(std::move(e));
  }
  return {};
}

const LimitTemplate* Engine::get_template(TemplateKind kind, std::string_view name) const {
  const auto& table = kind == TemplateKind::plan ? plans_ : tiers_;
  auto it = table.find(name);
  return it == table.end() ? nullptr : &it->second;
}

std::vector<const LimitTemplate*> Engine::list_templates() const {
  std::vector<const LimitTemplate*> out;
  for (const auto& [n, t] : plans_) out.push_back(&t);
  for (const auto& [n, t] : tiers_) out.push_back(&t);
  return out;
}

// ---- Admission ----------------------------------------------------------------------

Refusal Engine::scope_refusal(const ScopeNode& n, ResourceId id, Decimal used, Decimal limit) const {
  Refusal r{Reason::scope_limit_exceeded, n.path, std::string(resources_.name(id)), used, limit, Duration{0},
            std::string(kQuotaExceededMessage)};
  if (n.next_reset_at != TimePoint::max())
    r.retry_after = std::max(Duration{0}, std::chrono::duration_cast<Duration>(n.next_reset_at - clock_.now()));
  return r;
}

namespace {
// The admission rule, in one place: an amount fits when used + held + amount <= limit; a
// bare check (amount 0) fits while used + held < limit.
bool over(Decimal used_and_held, Decimal amount, Decimal limit) {
  if (limit == kUnlimitedAmount) return false;
  if (amount.is_zero()) return used_and_held >= limit;
  return used_and_held.saturating_add(amount) > limit;
}
}  // namespace

std::optional<Refusal> Engine::admit_path(const ScopeNode* n, const ChargeList& c) const {
  for (; n; n = n->parent) {
    if (c.empty()) {
      // A bare check (check_quota, a process's state): refused when any resource on the
      // path has no room left, whatever the next action will ask for.
      for (ResourceId id = 0; id < n->slots.size(); ++id) {
        const Slot& s = n->slots[id];
        Decimal held = s.used.saturating_add(s.reserved);
        if (over(held, Decimal(), s.hard)) return scope_refusal(*n, id, held, s.hard);
      }
      continue;
    }
    for (const auto& ch : c) {
      const Slot* s = n->find_slot(ch.id);
      if (!s) continue;
      Decimal held = s->used.saturating_add(s->reserved);
      if (over(held, ch.amount, s->hard)) return scope_refusal(*n, ch.id, held, s->hard);
    }
  }
  return std::nullopt;
}

namespace {
struct ProcessLimit {
  ResourceId id;
  Reason reason;
  uint64_t ResourceQuota::*limit;
  uint64_t ResourceUsage::*used;
};
constexpr ProcessLimit kProcessLimits[] = {
    {res::llm_calls, Reason::max_llm_calls_exceeded, &ResourceQuota::max_llm_calls, &ResourceUsage::llm_calls},
    {res::tool_calls, Reason::max_tool_calls_exceeded, &ResourceQuota::max_tool_calls, &ResourceUsage::tool_calls},
    {res::agent_hops, Reason::max_agent_hops_exceeded, &ResourceQuota::max_agent_hops, &ResourceUsage::agent_hops},
    {res::iterations, Reason::max_iterations_exceeded, &ResourceQuota::max_iterations, &ResourceUsage::iterations},
};
// Index of each counted process resource in Process::fired.
constexpr std::size_t kFiredTokens = 4, kFiredCost = 5;
}  // namespace

std::optional<Refusal> Engine::admit_process(const Process& p, const ChargeList& c) const {
  const ResourceQuota& q = *p.quota;
  auto refuse = [&](Reason reason, ResourceId id, Decimal used, Decimal limit) {
    return Refusal{reason, p.scope->path, std::string(resources_.name(id)), used, limit, Duration{0},
                   "Quota exceeded: " + std::string(reason_name(reason)) + "."};
  };
  // A process past any cumulative limit or its timeout is admitted for nothing (seed
  // check_quota), whatever this admission asks for.
  for (const auto& l : kProcessLimits) {
    uint64_t used = p.usage.*l.used;
    uint64_t held;
    if (__builtin_add_overflow(used, p.reserved.*l.used, &held)) held = kUnlimited;
    Decimal amount = c.get(l.id);
    if (over(Decimal::from_int(held), amount, q.*l.limit == kUnlimited ? kUnlimitedAmount : Decimal::from_int(q.*l.limit)) ||
        (q.*l.limit != kUnlimited && used >= q.*l.limit))
      return refuse(l.reason, l.id, Decimal::from_int(held), Decimal::from_int(q.*l.limit));
  }
  if (q.timeout_seconds != kUnlimited && clock_.now() - p.allocated_at >= seconds(static_cast<int64_t>(std::min<uint64_t>(q.timeout_seconds, INT32_MAX))))
    return Refusal{Reason::timeout_exceeded, p.scope->path, "elapsed",
                   Decimal::from_int(static_cast<uint64_t>(to_seconds(clock_.now() - p.allocated_at))),
                   Decimal::from_int(q.timeout_seconds), Duration{0}, "Quota exceeded: timeout_exceeded."};
  if (q.max_tokens != kUnlimited) {
    uint64_t held = p.usage.tokens();
    uint64_t r = p.reserved.tokens();
    if (__builtin_add_overflow(held, r, &held)) held = kUnlimited;
    Decimal amount = c.get(res::tokens_in).saturating_add(c.get(res::tokens_out)).saturating_add(c.get(res::tokens));
    if (over(Decimal::from_int(held), amount, Decimal::from_int(q.max_tokens)) || p.usage.tokens() >= q.max_tokens)
      return refuse(Reason::max_tokens_exceeded, res::tokens, Decimal::from_int(held), Decimal::from_int(q.max_tokens));
  }
  if (q.max_cost != kUnlimitedAmount) {
    Decimal held = p.usage.cost.saturating_add(p.reserved.cost);
    if (over(held, c.get(res::cost), q.max_cost) || p.usage.cost >= q.max_cost)
      return refuse(Reason::max_cost_exceeded, res::cost, held, q.max_cost);
  }
  return std::nullopt;
}

// One LLM call may not pass the per-call caps. A report of n calls is judged per call:
// its tokens divided by n, rounded up.
std::optional<Refusal> Engine::per_call_caps(const ResourceQuota& q, const ChargeList& c,
                                             std::optional<uint64_t> context) const {
  // Most quotas cap nothing per call: then there is nothing to divide.
  if (q.max_input_tokens == kUnlimited && q.max_output_tokens == kUnlimited &&
      q.max_context_tokens == kUnlimited)
    return std::nullopt;
  uint64_t calls = std::max<uint64_t>(1, c.get(res::llm_calls).to_u64_floor());
  auto per_call = [calls](uint64_t v) { return v / calls + (v % calls != 0); };
  uint64_t in = c.get(res::tokens_in).to_u64_floor();
  uint64_t out = c.get(res::tokens_out).to_u64_floor();
  uint64_t ctx = context ? *context : (in > kUnlimited - out ? kUnlimited : in + out);
  struct Cap {
    uint64_t value, cap;
    Reason reason;
    const char* name;
  } caps[] = {{per_call(in), q.max_input_tokens, Reason::max_input_tokens_exceeded, "tokens_in"},
              {per_call(out), q.max_output_tokens, Reason::max_output_tokens_exceeded, "tokens_out"},
              {per_call(ctx), q.max_context_tokens, Reason::max_context_tokens_exceeded, "context_tokens"}};
  for (const auto& cap : caps) {
    if (cap.cap != kUnlimited && cap.value > cap.cap)
      return Refusal{cap.reason, "", cap.name, Decimal::from_int(cap.value), Decimal::from_int(cap.cap),
                     Duration{0}, "One LLM call passed its cap: " + std::string(reason_name(cap.reason)) + "."};
  }
  return std::nullopt;
}

std::optional<Refusal> Engine::admit(const Resolved& r, const ChargeList& c) const {
  if (r.thread) {
    const Thread& t = *r.thread;
    // Saturating sums: counts near 2^64 must not wrap an exhausted thread back to fresh.
    uint64_t used = sat_add(t.prompt_tokens, t.completion_tokens);
    uint64_t est = (c.get(res::tokens_in).saturating_add(c.get(res::tokens_out)).saturating_add(c.get(res::tokens))).to_u64_ceil();
    uint64_t held = sat_add(used, t.reserved);
    if (used >= t.max_tokens || held >= t.max_tokens || est > t.max_tokens - held)
      return Refusal{Reason::thread_budget_exhausted, r.scope ? r.scope->path : "/", "tokens", Decimal::from_int(held),
                     Decimal::from_int(t.max_tokens), Duration{0}, "Thread token budget exhausted."};
  }
  // The process, then every process it was delegated from: a child's admission must fit in
  // what each of them has left.
  for (const Process* p = r.process; p; p = parent_of(*p)) {
    if (auto ref = per_call_caps(*p->quota, c, std::nullopt)) {
      ref->path = p->scope->path;
      return ref;
    }
    if (auto ref = admit_process(*p, c)) return ref;
  }
  // Scope nodes count `tokens` for in + out, so admission asks them about the sum too.
  ChargeList with_tokens = c;
  Decimal t = c.get(res::tokens_in).saturating_add(c.get(res::tokens_out));
  if (!t.is_zero()) (void)with_tokens.add(res::tokens, t);
  return admit_path(r.scope, with_tokens);
}

// ---- Charging -----------------------------------------------------------------------

uint8_t Engine::crossed_bits(Decimal used, Decimal hard, Decimal soft) const {
  uint8_t bits = 0;
  if (hard != kUnlimitedAmount && !hard.is_zero()) {
    // used >= hard * pct / 100, compared as used * 100 >= hard * pct: multiplications, not
    // a 128-bit division per threshold (this runs for every resource on every node of
    // every charge). Only amounts near the top of the range take the dividing path.
    __int128 used100;
    const bool wide = __builtin_mul_overflow(used.raw(), 100, &used100);
    for (std::size_t i = 0; i < config_.thresholds.size(); ++i) {
      const uint32_t pct = config_.thresholds[i];
      __int128 bar;
      const bool reached = (wide || __builtin_mul_overflow(hard.raw(), pct, &bar)) ? used.percent_of(hard) >= pct
                                                                                 : used100 >= bar;
      if (reached) bits |= 1u << i;
    }
  }
  if (hard != kUnlimitedAmount && used >= hard) bits |= kHardBit;
  if (soft != kUnlimitedAmount && used >= soft && !used.is_zero()) bits |= kSoftBit;
  return bits;
}

void Engine::emit_crossings(uint8_t fresh, const std::string& path, const Resolved& r, ResourceId id,
                            Decimal used, Decimal hard, Decimal soft, ResetPeriod period,
                            std::vector<Violation>* out) {
  if (!fresh) return;
  const bool process_level = r.process && path.empty();
  auto base = [&](EventKind k) {
    Event e = make_event(k, process_level ? r.process->scope->path : path);
    if (r.process) e.process = r.process->id;
    e.thread = std::string(r.thread_id);
    e.resource = std::string(resources_.name(id));
    e.used = used;
    return e;
  };
  for (std::size_t i = 0; i < config_.thresholds.size(); ++i) {
    if (!(fresh & (1u << i))) continue;
    // Only the highest threshold crossed in one step is reported: one report taking usage
    // from 10% to 95% is one warning at 90%, not two.
    bool higher = false;
    for (std::size_t j = i + 1; j < config_.thresholds.size(); ++j) higher |= (fresh & (1u << j)) != 0;
    if (higher || (fresh & kHardBit)) continue;
    Event e = base(EventKind::threshold_crossed);
    e.limit = hard;
    e.percent = config_.thresholds[i];
    e.message = period_phrase(period);
    push_event(std::move(e));
  }
  if (fresh & kSoftBit && !(fresh & kHardBit)) {
    Event e = base(EventKind::threshold_crossed);
    e.limit = soft;
    e.percent = used.percent_of(hard == kUnlimitedAmount ? soft : hard);
    e.message = period_phrase(period);
    push_event(std::move(e));
  }
  if (fresh & kHardBit) {
    Event e = base(EventKind::violation);
    e.limit = hard;
    e.percent = 100;
    if (process_level) {
      for (const auto& l : kProcessLimits)
        if (l.id == id) e.reason = l.reason;
      if (id == res::tokens) e.reason = Reason::max_tokens_exceeded;
      if (id == res::cost) e.reason = Reason::max_cost_exceeded;
      e.action = r.process->quota->on_violation;
      e.grace_seconds = r.process->quota->kill_grace_seconds;
      e.message = "Quota exceeded: " + std::string(reason_name(e.reason)) + ".";
    } else {
      e.reason = Reason::scope_limit_exceeded;
      e.message = std::string(kQuotaExceededMessage);
    }
    if (out) out->push_back(Refusal{e.reason, e.path, e.resource, used, hard, Duration{0}, e.message});
    push_event(std::move(e));
  }
}

void Engine::charge_node(ScopeNode& n, const Resolved& r, ResourceId id, Decimal amount,
                         std::vector<Violation>* out) {
  Slot& s = n.slot(id);
  s.used = s.used.saturating_add(amount);
  // No limit on the slot: no bits to cross (what crossed_bits would answer), and most slots
  // of most nodes have none.
  uint8_t now_bits =
      s.hard == kUnlimitedAmount && s.soft == kUnlimitedAmount ? 0 : crossed_bits(s.used, s.hard, s.soft);
  uint8_t fresh = now_bits & ~s.fired;
  s.fired = now_bits;
  if (fresh) emit_crossings(fresh, n.path, r, id, s.used, s.hard, s.soft, n.reset, out);
}

void Engine::rearm_process_fired(Process& p) {
  mark(p);
  const ResourceQuota& q = *p.quota;
  auto lim = [](uint64_t v) { return v == kUnlimited ? kUnlimitedAmount : Decimal::from_int(v); };
  for (std::size_t i = 0; i < 4; ++i)
    p.fired[i] = crossed_bits(Decimal::from_int(p.usage.*kProcessLimits[i].used), lim(q.*kProcessLimits[i].limit),
                              kUnlimitedAmount);
  p.fired[kFiredTokens] = crossed_bits(Decimal::from_int(p.usage.tokens()), lim(q.max_tokens), kUnlimitedAmount);
  p.fired[kFiredCost] = crossed_bits(p.usage.cost, q.max_cost, kUnlimitedAmount);
}

void Engine::charge_process(Process& p, const ChargeList& c, std::vector<Violation>* out) {
  auto add = [](uint64_t& field, Decimal d) {
    uint64_t v = d.to_u64_ceil();
    if (__builtin_add_overflow(field, v, &field)) field = kUnlimited;  // saturate: it happened
  };
  for (const auto& ch : c) {
    switch (ch.id) {
      case res::llm_calls: add(p.usage.llm_calls, ch.amount); break;
      case res::tool_calls: add(p.usage.tool_calls, ch.amount); break;
      case res::agent_hops: add(p.usage.agent_hops, ch.amount); break;
      case res::iterations: add(p.usage.iterations, ch.amount); break;
      case res::tokens_in:
      case res::tokens: add(p.usage.tokens_in, ch.amount); break;  // unattributed tokens count as input
      case res::tokens_out: add(p.usage.tokens_out, ch.amount); break;
      case res::cost: p.usage.cost = p.usage.cost.saturating_add(ch.amount); break;
      default: break;
    }
  }
  mark(p);
  const ResourceQuota& q = *p.quota;
  Resolved r{&p, nullptr, p.scope, {}};
  static const std::string kProcessLevel;
  auto lim = [](uint64_t v) { return v == kUnlimited ? kUnlimitedAmount : Decimal::from_int(v); };
  auto check = [&](std::size_t slot, ResourceId id, Decimal used, Decimal limit) {
    // An unlimited quota field crosses nothing (crossed_bits' answer, without the call).
    uint8_t now_bits = limit == kUnlimitedAmount ? 0 : crossed_bits(used, limit, kUnlimitedAmount);
    uint8_t fresh = now_bits & ~p.fired[slot];
    p.fired[slot] = now_bits;
    if (fresh) emit_crossings(fresh, kProcessLevel, r, id, used, limit, kUnlimitedAmount, ResetPeriod::never, out);
  };
  for (std::size_t i = 0; i < 4; ++i)
    check(i, kProcessLimits[i].id, Decimal::from_int(p.usage.*kProcessLimits[i].used), lim(q.*kProcessLimits[i].limit));
  check(kFiredTokens, res::tokens, Decimal::from_int(p.usage.tokens()), lim(q.max_tokens));
  check(kFiredCost, res::cost, p.usage.cost, q.max_cost);
}

void Engine::charge(const Resolved& r, const ChargeList& c, std::vector<Violation>* out) {
  if (r.thread) {
    Thread& t = *r.thread;
    mark_thread(r.thread_id, t);
    uint64_t in = c.get(res::tokens_in).saturating_add(c.get(res::tokens)).to_u64_ceil();
    uint64_t o = c.get(res::tokens_out).to_u64_ceil();
    uint64_t before = sat_add(t.prompt_tokens, t.completion_tokens);
    if (__builtin_add_overflow(t.prompt_tokens, in, &t.prompt_tokens)) t.prompt_tokens = kUnlimited / 2;
    if (__builtin_add_overflow(t.completion_tokens, o, &t.completion_tokens)) t.completion_tokens = kUnlimited / 2;
    uint64_t after = sat_add(t.prompt_tokens, t.completion_tokens);
    if (before < t.max_tokens && after >= t.max_tokens) {
      Event e = make_event(EventKind::violation, r.scope ? r.scope->path : "/");
      if (r.process) e.process = r.process->id;
      e.thread = std::string(r.thread_id);
      e.resource = "tokens";
      e.used = Decimal::from_int(after);
      e.limit = Decimal::from_int(t.max_tokens);
      e.reason = Reason::thread_budget_exhausted;
      e.message = "Thread token budget exhausted.";
      if (out) out->push_back(Refusal{e.reason, e.path, e.resource, e.used, e.limit, Duration{0}, e.message});
      push_event(std::move(e));
    }
  }
  for (Process* p = r.process; p; p = parent_of(*p)) charge_process(*p, c, out);
  Decimal tokens = c.get(res::tokens_in).saturating_add(c.get(res::tokens_out));
  for (ScopeNode* n = r.scope; n; n = n->parent) {
    mark(*n);
    for (const auto& ch : c) {
      if (ch.amount.is_zero()) continue;
      // `tokens` on a node is kept as in + out; a direct `tokens` charge adds to it too.
      charge_node(*n, r, ch.id, ch.amount, out);
    }
    if (!tokens.is_zero()) charge_node(*n, r, res::tokens, tokens, out);
  }
}

void Engine::hold(const Resolved& r, const ChargeList& c, bool add) {
  auto apply_u = [add](uint64_t& field, Decimal d) {
    uint64_t v = d.to_u64_ceil();
    field = add ? (field > kUnlimited - v ? kUnlimited : field + v) : (field > v ? field - v : 0);
  };
  auto apply_d = [add](Decimal& field, Decimal d) { field = add ? field.saturating_add(d) : field.saturating_sub(d); };
  Decimal tokens = c.get(res::tokens_in).saturating_add(c.get(res::tokens_out)).saturating_add(c.get(res::tokens));
  if (r.thread) apply_u(r.thread->reserved, tokens);
  for (Process* p = r.process; p; p = parent_of(*p)) {
    ResourceUsage& h = p->reserved;
    for (const auto& ch : c) {
      switch (ch.id) {
        case res::llm_calls: apply_u(h.llm_calls, ch.amount); break;
        case res::tool_calls: apply_u(h.tool_calls, ch.amount); break;
        case res::agent_hops: apply_u(h.agent_hops, ch.amount); break;
        case res::iterations: apply_u(h.iterations, ch.amount); break;
        case res::tokens_in:
        case res::tokens: apply_u(h.tokens_in, ch.amount); break;
        case res::tokens_out: apply_u(h.tokens_out, ch.amount); break;
        case res::cost: apply_d(h.cost, ch.amount); break;
        default: break;
      }
    }
  }
  Decimal io = c.get(res::tokens_in).saturating_add(c.get(res::tokens_out));
  for (ScopeNode* n = r.scope; n; n = n->parent) {
    for (const auto& ch : c) apply_d(n->slot(ch.id).reserved, ch.amount);
    if (!io.is_zero()) apply_d(n->slot(res::tokens).reserved, io);
  }
}

// ---- Deadlines ----------------------------------------------------------------------

std::optional<TimePoint> Engine::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.top().when;
}

void Engine::advance() { catch_up(); }

void Engine::catch_up() {
  const TimePoint now = clock_.now();
  while (!deadlines_.empty() && deadlines_.top().when <= now) {
    Deadline d = deadlines_.top();
    deadlines_.pop();
    switch (d.kind) {
      case DeadlineKind::soft_timeout:
      case DeadlineKind::hard_timeout:
        fire_timeout(static_cast<uint32_t>(d.key), d.generation, d.kind, d.when);
        break;
      case DeadlineKind::hold_expiry:
        expire_hold(d.key, d.when);
        break;
      case DeadlineKind::scope_reset: {
        auto* n = reinterpret_cast<ScopeNode*>(static_cast<uintptr_t>(d.key));
        // Stale entries (the period changed since) are recognised by their instant.
        if (n->reset == ResetPeriod::never || n->next_reset_at != d.when) break;
        // A daemon that was down across several boundaries resets once, to the latest.
        reset_node(*n, period_start(n->reset, now), true);
        rearm_node(*n);
        break;
      }
    }
  }
  while (!expired_order_.empty() && expired_order_.front().first + config_.expired_id_retention <= now) {
    expired_ids_.erase(expired_order_.front().second);
    expired_order_.pop_front();
  }
}

Result<ResourceId> Engine::resource_id(std::string_view name) const {
  auto id = resources_.find(name);
  if (!id) return fail(Errc::unknown_resource, std::string(name.substr(0, 80)));
  return *id;
}

}  // namespace budgetd
