// The engine's durable state: export_state / import_state round trips, deadlines that
// continue across a restart, take_changes, and corrupt states refused without a trace.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "lib/engine.h"
#include "tests/lib/engine_test_support.h"
#include "tests/lib/state_test_support.h"

namespace budgetd {
namespace {

using testing_support::diff_state;
using testing_support::Mirror;
using testing_support::N;
using testing_support::slot_of;

TimePoint at_utc(const char* text) { return parse_utc(text).value(); }

std::vector<EventKind> kinds(const std::vector<Event>& events) {
  std::vector<EventKind> out;
  for (const auto& e : events) out.push_back(e.kind);
  return out;
}

int count_kind(const std::vector<Event>& events, EventKind k) {
  return static_cast<int>(std::count_if(events.begin(), events.end(), [k](const Event& e) { return e.kind == k; }));
}

// Every view a client can read, compared field by field.
void expect_same_views(const Engine& a, const Engine& b) {
  auto pa = a.list_processes(0, 100000), pb = b.list_processes(0, 100000);
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    SCOPED_TRACE("process " + pa[i].id);
    EXPECT_EQ(pa[i].id, pb[i].id);
    EXPECT_EQ(pa[i].scope, pb[i].scope);
    EXPECT_EQ(pa[i].parent, pb[i].parent);
    EXPECT_EQ(pa[i].quota, pb[i].quota);
    EXPECT_EQ(pa[i].usage, pb[i].usage);
    EXPECT_EQ(pa[i].reserved, pb[i].reserved);
    EXPECT_EQ(pa[i].allocated_at, pb[i].allocated_at);
    EXPECT_EQ(pa[i].elapsed_seconds, pb[i].elapsed_seconds);
    EXPECT_EQ(pa[i].owner, pb[i].owner);
    EXPECT_EQ(pa[i].state, pb[i].state);
  }
  auto sa = a.list_scopes(), sb = b.list_scopes();
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    SCOPED_TRACE("scope " + sa[i].path);
    EXPECT_EQ(sa[i].path, sb[i].path);
    EXPECT_EQ(sa[i].plan, sb[i].plan);
    EXPECT_EQ(sa[i].tier, sb[i].tier);
    EXPECT_EQ(sa[i].reset, sb[i].reset);
    EXPECT_EQ(sa[i].last_reset_at, sb[i].last_reset_at);
    EXPECT_EQ(sa[i].next_reset_at, sb[i].next_reset_at);
    ASSERT_EQ(sa[i].resources.size(), sb[i].resources.size());
    for (std::size_t r = 0; r < sa[i].resources.size(); ++r) {
      const SlotView &x = sa[i].resources[r], &y = sb[i].resources[r];
      EXPECT_EQ(x.resource, y.resource);
      EXPECT_EQ(x.used, y.used) << x.resource;
      EXPECT_EQ(x.reserved, y.reserved) << x.resource;
      EXPECT_EQ(x.hard, y.hard) << x.resource;
      EXPECT_EQ(x.soft, y.soft) << x.resource;
      EXPECT_EQ(x.approval, y.approval) << x.resource;
    }
  }
  auto ta = a.get_all_thread_usage(), tb = b.get_all_thread_usage();
  ASSERT_EQ(ta.size(), tb.size());
  for (std::size_t i = 0; i < ta.size(); ++i) {
    SCOPED_TRACE("thread " + ta[i].id);
    EXPECT_EQ(ta[i].id, tb[i].id);
    EXPECT_EQ(ta[i].prompt_tokens, tb[i].prompt_tokens);
    EXPECT_EQ(ta[i].completion_tokens, tb[i].completion_tokens);
    EXPECT_EQ(ta[i].max_tokens, tb[i].max_tokens);
    EXPECT_EQ(ta[i].request_count, tb[i].request_count);
    EXPECT_EQ(ta[i].reserved, tb[i].reserved);
    EXPECT_EQ(ta[i].process, tb[i].process);
  }
  auto qa = a.list_pending(), qb = b.list_pending();
  ASSERT_EQ(qa.size(), qb.size());
  for (std::size_t i = 0; i < qa.size(); ++i) {
    EXPECT_EQ(qa[i].id, qb[i].id);
    EXPECT_EQ(qa[i].process, qb[i].process);
    EXPECT_EQ(qa[i].thread, qb[i].thread);
    EXPECT_EQ(qa[i].scope, qb[i].scope);
    EXPECT_EQ(qa[i].resource, qb[i].resource);
    EXPECT_EQ(qa[i].context, qb[i].context);
    EXPECT_EQ(qa[i].amount, qb[i].amount);
    EXPECT_EQ(qa[i].created_at, qb[i].created_at);
    EXPECT_EQ(qa[i].expires_at, qb[i].expires_at);
  }
  const ConsumptionStats xa = a.get_stats(), xb = b.get_stats();
  EXPECT_EQ(xa.total_events, xb.total_events);
  EXPECT_EQ(xa.consumed_count, xb.consumed_count);
  EXPECT_EQ(xa.rejected_count, xb.rejected_count);
  EXPECT_EQ(xa.partial, xb.partial);
  EXPECT_EQ(xa.pending, xb.pending);
  EXPECT_EQ(a.hold_count(), b.hold_count());
  EXPECT_EQ(a.max_tokens_per_thread(), b.max_tokens_per_thread());
  EXPECT_EQ(a.next_deadline(), b.next_deadline());
  const SystemUsage ya = a.get_system_usage(), yb = b.get_system_usage();
  EXPECT_EQ(ya.total_processes, yb.total_processes);
  EXPECT_EQ(ya.active_processes, yb.active_processes);
  EXPECT_EQ(ya.system_tokens_in, yb.system_tokens_in);
  EXPECT_EQ(ya.system_cost, yb.system_cost);
  EXPECT_EQ(a.rate_limiter().user_limits(), b.rate_limiter().user_limits());
  EXPECT_EQ(a.rate_limiter().endpoint_limits(), b.rate_limiter().endpoint_limits());
  EXPECT_EQ(a.rate_limiter().tracked_pairs(), b.rate_limiter().tracked_pairs());
}

