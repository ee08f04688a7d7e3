#include "lib/pricing.h"

namespace budgetd {

// Placeholder bodies so the tree links while pricing is written (issue 5).
PriceTable PriceTable::defaults() { return PriceTable{}; }
void PriceTable::set_resource(std::string resource, UnitPrice p) { resources_[std::move(resource)] = std::move(p); }
void PriceTable::set_model(std::string model, ModelPrice p) { models_[std::move(model)] = p; }
void PriceTable::set_action(std::string action, Decimal t) { actions_[std::move(action)] = t; }

}  // namespace budgetd
