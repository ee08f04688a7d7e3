// Live reconfiguration (SIGHUP / Admin.Reload): nothing recorded is lost.
#include <algorithm>

#include "lib/engine.h"

namespace budgetd {

void Engine::reconfigure(const EngineConfig& config) {
  catch_up();
  config_ = config;
  if (config_.thresholds.size() > 6) config_.thresholds.resize(6);
  std::sort(config_.thresholds.begin(), config_.thresholds.end());
  // Processes still on the old default keep it (their quota is what they were given);
  // only new allocations see the new one.
  default_quota_ = std::make_shared<const ResourceQuota>(config_.default_quota);
  thread_default_ = config_.thread_default_max_tokens;
  mark_counters();
  // Thresholds may have moved: recompute which are crossed, without firing events, so a
  // reload never replays warnings already given.
  for (auto& [path, n] : scopes_) {
    for (auto& s : n->slots) s.fired = crossed_bits(s.used, s.hard, s.soft);
    mark(*n);
  }
  for (auto& p : processes_)
    if (p.live) rearm_process_fired(p);  // marks it dirty
}

}  // namespace budgetd
