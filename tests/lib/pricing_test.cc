#include "lib/pricing.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>

#include "lib/engine.h"

namespace budgetd {
namespace {

Decimal D(const char* s) { return Decimal::parse(s).value(); }

LedgerItem Item(std::string resource, const char* quantity, std::string unit, const char* unit_cost,
                const char* total_cost) {
  return LedgerItem{std::move(resource), D(quantity), std::move(unit), D(unit_cost), D(total_cost)};
}

// ---- Defaults (seed 004, seed 001) -----------------------------------------------------

TEST(PriceTableDefaults, Seed004ResourcePrices) {
  PriceTable t = PriceTable::defaults();
  ASSERT_EQ(t.resources().size(), 4u);
  EXPECT_EQ(t.resources().at("agent_execution"), (UnitPrice{"count", D("1"), D("0.01")}));
  EXPECT_EQ(t.resources().at("token"), (UnitPrice{"1000 tokens", D("1000"), D("0.002")}));
  EXPECT_EQ(t.resources().at("storage"), (UnitPrice{"GB", D("1"), D("0.10")}));
  EXPECT_EQ(t.resources().at("api_call"), (UnitPrice{"count", D("1"), D("0.001")}));
  for (const auto& [name, p] : t.resources())
    EXPECT_TRUE(PriceTable::validate(p).has_value()) << name;
}

TEST(PriceTableDefaults, Seed001ActionsAndNoModels) {
  PriceTable t = PriceTable::defaults();
  ASSERT_EQ(t.actions().size(), 2u);
  EXPECT_EQ(t.actions().at("translate"), D("5"));
  EXPECT_EQ(t.actions().at("summarize"), D("2"));
  EXPECT_TRUE(t.models().empty());
}

// ---- price() ---------------------------------------------------------------------------

TEST(PriceTablePrice, OneTokenCostsExactlyTwoMillionthsOfADollar) {
  auto item = PriceTable::defaults().price("token", D("1"));
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(*item, Item("token", "1", "1000 tokens", "0.002", "0.000002"));
  EXPECT_EQ(item->total_cost.to_string(), "0.000002");
}

TEST(PriceTablePrice, Seed004SummaryFigures) {
  PriceTable t = PriceTable::defaults();
  // Seed 004's usage summary: 1500 executions cost 15.00, 250000 tokens cost 0.50.
  EXPECT_EQ(t.price("agent_execution", D("1500"))->total_cost, D("15"));
  EXPECT_EQ(t.price("token", D("250000"))->total_cost, D("0.5"));
  EXPECT_EQ(t.price("token", D("500"))->total_cost, D("0.001"));
  EXPECT_EQ(t.price("storage", D("2.5"))->total_cost, D("0.25"));
  EXPECT_EQ(t.price("api_call", D("3"))->total_cost, D("0.003"));
  EXPECT_EQ(*t.price("storage", D("2.5")), Item("storage", "2.5", "GB", "0.1", "0.25"));
}

TEST(PriceTablePrice, LargeQuantitiesStayExact) {
  PriceTable t = PriceTable::defaults();
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();  // 18446744073709551615
  // 18446744073709551615 tokens x 0.002 / 1000 = 36893488147419.10323
  EXPECT_EQ(t.price("token", Decimal::from_int(kMax))->total_cost.to_string(),
            "36893488147419.10323");
  // 18446744073709551615 x 0.01
  EXPECT_EQ(t.price("agent_execution", Decimal::from_int(kMax))->total_cost.to_string(),
            "184467440737095516.15");
  // The largest Decimal quantity still prices (the intermediate product needs 256 bits).
  auto big = t.price("agent_execution", Decimal::max());
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->total_cost, Decimal::max().checked_mul_div(1, 100).value());
  // A cost past Decimal's range is an error, never a wrap.
  PriceTable dear;
  dear.set_resource("gold", UnitPrice{"count", D("1"), D("1000")});
  auto over = dear.price("gold", Decimal::max());
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, Errc::overflow);
}