void expect_same_rate_usage(const Engine& a, const Engine& b, const char* user, const char* endpoint) {
  auto ua = a.rate_limiter().get_usage(user, endpoint).value();
  auto ub = b.rate_limiter().get_usage(user, endpoint).value();
  ASSERT_EQ(ua.size(), ub.size());
  for (const auto& [window, u] : ua) {
    SCOPED_TRACE(std::string(user) + "/" + endpoint + " " + window);
    EXPECT_EQ(u.current, ub[window].current);
    EXPECT_EQ(u.limit, ub[window].limit);
    EXPECT_EQ(u.remaining, ub[window].remaining);
    EXPECT_EQ(u.reset_in_seconds, ub[window].reset_in_seconds);
  }
}

// A bit of everything: a live template, a plan with a custom resource, overrides, a daily
// reset, delegation, threads, reservations, a pending consumption, stats, rate limits.
void populate(Engine& e, FakeClock& clock) {
  LimitTemplate team{"team", TemplateKind::plan, {}, ResetPeriod::daily};
  team.limits[res::tokens].hard = N(50'000);
  team.limits[res::cost].soft = N(20);
  ASSERT_TRUE(e.set_template(team).has_value());
  ScopeUpdate u;
  u.plan = "team";
  ASSERT_TRUE(e.set_limits("org/team", u).has_value());
  ASSERT_TRUE(e.add_quota("org/team/gpu", "gpu_hours", N(10)).has_value());
  ScopeUpdate approval;
  approval.limits[res::compute].approval = N(5);
  approval.limits[res::llm_calls].hard = N(100);
  ASSERT_TRUE(e.set_limits("org", approval).has_value());

  ResourceQuota q;
  q.max_llm_calls = 50;
  q.timeout_seconds = 3600;
  ASSERT_TRUE(e.allocate("agent-1", q, "org/team", 1000).value());
  ASSERT_TRUE(e.allocate("agent-2", ResourceQuota{}, "org").value());
  ASSERT_TRUE(e.allocate_child("agent-1", "agent-1.child", q, "", 1000).value());
  clock.advance(seconds(30));
  UsageReport r;
  r.llm_calls = 2;
  r.tokens_in = 1200;
  r.tokens_out = 300;
  r.cost = Decimal::parse("0.125").value();
  r.thread = "t-1";
  ASSERT_TRUE(e.record_usage("agent-1", r).has_value());
  UsageReport child;
  child.llm_calls = 1;
  child.tokens_in = 100;
  ASSERT_TRUE(e.record_usage("agent-1.child", child).has_value());
  ASSERT_TRUE(e.record_usage("auto-made", child, 7).has_value());
  e.configure(5000);
  ASSERT_TRUE(e.get_budget("t-2", "agent-2").has_value());
  ASSERT_TRUE(e.consume("t-2", 40, 10).has_value());
  ASSERT_TRUE(e.get_budget("t-free").has_value());

  Target tp{"agent-1", "t-1", ""};
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, N(500)).has_value());
  ASSERT_TRUE(est.add(res::llm_calls, N(1)).has_value());
  auto hold1 = e.reserve(tp, est, seconds(600));
  ASSERT_TRUE(hold1.has_value() && hold1->admitted);
  Target ts{"", "", "org/team/gpu"};
  ChargeList gpu;
  ASSERT_TRUE(gpu.add(e.resources().find("gpu_hours").value(), Decimal::parse("2.5").value()).has_value());
  auto hold2 = e.reserve(ts, gpu, seconds(60));
  ASSERT_TRUE(hold2.has_value() && hold2->admitted);
  ConsumeRequest big{{"agent-2", "", ""}, "compute", N(8), false, "nightly batch"};
  ASSERT_EQ(e.consume(big)->status, ConsumeStatus::pending);
  ConsumeRequest small{{"", "", "org"}, "compute", N(2), false, ""};
  ASSERT_EQ(e.consume(small)->status, ConsumeStatus::approved);
  ConsumeRequest gpu_more{{"", "", "org/team/gpu"}, "gpu_hours", N(9), true, ""};
  ASSERT_EQ(e.consume(gpu_more)->status, ConsumeStatus::partial);

  std::vector<std::pair<std::string, std::string>> fields = {{"max_tokens", "90000"}};
  ASSERT_TRUE(e.adjust_quota("agent-2", fields).has_value());

  RateLimiter& rl = e.rate_limiter();
  RateLimitConfig tight;
  tight.requests_per_minute = 5;
  tight.burst = 3;
  ASSERT_TRUE(rl.set_user_limits("alice", tight).has_value());
  ASSERT_TRUE(rl.set_endpoint_limits("search", RateLimitConfig{100, 1000, 5000, 20}).has_value());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(rl.check_rate_limit("alice", "chat").has_value());
    clock.advance(std::chrono::milliseconds(700));
  }
  ASSERT_TRUE(rl.check_rate_limit("bob", "search").has_value());
  clock.advance(seconds(5));
}

