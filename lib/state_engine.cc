// The engine's durable state: export as records, dirty tracking for incremental writes,
// and import (recovery). The records are in lib/state.h.
#include <algorithm>
#include <unordered_map>

#include "lib/engine.h"

namespace budgetd {

namespace {

bool valid_period(ResetPeriod p) { return p >= ResetPeriod::never && p <= ResetPeriod::monthly; }

// By resource name, not id: a custom resource's id depends on the order names were
// interned in, and two engines must export the same node the same way.
std::vector<LimitRecord> limit_records(const LimitMap& m, const ResourceRegistry& reg) {
  std::vector<LimitRecord> out;
  out.reserve(m.size());
  for (const auto& [id, spec] : m) out.push_back({std::string(reg.name(id)), spec.hard, spec.soft, spec.approval});
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.resource < b.resource; });
  return out;
}

template <class T, class Key>
void sort_by(std::vector<T>& v, Key key) {
  std::sort(v.begin(), v.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
}

Error at(std::string where, const Error& e) { return Error{e.code, std::move(where) + ": " + e.detail}; }

}  // namespace

// ---- Records --------------------------------------------------------------------------

ScopeRecord Engine::scope_record(const ScopeNode& n) const {
  ScopeRecord r;
  r.path = n.path;
  r.plan = n.plan;
  r.tier = n.tier;
  r.overrides = limit_records(n.overrides, resources_);
  r.reset_override = n.reset_override;
  r.last_reset_at = n.last_reset_at;
  r.period_since = n.period_since;
  for (ResourceId id = 0; id < n.slots.size(); ++id) {
    const Slot& s = n.slots[id];
    if (s.used.is_zero() && s.fired == 0) continue;
    r.slots.push_back({std::string(resources_.name(id)), s.used, s.fired});
  }
  sort_by(r.slots, [](const SlotRecord& s) -> const std::string& { return s.resource; });
  return r;
}

ProcessRecord Engine::process_record(const Process& p) const {
  ProcessRecord r;
  r.id = p.id;
  r.scope = p.scope->path;
  if (const Process* parent = parent_of(p)) r.parent = parent->id;
  // Pointer identity, not value: a process still on a default replaced by a reload keeps
  // that old default, so it is recorded as its own quota.
  if (p.quota != default_quota_) r.quota = *p.quota;
  r.usage = p.usage;
  r.allocated_at = p.allocated_at;
  r.owner = p.owner;
  r.fired = p.fired;
  r.soft_fired = p.soft_fired;
  r.hard_fired = p.hard_fired;
  return r;
}

ThreadRecord Engine::thread_record(const std::string& id, const Thread& t) const {
  return ThreadRecord{id,        t.max_tokens, t.prompt_tokens, t.completion_tokens, t.request_count,
                      t.process, t.scope ? t.scope->path : std::string()};
}

HoldRecord Engine::hold_record(uint64_t id, const Hold& h) const {
  HoldRecord r;
  r.id = id;
  r.kind = h.kind == HoldKind::pending ? 1 : 0;
  r.process = h.process;
  r.thread = h.thread;
  r.scope = h.scope->path;
  for (const auto& ch : h.amount) r.amount.emplace_back(std::string(resources_.name(ch.id)), ch.amount);
  r.created_at = h.created_at;
  r.expires_at = h.expires_at;
  r.resource = h.resource;
  r.context = h.context;
  return r;
}

TemplateRecord Engine::template_record(const LimitTemplate& t) const {
  return TemplateRecord{t.name, static_cast<uint8_t>(t.kind), limit_records(t.limits, resources_), t.reset};
}

CountersRecord Engine::counters_record() const {
  return CountersRecord{next_hold_id_,  stats_.total_events, stats_.consumed_count, stats_.rejected_count,
                        stats_.partial, thread_default_};
}

// ---- Export ---------------------------------------------------------------------------

