// Unit prices (seed 004's resource price table, seed 001's per-model and per-action token
// costs) and the exact cost of a usage report. All arithmetic is Decimal: 1 token at
// $0.002 per 1000 tokens costs exactly $0.000002.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/decimal.h"
#include "lib/error.h"
#include "lib/ledger.h"

namespace budgetd {

struct UsageReport;

// A price: `unit_cost` per `unit_size` of `unit` ("1000 tokens" is unit "token", size 1000).
struct UnitPrice {
  std::string unit = "count";
  Decimal unit_size = Decimal::from_int(1);
  Decimal unit_cost;
  friend bool operator==(const UnitPrice&, const UnitPrice&) = default;
};

struct ModelPrice {  // per 1000 tokens, input and output separately
  Decimal input_per_1k, output_per_1k;
  friend bool operator==(const ModelPrice&, const ModelPrice&) = default;
};

class PriceTable {
 public:
  // seed 004: agent_execution $0.01/count, token $0.002 per 1000 tokens, storage $0.10/GB,
  // api_call $0.001/count; seed 001: translate 5 and summarize 2 tokens per 1000 words.
  static PriceTable defaults();

  void set_resource(std::string resource, UnitPrice p);
  void set_model(std::string model, ModelPrice p);
  void set_action(std::string action, Decimal tokens_per_1000_words);
  const std::map<std::string, UnitPrice, std::less<>>& resources() const { return resources_; }
  const std::map<std::string, ModelPrice, std::less<>>& models() const { return models_; }
  const std::map<std::string, Decimal, std::less<>>& actions() const { return actions_; }

  // One priced line for `quantity` of `resource` (zero cost when it has no price).
  Result<LedgerItem> price(std::string_view resource, Decimal quantity) const;
  // The items of a usage report and its total cost. tokens_in / tokens_out are priced by
  // `model`'s price when the model has one, else by the `token` price; an explicit
  // report.cost, when given (non-zero), is the charge and is listed as a "cost" line.
  struct Priced {
    std::vector<LedgerItem> items;
    Decimal total_cost;
  };
  Result<Priced> price_report(const UsageReport& report, std::string_view model) const;
  // Seed 001's action costs: tokens for `words` words of `action` (rounded up to a whole
  // token); an unknown action is Errc::not_found.
  Result<uint64_t> action_tokens(std::string_view action, uint64_t words) const;

 private:
  std::map<std::string, UnitPrice, std::less<>> resources_;
  std::map<std::string, ModelPrice, std::less<>> models_;
  std::map<std::string, Decimal, std::less<>> actions_;
};

}  // namespace budgetd
