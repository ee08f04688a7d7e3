// Bytes per tracked process: allocates N logical processes ("env-0" .. "env-N-1") in one
// Engine and reports the growth of the resident set (/proc/self/statm) and of the heap in
// use (mallinfo2) divided by N. The event queue is drained every 4096 allocations, so its
// `allocated` events are not counted. The goal is <= 512 B at N = 1,000,000.
//
//   memory_per_process [N=1000000] [quota=default|custom|unlimited] [scope=/] [id_length=0]
//
//   default    the engine's default quota: shared by all processes; soft and hard
//              timeouts put two deadline entries per process in the timer heap
//   custom     a quota that differs from the default: each process owns a copy
//   unlimited  no limits and no timeouts: no deadline entries; each process owns a copy
//
// id_length pads every id with leading 'x' to that many bytes: ids of up to 15 bytes live
// inside std::string (the default "env-123456" does), longer ones (a 36-byte UUID) cost a
// heap block each. Run each configuration in its own process: RSS never shrinks back.
#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "lib/engine.h"

namespace {

std::size_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  if (std::fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

std::size_t heap_in_use() { return mallinfo2().uordblks + mallinfo2().hblkhd; }

}  // namespace

int main(int argc, char** argv) {
  using namespace budgetd;
  const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  const std::string mode = argc > 2 ? argv[2] : "default";
  const std::string scope = argc > 3 ? argv[3] : "/";
  const std::size_t id_length = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 0;

  ResourceQuota quota;  // the default
  if (mode == "custom") {
    quota.max_llm_calls = 500;
  } else if (mode == "unlimited") {
    for (auto f : {"max_input_tokens", "max_output_tokens", "max_context_tokens", "max_llm_calls",
                   "max_tool_calls", "max_agent_hops", "max_iterations", "max_tokens", "max_cost",
                   "timeout_seconds", "soft_timeout_seconds"})
      quota.set_field(f, "unlimited").value();
  } else if (mode != "default") {
    std::fprintf(stderr, "quota must be default, custom or unlimited\n");
    return 2;
  }

  FakeClock clock(parse_utc("2024-03-01T00:00:00Z").value());
  EngineConfig config;
  config.max_processes = n;
  Engine engine(clock, config);
  // The scope node exists before the measured window: it is shared, not per process.
  engine.set_limits(scope, ScopeUpdate{}).value();
  (void)engine.take_events();

  const std::size_t rss0 = rss_bytes();
  const std::size_t heap0 = heap_in_use();
  std::string pid;
  for (std::size_t i = 0; i < n; ++i) {
    pid = "env-" + std::to_string(i);
    if (pid.size() < id_length) pid.insert(0, id_length - pid.size(), 'x');
    auto r = engine.allocate(pid, quota, scope);
    if (!r || !*r) {
      std::fprintf(stderr, "allocate %s failed\n", pid.c_str());
      return 1;
    }
    if (i % 4096 == 0) (void)engine.take_events();
  }
  (void)engine.take_events();
  const std::size_t rss1 = rss_bytes();
  const std::size_t heap1 = heap_in_use();
  malloc_trim(0);
  const std::size_t rss2 = rss_bytes();

  const double per_rss = static_cast<double>(rss1 - rss0) / static_cast<double>(n);
  const double per_heap = static_cast<double>(heap1 - heap0) / static_cast<double>(n);
  const double per_trim = static_cast<double>(rss2 - rss0) / static_cast<double>(n);
  std::printf("processes        %zu (quota=%s, scope=%s, last id %s)\n", engine.process_count(),
              mode.c_str(), scope.c_str(), pid.c_str());
  std::printf("rss delta        %.1f MiB  -> %.1f B/process\n",
              static_cast<double>(rss1 - rss0) / 1048576.0, per_rss);
  std::printf("rss after trim   %.1f MiB  -> %.1f B/process\n",
              static_cast<double>(rss2 - rss0) / 1048576.0, per_trim);
  std::printf("heap in use      %.1f MiB  -> %.1f B/process\n",
              static_cast<double>(heap1 - heap0) / 1048576.0, per_heap);
  std::printf("goal             512 B/process: %s\n", per_rss <= 512.0 ? "met" : "NOT met");
  return 0;
}