TEST(PriceTablePrice, RoundsOnceHalfAwayFromZeroAtTheTwelfthDigit) {
  PriceTable t;
  // 0.000000000001 (one raw unit) per 1000: one token costs 10^-15, which rounds to 0;
  // 500 tokens cost exactly half a raw unit, which rounds away from zero to 10^-12.
  t.set_resource("tiny", UnitPrice{"1000 tokens", D("1000"), D("0.000000000001")});
  EXPECT_EQ(t.price("tiny", D("1"))->total_cost, Decimal{});
  EXPECT_EQ(t.price("tiny", D("499"))->total_cost, Decimal{});
  EXPECT_EQ(t.price("tiny", D("500"))->total_cost, D("0.000000000001"));
  EXPECT_EQ(t.price("tiny", D("1500"))->total_cost, D("0.000000000002"));
  // One step, not two: 1/3 of a unit at $3 is $1 exactly, where rounding 1/3 first
  // would give 0.999999999999.
  t.set_resource("third", UnitPrice{"3 units", D("3"), D("3")});
  EXPECT_EQ(t.price("third", D("1"))->total_cost, D("1"));
  // $1 per 3 units: 1 unit costs 0.333333333333 (truncated digits below one half).
  t.set_resource("trio", UnitPrice{"3 units", D("3"), D("1")});
  EXPECT_EQ(t.price("trio", D("1"))->total_cost, D("0.333333333333"));
  EXPECT_EQ(t.price("trio", D("2"))->total_cost, D("0.666666666667"));
}

TEST(PriceTablePrice, UnknownResourceCostsNothingInCounts) {
  auto item = PriceTable::defaults().price("gpu_hours", D("7.5"));
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(*item, Item("gpu_hours", "7.5", "count", "0", "0"));
}

TEST(PriceTablePrice, FractionalUnitSize) {
  PriceTable t;
  t.set_resource("half", UnitPrice{"half hour", D("0.5"), D("1.25")});
  EXPECT_EQ(t.price("half", D("2"))->total_cost, D("5"));
}

TEST(PriceTablePrice, RefusesNegativeQuantitiesAndInvalidPrices) {
  PriceTable t = PriceTable::defaults();
  EXPECT_EQ(t.price("token", Decimal::parse("-1", true).value()).error().code,
            Errc::negative_amount);
  t.set_resource("broken", UnitPrice{"count", Decimal{}, D("1")});
  EXPECT_EQ(t.price("broken", D("1")).error().code, Errc::invalid_argument);
}