TEST(StateExport, RoundTripGivesEqualExportAndViews) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine a(clock);
  populate(a, clock);
  (void)a.take_events();
  const EngineState exported = a.export_state();
  EXPECT_EQ(exported.templates.size(), 1u) << "only the template set live; the shipped ones are not state";
  EXPECT_EQ(exported.processes.size(), 4u);
  EXPECT_EQ(exported.holds.size(), 3u);

  Engine b(clock);
  auto r = b.import_state(exported);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(diff_state(exported, b.export_state()), "");
  expect_same_views(a, b);
  expect_same_rate_usage(a, b, "alice", "chat");
  expect_same_rate_usage(a, b, "bob", "search");
  EXPECT_TRUE(b.take_events().empty()) << "an import restores; it raises no events";
  EXPECT_TRUE(b.take_changes().empty()) << "the store already holds what was imported";

  // Both go on the same way: the rate limiter refuses at the same request, the holds
  // expire together, and the delegated child still charges its parent.
  for (int i = 0; i < 3; ++i) {
    auto ra = a.rate_limiter().check_rate_limit("alice", "chat").value();
    auto rb = b.rate_limiter().check_rate_limit("alice", "chat").value();
    EXPECT_EQ(ra.exceeded, rb.exceeded) << i;
    EXPECT_EQ(ra.retry_after, rb.retry_after) << i;
  }
  UsageReport child;
  child.llm_calls = 1;
  ASSERT_TRUE(a.record_usage("agent-1.child", child).has_value());
  ASSERT_TRUE(b.record_usage("agent-1.child", child).has_value());
  clock.advance(std::chrono::minutes(11));
  a.advance();
  b.advance();
  EXPECT_EQ(kinds(a.take_events()), kinds(b.take_events()));
  EXPECT_EQ(diff_state(a.export_state(), b.export_state()), "");
  expect_same_views(a, b);
}

