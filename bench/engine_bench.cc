// Hot-path throughput of the engine, on one core, with a FakeClock.
//
//   BM_RecordUsage      record_usage on a pool of pre-allocated processes (seed 002's path)
//   BM_CheckThenRecord  check_quota, then record_usage (seed 002's check-then-record)
//   BM_Reserve_Commit   reserve an estimate, then commit the actual usage (one item = both)
//   BM_Consume          seed 000 consume of a custom resource on a process's scope path
//   BM_Baseline_HashIncrement  an unordered_map<string, counter> lookup and increment on the
//                       same pool: the named baseline the engine's numbers are read against
//                       (STYLE.md: ratios, not lone numbers, on a shared machine)
//
// Arguments: {pool size, scope depth}. Depth 0 puts the processes at the root; depth 3 at
// "org/team/user", so each charge walks four nodes, each with hard limits to check.
// Every benchmark reports items/s; take_events() drains the event queue every 4096 items
// so its growth is not part of the measurement.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "lib/engine.h"

namespace {

using budgetd::ChargeList;
using budgetd::ConsumeRequest;
using budgetd::Decimal;
using budgetd::Engine;
using budgetd::EngineConfig;
using budgetd::FakeClock;
using budgetd::ResourceQuota;
using budgetd::ScopeUpdate;
using budgetd::Target;
using budgetd::UsageReport;
namespace res = budgetd::res;

constexpr int64_t kDrainEvery = 4096;

// "/" and its descendants down to `depth`: {"/", "org", "org/team", "org/team/user"}.
std::vector<std::string> path_for_depth(int64_t depth) {
  static const char* kSegments[] = {"org", "team", "user", "sub", "leaf"};
  std::vector<std::string> nodes{"/"};
  std::string path;
  for (int64_t i = 0; i < depth && i < 5; ++i) {
    if (i) path.push_back('/');
    path.append(kSegments[i]);
    nodes.push_back(path);
  }
  return nodes;
}

// An engine with `pool` processes under a scope of `depth`, with generous hard limits on
// every node of the path (admission has to check them) and a quota that never runs out.
struct Fixture {
  FakeClock clock{budgetd::parse_utc("2024-03-01T00:00:00Z").value()};
  Engine engine;
  std::vector<std::string> pids;

  Fixture(int64_t pool, int64_t depth) : engine(clock, config()) {
    const std::vector<std::string> nodes = path_for_depth(depth);
    const std::string& scope = nodes.back();
    for (const auto& p : nodes) {
      ScopeUpdate u;
      for (auto id : {res::tokens, res::llm_calls, res::cost, res::compute})
        u.limits[id].hard = Decimal::from_int(uint64_t{1} << 50);
      engine.set_limits(p, u).value();
    }
    ResourceQuota q;
    for (auto f : {"max_llm_calls", "max_tool_calls", "max_agent_hops", "max_iterations",
                   "timeout_seconds", "soft_timeout_seconds"})
      q.set_field(f, "unlimited").value();
    pids.reserve(static_cast<std::size_t>(pool));
    for (int64_t i = 0; i < pool; ++i) {
      pids.push_back("env-" + std::to_string(i));
      engine.allocate(pids.back(), q, scope).value();
      if (i % kDrainEvery == 0) (void)engine.take_events();
    }
    (void)engine.take_events();
  }

  static EngineConfig config() {
    EngineConfig c;
    c.max_processes = 2'000'000;
    return c;
  }

  // Time moves, so every call takes the catch-up path as it would in the daemon.
  void tick(int64_t i) {
    clock.advance(budgetd::Duration(1));
    if (i % kDrainEvery == 0) (void)engine.take_events();
  }
};

UsageReport one_call() {
  UsageReport r;
  r.llm_calls = 1;
  r.tool_calls = 1;
  r.tokens_in = 120;
  r.tokens_out = 40;
  r.cost = Decimal::parse("0.00042").value();
  return r;
}

void BM_RecordUsage(benchmark::State& state) {
  Fixture f(state.range(0), state.range(1));
  const UsageReport report = one_call();
  const std::size_t n = f.pids.size();
  int64_t i = 0;
  for (auto _ : state) {
    auto r = f.engine.record_usage(f.pids[static_cast<std::size_t>(i) % n], report);
    benchmark::DoNotOptimize(r);
    f.tick(++i);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_CheckThenRecord(benchmark::State& state) {
  Fixture f(state.range(0), state.range(1));
  const UsageReport report = one_call();
  const std::size_t n = f.pids.size();
  int64_t i = 0;
  for (auto _ : state) {
    const std::string& pid = f.pids[static_cast<std::size_t>(i) % n];
    auto c = f.engine.check_quota(pid);
    if (!c || c->has_value()) {
      state.SkipWithError("check_quota refused");
      break;
    }
    auto r = f.engine.record_usage(pid, report);
    benchmark::DoNotOptimize(r);
    f.tick(++i);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Reserve_Commit(benchmark::State& state) {
  Fixture f(state.range(0), state.range(1));
  ChargeList estimate;
  estimate.add(res::llm_calls, Decimal::from_int(1)).value();
  estimate.add(res::tokens_in, Decimal::from_int(1000)).value();
  estimate.add(res::tokens_out, Decimal::from_int(500)).value();
  const UsageReport actual = one_call();
  const std::size_t n = f.pids.size();
  Target t;
  int64_t i = 0;
  for (auto _ : state) {
    t.process = f.pids[static_cast<std::size_t>(i) % n];
    auto r = f.engine.reserve(t, estimate);
    if (!r || !r->admitted) {
      state.SkipWithError("reserve refused");
      break;
    }
    auto c = f.engine.commit(r->id, actual);
    benchmark::DoNotOptimize(c);
    f.tick(++i);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Consume(benchmark::State& state) {
  Fixture f(state.range(0), state.range(1));
  ConsumeRequest req;
  req.resource = "compute";
  req.amount = Decimal::parse("0.5").value();
  const std::size_t n = f.pids.size();
  int64_t i = 0;
  for (auto _ : state) {
    req.target.process = f.pids[static_cast<std::size_t>(i) % n];
    auto r = f.engine.consume(req);
    if (!r || !r->approved()) {
      state.SkipWithError("consume refused");
      break;
    }
    benchmark::DoNotOptimize(r);
    f.tick(++i);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Baseline_HashIncrement(benchmark::State& state) {
  std::unordered_map<std::string, uint64_t> counters;
  std::vector<std::string> pids;
  for (int64_t i = 0; i < state.range(0); ++i) {
    pids.push_back("env-" + std::to_string(i));
    counters[pids.back()] = 0;
  }
  const std::size_t n = pids.size();
  std::size_t i = 0;
  for (auto _ : state) {
    ++counters[pids[i++ % n]];
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

void Pools(benchmark::internal::Benchmark* b) {
  b->ArgNames({"pool", "depth"});
  b->Args({1'000, 0});
  b->Args({1'000, 3});
  b->Args({100'000, 3});
}

BENCHMARK(BM_Baseline_HashIncrement)->ArgName("pool")->Arg(1'000)->Arg(100'000);
BENCHMARK(BM_RecordUsage)->Apply(Pools);
BENCHMARK(BM_CheckThenRecord)->Apply(Pools);
BENCHMARK(BM_Reserve_Commit)->Apply(Pools);
BENCHMARK(BM_Consume)->Apply(Pools);

}  // namespace

BENCHMARK_MAIN();
