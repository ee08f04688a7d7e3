// lib/state_codec: every record type round-trips exactly (extremes included), and a blob
// that is truncated, extended, re-tagged or garbled is a named error, never UB.
#include <gtest/gtest.h>

#include <random>

#include "lib/state_codec.h"
#include "tests/daemon/store_test_support.h"

namespace budgetd {
namespace {

using daemon::testing::dec;
using daemon::testing::sample_ledger;
using daemon::testing::sample_state;

template <class T>
void expect_round_trip(const T& record) {
  std::string blob = encode_record(record);
  auto back = decode_record<T>(blob);
  ASSERT_TRUE(back.has_value()) << back.error().detail;
  EXPECT_EQ(*back, record);
}

// Every proper prefix and every one-byte extension of a valid blob is refused.
template <class T>
void expect_rejects_truncation_and_trailing(const T& record) {
  std::string blob = encode_record(record);
  for (std::size_t n = 0; n < blob.size(); ++n) {
    auto r = decode_record<T>(std::string_view(blob).substr(0, n));
    ASSERT_FALSE(r.has_value()) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(r.error().code, Errc::invalid_state);
    EXPECT_TRUE(r.error().detail.starts_with("corrupt ")) << r.error().detail;
  }
  auto longer = decode_record<T>(blob + '\0');
  ASSERT_FALSE(longer.has_value());
  EXPECT_NE(longer.error().detail.find("trailing bytes"), std::string::npos) << longer.error().detail;
}

// Flipping bits anywhere gives either an error or some record, never a crash (run under
// ASan/UBSan in the sanitizer build).
template <class T>
void expect_garbling_is_safe(const T& record, uint32_t seed) {
  std::string blob = encode_record(record);
  std::mt19937 rng(seed);
  for (int i = 0; i < 2000; ++i) {
    std::string g = blob;
    int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) g[rng() % g.size()] ^= static_cast<char>(1u << (rng() % 8));
    auto r = decode_record<T>(g);
    if (!r) {
      EXPECT_TRUE(r.error().detail.starts_with("corrupt ")) << r.error().detail;
    }
  }
}

TEST(StateCodec, EveryRecordTypeRoundTrips) {
  EngineState s = sample_state();
  for (const auto& r : s.templates) expect_round_trip(r);
  for (const auto& r : s.scopes) expect_round_trip(r);
  for (const auto& r : s.processes) expect_round_trip(r);
  for (const auto& r : s.threads) expect_round_trip(r);
  for (const auto& r : s.holds) expect_round_trip(r);
  for (const auto& r : s.rate_limits) expect_round_trip(r);
  for (const auto& r : s.rate_windows) expect_round_trip(r);
  expect_round_trip(s.counters);
}

TEST(StateCodec, DefaultRecordsRoundTrip) {
  expect_round_trip(ProcessRecord{});
  expect_round_trip(ScopeRecord{});
  expect_round_trip(ThreadRecord{});
  expect_round_trip(HoldRecord{});
  expect_round_trip(TemplateRecord{});
  expect_round_trip(RateWindowRecord{});
  expect_round_trip(RateLimitRecord{});
  expect_round_trip(CountersRecord{});
}

TEST(StateCodec, ExtremeNumbersRoundTrip) {
  ProcessRecord p;
  p.usage.llm_calls = UINT64_MAX;
  p.usage.cost = Decimal::max();
  p.allocated_at = TimePoint(Duration(INT64_MIN));
  p.owner = UINT32_MAX;
  ResourceQuota q;
  q.max_cost = Decimal::from_raw(-Decimal::kMaxRaw - 1);  // the most negative raw value
  p.quota = q;
  expect_round_trip(p);
  ThreadRecord t;
  t.max_tokens = UINT64_MAX;
  expect_round_trip(t);
}

TEST(StateCodec, IdleProcessIsSmall) {
  ProcessRecord p;
  p.id = "4242";
  p.scope = "user/alice";
  p.allocated_at = TimePoint(Duration(1'700'000'000'000'000));
  // header + 3 strings + quota flag + 7 usage fields + time + owner + 6 fired + flags
  EXPECT_LE(encode_record(p).size(), 45u) << encode_record(p).size();
}

TEST(StateCodec, RejectsTruncatedAndTrailingBlobs) {
  EngineState s = sample_state();
  expect_rejects_truncation_and_trailing(s.templates[0]);
  expect_rejects_truncation_and_trailing(s.scopes[0]);
  expect_rejects_truncation_and_trailing(s.processes[0]);
  expect_rejects_truncation_and_trailing(s.threads[0]);
  expect_rejects_truncation_and_trailing(s.holds[0]);
  expect_rejects_truncation_and_trailing(s.rate_limits[0]);
  expect_rejects_truncation_and_trailing(s.rate_windows[0]);
  expect_rejects_truncation_and_trailing(s.counters);
}

TEST(StateCodec, RejectsAnotherRecordsTagAndAnUnknownVersion) {
  std::string thread = encode_record(sample_state().threads[0]);
  auto as_process = decode_record<ProcessRecord>(thread);
  ASSERT_FALSE(as_process.has_value());
  EXPECT_NE(as_process.error().detail.find("ProcessRecord"), std::string::npos) << as_process.error().detail;
  EXPECT_NE(as_process.error().detail.find("tag"), std::string::npos);

  std::string future = thread;
  future[0] = static_cast<char>((2 << 4) | (future[0] & 0x0f));
  auto r = decode_record<ThreadRecord>(future);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().detail.find("unknown version 2"), std::string::npos) << r.error().detail;
}

TEST(StateCodec, GarbledLengthDoesNotAllocateOrReadPastTheEnd) {
  // A thread whose id length claims 2^62 bytes.
  std::string blob = encode_record(ThreadRecord{});
  std::string huge;
  huge.push_back(blob[0]);
  for (int i = 0; i < 8; ++i) huge.push_back(static_cast<char>(0xff));
  huge.push_back(0x3f);
  auto r = decode_record<ThreadRecord>(huge);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().detail.find("length past the end"), std::string::npos) << r.error().detail;

  // A scope claiming a billion overrides in a 10-byte blob.
  std::string scope = encode_record(ScopeRecord{});
  std::string many;
  many.push_back(scope[0]);
  many.append("\0\0\0", 3);  // path, plan, tier
  many.append("\x80\x94\xeb\xdc\x03", 5);
  auto s = decode_record<ScopeRecord>(many);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().detail.find("count past the end"), std::string::npos) << s.error().detail;