TEST(StateExport, TimeoutsContinueAcrossARestart) {
  const TimePoint t0 = at_utc("2024-03-10T10:00:00Z");
  FakeClock clock(t0);
  Engine a(clock);
  ResourceQuota q;  // soft timeout 240 s, hard 300 s
  ASSERT_TRUE(a.allocate("p", q).value());
  clock.advance(seconds(200));
  const EngineState s = a.export_state();

  FakeClock later(t0 + seconds(200));
  Engine b(later);
  ASSERT_TRUE(b.import_state(s).has_value());
  EXPECT_EQ(b.get_process("p")->allocated_at, t0);
  EXPECT_EQ(b.get_process("p")->elapsed_seconds, 200.0);
  EXPECT_EQ(b.next_deadline(), t0 + seconds(240)) << "not a fresh 240 s from the restart";
  later.advance(seconds(39));
  b.advance();
  EXPECT_TRUE(b.take_events().empty());
  later.set(t0 + seconds(240));
  b.advance();
  auto events = b.take_events();
  ASSERT_EQ(kinds(events), std::vector<EventKind>{EventKind::soft_timeout});
  EXPECT_EQ(events[0].process, "p");
  later.set(t0 + seconds(300));
  b.advance();
  events = b.take_events();
  ASSERT_EQ(kinds(events), std::vector<EventKind>{EventKind::timeout});
  EXPECT_EQ(events[0].reason, Reason::timeout_exceeded);
  EXPECT_EQ(b.check_quota("p").value()->reason, Reason::timeout_exceeded);
  // Fired flags are state: a second restart does not warn again.
  Engine c(later);
  ASSERT_TRUE(c.import_state(b.export_state()).has_value());
  c.advance();
  EXPECT_TRUE(c.take_events().empty());
}

TEST(StateExport, TimeoutsThatPassedWhileDownFireSoftThenHard) {
  const TimePoint t0 = at_utc("2024-03-10T10:00:00Z");
  FakeClock clock(t0);
  Engine a(clock);
  ASSERT_TRUE(a.allocate("p", ResourceQuota{}).value());
  const EngineState s = a.export_state();
  FakeClock later(t0 + std::chrono::hours(2));
  Engine b(later);
  ASSERT_TRUE(b.import_state(s).has_value());
  EXPECT_TRUE(b.take_events().empty()) << "nothing fires inside import";
  b.advance();
  EXPECT_EQ(kinds(b.take_events()), (std::vector<EventKind>{EventKind::soft_timeout, EventKind::timeout}));
}

