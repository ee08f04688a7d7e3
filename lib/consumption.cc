// Consumption: seed 000's ConsumptionManager on the budget tree. A consumer is a scope
// node (or a process or thread, which charge their scope path). PENDING requests are held
// like reservations, so an operator's approval can never overshoot a limit.
#include <algorithm>

#include "lib/engine.h"

namespace budgetd {

namespace {
Decimal min_amount(Decimal a, Decimal b) { return a < b ? a : b; }
}  // namespace

// What is left of resource `id` for this target: the smallest (limit - used - held) on the
// path, the process quota and the thread budget. kUnlimitedAmount when nothing limits it.
static Decimal headroom_of(Decimal limit, Decimal used_and_held) {
  if (limit == kUnlimitedAmount) return kUnlimitedAmount;
  return limit.saturating_sub(used_and_held);
}

Decimal Engine::path_headroom(const ScopeNode* n, ResourceId id) const {
  Decimal rem = kUnlimitedAmount;
  for (; n; n = n->parent)
    if (const Slot* s = n->find_slot(id)) rem = min_amount(rem, headroom_of(s->hard, s->used.saturating_add(s->reserved)));
  return rem;
}

Result<std::pair<Engine::ScopeNode*, ResourceId>> Engine::consumer_slot(std::string_view consumer,
                                                                         std::string_view resource) const {
  auto norm = normalize_path(consumer);
  if (!norm) return std::unexpected(norm.error());
  ScopeNode* n = find_scope(*norm);
  if (!n) return fail(Errc::unknown_scope, *norm);
  auto id = resource_id(resource);
  if (!id) return std::unexpected(id.error());
  return std::pair{n, *id};
}

Result<void> Engine::add_quota(std::string_view consumer, std::string_view resource, Decimal max_amount) {
  auto id = resources_.intern(resource);
  if (!id) return std::unexpected(id.error());
  ScopeUpdate u;
  u.limits[*id].hard = max_amount;
  return set_limits(consumer, u);
}

Result<void> Engine::update_quota(std::string_view consumer, std::string_view resource, Decimal new_max) {
  auto norm = normalize_path(consumer);
  if (!norm) return std::unexpected(norm.error());
  if (!find_scope(*norm)) return fail(Errc::unknown_scope, *norm);
  auto id = resource_id(resource);
  if (!id) return std::unexpected(id.error());
  ScopeUpdate u;
  u.limits[*id].hard = new_max;
  return set_limits(*norm, u);
}

Result<void> Engine::reset_quota(std::string_view consumer, std::string_view resource) {
  catch_up();
  auto found = consumer_slot(consumer, resource);
  if (!found) return std::unexpected(found.error());
  auto [n, id] = *found;
  Slot& s = n->slot(id);
  s.used = Decimal();
  s.fired = crossed_bits(s.used, s.hard, s.soft);
  mark(*n);
  Event e = make_event(EventKind::reset, n->path);
  e.resource = std::string(resource);
  e.message = "Quota reset.";
  push_event(std::move(e));
  return {};
}

Result<QuotaView> Engine::get_consumer_usage(std::string_view consumer, std::string_view resource) const {
  auto found = consumer_slot(consumer, resource);
  if (!found) return std::unexpected(found.error());
  auto [n, id] = *found;
  const Slot* s = n->find_slot(id);
  Slot empty;
  if (!s) s = &empty;
  // As get_scope: a reset that fell due is shown as applied, though this const view cannot
  // apply it.
  const bool reset_pending = n->reset != ResetPeriod::never && n->next_reset_at <= clock_.now();
  const Decimal used = reset_pending ? Decimal() : s->used;
  return QuotaView{n->path, std::string(resource), s->hard, used, headroom_of(s->hard, used.saturating_add(s->reserved))};
}

Result<std::pair<bool, Decimal>> Engine::check_quota(std::string_view consumer, std::string_view resource,
                                                     Decimal amount) {
  catch_up();
  if (amount.is_negative()) return fail(Errc::negative_amount, "amount");
  auto found = consumer_slot(consumer, resource);
  if (!found) return std::unexpected(found.error());
  auto [n, id] = *found;
  ChargeList c;
  (void)c.add(id, amount);
  return std::pair<bool, Decimal>{!admit_path(n, c).has_value(), path_headroom(n, id)};
}

Result<ConsumeResult> Engine::consume(const ConsumeRequest& req) {
  catch_up();
  auto id = resource_id(req.resource);
  if (!id) return std::unexpected(id.error());
  if (req.amount.is_negative()) return fail(Errc::negative_amount, "amount");
  if (ResourceRegistry::is_integer(*id) && !req.amount.is_integer())
    return fail(Errc::invalid_argument, req.resource + " is counted in whole units");
  auto r = resolve(req.target, true);
  if (!r) return std::unexpected(r.error());
  ++stats_.total_events;
  mark_counters();  // every path below changes the stats too

  auto remaining_after = [&] { return path_headroom(r->scope, *id); };


  ConsumeResult out;
  // Above an approval threshold anywhere on the path: hold `amount` for an operator.
  auto await_approval = [&](Decimal amount) -> Result<bool> {
    for (const ScopeNode* m = r->scope; m; m = m->parent) {
      const Slot* s = m->find_slot(*id);
      if (!s || s->approval == kUnlimitedAmount || amount <= s->approval) continue;
      ChargeList held;
      (void)held.add(*id, amount);
      Hold h{HoldKind::pending, r->process ? r->process->id : std::string(), std::string(r->thread_id), r->scope,
             held, clock_.now(), clock_.now() + config_.pending_ttl, req.resource, req.context, 0};
      h.process_generation = r->process ? r->process->generation : 0;
      auto hid = add_hold(std::move(h));
      if (!hid) return std::unexpected(hid.error());
      ++stats_.pending;
      out.status = ConsumeStatus::pending;
      out.request_id = *hid;
      out.expires_at = clock_.now() + config_.pending_ttl;
      out.remaining = remaining_after();
      out.refusal = Refusal{Reason::approval_required, m->path, req.resource, amount, s->approval, Duration{0},
                            "Awaiting operator approval."};
      Event e = make_event(EventKind::pending_created, m->path);
      if (r->process) e.process = r->process->id;
      e.thread = std::string(r->thread_id);
      e.resource = req.resource;
      e.used = amount;
      e.limit = s->approval;
      e.ref = *hid;
      e.reason = Reason::approval_required;
      e.message = "Consumption of " + amount.to_string() + " " + req.resource + " awaits approval.";
      push_event(std::move(e));
      return true;
    }
    return false;
  };

  ChargeList c;
  (void)c.add(*id, req.amount);
  auto refusal = admit(*r, c);
  if (!refusal) {
    auto pending = await_approval(req.amount);
    if (!pending) return std::unexpected(pending.error());
    if (*pending) return out;
    charge(*r, c, nullptr);
    ++stats_.consumed_count;
    out.status = ConsumeStatus::approved;
    out.granted = req.amount;
    out.remaining = remaining_after();
    return out;
  }
  if (req.allow_partial) {
    // Grant what is left on the tightest level, if the refusal was about this resource.
    Decimal room = remaining_after();
    if (r->process && refusal->resource == req.resource && refusal->limit != kUnlimitedAmount)
      room = min_amount(room, refusal->limit.saturating_sub(refusal->used));
    if (ResourceRegistry::is_integer(*id)) room = Decimal::from_int(room.to_u64_floor());
    if (room != kUnlimitedAmount && !room.is_zero() && room < req.amount) {
      ChargeList part;
      (void)part.add(*id, room);
      if (!admit(*r, part)) {
        // A partial grant is a consumption too: above a threshold, it waits for approval.
        auto pending = await_approval(room);
        if (!pending) return std::unexpected(pending.error());
        if (*pending) return out;
        charge(*r, part, nullptr);
        ++stats_.partial;
        out.status = ConsumeStatus::partial;
        out.granted = room;
        out.remaining = remaining_after();
        out.refusal = std::move(refusal);
        return out;
      }
    }
  }
  ++stats_.rejected_count;
  out.status = ConsumeStatus::denied;
  out.remaining = remaining_after();
  out.refusal = std::move(refusal);
  return out;
}

ConsumeResult Engine::decide(uint64_t id, bool approve, std::string_view outcome) {
  // A copy, not a move: drop_hold resolves the process and thread from the stored hold, and
  // a moved-from one would leave their held amounts behind.
  Hold h = holds_.at(id);
  drop_hold(id);
  --stats_.pending;
  mark_counters();
  ConsumeResult out;
  out.request_id = id;
  Resolved r = resolve_hold(h);
  if (approve) {
    // The amount was held since the request, so it still fits: charge it.
    charge(r, h.amount, nullptr);
    ++stats_.consumed_count;
    out.status = ConsumeStatus::approved;
    out.granted = h.amount.begin()->amount;
  } else {
    ++stats_.rejected_count;
    out.status = ConsumeStatus::denied;
  }
  // What is left on the tightest node, as in a direct Consume's answer.
  if (auto id = resources_.find(h.resource)) out.remaining = path_headroom(h.scope, *id);
  Event e = make_event(EventKind::pending_decided, h.scope->path);
  e.process = h.process;
  e.thread = h.thread;
  e.resource = h.resource;
  e.used = h.amount.begin()->amount;
  e.ref = id;
  e.outcome = std::string(outcome);
  e.message = "Pending consumption " + std::string(outcome) + ".";
  push_event(std::move(e));
  return out;
}

Result<ConsumeResult> Engine::approve(uint64_t request_id) {
  catch_up();
  auto it = holds_.find(request_id);
  if (it == holds_.end() || it->second.kind != HoldKind::pending)
    return fail(Errc::unknown_request, std::to_string(request_id));
  return decide(request_id, true, "approved");
}

Result<ConsumeResult> Engine::deny(uint64_t request_id) {
  catch_up();
  auto it = holds_.find(request_id);
  if (it == holds_.end() || it->second.kind != HoldKind::pending)
    return fail(Errc::unknown_request, std::to_string(request_id));
  return decide(request_id, false, "denied");
}

std::vector<PendingView> Engine::list_pending() const {
  std::vector<PendingView> out;
  for (const auto& [id, h] : holds_) {
    if (h.kind != HoldKind::pending) continue;
    out.push_back({id, h.process, h.thread, h.scope->path, h.resource, h.context, h.amount.begin()->amount,
                   h.created_at, h.expires_at});
  }
  std::sort(out.begin(), out.end(), [](const PendingView& a, const PendingView& b) { return a.id < b.id; });
  return out;
}

ConsumptionStats Engine::get_stats() const { return stats_; }

}  // namespace budgetd