  // A varint longer than 64 bits.
  std::string overlong;
  overlong.push_back(blob[0]);
  overlong.append(11, static_cast<char>(0x80));
  overlong.push_back(0);
  EXPECT_FALSE(decode_record<ThreadRecord>(overlong).has_value());
}

TEST(StateCodec, OutOfRangeEnumsAreCorrupt) {
  TemplateRecord t;
  std::string blob = encode_record(t);
  blob.back() = 9;  // reset period
  auto r = decode_record<TemplateRecord>(blob);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().detail.find("enum value out of range"), std::string::npos) << r.error().detail;
}

TEST(StateCodec, GarbledBlobsAreErrorsOrRecordsNeverCrashes) {
  EngineState s = sample_state();
  expect_garbling_is_safe(s.templates[0], 1);
  expect_garbling_is_safe(s.scopes[0], 2);
  expect_garbling_is_safe(s.processes[0], 3);
  expect_garbling_is_safe(s.threads[0], 4);
  expect_garbling_is_safe(s.holds[0], 5);
  expect_garbling_is_safe(s.rate_limits[0], 6);
  expect_garbling_is_safe(s.rate_windows[0], 7);
  expect_garbling_is_safe(s.counters, 8);
}

TEST(StateCodec, LedgerItemsAndLabelsRoundTrip) {
  LedgerRecord r = sample_ledger("a", TimePoint{});
  auto items = decode_ledger_items(encode_ledger_items(r.items));
  ASSERT_TRUE(items.has_value()) << items.error().detail;
  EXPECT_EQ(*items, r.items);
  auto labels = decode_labels(encode_labels(r.labels));
  ASSERT_TRUE(labels.has_value()) << labels.error().detail;
  EXPECT_EQ(*labels, r.labels);
  EXPECT_TRUE(decode_ledger_items(encode_ledger_items({}))->empty());

  std::string blob = encode_ledger_items(r.items);
  for (std::size_t n = 0; n < blob.size(); ++n)
    EXPECT_FALSE(decode_ledger_items(std::string_view(blob).substr(0, n)).has_value()) << n;
  std::string lb = encode_labels(r.labels);
  for (std::size_t n = 0; n < lb.size(); ++n) EXPECT_FALSE(decode_labels(std::string_view(lb).substr(0, n)).has_value()) << n;
  EXPECT_FALSE(decode_labels(blob).has_value());  // items are not labels
}

