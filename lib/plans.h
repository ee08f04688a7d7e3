// The limit templates budgetd ships: seed 004's plans and seed 001's tiers.
#pragma once

#include <vector>

#include "lib/engine.h"

namespace budgetd {

// Seed 004 plans (monthly): free / pro / enterprise with executions (agent_execution),
// tokens, storage (GB) and api_call limits; enterprise is unlimited.
// Seed 001 tiers (daily): free 100 tokens, standard 500 tokens, enterprise unlimited.
std::vector<LimitTemplate> shipped_templates(const ResourceRegistry& resources);

}  // namespace budgetd