EngineState Engine::export_state() const {
  EngineState s;
  for (const auto& [kind, name] : live_templates_) s.templates.push_back(template_record(*get_template(kind, name)));
  s.scopes.reserve(scopes_.size());
  for (const auto& [path, n] : scopes_) s.scopes.push_back(scope_record(*n));  // path order
  s.processes.reserve(index_.size());
  for (const auto& [id, index] : index_) s.processes.push_back(process_record(processes_[index]));
  sort_by(s.processes, [](const ProcessRecord& r) -> const std::string& { return r.id; });
  s.threads.reserve(threads_.size());
  for (const auto& [id, t] : threads_) s.threads.push_back(thread_record(id, t));
  sort_by(s.threads, [](const ThreadRecord& r) -> const std::string& { return r.id; });
  s.holds.reserve(holds_.size());
  for (const auto& [id, h] : holds_) s.holds.push_back(hold_record(id, h));
  sort_by(s.holds, [](const HoldRecord& r) { return r.id; });
  s.rate_limits = rate_limiter_.export_limits();
  s.rate_windows = rate_limiter_.export_windows();
  s.counters = counters_record();
  return s;
}

// ---- Dirty tracking -------------------------------------------------------------------

void Engine::mark_released(Process& p) {
  dirty_.released.insert(p.id);
  if (!p.children) return;
  // Its children's records name it as their parent; from now on they have none.
  const uint32_t index = index_.at(p.id);
  for (Process& c : processes_)
    if (c.live && c.parent_index == index && c.parent_generation == p.generation) mark(c);
}

EngineChanges Engine::take_changes() {
  EngineChanges out;
  for (const auto& [kind, name] : dirty_.templates) out.templates.push_back(template_record(*get_template(kind, name)));
  for (ScopeNode* n : dirty_.scopes) {
    n->dirty = false;
    out.scopes.push_back(scope_record(*n));
  }
  for (Process* p : dirty_.processes) {
    // Listed twice (released and the slot reused in one batch), or released: the flag
    // and liveness tell.
    if (!p->dirty) continue;
    p->dirty = false;
    if (p->live) out.processes.push_back(process_record(*p));
  }
  for (const std::string& id : dirty_.released)
    if (!find_process(id)) out.released_processes.push_back(id);  // else re-allocated: upserted
  for (const std::string& id : dirty_.threads) {
    auto it = threads_.find(id);
    if (it == threads_.end()) {
      out.removed_threads.push_back(id);
    } else {
      it->second.dirty = false;
      out.threads.push_back(thread_record(id, it->second));
    }
  }
  std::sort(dirty_.holds.begin(), dirty_.holds.end());
  dirty_.holds.erase(std::unique(dirty_.holds.begin(), dirty_.holds.end()), dirty_.holds.end());
  for (uint64_t id : dirty_.holds) {
    auto it = holds_.find(id);
    if (it == holds_.end())
      out.removed_holds.push_back(id);
    else
      out.holds.push_back(hold_record(id, it->second));
  }
  if (dirty_.counters) out.counters = counters_record();
  rate_limiter_.take_changes(out);
  clear_changes();
  return out;
}

void Engine::clear_changes() {
  // Cleared only when used: clearing an unordered_set sweeps its whole bucket array, which
  // one large batch may have grown.
  if (!dirty_.templates.empty()) dirty_.templates.clear();
  for (ScopeNode* n : dirty_.scopes) n->dirty = false;
  dirty_.scopes.clear();
  for (Process* p : dirty_.processes) p->dirty = false;
  dirty_.processes.clear();
  if (!dirty_.released.empty()) dirty_.released.clear();
  if (!dirty_.threads.empty()) {
    for (const std::string& id : dirty_.threads)
      if (auto it = threads_.find(id); it != threads_.end()) it->second.dirty = false;
    dirty_.threads.clear();
  }
  dirty_.holds.clear();
  dirty_.counters = false;
}

// ---- Import ---------------------------------------------------------------------------