TEST(PriceTableValidate, Bounds) {
  EXPECT_TRUE(PriceTable::validate(UnitPrice{"x", D("10000000"), D("10000000")}).has_value());
  EXPECT_EQ(PriceTable::validate(UnitPrice{"x", D("10000000.000000000001"), D("1")}).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(PriceTable::validate(UnitPrice{"x", D("1"), D("10000001")}).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(PriceTable::validate(UnitPrice{"x", D("0"), D("1")}).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(PriceTable::validate(UnitPrice{"", D("1"), D("1")}).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(
      PriceTable::validate(UnitPrice{"x", D("1"), Decimal::parse("-1", true).value()}).error().code,
      Errc::negative_amount);
  EXPECT_TRUE(PriceTable::validate(ModelPrice{D("0.0015"), D("0.002")}).has_value());
  EXPECT_FALSE(PriceTable::validate(ModelPrice{D("0"), D("20000000")}).has_value());
  EXPECT_TRUE(PriceTable::validate_action_rate(D("1000000")).has_value());
  EXPECT_FALSE(PriceTable::validate_action_rate(D("1000000.5")).has_value());
}

TEST(PriceTableValidate, Names) {
  EXPECT_TRUE(PriceTable::validate_name("gpu_hours.v2-x").has_value());
  EXPECT_FALSE(PriceTable::validate_name("").has_value());
  EXPECT_FALSE(PriceTable::validate_name("Tokens").has_value());
  EXPECT_FALSE(PriceTable::validate_name(std::string(65, 'a')).has_value());
  EXPECT_TRUE(PriceTable::validate_model_name("anthropic/claude-3-5-sonnet:2024").has_value());
  EXPECT_FALSE(PriceTable::validate_model_name("gpt 4").has_value());
  EXPECT_FALSE(PriceTable::validate_model_name("").has_value());
  EXPECT_FALSE(PriceTable::validate_model_name(std::string(129, 'm')).has_value());
}

// ---- price_report() --------------------------------------------------------------------

TEST(PriceTableReport, TokensByTheTokenPriceWhenTheModelHasNone) {
  ResourceRegistry reg;
  UsageReport r;
  r.llm_calls = 1;
  r.tokens_in = 1;
  r.tokens_out = 1500;
  auto p = PriceTable::defaults().price_report(r, "unknown-model", reg);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->items.size(), 3u);
  EXPECT_EQ(p->items[0], Item("llm_calls", "1", "count", "0", "0"));
  EXPECT_EQ(p->items[1], Item("tokens_in", "1", "1000 tokens", "0.002", "0.000002"));
  EXPECT_EQ(p->items[2], Item("tokens_out", "1500", "1000 tokens", "0.002", "0.003"));
  EXPECT_EQ(p->total_cost, D("0.003002"));
}

TEST(PriceTableReport, ModelPricesInputAndOutputSeparately) {
  ResourceRegistry reg;
  PriceTable t = PriceTable::defaults();
  t.set_model("gpt-4", ModelPrice{D("0.03"), D("0.06")});
  UsageReport r;
  r.tokens_in = 1234;
  r.tokens_out = 567;
  auto p = t.price_report(r, "gpt-4", reg);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->items.size(), 2u);
  EXPECT_EQ(p->items[0], Item("tokens_in", "1234", "1000 tokens", "0.03", "0.03702"));
  EXPECT_EQ(p->items[1], Item("tokens_out", "567", "1000 tokens", "0.06", "0.03402"));
  EXPECT_EQ(p->total_cost, D("0.07104"));
  // One input token of a model at $0.0015 per 1000: $0.0000015, exact.
  t.set_model("cheap", ModelPrice{D("0.0015"), D("0.002")});
  UsageReport one;
  one.tokens_in = 1;
  EXPECT_EQ(t.price_report(one, "cheap", reg)->total_cost.to_string(), "0.0000015");
}

TEST(PriceTableReport, EveryCountedFieldAndExtrasByName) {
  ResourceRegistry reg;
  auto gpu = reg.intern("gpu_hours").value();
  UsageReport r;
  r.llm_calls = 2;
  r.tool_calls = 3;
  r.agent_hops = 4;
  r.iterations = 5;
  ASSERT_TRUE(r.extra.add(res::agent_execution, D("3")).has_value());
  ASSERT_TRUE(r.extra.add(res::storage, D("1.5")).has_value());
  ASSERT_TRUE(r.extra.add(gpu, D("2")).has_value());
  ASSERT_TRUE(r.extra.add(res::token, D("1000")).has_value());
  auto p = PriceTable::defaults().price_report(r, "", reg);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->items.size(), 8u);
  EXPECT_EQ(p->items[0].resource, "llm_calls");
  EXPECT_EQ(p->items[1].resource, "tool_calls");
  EXPECT_EQ(p->items[2].resource, "agent_hops");
  EXPECT_EQ(p->items[3].resource, "iterations");
  EXPECT_EQ(p->items[3].quantity, D("5"));
  EXPECT_EQ(p->items[4], Item("agent_execution", "3", "count", "0.01", "0.03"));
  EXPECT_EQ(p->items[5], Item("storage", "1.5", "GB", "0.1", "0.15"));
  EXPECT_EQ(p->items[6], Item("gpu_hours", "2", "count", "0", "0"));
  EXPECT_EQ(p->items[7], Item("token", "1000", "1000 tokens", "0.002", "0.002"));
  EXPECT_EQ(p->total_cost, D("0.182"));
}

TEST(PriceTableReport, ZeroFieldsAreLeftOutAndAnEmptyReportCostsNothing) {
  ResourceRegistry reg;
  UsageReport r;
  auto p = PriceTable::defaults().price_report(r, "", reg);
  ASSERT_TRUE(p.has_value());
  EXPECT_TRUE(p->items.empty());
  EXPECT_EQ(p->total_cost, Decimal{});
  r.tool_calls = 1;
  ASSERT_TRUE(r.extra.add(res::storage, Decimal{}).has_value());
  p = PriceTable::defaults().price_report(r, "", reg);
  ASSERT_EQ(p->items.size(), 1u);
  EXPECT_EQ(p->items[0].resource, "tool_calls");
}

TEST(PriceTableReport, ExtraOfAListedResourceJoinsItsLine) {
  ResourceRegistry reg;
  UsageReport r;
  r.tokens_in = 500;
  ASSERT_TRUE(r.extra.add(res::tokens_in, D("500")).has_value());
  auto p = PriceTable::defaults().price_report(r, "", reg);
  ASSERT_EQ(p->items.size(), 1u);
  EXPECT_EQ(p->items[0], Item("tokens_in", "1000", "1000 tokens", "0.002", "0.002"));
}

TEST(PriceTableReport, AnExplicitCostIsTheCharge) {
  ResourceRegistry reg;
  PriceTable t = PriceTable::defaults();
  t.set_model("gpt-4", ModelPrice{D("0.03"), D("0.06")});
  UsageReport r;
  r.llm_calls = 1;
  r.tokens_in = 1000;
  r.tokens_out = 1000;
  r.cost = D("0.5");
  auto p = t.price_report(r, "gpt-4", reg);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->items.size(), 4u);
  // The resource lines keep their quantities and units but are not charged again.
  EXPECT_EQ(p->items[0], Item("llm_calls", "1", "count", "0", "0"));
  EXPECT_EQ(p->items[1], Item("tokens_in", "1000", "1000 tokens", "0", "0"));
  EXPECT_EQ(p->items[2], Item("tokens_out", "1000", "1000 tokens", "0", "0"));
  EXPECT_EQ(p->items[3], Item("cost", "0.5", "USD", "1", "0.5"));
  EXPECT_EQ(p->total_cost, D("0.5"));
  // An extra charge of `cost` is money too, added to the report's cost.
  ASSERT_TRUE(r.extra.add(res::cost, D("0.25")).has_value());
  p = t.price_report(r, "gpt-4", reg);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->items.back(), Item("cost", "0.75", "USD", "1", "0.75"));
  EXPECT_EQ(p->total_cost, D("0.75"));
  // A cost with no other quantities is a single line.
  UsageReport only;
  only.cost = D("0.000001");
  p = t.price_report(only, "", reg);
  ASSERT_EQ(p->items.size(), 1u);
  EXPECT_EQ(p->total_cost, D("0.000001"));
}

