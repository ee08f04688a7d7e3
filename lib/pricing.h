// Unit prices (seed 004's resource price table, seed 001's per-action token costs, and
// per-model token prices from config) and the exact cost of a usage report. All arithmetic
// is Decimal: 1 token at $0.002 per 1000 tokens costs exactly $0.000002.
//
// Rounding: a cost is formed in one step, quantity x unit_cost / unit_size, from the exact
// operands (a 256-bit intermediate), and only the result is rounded, half away from zero,
// to Decimal's 12 fractional digits. No cost is rounded twice, and a cost that fits in 12
// digits (every price of the seeds) is exact.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/decimal.h"
#include "lib/error.h"
#include "lib/ledger.h"
#include "lib/resource.h"

namespace budgetd {

struct UsageReport;

// A price: `unit_cost` dollars per priced unit. `unit` labels the priced unit as a ledger
// line shows it ("count", "1000 tokens", "GB"), and `unit_size` is how many of the
// resource's quantity one priced unit is (1000 for "1000 tokens", 1 for "GB" when storage
// is counted in GB).
struct UnitPrice {
  std::string unit = "count";
  Decimal unit_size = Decimal::from_int(1);
  Decimal unit_cost;
  friend bool operator==(const UnitPrice&, const UnitPrice&) = default;
};

struct ModelPrice {  // dollars per 1000 tokens, input and output separately
  Decimal input_per_1k, output_per_1k;
  friend bool operator==(const ModelPrice&, const ModelPrice&) = default;
};

class PriceTable {
 public:
  // Bounds that keep every cost computable exactly (the raw operands of the one rounding
  // step must fit in 64 bits) and far above any real price: ten million units per priced
  // unit, ten million dollars per unit, a million tokens per 1000 words.
  static constexpr uint64_t kMaxUnitSize = 10'000'000;
  static constexpr uint64_t kMaxUnitCost = 10'000'000;
  static constexpr uint64_t kMaxActionTokensPer1000Words = 1'000'000;
  static constexpr std::size_t kMaxUnitLabelLength = 64;
  static constexpr std::size_t kMaxModelNameLength = 128;
  // The label of the token prices of models and of the `token` resource.
  static constexpr std::string_view kTokenUnit = "1000 tokens";

  // seed 004: agent_execution $0.01/count, token $0.002 per 1000 tokens, storage $0.10/GB,
  // api_call $0.001/count; seed 001: translate 5 and summarize 2 tokens per 1000 words.
  // The seeds name no model prices, so there are none by default (tokens of any model are
  // priced by `token` until config gives the model its own).
  static PriceTable defaults();

  // The setters store what they are given; validate first (config does) so that price()
  // never meets a price it cannot compute.
  void set_resource(std::string resource, UnitPrice p);
  void set_model(std::string model, ModelPrice p);
  void set_action(std::string action, Decimal tokens_per_1000_words);
  const std::map<std::string, UnitPrice, std::less<>>& resources() const { return resources_; }
  const std::map<std::string, ModelPrice, std::less<>>& models() const { return models_; }
  const std::map<std::string, Decimal, std::less<>>& actions() const { return actions_; }

  // Errc::invalid_argument with a reason when a price is outside the bounds above (a
  // unit_size of 0 or above kMaxUnitSize, a unit_cost above kMaxUnitCost, an empty or
  // overlong unit label); negative amounts are Errc::negative_amount.
  static Result<void> validate(const UnitPrice& p);
  static Result<void> validate(const ModelPrice& p);
  static Result<void> validate_action_rate(Decimal tokens_per_1000_words);
  // Resource and action names follow the resource registry: 1..64 bytes of a-z 0-9 _ . -.
  // Model names are what agents send: 1..128 bytes of printable ASCII without spaces
  // ("anthropic/claude-3-5-sonnet", "gpt-4o:2024-08-06").
  static Result<void> validate_name(std::string_view resource_or_action);
  static Result<void> validate_model_name(std::string_view model);

  // One priced line for `quantity` of `resource`: quantity x unit_cost / unit_size. A
  // resource with no price costs 0 and is counted in unit "count". A negative quantity is
  // Errc::negative_amount; a price outside the bounds is Errc::invalid_argument.
  Result<LedgerItem> price(std::string_view resource, Decimal quantity) const;

  // The items of a usage report and its total cost.
  //
  // Items, one per non-zero quantity, in this order: llm_calls, tool_calls, agent_hops,
  // iterations, tokens_in, tokens_out, then the report's extra charges in their order
  // (named through `resources`; an extra charge of a resource already listed is added to
  // its line, as the engine charges it). tokens_in and tokens_out are priced by `model`'s
  // input and output price per 1000 tokens when the table has the model, else by the
  // `token` resource's price. Every other line is priced by its resource name.
  //
  // Money: report.cost plus any extra charge of `cost` is the caller's own price of the
  // call. When it is non-zero it is the charge: it is listed last as a "cost" line in unit
  // "USD" (quantity = the amount, unit_cost 1), and the resource lines keep their
  // quantities and units but cost 0, so that total_cost is still the sum of the lines and
  // the call is never charged twice. When it is zero, total_cost is the sum of the
  // computed lines.
  //
  // Errors: an extra charge with an id the registry does not know is
  // Errc::unknown_resource; negative amounts Errc::negative_amount; overflow Errc::overflow.
  struct Priced {
    std::vector<LedgerItem> items;
    Decimal total_cost;
  };
  Result<Priced> price_report(const UsageReport& report, std::string_view model,
                              const ResourceRegistry& resources) const;

  // Seed 001's action costs: tokens for `words` words of `action`, words x rate / 1000,
  // rounded up to a whole token (a partial token is a started token). An unknown action
  // is Errc::invalid_argument ("unknown action ..."); a result past uint64 is
  // Errc::overflow.
  Result<uint64_t> action_tokens(std::string_view action, uint64_t words) const;

 private:
  // The price of `resource` (nullptr: none). Built-in names are answered from builtin_.
  const UnitPrice* find_price(std::string_view resource) const;
  // price_report without extra charges, when every line prices without an error: returns
  // false (and leaves `out` to be discarded) for anything the general path must decide.
  bool price_counts(const UsageReport& report, const ModelPrice* model_price,
                    const ResourceRegistry& resources, Priced& out) const;
  // price_report's lines in general (extra charges merged, every error); adds the extra
  // charges of `cost` to `given_cost`.
  Result<void> price_lines(const UsageReport& report, std::string_view model,
                           const ModelPrice* model_price, const ResourceRegistry& resources,
                           Priced& out, Decimal& given_cost) const;

  std::map<std::string, UnitPrice, std::less<>> resources_;
  // The prices of built-in resources again, indexed by ResourceId: a usage report's lines
  // are priced without a string-keyed lookup. Kept in step by set_resource.
  std::array<std::optional<UnitPrice>, res::kBuiltinCount> builtin_;
  std::map<std::string, ModelPrice, std::less<>> models_;
  std::map<std::string, Decimal, std::less<>> actions_;
};

}  // namespace budgetd