Result<void> Engine::import_state(const EngineState& s) {
  // Phase 1 checks every record and builds what can be built aside; nothing in the engine
  // changes until every check passed. Unknown resource names are interned into a copy of
  // the registry, swapped in with the rest.
  ResourceRegistry reg = resources_;
  auto resource = [&reg](const std::string& name, const std::string& where) -> Result<ResourceId> {
    auto id = reg.intern(name);
    if (!id) return std::unexpected(at(where, id.error()));
    return *id;
  };
  auto limit_map = [&](const std::vector<LimitRecord>& in, const std::string& where) -> Result<LimitMap> {
    LimitMap m;
    for (const LimitRecord& l : in) {
      auto id = resource(l.resource, where);
      if (!id) return std::unexpected(id.error());
      for (const auto& v : {l.hard, l.soft, l.approval})
        if (v && v->is_negative()) return fail(Errc::negative_amount, where + ": " + l.resource);
      if (!m.emplace(*id, LimitSpec{l.hard, l.soft, l.approval}).second)
        return fail(Errc::already_exists, where + ": " + l.resource + " twice");
    }
    return m;
  };
  // Scope paths the import needs that do not exist yet, ancestors included (for the bound).
  std::set<std::string, std::less<>> new_paths;
  auto path_of = [&](const std::string& path, const std::string& where) -> Result<std::string> {
    auto norm = normalize_path(path);
    if (!norm) return std::unexpected(at(where, norm.error()));
    for (std::size_t pos = 0; pos != std::string::npos && *norm != "/";) {
      pos = norm->find('/', pos + 1);
      std::string prefix = norm->substr(0, pos);
      if (!find_scope(prefix)) new_paths.insert(std::move(prefix));
    }
    return norm;
  };

  // Templates.
  std::vector<LimitTemplate> templates;
  std::set<std::pair<TemplateKind, std::string>> template_keys;
  for (const TemplateRecord& t : s.templates) {
    const std::string where = "template " + t.name;
    if (auto v = validate_id(t.name); !v) return std::unexpected(at(where, v.error()));
    if (t.kind > 1) return fail(Errc::invalid_argument, where + ": kind " + std::to_string(t.kind));
    if (!valid_period(t.reset)) return fail(Errc::invalid_argument, where + ": reset period out of range");
    const auto kind = static_cast<TemplateKind>(t.kind);
    if (!template_keys.emplace(kind, t.name).second) return fail(Errc::already_exists, where + " twice");
    auto limits = limit_map(t.limits, where);
    if (!limits) return std::unexpected(limits.error());
    templates.push_back(LimitTemplate{t.name, kind, std::move(*limits), t.reset});
  }
  auto template_known = [&](TemplateKind k, const std::string& name) {
    return name.empty() || get_template(k, name) || template_keys.contains({k, name});
  };

  // Scopes.
  struct ScopeIn {
    const ScopeRecord* rec;
    std::string path;
    LimitMap overrides;
    std::vector<std::pair<ResourceId, const SlotRecord*>> slots;
  };
  std::vector<ScopeIn> scopes;
  std::set<std::string, std::less<>> scope_paths;
  for (const ScopeRecord& r : s.scopes) {
    const std::string where = "scope " + r.path;
    auto path = path_of(r.path, where);
    if (!path) return std::unexpected(path.error());
    if (!scope_paths.insert(*path).second) return fail(Errc::already_exists, where + " twice");
    if (!template_known(TemplateKind::plan, r.plan)) return fail(Errc::unknown_plan, where + ": plan " + r.plan);
    if (!template_known(TemplateKind::tier, r.tier)) return fail(Errc::unknown_plan, where + ": tier " + r.tier);
    if (r.reset_override && !valid_period(*r.reset_override))
      return fail(Errc::invalid_argument, where + ": reset period out of range");
    ScopeIn in{&r, *path, {}, {}};
    auto overrides = limit_map(r.overrides, where);
    if (!overrides) return std::unexpected(overrides.error());
    in.overrides = std::move(*overrides);
    std::set<ResourceId> seen;
    for (const SlotRecord& sl : r.slots) {
      auto id = resource(sl.resource, where);
      if (!id) return std::unexpected(id.error());
      if (sl.used.is_negative()) return fail(Errc::negative_amount, where + ": " + sl.resource);
      if (!seen.insert(*id).second) return fail(Errc::already_exists, where + ": " + sl.resource + " twice");
      in.slots.emplace_back(*id, &sl);
    }
    scopes.push_back(std::move(in));
  }

  // Processes, ordered so that a delegating parent comes before its children. A restart
  // restores up to a million of these in well under a second: no string is built per
  // process unless it is in error, and each distinct scope path is normalized once.
  const bool had_processes = !index_.empty();
  // Records by id, for duplicates and lookups: a sorted index, not a hash table (the store
  // and export_state give them in id order, so sorting is one sequential pass, and a
  // million random hash insertions cost more than the rest of the restore).
  std::vector<std::size_t> by_id(s.processes.size());
  for (std::size_t i = 0; i < by_id.size(); ++i) by_id[i] = i;
  auto id_less = [&s](std::size_t a, std::size_t b) { return s.processes[a].id < s.processes[b].id; };
  if (!std::is_sorted(by_id.begin(), by_id.end(), id_less)) std::sort(by_id.begin(), by_id.end(), id_less);
  for (std::size_t k = 1; k < by_id.size(); ++k)
    if (s.processes[by_id[k]].id == s.processes[by_id[k - 1]].id)
      return fail(Errc::already_exists, "process " + s.processes[by_id[k]].id + " twice");
  auto record_of = [&s, &by_id](std::string_view id) -> std::optional<std::size_t> {
    auto it = std::lower_bound(by_id.begin(), by_id.end(), id,
                               [&s](std::size_t i, std::string_view v) { return s.processes[i].id < v; });
    if (it == by_id.end() || s.processes[*it].id != id) return std::nullopt;
    return *it;
  };
  std::unordered_map<std::string_view, std::string> normalized;  // recorded path -> normalized
  std::vector<const std::string*> process_paths(s.processes.size());
  for (std::size_t i = 0; i < s.processes.size(); ++i) {
    const ProcessRecord& p = s.processes[i];
    if (auto v = validate_id(p.id); !v) return std::unexpected(at("process " + p.id, v.error()));
    if (had_processes && find_process(p.id)) return fail(Errc::already_exists, "process " + p.id + " twice");
    auto known = normalized.find(p.scope);
    if (known == normalized.end()) {
      auto path = path_of(p.scope, "process " + p.id);
      if (!path) return std::unexpected(path.error());
      known = normalized.emplace(p.scope, std::move(*path)).first;
    }
    process_paths[i] = &known->second;
  }
  std::vector<std::size_t> process_order;
  {
    std::unordered_map<std::size_t, std::vector<std::size_t>> children;
    for (std::size_t i = 0; i < s.processes.size(); ++i) {
      const ProcessRecord& p = s.processes[i];
      if (p.parent.empty() || (had_processes && find_process(p.parent))) {
        process_order.push_back(i);
        continue;
      }
      auto parent = record_of(p.parent);
      if (!parent) return fail(Errc::unknown_process, "process " + p.id + ": parent " + p.parent);
      children[*parent].push_back(i);
    }
    for (std::size_t k = 0; k < process_order.size(); ++k)
      if (auto it = children.find(process_order[k]); it != children.end())
        process_order.insert(process_order.end(), it->second.begin(), it->second.end());
    if (process_order.size() != s.processes.size())
      return fail(Errc::invalid_argument, "processes delegate to each other in a cycle");
  }
  auto process_known = [&](const std::string& id) {
    return record_of(id).has_value() || (had_processes && find_process(id));
  };

  // Threads.
  std::unordered_map<std::string_view, std::string> thread_paths;
  for (const ThreadRecord& t : s.threads) {
    const std::string where = "thread " + t.id;
    if (auto v = validate_id(t.id); !v) return std::unexpected(at(where, v.error()));
    // The process may be gone: a thread outlives the process it was tied to.
    if (!t.process.empty())
      if (auto v = validate_id(t.process); !v) return std::unexpected(at(where, v.error()));
    std::string path;
    if (!t.scope.empty()) {
      auto p = path_of(t.scope, where);
      if (!p) return std::unexpected(p.error());
      path = std::move(*p);
    }
    if (find_thread(t.id) || !thread_paths.emplace(t.id, std::move(path)).second)
      return fail(Errc::already_exists, where + " twice");
  }

  // Holds. A live hold's process and thread are live too: a release drops the process's
  // holds and a thread's cleanup unties them, so anything else is a corrupt record.
  std::vector<std::pair<std::string, ChargeList>> hold_parts(s.holds.size());
  std::set<uint64_t> hold_ids;
  uint64_t max_hold_id = 0;
  for (std::size_t i = 0; i < s.holds.size(); ++i) {
    const HoldRecord& h = s.holds[i];
    const std::string where = "hold " + std::to_string(h.id);
    if (h.id == 0) return fail(Errc::invalid_argument, where + ": id 0");
    if (holds_.contains(h.id) || !hold_ids.insert(h.id).second) return fail(Errc::already_exists, where + " twice");
    if (h.kind > 1) return fail(Errc::invalid_argument, where + ": kind " + std::to_string(h.kind));
    if (!h.process.empty() && !process_known(h.process))
      return fail(Errc::unknown_process, where + ": process " + h.process);
    if (!h.thread.empty() && !find_thread(h.thread) && !thread_paths.contains(h.thread))
      return fail(Errc::unknown_thread, where + ": thread " + h.thread);
    if (h.scope.empty()) return fail(Errc::invalid_argument, where + ": no scope");
    auto path = path_of(h.scope, where);
    if (!path) return std::unexpected(path.error());
    ChargeList amount;
    for (const auto& [name, value] : h.amount) {
      auto id = resource(name, where);
      if (!id) return std::unexpected(id.error());
      if (value.is_negative()) return fail(Errc::negative_amount, where + ": " + name);
      if (std::any_of(amount.begin(), amount.end(), [&](const Charge& c) { return c.id == *id; }))
        return fail(Errc::already_exists, where + ": " + name + " twice");
      if (auto a = amount.add(*id, value); !a) return std::unexpected(at(where, a.error()));
    }
    if (h.kind == 1 && amount.size() != 1)
      return fail(Errc::invalid_argument, where + ": a pending request holds exactly one resource");
    hold_parts[i] = {std::move(*path), amount};
    max_hold_id = std::max(max_hold_id, h.id);
  }

  if (scopes_.size() + new_paths.size() > kMaxScopes)
    return fail(Errc::capacity_exceeded, "the records need more scope nodes than the maximum");

  // The rate limiter swaps its part in all at once; it is the last step that may fail.
  if (auto r = rate_limiter_.import_state(s.rate_limits, s.rate_windows); !r) return r;

  // Phase 2: apply. Nothing below fails. The engine restores here; it does not act, so
  // the events its helpers raise (limit_changed for a template) are dropped.
  const std::size_t events_before = events_.size();
  resources_ = std::move(reg);
  for (LimitTemplate& t : templates) set_template(std::move(t)).value();

  for (ScopeIn& in : scopes) {
    ScopeNode& n = *find_or_create_scope(in.path).value();
    const ScopeRecord& r = *in.rec;
    n.plan = r.plan;
    n.tier = r.tier;
    n.overrides = std::move(in.overrides);
    n.reset_override = r.reset_override;
    for (Slot& sl : n.slots) sl.used = Decimal();
    for (const auto& [id, rec] : in.slots) n.slot(id).used = rec->used;
    resolve_limits(n);
    // Restored as recorded, not recomputed: a threshold reported before the restart is
    // not reported again, and one never reported still will be.
    for (Slot& sl : n.slots) sl.fired = 0;
    for (const auto& [id, rec] : in.slots) n.slot(id).fired = rec->fired;
    n.last_reset_at = r.last_reset_at;
    n.period_since = r.period_since;
    // From the recorded instants, not from now: a boundary passed while the daemon was
    // down is due at once, and the next catch-up applies it.
    n.next_reset_at = next_reset(n.reset, std::max(n.last_reset_at, n.period_since));
    if (n.reset != ResetPeriod::never)
      deadlines_.push({n.next_reset_at, DeadlineKind::scope_reset, 0, reinterpret_cast<uintptr_t>(&n)});
  }

  index_.reserve(index_.size() + s.processes.size());
  std::vector<Deadline> timeouts;
  timeouts.reserve(2 * s.processes.size());
  std::unordered_map<const std::string*, ScopeNode*> nodes;  // one lookup per distinct path
  for (std::size_t i : process_order) {
    const ProcessRecord& r = s.processes[i];
    ScopeNode*& node = nodes[process_paths[i]];
    if (!node) node = find_or_create_scope(*process_paths[i]).value();
    std::shared_ptr<const ResourceQuota> quota = default_quota_;
    if (r.quota) {
      if (!last_custom_quota_ || *last_custom_quota_ != *r.quota)
        last_custom_quota_ = std::make_shared<const ResourceQuota>(*r.quota);
      quota = last_custom_quota_;
    }
    uint32_t index;
    if (!free_slots_.empty()) {
      index = free_slots_.back();
      free_slots_.pop_back();
    } else {
      index = static_cast<uint32_t>(processes_.size());
      processes_.emplace_back();
    }
    Process& p = processes_[index];
    const uint32_t generation = p.generation + 1;
    p = Process{};
    p.generation = generation;
    p.id = r.id;
    p.scope = node;
    p.quota = std::move(quota);
    p.usage = r.usage;
    p.allocated_at = r.allocated_at;
    p.owner = r.owner;
    p.fired = r.fired;
    p.soft_fired = r.soft_fired;
    p.hard_fired = r.hard_fired;
    p.live = true;
    if (!r.parent.empty()) {
      const uint32_t parent = index_.at(r.parent);
      p.parent_index = parent;
      p.parent_generation = processes_[parent].generation;
      ++processes_[parent].children;
    }
    index_.emplace(p.id, index);
    // Anchored at the recorded allocation: a restart does not give a fresh timeout, and
    // one that passed while the daemon was down fires (soft, then hard) on the next
    // catch-up.
    arm_timeouts(p, index, &timeouts);
  }
  deadlines_.push_all(std::move(timeouts));

  for (const ThreadRecord& r : s.threads) {
    const std::string& path = thread_paths.at(r.id);
    Thread t;
    t.max_tokens = r.max_tokens;
    t.prompt_tokens = r.prompt_tokens;
    t.completion_tokens = r.completion_tokens;
    t.request_count = r.request_count;
    t.process = r.process;
    t.scope = path.empty() ? nullptr : find_or_create_scope(path).value();
    threads_.emplace(r.id, std::move(t));
  }

  for (std::size_t i = 0; i < s.holds.size(); ++i) {
    const HoldRecord& r = s.holds[i];
    Hold h{r.kind == 1 ? HoldKind::pending : HoldKind::reservation,
           r.process,
           r.thread,
           find_or_create_scope(hold_parts[i].first).value(),
           hold_parts[i].second,
           r.created_at,
           r.expires_at,
           r.resource,
           r.context,
           0};
    if (const Process* p = h.process.empty() ? nullptr : find_process(h.process)) h.process_generation = p->generation;
    // Reserved amounts are derived: rebuilt from the holds on the thread, the process (and
    // those it was delegated from) and the path.
    hold(resolve_hold(h), h.amount, true);
    // One that expired while the daemon was down expires, with its event, on the next
    // catch-up.
    deadlines_.push({h.expires_at, DeadlineKind::hold_expiry, 0, r.id});
    if (h.kind == HoldKind::pending) ++stats_.pending;
    holds_.emplace(r.id, std::move(h));
  }

  next_hold_id_ = std::max({next_hold_id_, s.counters.next_hold_id, max_hold_id + 1});
  stats_.total_events = s.counters.total_events;
  stats_.consumed_count = s.counters.consumed_count;
  stats_.rejected_count = s.counters.rejected_count;
  stats_.partial = s.counters.partial;
  // 0 is no budget anyone sets: a state without a counters record keeps the configured one.
  if (s.counters.thread_default_max_tokens) thread_default_ = s.counters.thread_default_max_tokens;

  events_.erase(events_.begin() + static_cast<std::ptrdiff_t>(events_before), events_.end());

  // The store holds what was imported; what the configuration made that the records do
  // not know of is new to it.
  clear_changes();
  for (const auto& [path, n] : scopes_)
    if (!scope_paths.contains(path)) mark(*n);
  for (const auto& key : live_templates_)
    if (!template_keys.contains(key)) dirty_.templates.insert(key);
  if (had_processes)
    for (const auto& [id, index] : index_)
      if (!record_of(id)) mark(processes_[index]);
  for (auto& [id, t] : threads_)
    if (!thread_paths.contains(id)) mark_thread(id, t);
  for (const auto& [id, h] : holds_)
    if (!hold_ids.contains(id)) mark_hold(id);
  if (counters_record() != s.counters) mark_counters();
  return {};
}

}  // namespace budgetd
