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

constexpr uint64_t kOne64 = static_cast<uint64_t>(Decimal::kOne);
constexpr uint64_t kPer1kSizeRaw = 1000 * kOne64;

// What validate() accepts, as plain comparisons of raw values: a report's lines ask this,
// and only a price that fails it goes through validate() for the reason.
bool within(Decimal d, uint64_t max) {
  return !d.is_negative() && d.raw() <= static_cast<__int128>(max) * Decimal::kOne;
}
bool valid_price(const UnitPrice& p) {
  return !p.unit.empty() && p.unit.size() <= PriceTable::kMaxUnitLabelLength &&
         !p.unit_size.is_zero() && within(p.unit_size, PriceTable::kMaxUnitSize) &&
         within(p.unit_cost, PriceTable::kMaxUnitCost);
}
bool valid_price(const ModelPrice& p) {
  return within(p.input_per_1k, PriceTable::kMaxUnitCost) &&
         within(p.output_per_1k, PriceTable::kMaxUnitCost);
}

// units x cost_raw / size_raw for a valid price (both raw values below 2^64), rounded half
// away from zero exactly as Decimal::checked_mul_div rounds. With a whole unit size (every
// shipped price, and 1000 for per-1k token prices) the 10^12 scales of quantity and size
// cancel: units x cost_raw / size_units, which fits 64 bits for any real count and needs no
// 256-bit product or limb-by-limb division. Past 64 bits, or for a fractional unit size,
// the general path.
Result<Decimal> count_cost(uint64_t units, uint64_t cost_raw, uint64_t size_raw) {
  uint64_t product;
  if (size_raw % kOne64 == 0 && !__builtin_mul_overflow(units, cost_raw, &product)) {
    const uint64_t size = size_raw / kOne64;
    uint64_t quotient = product / size;
    const uint64_t rem = product % size;
    if (rem >= size - rem) ++quotient;  // half away from zero, as mul_div_u128
    return Decimal::from_raw(quotient);
  }
  return Decimal::from_int(units).checked_mul_div(cost_raw, size_raw);
}

// quantity x unit_cost / unit_size of a valid price: count_cost for whole quantities below
// 2^64 raw, the general path for the rest.
Result<Decimal> line_cost(Decimal quantity, const UnitPrice& p) {
  const auto cost_raw = static_cast<uint64_t>(p.unit_cost.raw());
  const auto size_raw = static_cast<uint64_t>(p.unit_size.raw());
  const __int128 q = quantity.raw();
  if (q <= static_cast<__int128>(UINT64_MAX) && static_cast<uint64_t>(q) % kOne64 == 0)
    return count_cost(static_cast<uint64_t>(q) / kOne64, cost_raw, size_raw);
  return quantity.checked_mul_div(cost_raw, size_raw);
}

// Builds a line in place in `out`: no LedgerItem temporary to move in.
void add_item(PriceTable::Priced& out, std::string_view resource, Decimal quantity,
              std::string_view unit, Decimal unit_cost, Decimal total_cost) {
  LedgerItem& item = out.items.emplace_back();
  item.resource.assign(resource);
  item.quantity = quantity;
  item.unit.assign(unit);
  item.unit_cost = unit_cost;
  item.total_cost = total_cost;
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
  if (auto id = ResourceRegistry::builtin(resource)) builtin_[*id] = p;
  resources_[std::move(resource)] = std::move(p);
}

const UnitPrice* PriceTable::find_price(std::string_view resource) const {
  if (auto id = ResourceRegistry::builtin(resource)) return builtin_[*id] ? &*builtin_[*id] : nullptr;
  auto it = resources_.find(resource);
  return it == resources_.end() ? nullptr : &it->second;
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
  const UnitPrice* p = find_price(resource);
  if (!p) return LedgerItem{std::string(resource), quantity, "count", Decimal{}, Decimal{}};
  if (!valid_price(*p))
    if (auto ok = validate(*p); !ok)
      return fail(ok.error().code, "price of " + std::string(resource) + ": " + ok.error().detail);
  // quantity x unit_cost / unit_size on the raw (scaled) values: the scales cancel to
  // one factor of 10^12, which the result keeps, so the result's raw value is
  // q_raw x c_raw / s_raw, rounded once.
  auto total = line_cost(quantity, *p);
  if (!total)
    return fail(total.error().code,
                "cost of " + quantity.to_string() + " " + std::string(resource));
  return LedgerItem{std::string(resource), quantity, p->unit, p->unit_cost, *total};
}

