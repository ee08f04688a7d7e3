// The usage ledger: one record per accepted usage report, consumption or reservation
// outcome, and one per operator action (seed 001's audit trail, seed 004's UsageRecord).
// Records are made on the loop thread and written by the store's writer thread; reports
// (io.budgetd.Usage) read them back through LedgerReader.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lib/clock.h"
#include "lib/decimal.h"
#include "lib/error.h"

namespace budgetd {

enum class LedgerKind : uint8_t {
  usage,        // RecordUsage
  consumption,  // Consume (approved/partial), Approve
  commit,       // Commit of a reservation
  reservation,  // Reserve admitted / Cancel / expiry (quantities are the held estimate)
  thread,       // ConsumeThread
  audit,        // an operator action: adjust, set-limits, reset, approve, deny, pause, reload
};
std::string_view ledger_kind_name(LedgerKind k);
std::optional<LedgerKind> parse_ledger_kind(std::string_view s);

// One priced line: seed 004's resource_type / quantity / unit / unit_cost / total_cost.
struct LedgerItem {
  std::string resource;  // resource name (tokens_in, tokens_out, llm_calls, cost, custom...)
  Decimal quantity;
  std::string unit;       // "count", "1000 tokens", "GB", "USD", ...
  Decimal unit_cost;      // price per unit ("" price = 0)
  Decimal total_cost;     // quantity / unit size * unit_cost, exact
  friend bool operator==(const LedgerItem&, const LedgerItem&) = default;
};

struct LedgerRecord {
  std::string id;  // GUID (RFC 4122 version 4, lowercase hex with dashes)
  LedgerKind kind = LedgerKind::usage;
  TimePoint recorded_at;
  uint32_t uid = 0;  // the caller (SO_PEERCRED)
  int32_t pid = 0;
  std::string process, thread, scope;
  // Labels: agent, model, endpoint, action, plus any other the caller gave.
  std::map<std::string, std::string> labels;
  std::vector<LedgerItem> items;
  Decimal total_cost;  // sum of items' total_cost (what was charged as cost)
  std::string idempotency_key;
  // For audit records: the method and what it changed ("adjust max_llm_calls=20"); for an
  // outcome: approved / denied / partial / pending / expired / cancelled.
  std::string action, detail;
  friend bool operator==(const LedgerRecord&, const LedgerRecord&) = default;
};

// ---- Reports --------------------------------------------------------------------------

enum class GroupBy : uint8_t { resource, agent, model, thread, process, scope };
std::string_view group_by_name(GroupBy g);
std::optional<GroupBy> parse_group_by(std::string_view s);

// A record id: RFC 4122 version 4 (random) GUID from 16 random bytes, as 36 characters of
// lowercase hex with dashes ("xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx", N one of 8, 9, a, b).
// The version and variant bits overwrite 6 of the 128 bits; the other 122 are the caller's.
std::string format_guid(std::array<uint8_t, 16> random_bytes);

struct SummaryQuery {
  TimePoint start, end;        // [start, end)
  std::string scope;           // "" = everything; else this path and below
  GroupBy group_by = GroupBy::resource;
};

struct SummaryGroup {
  std::string key;  // the resource name, agent, model, ... ("" when the label is absent)
  // Quantity per resource in this group, and its cost.
  std::map<std::string, Decimal> quantity;
  Decimal cost;
  uint64_t records = 0;
};

struct UsageSummary {  // seed 004's usage summary
  TimePoint start, end;
  std::string scope;
  GroupBy group_by = GroupBy::resource;
  std::vector<SummaryGroup> groups;  // by cost, descending; then key
  Decimal total_cost;
  uint64_t records = 0;
};

struct RecordFilter {
  std::string resource_type, process, agent, model, thread, scope;
  std::optional<LedgerKind> kind;
  std::optional<TimePoint> since, until;
  uint32_t limit = 100;  // at most 1000
  std::string cursor;    // "" = from the newest; else the page's next_cursor
};

struct RecordPage {
  std::vector<LedgerRecord> records;  // newest first
  std::string next_cursor;            // "" = no more
};

// Read side of the ledger; the store implements it. Daily aggregates of records past the
// retention window still count in summaries (their records are gone from Records).
class LedgerReader {
 public:
  virtual ~LedgerReader() = default;
  virtual Result<UsageSummary> summary(const SummaryQuery& q) = 0;
  virtual Result<RecordPage> records(const RecordFilter& f) = 0;
};

}  // namespace budgetd
