// A compact, versioned binary encoding of the engine's durable records (lib/state.h) and of
// a ledger record's items and labels: what the store keeps in one BLOB per row.
//
// Layout: one header byte, (version << 4) | record tag, then the fields in declaration
// order. Unsigned integers are LEB128 varints, signed ones (times, bucket indexes, decimal
// raw values) are zigzag varints, strings and sequences are a varint length then their
// elements, an optional is a presence byte. Unset fields cost one byte each, so an idle
// process is a few dozen bytes.
//
// Decoding is total: a blob that is truncated, has trailing bytes, carries another record's
// tag or an unknown version, or a length or enum value out of range, is
// Errc::invalid_state with a detail starting "corrupt " and naming the record and the
// byte offset. A length is checked against the bytes that remain before anything is
// allocated, so a garbled length cannot ask for gigabytes.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lib/error.h"
#include "lib/ledger.h"
#include "lib/state.h"

namespace budgetd {

inline constexpr uint8_t kStateCodecVersion = 1;

std::string encode_record(const ProcessRecord& r);
std::string encode_record(const ScopeRecord& r);
std::string encode_record(const ThreadRecord& r);
std::string encode_record(const HoldRecord& r);
std::string encode_record(const TemplateRecord& r);
std::string encode_record(const RateWindowRecord& r);
std::string encode_record(const RateLimitRecord& r);
std::string encode_record(const CountersRecord& r);
// The same, appended to `out` (the store reuses one buffer per row).
void encode_record(const ProcessRecord& r, std::string& out);
void encode_record(const ScopeRecord& r, std::string& out);
void encode_record(const ThreadRecord& r, std::string& out);
void encode_record(const HoldRecord& r, std::string& out);
void encode_record(const TemplateRecord& r, std::string& out);
void encode_record(const RateWindowRecord& r, std::string& out);
void encode_record(const RateLimitRecord& r, std::string& out);
void encode_record(const CountersRecord& r, std::string& out);

// decode_record<ProcessRecord>(blob), ... for each record type above.
template <class T>
Result<T> decode_record(std::string_view blob);

template <> Result<ProcessRecord> decode_record<ProcessRecord>(std::string_view blob);
template <> Result<ScopeRecord> decode_record<ScopeRecord>(std::string_view blob);
template <> Result<ThreadRecord> decode_record<ThreadRecord>(std::string_view blob);
template <> Result<HoldRecord> decode_record<HoldRecord>(std::string_view blob);
template <> Result<TemplateRecord> decode_record<TemplateRecord>(std::string_view blob);
template <> Result<RateWindowRecord> decode_record<RateWindowRecord>(std::string_view blob);
template <> Result<RateLimitRecord> decode_record<RateLimitRecord>(std::string_view blob);
template <> Result<CountersRecord> decode_record<CountersRecord>(std::string_view blob);

// A ledger record's priced lines and its labels (the store keeps the frequently filtered
// labels in columns and the rest in this blob).
std::string encode_ledger_items(const std::vector<LedgerItem>& items);
Result<std::vector<LedgerItem>> decode_ledger_items(std::string_view blob);
std::string encode_labels(const std::map<std::string, std::string>& labels);
Result<std::map<std::string, std::string>> decode_labels(std::string_view blob);

// The store's ledger row (schema 2) keeps two blobs besides its filter columns:
// amounts: the record's total cost, then its priced lines; each decimal is its raw 128-bit
// value zigzagged, as a length byte and that many little-endian bytes (no decimal text to
// print or parse). details: what Records gives back but nothing filters on: id, uid, pid,
// detail, idempotency key and the labels except `skip_labels` (the store's columns).
struct LedgerAmounts {
  Decimal total_cost;
  std::vector<LedgerItem> items;
};
void encode_ledger_amounts(Decimal total_cost, const std::vector<LedgerItem>& items, std::string& out);
Result<LedgerAmounts> decode_ledger_amounts(std::string_view blob);
// Just the total (summaries of charges without their lines).
Result<Decimal> decode_ledger_total(std::string_view blob);
void encode_ledger_details(const LedgerRecord& r, std::span<const std::string_view> skip_labels, std::string& out);
// Fills r's id, uid, pid, detail, idempotency_key and adds the labels.
Result<void> decode_ledger_details(std::string_view blob, LedgerRecord& r);

}  // namespace budgetd