TEST(StateExport, MissedCalendarResetAppliesAfterImport) {
  FakeClock clock(at_utc("2024-03-10T22:00:00Z"));
  Engine a(clock);
  ScopeUpdate u;
  u.limits[res::compute].hard = N(100);
  u.reset = ResetPeriod::daily;
  ASSERT_TRUE(a.set_limits("team", u).has_value());
  ASSERT_EQ(a.consume(ConsumeRequest{{"", "", "team"}, "compute", N(60), false, ""})->status,
            ConsumeStatus::approved);
  const EngineState s = a.export_state();

  FakeClock later(at_utc("2024-03-12T09:30:00Z"));  // two midnights later
  Engine b(later);
  ASSERT_TRUE(b.import_state(s).has_value());
  b.advance();
  auto events = b.take_events();
  ASSERT_EQ(kinds(events), std::vector<EventKind>{EventKind::reset}) << "one reset, to the latest boundary";
  EXPECT_EQ(events[0].path, "team");
  auto v = b.get_scope("team").value();
  EXPECT_EQ(v.last_reset_at, at_utc("2024-03-12T00:00:00Z"));
  EXPECT_EQ(v.next_reset_at, at_utc("2024-03-13T00:00:00Z"));
  EXPECT_EQ(slot_of(b, "team", "compute").used, Decimal());
  // The reset is a change the store must hear of.
  auto changes = b.take_changes();
  ASSERT_EQ(changes.scopes.size(), 1u);
  EXPECT_EQ(changes.scopes[0].last_reset_at, at_utc("2024-03-12T00:00:00Z"));
}

TEST(StateExport, APeriodSetMidwayDoesNotResetOnImport) {
  // The node exists since yesterday; its daily period was set today at 15:00, so its first
  // reset is tonight, although yesterday's midnight lies after its creation.
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine a(clock);
  ASSERT_TRUE(a.set_limits("team", ScopeUpdate{}).has_value());
  clock.set(at_utc("2024-03-11T15:00:00Z"));
  ScopeUpdate u;
  u.reset = ResetPeriod::daily;
  ASSERT_TRUE(a.set_limits("team", u).has_value());
  ASSERT_EQ(a.consume(ConsumeRequest{{"", "", "team"}, "compute", N(60), false, ""})->status,
            ConsumeStatus::approved);
  clock.set(at_utc("2024-03-11T16:00:00Z"));
  Engine b(clock);
  ASSERT_TRUE(b.import_state(a.export_state()).has_value());
  b.advance();
  EXPECT_EQ(count_kind(b.take_events(), EventKind::reset), 0);
  EXPECT_EQ(slot_of(b, "team", "compute").used, N(60));
  EXPECT_EQ(b.get_scope("team")->next_reset_at, at_utc("2024-03-12T00:00:00Z"));
  expect_same_views(a, b);
}

TEST(StateExport, ExpiredHoldsExpireAfterImport) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine a(clock);
  ScopeUpdate u;
  u.limits[res::compute].approval = N(5);
  ASSERT_TRUE(a.set_limits("team", u).has_value());
  ASSERT_TRUE(a.allocate("p", ResourceQuota{}, "team").value());
  ChargeList est;
  ASSERT_TRUE(est.add(res::tokens_in, N(300)).has_value());
  auto h = a.reserve(Target{"p", "", ""}, est, seconds(10));
  ASSERT_TRUE(h.has_value() && h->admitted);
  auto pending = a.consume(ConsumeRequest{{"", "", "team"}, "compute", N(9), false, ""}).value();
  ASSERT_EQ(pending.status, ConsumeStatus::pending);
  const EngineState s = a.export_state();

  FakeClock later(at_utc("2024-03-10T12:00:00Z"));  // past both ttls
  Engine b(later);
  ASSERT_TRUE(b.import_state(s).has_value());
  EXPECT_EQ(b.hold_count(), 2u);
  EXPECT_EQ(b.get_process("p")->reserved.tokens_in, 300u) << "reserved amounts are rebuilt from the holds";
  EXPECT_EQ(slot_of(b, "team", "compute").reserved, N(9));
  EXPECT_EQ(b.get_stats().pending, 1u);
  b.advance();
  auto events = b.take_events();
  EXPECT_EQ(count_kind(events, EventKind::reservation_expired), 1);
  EXPECT_EQ(count_kind(events, EventKind::pending_decided), 1);
  EXPECT_EQ(b.hold_count(), 0u);
  EXPECT_EQ(b.get_process("p")->reserved, ResourceUsage{});
  EXPECT_EQ(slot_of(b, "team", "compute").reserved, Decimal());
  EXPECT_EQ(slot_of(b, "/", "tokens").reserved, Decimal());
  EXPECT_EQ(b.get_stats().pending, 0u);
  EXPECT_EQ(b.get_stats().rejected_count, 1u);
  // A late commit after a restart is an unknown id: expired ids are not durable.
  EXPECT_EQ(b.commit(h->id, UsageReport{}).error().code, Errc::unknown_reservation);
  // Ids are never handed out twice.
  auto again = b.reserve(Target{"", "", "team"}, est, seconds(10));
  ASSERT_TRUE(again.has_value() && again->admitted);
  EXPECT_GT(again->id, pending.request_id);
}