TEST(StateCodec, LedgerAmountsAndDetailsRoundTrip) {
  LedgerRecord r;
  r.id = "0b6f7c1e-1b2c-4d3e-8f40-000000000001";
  r.uid = 4'000'000'000u;
  r.pid = -7;
  r.detail = std::string(300, 'd');  // a length past one varint byte
  r.idempotency_key = "key";
  r.labels = {{"agent", "planner"}, {"model", "gpt-4o"}, {"endpoint", "/v1/chat"}, {"team", "x"}};
  r.items = {LedgerItem{"tokens_in", *Decimal::parse("1000", true), "1000 tokens", *Decimal::parse("0.0025", true),
                        *Decimal::parse("0.0025", true)},
             LedgerItem{"cost", Decimal::max(), "USD", Decimal::from_raw(-Decimal::kMaxRaw - 1), *Decimal::parse("-0.000000000001", true)},
             LedgerItem{"zero", Decimal{}, "", Decimal{}, Decimal{}}};
  r.total_cost = *Decimal::parse("12345.678", true);
  std::string amounts;
  encode_ledger_amounts(r.total_cost, r.items, amounts);
  auto a = decode_ledger_amounts(amounts);
  ASSERT_TRUE(a.has_value()) << a.error().detail;
  EXPECT_EQ(a->total_cost, r.total_cost);
  EXPECT_EQ(a->items, r.items);
  EXPECT_EQ(*decode_ledger_total(amounts), r.total_cost);
  for (std::size_t n = 0; n < amounts.size(); ++n)
    EXPECT_FALSE(decode_ledger_amounts(std::string_view(amounts).substr(0, n)).has_value()) << n;
  std::string bad_length = amounts;
  bad_length[1] = 17;  // the total's length byte: more than 16 bytes
  EXPECT_FALSE(decode_ledger_amounts(bad_length).has_value());

  constexpr std::string_view skip[] = {"agent", "model"};
  std::string details;
  encode_ledger_details(r, skip, details);
  LedgerRecord back;
  ASSERT_TRUE(decode_ledger_details(details, back).has_value());
  EXPECT_EQ(back.id, r.id);
  EXPECT_EQ(back.uid, r.uid);
  EXPECT_EQ(back.pid, r.pid);
  EXPECT_EQ(back.detail, r.detail);
  EXPECT_EQ(back.idempotency_key, r.idempotency_key);
  EXPECT_EQ(back.labels, (std::map<std::string, std::string>{{"endpoint", "/v1/chat"}, {"team", "x"}}));
  for (std::size_t n = 0; n < details.size(); ++n) {
    LedgerRecord partial;
    EXPECT_FALSE(decode_ledger_details(std::string_view(details).substr(0, n), partial).has_value()) << n;
  }
  LedgerRecord wrong;
  EXPECT_FALSE(decode_ledger_details(amounts, wrong).has_value());  // another blob's tag
}


}  // namespace
}  // namespace budgetd
