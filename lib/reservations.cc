// Two-phase reservations: seed 003's check-then-consume without its race. A hold is
// placed on the thread, the process and every scope node at once (or on none), so two
// agents checking the same last tokens cannot both be admitted.
#include "lib/engine.h"

namespace budgetd {

Result<Engine::Resolved> Engine::resolve(const Target& t, bool create_thread) {
  Resolved r;
  if (!t.thread.empty()) {
    Thread* th = nullptr;
    if (create_thread) {
      auto made = ensure_thread(t.thread, t.process);
      if (!made) return std::unexpected(made.error());
      th = *made;
    } else {
      th = find_thread(t.thread);
      if (!th) return fail(Errc::unknown_thread, t.thread);
    }
    r.thread = th;
    r.thread_id = t.thread;
    r.process = find_process(th->process);
    r.scope = th->scope;
  }
  if (!t.process.empty() && !r.process) {
    r.process = find_process(t.process);
    if (!r.process) return fail(Errc::unknown_process, t.process);
  }
  if (r.process) {
    r.scope = r.process->scope;
  } else if (!r.thread) {
    if (t.scope.empty()) return fail(Errc::invalid_argument, "a target needs a process, a thread or a scope");
    auto norm = normalize_path(t.scope);
    if (!norm) return std::unexpected(norm.error());
    r.scope = find_scope(*norm);
    if (!r.scope) return fail(Errc::unknown_scope, *norm);
  }
  return r;
}

Engine::Resolved Engine::resolve_hold(const Hold& h) {
  Resolved r;
  r.process = h.process.empty() ? nullptr : find_process(h.process);
  if (r.process && r.process->generation != h.process_generation) r.process = nullptr;
  r.thread = h.thread.empty() ? nullptr : find_thread(h.thread);
  r.thread_id = h.thread;
  r.scope = h.scope;
  return r;
}

Result<uint64_t> Engine::add_hold(Hold h) {
  if (holds_.size() >= config_.max_holds) return fail(Errc::capacity_exceeded, "open holds at the maximum");
  uint64_t id = next_hold_id_++;
  mark_counters();
  mark_hold(id);
  hold(resolve_hold(h), h.amount, true);
  deadlines_.push({h.expires_at, DeadlineKind::hold_expiry, 0, id});
  holds_.emplace(id, std::move(h));
  return id;
}

void Engine::drop_hold(uint64_t id) {
  auto it = holds_.find(id);
  if (it == holds_.end()) return;
  hold(resolve_hold(it->second), it->second.amount, false);
  holds_.erase(it);
  mark_hold(id);
}

void Engine::expire_hold(uint64_t id, TimePoint when) {
  auto it = holds_.find(id);
  if (it == holds_.end() || it->second.expires_at != when) return;
  const Hold& h = it->second;
  if (h.kind == HoldKind::pending) {
    decide(id, false, "expired");
    return;
  }
  Event e = make_event(EventKind::reservation_expired, h.scope->path);
  e.process = h.process;
  e.thread = h.thread;
  e.ref = id;
  e.reason = Reason::reservation_expired;
  e.outcome = "expired";
  e.message = "Reservation expired; its hold was freed.";
  push_event(std::move(e));
  Hold tombstone = it->second;
  drop_hold(id);
  expired_ids_.emplace(id, std::move(tombstone));
  expired_order_.emplace_back(when, id);
}

Result<ReserveResult> Engine::reserve(const Target& target, const ChargeList& estimate, Duration ttl) {
  catch_up();
  if (ttl < Duration{0}) return fail(Errc::invalid_argument, "ttl must not be negative");
  if (ttl == Duration{0}) ttl = config_.default_reservation_ttl;
  if (ttl > config_.max_reservation_ttl) return fail(Errc::invalid_argument, "ttl above the maximum");
  for (const auto& ch : estimate) {
    // The id first: naming an unknown id would read past the registry.
    if (ch.id >= resources_.size()) return fail(Errc::unknown_resource, std::to_string(ch.id));
    if (ch.amount.is_negative()) return fail(Errc::negative_amount, std::string(resources_.name(ch.id)));
  }
  auto r = resolve(target, true);
  if (!r) return std::unexpected(r.error());
  ReserveResult out;
  if (auto refusal = admit(*r, estimate)) {
    out.refusal = std::move(refusal);
    return out;
  }
  Hold h{HoldKind::reservation, r->process ? r->process->id : std::string(), std::string(r->thread_id), r->scope,
         estimate, clock_.now(), clock_.now() + ttl, {}, {}, 0};
  h.process_generation = r->process ? r->process->generation : 0;
  auto id = add_hold(std::move(h));
  if (!id) return std::unexpected(id.error());
  out.admitted = true;
  out.id = *id;
  out.expires_at = clock_.now() + ttl;
  return out;
}

Result<CommitResult> Engine::commit(uint64_t id, const UsageReport& actual) {
  catch_up();
  CommitResult out;
  auto it = holds_.find(id);
  auto ex = expired_ids_.find(id);
  const bool live = it != holds_.end() && it->second.kind == HoldKind::reservation;
  if (!live && ex == expired_ids_.end()) return fail(Errc::unknown_reservation, std::to_string(id));
  // A report that cannot be recorded is refused before the hold is touched, so the caller
  // can correct it and commit again.
  if (auto valid = report_charges(actual); !valid) return std::unexpected(valid.error());
  Resolved r;
  const Hold& held = live ? it->second : ex->second;
  out.process = held.process;
  out.thread = held.thread;
  out.scope = held.scope ? held.scope->path : std::string();
  if (live) {
    r = resolve_hold(it->second);
    drop_hold(id);
  } else {
    // The hold is gone, but the call it guarded happened: record it, and say so.
    out.expired = true;
    out.reason = Reason::reservation_expired;
    r = resolve_hold(ex->second);
    expired_ids_.erase(ex);
  }
  // The hold (and the thread id `r` viewed in it) is freed above; view the copy instead.
  r.thread_id = out.thread;
  auto rec = record_resolved(r, actual, std::nullopt);
  if (!rec) return std::unexpected(rec.error());
  out.violations = std::move(rec->violations);
  return out;
}

Result<void> Engine::cancel(uint64_t id) {
  catch_up();
  auto it = holds_.find(id);
  if (it == holds_.end() || it->second.kind != HoldKind::reservation)
    return fail(Errc::unknown_reservation, std::to_string(id));
  drop_hold(id);
  return {};
}

}  // namespace budgetd