// A state that cannot be right is refused whole, and leaves the engine as it was.
TEST(StateExport, CorruptStatesFailAndLeaveTheEngineUnchanged) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine source(clock);
  populate(source, clock);
  const EngineState good = source.export_state();

  struct Case {
    const char* name;
    Errc code;
    void (*corrupt)(EngineState&);
  };
  const Case cases[] = {
      {"unknown parent", Errc::unknown_process,
       [](EngineState& s) {
         for (auto& p : s.processes)
           if (!p.parent.empty()) p.parent = "nobody";
       }},
      {"bad process scope path", Errc::invalid_id, [](EngineState& s) { s.processes.back().scope = "a//b"; }},
      {"bad scope path", Errc::invalid_id, [](EngineState& s) { s.scopes.back().path = "has space"; }},
      {"duplicate process", Errc::already_exists, [](EngineState& s) { s.processes.push_back(s.processes.front()); }},
      {"duplicate scope", Errc::already_exists, [](EngineState& s) { s.scopes.push_back(s.scopes.back()); }},
      {"duplicate thread", Errc::already_exists, [](EngineState& s) { s.threads.push_back(s.threads.front()); }},
      {"duplicate hold", Errc::already_exists, [](EngineState& s) { s.holds.push_back(s.holds.front()); }},
      {"bad process id", Errc::invalid_id, [](EngineState& s) { s.processes.front().id = "with space"; }},
      {"unknown plan", Errc::unknown_plan, [](EngineState& s) { s.scopes.back().plan = "platinum"; }},
      {"hold of an unknown process", Errc::unknown_process,
       [](EngineState& s) {
         for (auto& h : s.holds)
           if (!h.process.empty()) h.process = "ghost";
       }},
      {"hold of an unknown thread", Errc::unknown_thread,
       [](EngineState& s) {
         for (auto& h : s.holds)
           if (!h.thread.empty()) h.thread = "ghost";
       }},
      {"delegation cycle", Errc::invalid_argument,
       [](EngineState& s) {
         for (auto& p : s.processes)
           if (p.id == "agent-1") p.parent = "agent-1.child";
       }},
      {"negative usage", Errc::negative_amount,
       [](EngineState& s) { s.scopes.front().slots.front().used = Decimal::parse("-1", true).value(); }},
      {"bad resource name", Errc::unknown_resource,
       [](EngineState& s) { s.scopes.front().slots.front().resource = "Not A Name"; }},
      {"bad rate window", Errc::invalid_argument,
       [](EngineState& s) { s.rate_windows.front().buckets[0].front().second = 0; }},
      {"duplicate rate limit", Errc::already_exists,
       [](EngineState& s) { s.rate_limits.push_back(s.rate_limits.front()); }},
  };
  // A template and a custom resource only the bad state knows of must not leak in either.
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EngineState bad = good;
    bad.templates.push_back({"extra", 1, {{"brand_new_resource", N(1), std::nullopt, std::nullopt}}, ResetPeriod::never});
    c.corrupt(bad);
    Engine e(clock);
    const EngineState before = e.export_state();
    const std::size_t resources_before = e.resources().size();
    auto r = e.import_state(bad);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, c.code) << r.error().message();
    EXPECT_FALSE(r.error().detail.empty());
    EXPECT_EQ(diff_state(before, e.export_state()), "");
    EXPECT_EQ(e.process_count(), 0u);
    EXPECT_EQ(e.hold_count(), 0u);
    EXPECT_EQ(e.list_scopes().size(), 1u);
    EXPECT_EQ(e.resources().size(), resources_before);
    EXPECT_EQ(e.get_template(TemplateKind::tier, "extra"), nullptr);
    EXPECT_EQ(e.rate_limiter().tracked_pairs(), 0u);
    EXPECT_TRUE(e.rate_limiter().user_limits().empty());
    EXPECT_TRUE(e.take_events().empty());
    // And the good state still imports into it afterwards.
    auto ok = e.import_state(good);
    ASSERT_TRUE(ok.has_value()) << ok.error().message();
    EXPECT_EQ(diff_state(good, e.export_state()), "");
  }
}