bool PriceTable::price_counts(const UsageReport& report, const ModelPrice* model_price,
                              const ResourceRegistry& resources, Priced& out) const {
  if (model_price && !valid_price(*model_price)) return false;
  const UnitPrice* token = builtin_[res::token] ? &*builtin_[res::token] : nullptr;
  if (token && !valid_price(*token)) return false;
  const std::pair<ResourceId, uint64_t> counts[] = {
      {res::llm_calls, report.llm_calls},   {res::tool_calls, report.tool_calls},
      {res::agent_hops, report.agent_hops}, {res::iterations, report.iterations},
      {res::tokens_in, report.tokens_in},   {res::tokens_out, report.tokens_out}};
  out.items.reserve(std::size(counts) + 1);
  for (auto [id, units] : counts) {
    if (!units) continue;
    const Decimal quantity = Decimal::from_int(units);
    const bool is_token_line = id == res::tokens_in || id == res::tokens_out;
    if (is_token_line && model_price) {
      const Decimal per_1k =
          id == res::tokens_in ? model_price->input_per_1k : model_price->output_per_1k;
      auto total = count_cost(units, static_cast<uint64_t>(per_1k.raw()), kPer1kSizeRaw);
      if (!total) return false;
      add_item(out, resources.name(id), quantity, kTokenUnit, per_1k, *total);
      continue;
    }
    const UnitPrice* p = is_token_line ? token : builtin_[id] ? &*builtin_[id] : nullptr;
    if (!p) {
      add_item(out, resources.name(id), quantity, "count", Decimal{}, Decimal{});
      continue;
    }
    if (!valid_price(*p)) return false;
    auto total = count_cost(units, static_cast<uint64_t>(p->unit_cost.raw()),
                            static_cast<uint64_t>(p->unit_size.raw()));
    if (!total) return false;
    add_item(out, resources.name(id), quantity, p->unit, p->unit_cost, *total);
  }
  return true;
}

Result<PriceTable::Priced> PriceTable::price_report(const UsageReport& report,
                                                    std::string_view model,
                                                    const ResourceRegistry& resources) const {
  if (report.cost.is_negative()) return fail(Errc::negative_amount, "cost");
  const ModelPrice* model_price = nullptr;
  if (auto it = models_.find(model); it != models_.end()) model_price = &it->second;
  Priced out;
  Decimal given_cost = report.cost;
  // A report of counts alone (the common one) is priced line by line from the counters;
  // extra charges, and any price that does not pass or compute, take the general path,
  // which gives the same lines and every error.
  if (!report.extra.empty() || !price_counts(report, model_price, resources, out)) {
    out = Priced{};
    if (auto general = price_lines(report, model, model_price, resources, out, given_cost);
        !general)
      return std::unexpected(general.error());
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

Result<void> PriceTable::price_lines(const UsageReport& report, std::string_view model,
                                     const ModelPrice* model_price,
                                     const ResourceRegistry& resources, Priced& out,
                                     Decimal& given_cost) const {
  // The lines, merged by resource as the engine merges the report's charges.
  ChargeList lines;
  const std::pair<ResourceId, uint64_t> counts[] = {
      {res::llm_calls, report.llm_calls},   {res::tool_calls, report.tool_calls},
      {res::agent_hops, report.agent_hops}, {res::iterations, report.iterations},
      {res::tokens_in, report.tokens_in},   {res::tokens_out, report.tokens_out}};
  for (auto [id, v] : counts)
    if (v) (void)lines.add(id, Decimal::from_int(v));  // a fresh list has room for six
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
  return {};
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
