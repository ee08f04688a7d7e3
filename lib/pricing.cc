#include "lib/pricing.h"

#include <algorithm>
#include <limits>

#include "lib/engine.h"

namespace budgetd {

namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
static_assert(PriceTable::kMaxUnitSize * static_cast<unsigned __int128>(Decimal::kOne) <= kU64Max,
              "a unit_size's raw value must fit the 64-bit divisor of checked_mul_div");
static_assert(PriceTable::kMaxUnitCost * static_cast<unsigned __int128>(Decimal::kOne) <= kU64Max,
              "a unit_cost's raw value must fit the 64-bit factor of checked_mul_div");

Decimal dollars(const char* text) { return Decimal::parse(text).value(); }

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

Result<void> check_amount(Decimal d, std::string_view what, uint64_t max) {
  if (d.is_negative()) return fail(Errc::negative_amount, std::string(what));
  if (d > Decimal::from_int(max))
    return fail(Errc::invalid_argument, std::string(what) + " above " + std::to_string(max));
  return {};
}

// tokens x price_per_1k / 1000, rounded once: on raw values, q_raw x c_raw / (1000 x 10^12).
// The caller has validated the price, so c_raw fits in 64 bits.
Result<Decimal> per_1k_cost(Decimal tokens, Decimal price_per_1k) {
  return tokens.checked_mul_div(static_cast<uint64_t>(price_per_1k.raw()),
                                1000 * static_cast<uint64_t>(Decimal::kOne));
}

}  // namespace

PriceTable PriceTable::defaults() {
  PriceTable t;
  t.set_resource("agent_execution", UnitPrice{"count", Decimal::from_int(1), dollars("0.01")});
  t.set_resource("token",
                 UnitPrice{std::string(kTokenUnit), Decimal::from_int(1000), dollars("0.002")});
  t.set_resource("storage", UnitPrice{"GB", Decimal::from_int(1), dollars("0.10")});
  t.set_resource("api_call", UnitPrice{"count", Decimal::from_int(1), dollars("0.001")});
  t.set_action("translate", Decimal::from_int(5));
  t.set_action("summarize", Decimal::from_int(2));
  return t;
}

void PriceTable::set_resource(std::string resource, UnitPrice p) {
  resources_[std::move(resource)] = std::move(p);
}
void PriceTable::set_model(std::string model, ModelPrice p) { models_[std::move(model)] = p; }
void PriceTable::set_action(std::string action, Decimal t) { actions_[std::move(action)] = t; }

Result<void> PriceTable::validate(const UnitPrice& p) {
  if (p.unit.empty() || p.unit.size() > kMaxUnitLabelLength)
    return fail(Errc::invalid_argument,
                "unit label must be 1 to " + std::to_string(kMaxUnitLabelLength) + " bytes");
  if (p.unit_size.is_zero()) return fail(Errc::invalid_argument, "unit_size must be above 0");
  if (auto ok = check_amount(p.unit_size, "unit_size", kMaxUnitSize); !ok) return ok;
  return check_amount(p.unit_cost, "unit_cost", kMaxUnitCost);
}

Result<void> PriceTable::validate(const ModelPrice& p) {
  if (auto ok = check_amount(p.input_per_1k, "input_per_1k", kMaxUnitCost); !ok) return ok;
  return check_amount(p.output_per_1k, "output_per_1k", kMaxUnitCost);
}

Result<void> PriceTable::validate_action_rate(Decimal tokens_per_1000_words) {
  return check_amount(tokens_per_1000_words, "tokens per 1000 words", kMaxActionTokensPer1000Words);
}

Result<void> PriceTable::validate_name(std::string_view name) {
  if (name.empty() || name.size() > ResourceRegistry::kMaxNameLength ||
      !std::all_of(name.begin(), name.end(), name_char))
    return fail(Errc::invalid_id, "1 to " + std::to_string(ResourceRegistry::kMaxNameLength) +
                                      " bytes of a-z, 0-9, '_', '.', '-'");
  return {};
}

Result<void> PriceTable::validate_model_name(std::string_view model) {
  if (model.empty() || model.size() > kMaxModelNameLength ||
      !std::all_of(model.begin(), model.end(), [](char c) { return c > ' ' && c < 0x7f; }))
    return fail(Errc::invalid_id, "1 to " + std::to_string(kMaxModelNameLength) +
                                      " bytes of printable ASCII without spaces");
  return {};
}

Result<LedgerItem> PriceTable::price(std::string_view resource, Decimal quantity) const {
  if (quantity.is_negative()) return fail(Errc::negative_amount, std::string(resource));
  LedgerItem item{std::string(resource), quantity, "count", Decimal{}, Decimal{}};
  auto it = resources_.find(resource);
  if (it == resources_.end()) return item;
  const UnitPrice& p = it->second;
  if (auto ok = validate(p); !ok)
    return fail(ok.error().code, "price of " + std::string(resource) + ": " + ok.error().detail);
  // quantity x unit_cost / unit_size on the raw (scaled) values: the scales cancel to
  // one factor of 10^12, which the result keeps, so the result's raw value is
  // q_raw x c_raw / s_raw, rounded once.
  auto total = quantity.checked_mul_div(static_cast<uint64_t>(p.unit_cost.raw()),
                                        static_cast<uint64_t>(p.unit_size.raw()));
  if (!total)
    return fail(total.error().code,
                "cost of " + quantity.to_string() + " " + std::string(resource));
  item.unit = p.unit;
  item.unit_cost = p.unit_cost;
  item.total_cost = *total;
  return item;
}