TEST(StateExport, ImportOverridesConfiguredScopesAndKeepsWhatOnlyTheConfigurationHas) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine a(clock);
  ScopeUpdate cfg;
  cfg.limits[res::tokens].hard = N(1000);
  ASSERT_TRUE(a.set_limits("team", cfg).has_value());
  UsageReport r;
  r.tokens_in = 900;
  ASSERT_TRUE(a.allocate("p", ResourceQuota{}, "team").value());
  ASSERT_TRUE(a.record_usage("p", r).has_value());  // 90%: the threshold fired
  ScopeUpdate live;
  live.limits[res::tokens].hard = N(2000);  // an operator raised it
  ASSERT_TRUE(a.set_limits("team", live).has_value());
  const EngineState s = a.export_state();

  Engine b(clock);
  ASSERT_TRUE(b.set_limits("team", cfg).has_value());  // the configuration, applied first
  ASSERT_TRUE(b.set_limits("from-config", cfg).has_value());
  (void)b.take_changes();
  (void)b.take_events();
  ASSERT_TRUE(b.import_state(s).has_value());
  EXPECT_EQ(slot_of(b, "team", "tokens").hard, N(2000));
  EXPECT_EQ(slot_of(b, "team", "tokens").used, N(900));
  EXPECT_TRUE(b.get_scope("from-config").has_value());
  auto changes = b.take_changes();
  ASSERT_EQ(changes.scopes.size(), 1u) << "the store has not seen the configured node";
  EXPECT_EQ(changes.scopes[0].path, "from-config");
}

