#include "lib/ledger.h"

#include <algorithm>

namespace budgetd {

namespace {

// Indexed by the enum's value; the names are the wire and database spelling.
constexpr std::array<std::string_view, 6> kLedgerKindNames = {
    "usage", "consumption", "commit", "reservation", "thread", "audit"};
constexpr std::array<std::string_view, 6> kGroupByNames = {"resource", "agent",   "model",
                                                           "thread",   "process", "scope"};

template <class Enum, std::size_t N>
std::optional<Enum> parse_name(const std::array<std::string_view, N>& names, std::string_view s) {
  auto it = std::find(names.begin(), names.end(), s);
  if (it == names.end()) return std::nullopt;
  return static_cast<Enum>(it - names.begin());
}

}  // namespace

std::string_view ledger_kind_name(LedgerKind k) {
  auto i = static_cast<std::size_t>(k);
  return i < kLedgerKindNames.size() ? kLedgerKindNames[i] : "unknown";
}

std::optional<LedgerKind> parse_ledger_kind(std::string_view s) {
  return parse_name<LedgerKind>(kLedgerKindNames, s);
}

std::string_view group_by_name(GroupBy g) {
  auto i = static_cast<std::size_t>(g);
  return i < kGroupByNames.size() ? kGroupByNames[i] : "unknown";
}

std::optional<GroupBy> parse_group_by(std::string_view s) {
  return parse_name<GroupBy>(kGroupByNames, s);
}

std::string format_guid(std::array<uint8_t, 16> b) {
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4: random
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant 10xx: RFC 4122
  // One per ledger record, so on the hot path: filled in a buffer, one string at the end.
  constexpr char kHex[] = "0123456789abcdef";
  char out[36];
  std::size_t o = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = kHex[b[i] >> 4];
    out[o++] = kHex[b[i] & 0x0f];
  }
  return std::string(out, sizeof out);
}

}  // namespace budgetd
