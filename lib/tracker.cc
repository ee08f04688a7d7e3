// Processes: seed 002's ResourceTracker on the budget tree.
#include <algorithm>

#include "lib/engine.h"

namespace budgetd {

namespace {
Duration secs(uint64_t s) {
  // Timeouts beyond ~68 years are as good as unlimited; clamp so chrono math cannot overflow.
  return seconds(static_cast<int64_t>(std::min<uint64_t>(s, uint64_t{1} << 31)));
}

// A bare "is there any room left?" check: a zero amount of every resource a process charges.
// An empty ChargeList would ask the process only, because admit_path walks the charges:
// an ancestor scope at its limit would go unnoticed.
const ChargeList& bare_check() {
  static const ChargeList c = [] {
    ChargeList l;
    for (ResourceId id : {res::llm_calls, res::tool_calls, res::agent_hops, res::iterations,
                          res::tokens_in, res::tokens_out, res::tokens, res::cost})
      (void)l.add(id, Decimal());
    return l;
  }();
  return c;
}
}  // namespace

Engine::Process* Engine::find_process(std::string_view pid) {
  auto it = index_.find(pid);
  return it == index_.end() ? nullptr : &processes_[it->second];
}

const Engine::Process* Engine::find_process(std::string_view pid) const {
  auto it = index_.find(pid);
  return it == index_.end() ? nullptr : &processes_[it->second];
}

void Engine::arm_timeouts(Process& p, uint32_t index, std::vector<Deadline>* staged) {
  const ResourceQuota& q = *p.quota;
  auto arm = [&](Deadline d) { staged ? staged->push_back(d) : deadlines_.push(d); };
  if (q.soft_timeout_seconds != kUnlimited && !p.soft_fired)
    arm({p.allocated_at + secs(q.soft_timeout_seconds), DeadlineKind::soft_timeout, p.generation, index});
  if (q.timeout_seconds != kUnlimited && !p.hard_fired)
    arm({p.allocated_at + secs(q.timeout_seconds), DeadlineKind::hard_timeout, p.generation, index});
}

Result<Engine::Process*> Engine::create_process(std::string_view pid, std::shared_ptr<const ResourceQuota> quota,
                                                ScopeNode* scope, uint32_t owner) {
  if (index_.size() >= config_.max_processes)
    return fail(Errc::capacity_exceeded, "tracked processes at the configured maximum");
  uint32_t index;
  if (!free_slots_.empty()) {
    index = free_slots_.back();
    free_slots_.pop_back();
  } else {
    index = static_cast<uint32_t>(processes_.size());
    processes_.emplace_back();
  }
  Process& p = processes_[index];
  uint32_t generation = p.generation + 1;
  p = Process{};
  p.generation = generation;
  p.id.assign(pid);
  p.scope = scope;
  p.quota = std::move(quota);
  p.allocated_at = clock_.now();
  p.owner = owner;
  p.live = true;
  mark(p);
  index_.emplace(p.id, index);
  arm_timeouts(p, index);
  push_event(process_event(EventKind::allocated, p));
  return &p;
}

Engine::Process* Engine::parent_of(const Process& p) {
  if (p.parent_index == kNoParent || p.parent_index >= processes_.size()) return nullptr;
  Process& parent = processes_[p.parent_index];
  // A released (or reused) parent slot no longer bounds the child.
  return parent.live && parent.generation == p.parent_generation ? &parent : nullptr;
}

const Engine::Process* Engine::parent_of(const Process& p) const {
  return const_cast<Engine*>(this)->parent_of(p);
}

Result<bool> Engine::allocate_child(std::string_view parent, std::string_view child, const ResourceQuota& quota,
                                    std::string_view scope, uint32_t owner) {
  catch_up();
  auto it = index_.find(parent);
  if (it == index_.end()) return fail(Errc::unknown_process, std::string(parent));
  const uint32_t parent_index = it->second;
  const uint32_t parent_generation = processes_[parent_index].generation;
  if (scope.empty()) scope = processes_[parent_index].scope->path;
  auto a = allocate(child, quota, scope, owner);
  if (!a || !*a) return a;
  Process* c = find_process(child);
  c->parent_index = parent_index;
  c->parent_generation = parent_generation;
  ++processes_[parent_index].children;
  return true;
}

Event Engine::process_event(EventKind k, const Process& p) const {
  Event e = make_event(k, p.scope->path);
  e.process = p.id;
  e.owner = p.owner;
  return e;
}

Result<bool> Engine::allocate(std::string_view pid, const ResourceQuota& quota, std::string_view scope,
                              uint32_t owner) {
  catch_up();
  if (auto v = validate_id(pid); !v) return std::unexpected(v.error());
  if (find_process(pid)) return false;
  auto node = find_or_create_scope(scope);
  if (!node) return std::unexpected(node.error());
  // Processes on the default quota share one copy: most never adjust it, and 1M copies
  // would cost ~130 MB.
  std::shared_ptr<const ResourceQuota> q;
  // Runtimes allocate fleets with one custom quota too: the last one is shared the same way.
  if (quota == config_.default_quota) {
    q = default_quota_;
  } else if (last_custom_quota_ && *last_custom_quota_ == quota) {
    q = last_custom_quota_;
  } else {
    q = last_custom_quota_ = std::make_shared<const ResourceQuota>(quota);
  }
  auto p = create_process(pid, std::move(q), *node, owner);
  if (!p) return std::unexpected(p.error());
  return true;
}

bool Engine::release(std::string_view pid) {
  catch_up();
  auto it = index_.find(pid);
  if (it == index_.end()) return false;
  uint32_t index = it->second;
  Process& p = processes_[index];
  // Holds on a released process are freed now, not left to expire.
  std::vector<uint64_t> orphaned;
  for (const auto& [id, h] : holds_)
    if (h.process == p.id) orphaned.push_back(id);
  // A pending consumption is decided (denied), so its requester and the stats hear of it.
  for (uint64_t id : orphaned) {
    if (holds_.at(id).kind == HoldKind::pending)
      decide(id, false, "released");
    else
      drop_hold(id);
  }
  Event e = process_event(EventKind::released, p);
  e.usage = p.usage;
  e.message = "Process released.";
  push_event(std::move(e));
  mark_released(p);
  index_.erase(it);
  p.live = false;
  p.id.clear();
  p.id.shrink_to_fit();
  p.quota.reset();
  free_slots_.push_back(index);
  return true;
}

std::optional<ResourceQuota> Engine::get_quota(std::string_view pid) const {
  const Process* p = find_process(pid);
  if (!p) return std::nullopt;
  return *p->quota;
}

Result<ResourceQuota> Engine::adjust_quota(std::string_view pid,
                                           std::span<const std::pair<std::string, std::string>> fields) {
  catch_up();
  Process* p = find_process(pid);
  if (!p) return fail(Errc::unknown_process, std::string(pid));
  ResourceQuota q = *p->quota;
  for (const auto& [name, value] : fields) {
    if (auto r = q.set_field(name, value); !r) return std::unexpected(r.error());
  }
  const ResourceQuota old = *p->quota;
  p->quota = std::make_shared<const ResourceQuota>(q);
  rearm_process_fired(*p);
  // A timeout moved into the future re-arms; one moved into the past fires (once) below.
  const TimePoint now = clock_.now();
  auto rearm = [&](uint64_t limit, bool& fired) {
    if (limit == kUnlimited || p->allocated_at + secs(limit) > now) fired = false;
  };
  if (q.soft_timeout_seconds != old.soft_timeout_seconds) rearm(q.soft_timeout_seconds, p->soft_fired);
  if (q.timeout_seconds != old.timeout_seconds) rearm(q.timeout_seconds, p->hard_fired);
  mark(*p);
  arm_timeouts(*p, index_.at(p->id));
  Event e = process_event(EventKind::limit_changed, *p);
  e.message = "Quota adjusted.";
  push_event(std::move(e));
  catch_up();
  return q;
}

Result<ChargeList> Engine::report_charges(const UsageReport& r) const {
  ChargeList c;
  const std::pair<ResourceId, uint64_t> counts[] = {
      {res::llm_calls, r.llm_calls},   {res::tool_calls, r.tool_calls}, {res::agent_hops, r.agent_hops},
      {res::iterations, r.iterations}, {res::tokens_in, r.tokens_in},   {res::tokens_out, r.tokens_out}};
  // Distinct ids into a fresh list with room for all seven: appended without a search.
  for (auto [id, v] : counts)
    if (v) c.append_new(id, Decimal::from_int(v));
  if (r.cost.is_negative()) return fail(Errc::negative_amount, "cost");
  if (!r.cost.is_zero()) c.append_new(res::cost, r.cost);
  for (const auto& ch : r.extra) {
    if (ch.id >= resources_.size()) return fail(Errc::unknown_resource, std::to_string(ch.id));
    if (ch.amount.is_negative()) return fail(Errc::negative_amount, std::string(resources_.name(ch.id)));
    if (auto a = c.add(ch.id, ch.amount); !a) return std::unexpected(a.error());
  }
  return c;
}

Result<RecordResult> Engine::record_resolved(Resolved r, const UsageReport& report, std::optional<Refusal> extra) {
  auto charges = report_charges(report);
  if (!charges) return std::unexpected(charges.error());
  RecordResult out;
  if (extra) out.violations.push_back(*extra);
  // Per-call caps are judged on the report itself; the usage is recorded regardless.
  if (r.process) {
    if (auto cap = per_call_caps(*r.process->quota, *charges, report.context_tokens)) {
      cap->path = r.process->scope->path;
      Event e = process_event(EventKind::violation, *r.process);
      e.reason = cap->reason;
      e.resource = cap->resource;
      e.used = cap->used;
      e.limit = cap->limit;
      e.action = r.process->quota->on_violation;
      e.grace_seconds = r.process->quota->kill_grace_seconds;
      e.message = cap->message;
      push_event(std::move(e));
      out.violations.push_back(*cap);
    }
  }
  // Seed 003 counts every request on a thread.
  if (r.thread) {
    ++r.thread->request_count;
    mark_thread(r.thread_id, *r.thread);
  }
  charge(r, *charges, &out.violations);
  if (r.process) {
    out.usage = r.process->usage;
    out.elapsed_seconds = to_seconds_f(clock_.now() - r.process->allocated_at);
    out.scope = r.process->scope->path;
  }
  return out;
}

Result<RecordResult> Engine::record_usage(std::string_view pid, const UsageReport& report, uint32_t owner) {
  catch_up();
  if (auto v = validate_id(pid); !v) return std::unexpected(v.error());
  Process* p = find_process(pid);
  const bool created = !p;
  if (!p) {
    // A report that will be refused must not leave a new process behind.
    if (auto c = report_charges(report); !c) return std::unexpected(c.error());
    auto a = allocate(pid, config_.default_quota, "/", owner);
    if (!a) return std::unexpected(a.error());
    p = find_process(pid);
  }
  Resolved r{p, nullptr, p->scope, {}};
  if (!report.thread.empty()) {
    auto t = ensure_thread(report.thread, pid);
    if (!t) return std::unexpected(t.error());
    r.thread = *t;
    r.thread_id = report.thread;
  }
  auto out = record_resolved(r, report, std::nullopt);
  if (out) out->created = created;
  return out;
}

std::optional<ResourceUsage> Engine::get_usage(std::string_view pid) const {
  const Process* p = find_process(pid);
  if (!p) return std::nullopt;
  return p->usage;
}

std::vector<std::pair<std::string, ResourceUsage>> Engine::get_all_usage() const {
  std::vector<std::pair<std::string, ResourceUsage>> out;
  out.reserve(index_.size());
  for (const auto& [id, index] : index_) out.emplace_back(std::string(id), processes_[index].usage);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

std::optional<double> Engine::update_elapsed_time(std::string_view pid) {
  catch_up();
  const Process* p = find_process(pid);
  if (!p) return std::nullopt;
  return to_seconds_f(clock_.now() - p->allocated_at);
}

Result<std::optional<Refusal>> Engine::check_quota(std::string_view pid) {
  catch_up();
  const Process* p = find_process(pid);
  if (!p) return fail(Errc::unknown_process, std::string(pid));
  Resolved r{const_cast<Process*>(p), nullptr, p->scope, {}};
  return admit(r, bare_check());
}

std::optional<RemainingBudget> Engine::get_remaining_budget(std::string_view pid) const {
  const Process* p = find_process(pid);
  if (!p) return std::nullopt;
  const ResourceQuota& q = *p->quota;
  auto rem = [](uint64_t limit, uint64_t used) {
    return limit == kUnlimited ? kUnlimited : (limit > used ? limit - used : 0);
  };
  int64_t elapsed = to_seconds(clock_.now() - p->allocated_at);
  int64_t time_left = q.timeout_seconds == kUnlimited
                          ? INT64_MAX
                          : std::max<int64_t>(0, static_cast<int64_t>(std::min<uint64_t>(q.timeout_seconds, INT64_MAX)) - elapsed);
  return RemainingBudget{rem(q.max_llm_calls, p->usage.llm_calls),
                         rem(q.max_tool_calls, p->usage.tool_calls),
                         rem(q.max_agent_hops, p->usage.agent_hops),
                         rem(q.max_iterations, p->usage.iterations),
                         time_left,
                         rem(q.max_tokens, p->usage.tokens()),
                         q.max_cost == kUnlimitedAmount ? kUnlimitedAmount : q.max_cost.saturating_sub(p->usage.cost)};
}

SystemUsage Engine::get_system_usage() const {
  SystemUsage s{};
  s.total_processes = index_.size();
  for (const auto& [id, index] : index_) {
    const Process& p = processes_[index];
    bool timed_out = p.quota->timeout_seconds != kUnlimited &&
                     clock_.now() - p.allocated_at >= secs(p.quota->timeout_seconds);
    if (p.usage.exceeds_quota(*p.quota) == Reason::none && !timed_out) ++s.active_processes;
  }
  // The root holds everything ever charged, released processes included.
  auto total = [&](ResourceId id) {
    const Slot* sl = root_->find_slot(id);
    return sl ? sl->used : Decimal();
  };
  s.system_llm_calls = total(res::llm_calls).to_u64_floor();
  s.system_tool_calls = total(res::tool_calls).to_u64_floor();
  s.system_tokens_in = total(res::tokens_in).to_u64_floor();
  s.system_tokens_out = total(res::tokens_out).to_u64_floor();
  s.system_cost = total(res::cost);
  return s;
}

bool Engine::is_tracked(std::string_view pid) const { return find_process(pid) != nullptr; }

ProcessView Engine::view(const Process& p) const {
  const Process* parent = parent_of(p);
  ProcessView v{p.id, p.scope->path, parent ? parent->id : std::string(), *p.quota, p.usage, p.reserved, p.allocated_at,
                to_seconds_f(clock_.now() - p.allocated_at), p.owner, Reason::none};
  Resolved r{const_cast<Process*>(&p), nullptr, p.scope, {}};
  if (auto ref = admit(r, bare_check())) v.state = ref->reason;
  return v;
}

std::optional<ProcessView> Engine::get_process(std::string_view pid) const {
  const Process* p = find_process(pid);
  if (!p) return std::nullopt;
  return view(*p);
}

std::vector<ProcessView> Engine::list_processes(std::size_t offset, std::size_t limit) const {
  std::vector<std::string_view> ids;
  ids.reserve(index_.size());
  for (const auto& [id, index] : index_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::vector<ProcessView> out;
  for (std::size_t i = offset; i < ids.size() && out.size() < limit; ++i) out.push_back(view(*find_process(ids[i])));
  return out;
}

Result<void> Engine::reset_process(std::string_view pid) {
  catch_up();
  Process* p = find_process(pid);
  if (!p) return fail(Errc::unknown_process, std::string(pid));
  // The usage stays charged on the scope path (it happened); the process starts afresh.
  p->usage = ResourceUsage{};
  p->allocated_at = clock_.now();
  p->soft_fired = p->hard_fired = false;
  rearm_process_fired(*p);  // marks it dirty
  arm_timeouts(*p, index_.at(p->id));
  Event e = process_event(EventKind::reset, *p);
  e.message = "Process budget reset.";
  push_event(std::move(e));
  return {};
}

void Engine::fire_timeout(uint32_t index, uint32_t generation, DeadlineKind kind, TimePoint when) {
  if (index >= processes_.size()) return;
  Process& p = processes_[index];
  if (!p.live || p.generation != generation) return;
  const ResourceQuota& q = *p.quota;
  const bool soft = kind == DeadlineKind::soft_timeout;
  uint64_t limit = soft ? q.soft_timeout_seconds : q.timeout_seconds;
  // Entries left over from before an adjust_quota carry the old instant: ignore them.
  if (limit == kUnlimited || p.allocated_at + secs(limit) != when) return;
  if (soft ? p.soft_fired : p.hard_fired) return;
  // A warning after the fact is noise: once the hard timeout fired, the soft one is moot.
  if (soft && p.hard_fired) return;
  (soft ? p.soft_fired : p.hard_fired) = true;
  mark(p);
  Event e = process_event(soft ? EventKind::soft_timeout : EventKind::timeout, p);
  e.resource = "elapsed";
  e.used = Decimal::from_int(static_cast<uint64_t>(std::max<int64_t>(0, to_seconds(clock_.now() - p.allocated_at))));
  e.limit = Decimal::from_int(limit);
  if (soft) {
    e.message = "Soft timeout: " + std::to_string(limit) + " s elapsed of " + limit_text(q.timeout_seconds) + " s.";
  } else {
    e.reason = Reason::timeout_exceeded;
    e.action = q.on_timeout;
    e.grace_seconds = q.kill_grace_seconds;
    e.message = "Timeout exceeded: " + std::to_string(limit) + " s.";
  }
  push_event(std::move(e));
}

}  // namespace budgetd