TEST(StateChanges, EachMutationIsReportedOnceAndThenForgotten) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine e(clock);
  (void)e.take_changes();
  EXPECT_TRUE(e.take_changes().empty());

  ASSERT_TRUE(e.allocate("p", ResourceQuota{}, "a/b").value());
  UsageReport r;
  r.llm_calls = 1;
  r.thread = "t";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e.record_usage("p", r).has_value());
  auto c = e.take_changes();
  ASSERT_EQ(c.processes.size(), 1u);
  EXPECT_EQ(c.processes[0].usage.llm_calls, 3u) << "the newest state, once";
  EXPECT_EQ(c.scopes.size(), 3u);  // /, a, a/b
  ASSERT_EQ(c.threads.size(), 1u);
  EXPECT_EQ(c.threads[0].request_count, 3u);
  EXPECT_TRUE(e.take_changes().empty());

  // Released and allocated again in one batch: one upsert, no delete.
  ASSERT_TRUE(e.release("p"));
  ASSERT_TRUE(e.allocate("p", ResourceQuota{}, "a").value());
  c = e.take_changes();
  EXPECT_TRUE(c.released_processes.empty());
  ASSERT_EQ(c.processes.size(), 1u);
  EXPECT_EQ(c.processes[0].scope, "a");
  ASSERT_TRUE(e.release("p"));
  c = e.take_changes();
  EXPECT_EQ(c.released_processes, std::vector<std::string>{"p"});
  EXPECT_TRUE(c.processes.empty());

  // A hold: upserted, then deleted; the counters follow the ids.
  ChargeList est;
  ASSERT_TRUE(est.add(res::compute, N(1)).has_value());
  auto h = e.reserve(Target{"", "", "a"}, est, seconds(5));
  c = e.take_changes();
  ASSERT_EQ(c.holds.size(), 1u);
  ASSERT_TRUE(c.counters.has_value());
  EXPECT_EQ(c.counters->next_hold_id, h->id + 1);
  clock.advance(seconds(6));
  e.advance();
  c = e.take_changes();
  EXPECT_EQ(c.removed_holds, std::vector<uint64_t>{h->id});
  EXPECT_TRUE(c.holds.empty());

  // Thread cleanup deletes it; thresholds fired and timeouts mark their entities.
  ASSERT_TRUE(e.reset_thread("t"));
  c = e.take_changes();
  EXPECT_EQ(c.removed_threads, std::vector<std::string>{"t"});
  ASSERT_TRUE(e.allocate("q", ResourceQuota{}).value());
  (void)e.take_changes();
  clock.advance(seconds(240));
  e.advance();
  c = e.take_changes();
  ASSERT_EQ(c.processes.size(), 1u);
  EXPECT_TRUE(c.processes[0].soft_fired);

  // Rate limiter: recording marks the pair once per batch; a cleared limit is deleted.
  ASSERT_TRUE(e.rate_limiter().set_user_limits("u", RateLimitConfig{}).has_value());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(e.rate_limiter().check_rate_limit("u", "x").has_value());
  c = e.take_changes();
  ASSERT_EQ(c.rate_windows.size(), 1u);
  EXPECT_EQ(c.rate_windows[0].buckets[0].front().second, 5u);
  EXPECT_EQ(c.rate_limits.size(), 1u);
  ASSERT_TRUE(e.rate_limiter().clear_user_limits("u").value());
  ASSERT_EQ(e.rate_limiter().reset_user("u").value(), 4u);
  c = e.take_changes();
  EXPECT_EQ(c.removed_rate_limits.size(), 1u);
  EXPECT_EQ(c.removed_rate_windows.size(), 1u);
  EXPECT_TRUE(e.take_changes().empty());
}

TEST(StateChanges, ReleasingAParentRewritesItsChildren) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine e(clock);
  ASSERT_TRUE(e.allocate("parent", ResourceQuota{}).value());
  ASSERT_TRUE(e.allocate_child("parent", "child", ResourceQuota{}).value());
  Mirror mirror(e.export_state());
  (void)e.take_changes();
  ASSERT_TRUE(e.release("parent"));
  auto c = e.take_changes();
  ASSERT_EQ(c.processes.size(), 1u);
  EXPECT_EQ(c.processes[0].id, "child");
  EXPECT_EQ(c.processes[0].parent, "");
  mirror.apply(c);
  EXPECT_EQ(diff_state(mirror.state(), e.export_state()), "");
  // A new "parent" is not the child's parent, in the store either.
  ASSERT_TRUE(e.allocate("parent", ResourceQuota{}).value());
  mirror.apply(e.take_changes());
  Engine b(clock);
  ASSERT_TRUE(b.import_state(mirror.state()).has_value());
  EXPECT_EQ(b.get_process("child")->parent, "");
}

TEST(StateChanges, TemplatesSetLiveAreStateAndShippedOnesAreNot) {
  FakeClock clock(at_utc("2024-03-10T10:00:00Z"));
  Engine e(clock);
  EXPECT_TRUE(e.export_state().templates.empty());
  EXPECT_TRUE(e.take_changes().templates.empty());
  LimitTemplate pro = *e.get_template(TemplateKind::plan, "pro");
  pro.limits[res::tokens].hard = N(2'000'000);
  ASSERT_TRUE(e.set_template(pro).has_value());
  auto c = e.take_changes();
  ASSERT_EQ(c.templates.size(), 1u);
  EXPECT_EQ(c.templates[0].name, "pro");
  ASSERT_EQ(e.export_state().templates.size(), 1u);
  Engine b(clock);
  ASSERT_TRUE(b.import_state(e.export_state()).has_value());
  EXPECT_EQ(b.get_template(TemplateKind::plan, "pro")->limits.at(res::tokens).hard, N(2'000'000));
}

}  // namespace
}  // namespace budgetd