Result<PriceTable::Priced> PriceTable::price_report(const UsageReport& report,
                                                    std::string_view model,
                                                    const ResourceRegistry& resources) const {
  // The lines, merged by resource as the engine merges the report's charges.
  ChargeList lines;
  const std::pair<ResourceId, uint64_t> counts[] = {
      {res::llm_calls, report.llm_calls},   {res::tool_calls, report.tool_calls},
      {res::agent_hops, report.agent_hops}, {res::iterations, report.iterations},
      {res::tokens_in, report.tokens_in},   {res::tokens_out, report.tokens_out}};
  for (auto [id, v] : counts)
    if (v) (void)lines.add(id, Decimal::from_int(v));  // a fresh list has room for six
  if (report.cost.is_negative()) return fail(Errc::negative_amount, "cost");
  Decimal given_cost = report.cost;
  for (const auto& ch : report.extra) {
    if (ch.id >= resources.size()) return fail(Errc::unknown_resource, std::to_string(ch.id));
    if (ch.amount.is_negative())
      return fail(Errc::negative_amount, std::string(resources.name(ch.id)));
    if (ch.id == res::cost) {
      auto sum = given_cost.checked_add(ch.amount);
      if (!sum) return std::unexpected(sum.error());
      given_cost = *sum;
      continue;
    }
    if (auto a = lines.add(ch.id, ch.amount); !a) return std::unexpected(a.error());
  }

  const ModelPrice* model_price = nullptr;
  if (auto it = models_.find(model); it != models_.end()) model_price = &it->second;

  Priced out;
  out.items.reserve(lines.size() + 1);
  for (const auto& line : lines) {
    if (line.amount.is_zero()) continue;
    std::string_view name = resources.name(line.id);
    const bool is_token_line = line.id == res::tokens_in || line.id == res::tokens_out;
    Result<LedgerItem> item;
    if (is_token_line && model_price) {
      Decimal per_1k =
          line.id == res::tokens_in ? model_price->input_per_1k : model_price->output_per_1k;
      if (auto ok = validate(*model_price); !ok)
        return fail(ok.error().code,
                    "price of model " + std::string(model) + ": " + ok.error().detail);
      auto total = per_1k_cost(line.amount, per_1k);
      if (!total) return std::unexpected(total.error());
      item = LedgerItem{std::string(name), line.amount, std::string(kTokenUnit), per_1k, *total};
    } else {
      item = price(is_token_line ? std::string_view("token") : name, line.amount);
      if (item) item->resource = std::string(name);
    }
    if (!item) return std::unexpected(item.error());
    out.items.push_back(std::move(*item));
  }

  if (!given_cost.is_zero()) {
    for (auto& item : out.items) item.unit_cost = item.total_cost = Decimal{};
    out.items.push_back(LedgerItem{"cost", given_cost, "USD", Decimal::from_int(1), given_cost});
    out.total_cost = given_cost;
    return out;
  }
  for (const auto& item : out.items) {
    auto sum = out.total_cost.checked_add(item.total_cost);
    if (!sum) return std::unexpected(sum.error());
    out.total_cost = *sum;
  }
  return out;
}

Result<uint64_t> PriceTable::action_tokens(std::string_view action, uint64_t words) const {
  auto it = actions_.find(action);
  if (it == actions_.end())
    return fail(Errc::invalid_argument, "unknown action " + std::string(action));
  const Decimal rate = it->second;
  if (rate.is_negative())
    return fail(Errc::negative_amount, "rate of action " + std::string(action));
  // words x rate / 1000, rounded up, in integers: rate_raw is rate x 10^12, so the exact
  // token count is words x rate_raw / (1000 x 10^12). Rounding the quotient to Decimal
  // first and then up could lose a remainder past the 12th digit.
  using u128 = unsigned __int128;
  u128 product;
  if (__builtin_mul_overflow(static_cast<u128>(rate.raw()), static_cast<u128>(words), &product))
    return fail(Errc::overflow,
                "tokens for " + std::to_string(words) + " words of " + std::string(action));
  constexpr u128 kDen = static_cast<u128>(1000) * static_cast<u128>(Decimal::kOne);
  const u128 tokens = product / kDen + (product % kDen != 0 ? 1 : 0);
  if (tokens > kU64Max)
    return fail(Errc::overflow,
                "tokens for " + std::to_string(words) + " words of " + std::string(action));
  return static_cast<uint64_t>(tokens);
}

}  // namespace budgetd
