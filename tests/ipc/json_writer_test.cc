// The reply writer: separators, escapes, and numbers formatted on the stack exactly as the
// library formatters would (Decimal::to_string, limit_text, fmt's shortest double).
#include "ipc/json_writer.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "ipc/wire_types.h"
#include "lib/quota.h"

namespace budgetd::ipc {
namespace {

TEST(JsonWriter, CommasBetweenValuesAndFields) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("a", uint64_t{1}).field("b", "x").key("c").begin_array();
  w.u64(1).i64(-2).boolean(true).null().raw("{}").begin_object().end_object().end_array();
  w.field("d", false).end_object();
  EXPECT_EQ(out, R"({"a":1,"b":"x","c":[1,-2,true,null,{},{}],"d":false})");
}

TEST(JsonWriter, StringsAreEscaped) {
  std::string out;
  JsonWriter w(out);
  w.begin_array().str("plain").str("q\"b\\n\nr\rt\t").str(std::string("\x01\x1f", 2));
  w.str(std::string(300, 'y') + "\"").end_array();
  EXPECT_EQ(out, "[\"plain\",\"q\\\"b\\\\n\\nr\\rt\\t\",\"\\u0001\\u001f\",\"" +
                     std::string(300, 'y') + "\\\"\"]");
  std::string keyed;
  JsonWriter k(keyed);
  k.begin_object().field("a\"b", "v").field(std::string(200, 'k'), "w").end_object();
  EXPECT_EQ(keyed, "{\"a\\\"b\":\"v\",\"" + std::string(200, 'k') + "\":\"w\"}");
}

TEST(JsonWriter, IntegersAtTheirExtremes) {
  std::string out;
  JsonWriter w(out);
  w.begin_array().u64(0).u64(std::numeric_limits<uint64_t>::max());
  w.i64(std::numeric_limits<int64_t>::min()).i64(std::numeric_limits<int64_t>::max()).end_array();
  EXPECT_EQ(out, "[0,18446744073709551615,-9223372036854775808,9223372036854775807]");
}

TEST(JsonWriter, DoublesAreFmtsShortestText) {
  std::mt19937_64 rng(7);
  std::vector<double> values = {0.0, -0.0, 1.0, 0.5, 1e-7, 123456789.125, 1e21, 3.0e300,
                                std::numeric_limits<double>::denorm_min(),
                                std::numeric_limits<double>::max(), -2.5};
  for (int i = 0; i < 1000; ++i) values.push_back(static_cast<double>(rng() % 100000000) / 1000.0);
  for (double v : values) {
    std::string out;
    JsonWriter(out).dbl(v);
    EXPECT_EQ(out, fmt::format("{}", v));
  }
}

// Durations reach the wire as microseconds / 10^6 and take a fast path: its text must be
// fmt's, across the range where it applies and at its edges.
TEST(JsonWriter, MicrosecondDurationsAreFmtsShortestText) {
  std::mt19937_64 rng(5);
  std::vector<int64_t> micros = {0, 1, 999, 1000, 1001, 100000, 999999, 1000000, 1500000,
                                 999999999999999, 1000000000000000, 1000000000000001};
  for (int i = 0; i < 20000; ++i) micros.push_back(static_cast<int64_t>(rng() >> (rng() % 64)));
  for (int64_t us : micros) {
    const double v = static_cast<double>(us) / 1e6;
    std::string out;
    JsonWriter(out).dbl(v);
    EXPECT_EQ(out, fmt::format("{}", v)) << us;
  }
}

// write_usage and write_consume_result assemble their members in one buffer: the same text
// as a field() per member.
TEST(JsonWriter, UsageAndConsumeObjectsAreTheFieldsText) {
  std::mt19937_64 rng(9);
  for (int i = 0; i < 500; ++i) {
    ResourceUsage u;
    u.llm_calls = rng() >> (rng() % 64);
    u.tool_calls = i % 2 ? 0 : rng();
    u.agent_hops = rng() % 10;
    u.iterations = rng() >> 40;
    u.tokens_in = rng() >> (rng() % 64);
    u.tokens_out = rng() >> (rng() % 64);
    u.cost = Decimal::from_raw(static_cast<__int128>(rng() >> (rng() % 64)) * (i % 3 ? 1 : static_cast<__int128>(rng())));
    const double elapsed = i % 5 ? static_cast<double>(rng() % 10000000000) / 1e6 : static_cast<double>(rng()) / 3.0;
    std::string expected;
    JsonWriter e(expected);
    e.begin_array().u64(1).begin_object();
    e.field("llm_calls", u.llm_calls).field("tool_calls", u.tool_calls).field("agent_hops", u.agent_hops);
    e.field("iterations", u.iterations).field("tokens_in", u.tokens_in).field("tokens_out", u.tokens_out);
    e.field("tokens", u.tokens()).field("cost", u.cost).field("elapsed_seconds", elapsed);
    e.end_object().u64(2).end_array();
    std::string out;
    JsonWriter w(out);
    write_usage(w.begin_array().u64(1), u, elapsed).u64(2).end_array();
    EXPECT_EQ(out, expected);

    ConsumeResult r;
    r.status = static_cast<ConsumeStatus>(i % 3);  // not pending: that adds fields of its own
    r.granted = Decimal::from_raw(static_cast<__int128>(rng() >> (rng() % 64)));
    r.remaining = i % 4 == 0 ? kUnlimitedAmount : Decimal::from_raw(static_cast<__int128>(rng()) * (i % 2 ? 1 : 1000));
    std::string want, got;
    JsonWriter a(want);
    a.begin_object().field("x", uint64_t{1});
    a.field("status", consume_status_name(r.status)).field("granted", r.granted);
    a.key("remaining").limit(r.remaining);
    a.end_object();
    JsonWriter b(got);
    b.begin_object().field("x", uint64_t{1});
    write_consume_result(b, r);
    b.end_object();
    EXPECT_EQ(got, want);
  }
}

TEST(JsonWriter, DecimalsAreDecimalToString) {
  std::mt19937_64 rng(11);
  std::vector<__int128> raws = {0, 1, -1, Decimal::kOne, -Decimal::kOne, Decimal::kOne / 4,
                                Decimal::kOne * 1000 + 5, static_cast<__int128>(UINT64_MAX),
                                static_cast<__int128>(UINT64_MAX) + 1, -static_cast<__int128>(UINT64_MAX),
                                Decimal::kMaxRaw, -Decimal::kMaxRaw, -Decimal::kMaxRaw - 1};
  for (int i = 0; i < 2000; ++i) {
    __int128 r = static_cast<__int128>(rng() >> (rng() % 64));
    // Past 64 bits; multiplied unsigned and halved, so neither the product nor -r overflows.
    if (i % 3 == 0) r = static_cast<__int128>((static_cast<unsigned __int128>(r) * rng()) >> 1);
    if (i % 2 == 0) r = -r;
    raws.push_back(r);
  }
  for (__int128 r : raws) {
    const Decimal d = Decimal::from_raw(r);
    std::string out;
    JsonWriter(out).decimal(d);
    EXPECT_EQ(out, '"' + d.to_string() + '"');
    std::string lim;
    JsonWriter(lim).limit(d);
    EXPECT_EQ(lim, '"' + limit_text(d) + '"');
  }
  std::string unlimited;
  JsonWriter(unlimited).limit(kUnlimitedAmount);
  EXPECT_EQ(unlimited, "\"unlimited\"");
}

TEST(JsonWriter, OutputParses) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("cost", Decimal::from_raw(Decimal::kOne / 3)).field("t", 0.25);
  w.field("s", "a\x01\"").key("l").limit(kUnlimitedAmount).end_object();
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  ASSERT_EQ(parser.parse(out).get(doc), simdjson::SUCCESS) << out;
  EXPECT_EQ(std::string_view(doc["cost"].get_string().value()), "0.333333333333");
  EXPECT_EQ(std::string_view(doc["s"].get_string().value()), "a\x01\"");
}

}  // namespace
}  // namespace budgetd::ipc