TEST(PriceTableReport, TotalIsTheSumOfItems) {
  ResourceRegistry reg;
  UsageReport r;
  r.tokens_in = 7;
  r.tokens_out = 11;
  ASSERT_TRUE(r.extra.add(res::api_call, D("13")).has_value());
  for (Decimal cost : {Decimal{}, D("1.23")}) {
    r.cost = cost;
    auto p = PriceTable::defaults().price_report(r, "", reg);
    ASSERT_TRUE(p.has_value());
    Decimal sum;
    for (const auto& item : p->items) sum = sum.checked_add(item.total_cost).value();
    EXPECT_EQ(sum, p->total_cost);
  }
}

TEST(PriceTableReport, Errors) {
  ResourceRegistry reg;
  PriceTable t = PriceTable::defaults();
  UsageReport unknown;
  ASSERT_TRUE(unknown.extra.add(static_cast<ResourceId>(reg.size() + 3), D("1")).has_value());
  EXPECT_EQ(t.price_report(unknown, "", reg).error().code, Errc::unknown_resource);
  UsageReport negative;
  negative.cost = Decimal::parse("-1", true).value();
  EXPECT_EQ(t.price_report(negative, "", reg).error().code, Errc::negative_amount);
  UsageReport negative_extra;
  ASSERT_TRUE(
      negative_extra.extra.add(res::storage, Decimal::parse("-1", true).value()).has_value());
  EXPECT_EQ(t.price_report(negative_extra, "", reg).error().code, Errc::negative_amount);
}

// ---- action_tokens() -------------------------------------------------------------------

