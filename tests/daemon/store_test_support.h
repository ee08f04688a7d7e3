// Shared by the store tests: a temporary state directory, a loop driven until a condition
// (with a deadline, never a sleep), and records with every field set.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <uv.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/store.h"
#include "lib/state.h"

namespace budgetd::daemon::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "budgetd-store-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string db() const { return path_ + "/budgetd.db"; }

 private:
  std::string path_;
};

// A loop whose store is destroyed before the loop closes (the async handle's close
// callback runs in close()).
class TestLoop {
 public:
  TestLoop() { uv_loop_init(&loop_); }
  ~TestLoop() { close(); }
  uv_loop_t* get() { return &loop_; }

  // Runs the loop until `done` holds; false after `deadline`.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
    uv_timer_t timer;
    uv_timer_init(&loop_, &timer);
    bool expired = false;
    timer.data = &expired;
    uv_timer_start(&timer, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; },
                   static_cast<uint64_t>(deadline.count()), 0);
    while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

 private:
  uv_loop_t loop_{};
  bool closed_ = false;
};

inline TimePoint at_usec(int64_t us) { return TimePoint(Duration(us)); }
inline Decimal dec(std::string_view s) { return *Decimal::parse(s, true); }

inline ProcessRecord sample_process(std::string id, bool with_quota = true) {
  ProcessRecord p;
  p.id = std::move(id);
  p.scope = "org/acme/team/research/user/alice";
  p.parent = "env-1";
  if (with_quota) {
    ResourceQuota q;
    q.max_llm_calls = 77;
    q.max_tokens = kUnlimited;
    q.max_cost = dec("12.345678901234");
    q.on_timeout = Action::terminate;
    q.on_violation = Action::pause;
    p.quota = q;
  }
  p.usage.llm_calls = 3;
  p.usage.tokens_in = 1'000'000'000'000;
  p.usage.cost = dec("0.000002");
  p.allocated_at = at_usec(1'700'000'000'123'456);
  p.owner = 4'000'000'000u;
  p.fired = {1, 2, 3, 0, 255, 7};
  p.soft_fired = true;
  return p;
}

inline EngineState sample_state() {
  EngineState s;
  TemplateRecord t;
  t.name = "pro";
  t.kind = 1;
  t.limits = {LimitRecord{"cost", dec("100"), dec("80"), std::nullopt}, LimitRecord{"llm_calls", std::nullopt, std::nullopt, dec("5")}};
  t.reset = ResetPeriod::monthly;
  s.templates.push_back(t);

  ScopeRecord sc;
  sc.path = "org/acme";
  sc.plan = "pro";
  sc.tier = "standard";
  sc.overrides = {LimitRecord{"tokens", dec("1000000"), std::nullopt, std::nullopt}};
  sc.reset_override = ResetPeriod::daily;
  sc.last_reset_at = at_usec(-5);  // before the epoch: signed times survive
  sc.slots = {SlotRecord{"cost", dec("-1.5"), 3}, SlotRecord{"tokens", Decimal::max(), 0}};
  sc.period_since = at_usec(1'700'000'000'000'000);
  s.scopes.push_back(sc);

  s.processes.push_back(sample_process("4242"));
  s.processes.push_back(sample_process("env-123", false));

  ThreadRecord th;
  th.id = "7f3a";
  th.max_tokens = 100000;
  th.prompt_tokens = 12;
  th.completion_tokens = 34;
  th.request_count = 2;
  th.process = "4242";
  th.scope = "org/acme";
  s.threads.push_back(th);

  HoldRecord h;
  h.id = 9;
  h.kind = 1;
  h.process = "4242";
  h.thread = "7f3a";
  h.scope = "org/acme";
  h.amount = {{"tokens", dec("500")}, {"cost", dec("0.01")}};
  h.created_at = at_usec(100);
  h.expires_at = at_usec(200);
  h.resource = "cost";
  h.context = "{\"why\":\"big\"}";
  s.holds.push_back(h);

  RateLimitRecord rl;
  rl.endpoint = true;
  rl.name = "/v1/chat";
  rl.config = RateLimitConfig{1, 2, 3, 4};
  s.rate_limits.push_back(rl);
  RateLimitRecord rl_user;
  rl_user.name = "alice";
  s.rate_limits.push_back(rl_user);

  RateWindowRecord rw;
  rw.user = "alice";
  rw.endpoint = "/v1/chat";
  rw.buckets[0] = {{-3, 1}, {5, 99}};
  rw.buckets[3] = {{INT64_MAX, UINT64_MAX}};
  rw.newest = {5, 0, -1, INT64_MAX};
  rw.present = {true, false, true, true};
  s.rate_windows.push_back(rw);

  s.counters = CountersRecord{17, 1000, 900, 50, 3, 100000};
  return s;
}

inline LedgerRecord sample_ledger(std::string id, TimePoint at) {
  LedgerRecord r;
  r.id = std::move(id);
  r.kind = LedgerKind::usage;
  r.recorded_at = at;
  r.uid = 1000;
  r.pid = 4242;
  r.process = "4242";
  r.thread = "7f3a";
  r.scope = "org/acme/user/alice";
  r.labels = {{"agent", "planner"}, {"model", "gpt-4o"}, {"endpoint", "/v1/chat"}, {"action", "translate"}, {"team", "x"}};
  r.items = {LedgerItem{"tokens_in", dec("1000"), "1000 tokens", dec("0.002"), dec("0.002")},
             LedgerItem{"llm_calls", dec("1"), "count", dec("0"), dec("0")}};
  r.total_cost = dec("0.002");
  r.idempotency_key = "key-" + r.id;
  r.action = "approved";
  r.detail = "";
  return r;
}

}  // namespace budgetd::daemon::testing
