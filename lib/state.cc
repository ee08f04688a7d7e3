#include "lib/state.h"

namespace budgetd {

bool EngineChanges::empty() const {
  return templates.empty() && scopes.empty() && processes.empty() && released_processes.empty() &&
         threads.empty() && removed_threads.empty() && holds.empty() && removed_holds.empty() &&
         rate_limits.empty() && removed_rate_limits.empty() && rate_windows.empty() &&
         removed_rate_windows.empty() && !counters;
}

}  // namespace budgetd