// A report of counts is priced from the counters in 64 bits when it can be; every line
// must still be exactly quantity x unit_cost / unit_size rounded once (checked_mul_div), with
// whole and fractional unit sizes, prices up to the bounds, counts up to 2^64 - 1, and the
// same lines whether or not an extra charge sends the report down the general path.
TEST(PriceTableReport, CountLinesMatchTheExactFormula) {
  std::mt19937_64 rng(2024);
  ResourceRegistry reg;
  const auto custom = reg.intern("gpu_seconds").value();
  for (int i = 0; i < 3000; ++i) {
    PriceTable t;
    auto raw_below = [&](uint64_t max_units) {
      return Decimal::from_raw(static_cast<__int128>(rng() % (max_units * static_cast<uint64_t>(Decimal::kOne))) + 1);
    };
    const Decimal size = i % 3 == 0 ? raw_below(PriceTable::kMaxUnitSize)
                                     : Decimal::from_int(1 + rng() % (i % 2 ? 1000 : PriceTable::kMaxUnitSize));
    const Decimal cost = raw_below(i % 5 == 0 ? PriceTable::kMaxUnitCost : 1);
    t.set_resource("token", UnitPrice{"1000 tokens", size, cost});
    t.set_resource("llm_calls", UnitPrice{"count", Decimal::from_int(1), cost});
    if (i % 4 == 0) t.set_model("m", ModelPrice{raw_below(PriceTable::kMaxUnitCost), raw_below(1)});
    UsageReport r;
    auto count = [&] { return i % 7 == 0 ? rng() : rng() >> (rng() % 64); };
    r.llm_calls = count();
    r.tokens_in = count();
    r.tokens_out = count();
    auto fast = t.price_report(r, "m", reg);
    UsageReport with_extra = r;
    (void)with_extra.extra.add(custom, Decimal::from_int(1));  // the general path
    auto general = t.price_report(with_extra, "m", reg);
    ASSERT_EQ(fast.has_value(), general.has_value()) << i;
    if (!fast) {
      EXPECT_EQ(fast.error().code, general.error().code);
      continue;
    }
    ASSERT_EQ(fast->items.size() + 1, general->items.size());
    for (std::size_t k = 0; k < fast->items.size(); ++k) EXPECT_EQ(fast->items[k], general->items[k]) << i;
    for (const auto& item : fast->items) {
      const bool model = i % 4 == 0 && item.resource != "llm_calls";
      const Decimal c = model ? item.unit_cost : cost;
      const uint64_t s_raw = model ? 1000 * static_cast<uint64_t>(Decimal::kOne) : static_cast<uint64_t>(size.raw());
      const Decimal per = item.resource == "llm_calls" ? Decimal::from_int(1) : Decimal::from_raw(s_raw);
      auto exact = item.quantity.checked_mul_div(static_cast<uint64_t>(c.raw()), static_cast<uint64_t>(per.raw()));
      ASSERT_TRUE(exact.has_value());
      EXPECT_EQ(item.total_cost, *exact) << item.resource << " " << i;
    }
  }
}

TEST(PriceTableActions, Seed001Rates) {
  PriceTable t = PriceTable::defaults();
  EXPECT_EQ(t.action_tokens("translate", 1000).value(), 5u);
  EXPECT_EQ(t.action_tokens("summarize", 1000).value(), 2u);
  EXPECT_EQ(t.action_tokens("translate", 10'000).value(), 50u);
  EXPECT_EQ(t.action_tokens("translate", 0).value(), 0u);
}

TEST(PriceTableActions, PartialTokensRoundUp) {
  PriceTable t = PriceTable::defaults();
  EXPECT_EQ(t.action_tokens("translate", 1).value(), 1u);     // 0.005 tokens
  EXPECT_EQ(t.action_tokens("translate", 200).value(), 1u);   // exactly 1
  EXPECT_EQ(t.action_tokens("translate", 201).value(), 2u);   // 1.005
  EXPECT_EQ(t.action_tokens("summarize", 1001).value(), 3u);  // 2.002
  // A remainder past Decimal's 12th digit still rounds up.
  t.set_action("fine", D("0.000000000001"));
  EXPECT_EQ(t.action_tokens("fine", 1).value(), 1u);
  t.set_action("free", Decimal{});
  EXPECT_EQ(t.action_tokens("free", 1'000'000).value(), 0u);
}

TEST(PriceTableActions, LargeCountsAndOverflow) {
  PriceTable t = PriceTable::defaults();
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  // 18446744073709551615 x 2 / 1000 = 36893488147419103.23 -> ...104
  EXPECT_EQ(t.action_tokens("summarize", kMax).value(), 36893488147419104u);
  t.set_action("wordy", D("1000000"));
  EXPECT_EQ(t.action_tokens("wordy", kMax).error().code, Errc::overflow);
}

TEST(PriceTableActions, UnknownAction) {
  auto r = PriceTable::defaults().action_tokens("paraphrase", 1000);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_NE(r.error().detail.find("unknown action paraphrase"), std::string::npos);
}

}  // namespace
}  // namespace budgetd
