#include "lib/state_codec.h"

#include <bit>
#include <cstring>
#include <string>
#include <utility>

namespace budgetd {

namespace {

// Record tags: the low nibble of the header byte. Never renumber; add new ones at the end.
enum class Tag : uint8_t {
  process = 1,
  scope = 2,
  thread = 3,
  hold = 4,
  template_ = 5,
  rate_window = 6,
  rate_limit = 7,
  counters = 8,
  ledger_items = 9,
  labels = 10,
  ledger_amounts = 11,
  ledger_details = 12,
};

constexpr std::string_view tag_name(Tag t) {
  switch (t) {
    case Tag::process: return "ProcessRecord";
    case Tag::scope: return "ScopeRecord";
    case Tag::thread: return "ThreadRecord";
    case Tag::hold: return "HoldRecord";
    case Tag::template_: return "TemplateRecord";
    case Tag::rate_window: return "RateWindowRecord";
    case Tag::rate_limit: return "RateLimitRecord";
    case Tag::counters: return "CountersRecord";
    case Tag::ledger_items: return "ledger items";
    case Tag::labels: return "ledger labels";
    case Tag::ledger_amounts: return "ledger amounts";
    case Tag::ledger_details: return "ledger details";
  }
  return "record";
}

class Writer {
 public:
  Writer(std::string& out, Tag tag) : out_(out) {
    out_.push_back(static_cast<char>((kStateCodecVersion << 4) | static_cast<uint8_t>(tag)));
  }
  void u64(uint64_t v) {
    char buf[10];
    std::size_t n = 0;
    while (v >= 0x80) {
      buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    buf[n++] = static_cast<char>(v);
    out_.append(buf, n);
  }
  void i64(int64_t v) { u64((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void boolean(bool b) { u8(b ? 1 : 0); }
  void str(std::string_view s) {
    if (s.size() < 0x80) {  // the length is one byte: one append for both
      char buf[128];
      buf[0] = static_cast<char>(s.size());
      std::memcpy(buf + 1, s.data(), s.size());
      out_.append(buf, s.size() + 1);
      return;
    }
    u64(s.size());
    out_.append(s);
  }
  void dec(Decimal d) {
    __int128 raw = d.raw();
    auto z = (static_cast<unsigned __int128>(raw) << 1) ^ static_cast<unsigned __int128>(raw >> 127);
    while (z >= 0x80) {
      out_.push_back(static_cast<char>((static_cast<uint8_t>(z) & 0x7f) | 0x80));
      z >>= 7;
    }
    out_.push_back(static_cast<char>(static_cast<uint8_t>(z)));
  }
  void time(TimePoint t) { i64(t.time_since_epoch().count()); }
  // A decimal's raw value zigzagged, as a length byte then that many little-endian bytes:
  // one memcpy, no loop over 7-bit groups ("0.0025" is 1 + 4 bytes).
  void raw_dec(Decimal d) {
    __int128 raw = d.raw();
    auto z = (static_cast<unsigned __int128>(raw) << 1) ^ static_cast<unsigned __int128>(raw >> 127);
    auto hi = static_cast<uint64_t>(z >> 64), lo = static_cast<uint64_t>(z);
    int bits = hi ? 128 - std::countl_zero(hi) : 64 - std::countl_zero(lo);
    auto n = static_cast<std::size_t>((bits + 7) / 8);
    char buf[17];
    buf[0] = static_cast<char>(n);
    for (std::size_t i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>(lo >> (8 * i));
    for (std::size_t i = 0; i < 8; ++i) buf[9 + i] = static_cast<char>(hi >> (8 * i));
    out_.append(buf, n + 1);
  }

 private:
  std::string& out_;
};

// Reads with a sticky error: after the first failure every read yields zero/empty, so the
// decoders read straight through and check once at the end.
class Reader {
 public:
  Reader(std::string_view blob, Tag tag) : begin_(blob.data()), p_(blob.data()), end_(blob.data() + blob.size()), tag_(tag) {
    uint8_t header = u8();
    if (failed_) return;
    if ((header >> 4) != kStateCodecVersion) {
      fail_at(0, "unknown version " + std::to_string(header >> 4));
    } else if ((header & 0x0f) != static_cast<uint8_t>(tag)) {
      fail_at(0, "tag " + std::to_string(header & 0x0f) + " is not this record's");
    }
  }

  uint64_t u64() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return truncated();
      auto b = static_cast<uint8_t>(*p_++);
      if (shift == 63 && b > 1) return bad("varint overflow");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    return bad("varint overflow");
  }
  int64_t i64() {
    uint64_t z = u64();
    return static_cast<int64_t>((z >> 1) ^ (~(z & 1) + 1));
  }
  uint8_t u8() {
    if (p_ == end_) return static_cast<uint8_t>(truncated());
    return static_cast<uint8_t>(*p_++);
  }
  bool boolean() {
    uint8_t b = u8();
    if (b > 1) bad("boolean out of range");
    return b == 1;
  }
  // An enum stored as a byte, checked against its largest value.
  template <class E>
  E enumerated(uint8_t max) {
    uint8_t b = u8();
    if (b > max) bad("enum value out of range");
    return failed_ ? E{} : static_cast<E>(b);
  }
  std::string str() {
    uint64_t n = u64();
    if (n > remaining()) {
      bad("string length past the end");
      return {};
    }
    std::string s(p_, static_cast<std::size_t>(n));
    p_ += n;
    return s;
  }
  // An element count; each element takes at least `min_bytes`, so a count the remaining
  // bytes cannot hold is corrupt before any allocation is made.
  std::size_t count(std::size_t min_bytes = 1) {
    uint64_t n = u64();
    if (n > remaining() / min_bytes) {
      bad("element count past the end");
      return 0;
    }
    return static_cast<std::size_t>(n);
  }
  Decimal dec() {
    unsigned __int128 z = 0;
    for (int shift = 0; shift < 128; shift += 7) {
      if (p_ == end_) {
        truncated();
        return {};
      }
      auto b = static_cast<uint8_t>(*p_++);
      if (shift == 126 && b > 3) break;
      z |= static_cast<unsigned __int128>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        auto raw = static_cast<__int128>((z >> 1) ^ (~(z & 1) + 1));
        return Decimal::from_raw(raw);
      }
    }
    bad("decimal overflow");
    return {};
  }
  TimePoint time() { return TimePoint(Duration(i64())); }
  Decimal raw_dec() {
    uint8_t n = u8();
    if (failed_) return {};
    if (n > 16) {
      bad("decimal length out of range");
      return {};
    }
    if (n > remaining()) {
      truncated();
      return {};
    }
    unsigned __int128 z = 0;
    for (std::size_t i = 0; i < n; ++i) z |= static_cast<unsigned __int128>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += n;
    return Decimal::from_raw(static_cast<__int128>((z >> 1) ^ (~(z & 1) + 1)));
  }

  template <class T>
  Result<T> finish(T value) {
    if (!failed_ && p_ != end_) fail_at(static_cast<std::size_t>(p_ - begin_), "trailing bytes");
    if (failed_) return fail(Errc::invalid_state, std::move(error_));
    return value;
  }
  bool failed() const { return failed_; }
  // A value that decoded but is outside its field's domain.
  void corrupt(std::string_view what) { bad(what); }

 private:
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  uint64_t truncated() { return bad("truncated"); }
  uint64_t bad(std::string_view what) {
    fail_at(static_cast<std::size_t>(p_ - begin_), std::string(what));
    return 0;
  }
  void fail_at(std::size_t offset, std::string what) {
    if (failed_) return;
    failed_ = true;
    error_ = "corrupt " + std::string(tag_name(tag_)) + " blob: " + what + " at byte " + std::to_string(offset);
    p_ = end_;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  Tag tag_;
  bool failed_ = false;
  std::string error_;
};

constexpr uint8_t kMaxResetPeriod = static_cast<uint8_t>(ResetPeriod::monthly);
constexpr uint8_t kMaxAction = static_cast<uint8_t>(Action::pause);

void put_quota(Writer& w, const ResourceQuota& q) {
  w.u64(q.max_input_tokens);
  w.u64(q.max_output_tokens);
  w.u64(q.max_context_tokens);
  w.u64(q.max_llm_calls);
  w.u64(q.max_tool_calls);
  w.u64(q.max_agent_hops);
  w.u64(q.max_iterations);
  w.u64(q.max_tokens);
  w.dec(q.max_cost);
  w.u64(q.timeout_seconds);
  w.u64(q.soft_timeout_seconds);
  w.u8(static_cast<uint8_t>(q.on_timeout));
  w.u8(static_cast<uint8_t>(q.on_violation));
  w.u64(q.kill_grace_seconds);
}

ResourceQuota get_quota(Reader& r) {
  ResourceQuota q;
  q.max_input_tokens = r.u64();
  q.max_output_tokens = r.u64();
  q.max_context_tokens = r.u64();
  q.max_llm_calls = r.u64();
  q.max_tool_calls = r.u64();
  q.max_agent_hops = r.u64();
  q.max_iterations = r.u64();
  q.max_tokens = r.u64();
  q.max_cost = r.dec();
  q.timeout_seconds = r.u64();
  q.soft_timeout_seconds = r.u64();
  q.on_timeout = r.enumerated<Action>(kMaxAction);
  q.on_violation = r.enumerated<Action>(kMaxAction);
  q.kill_grace_seconds = r.u64();
  return q;
}

void put_usage(Writer& w, const ResourceUsage& u) {
  w.u64(u.llm_calls);
  w.u64(u.tool_calls);
  w.u64(u.agent_hops);
  w.u64(u.iterations);
  w.u64(u.tokens_in);
  w.u64(u.tokens_out);
  w.dec(u.cost);
}

ResourceUsage get_usage(Reader& r) {
  ResourceUsage u;
  u.llm_calls = r.u64();
  u.tool_calls = r.u64();
  u.agent_hops = r.u64();
  u.iterations = r.u64();
  u.tokens_in = r.u64();
  u.tokens_out = r.u64();
  u.cost = r.dec();
  return u;
}

void put_optional_decimal(Writer& w, const std::optional<Decimal>& d) {
  w.boolean(d.has_value());
  if (d) w.dec(*d);
}

std::optional<Decimal> get_optional_decimal(Reader& r) {
  if (!r.boolean()) return std::nullopt;
  return r.dec();
}

void put_limits(Writer& w, const std::vector<LimitRecord>& limits) {
  w.u64(limits.size());
  for (const auto& l : limits) {
    w.str(l.resource);
    put_optional_decimal(w, l.hard);
    put_optional_decimal(w, l.soft);
    put_optional_decimal(w, l.approval);
  }
}

std::vector<LimitRecord> get_limits(Reader& r) {
  std::vector<LimitRecord> limits(r.count(4));
  for (auto& l : limits) {
    l.resource = r.str();
    l.hard = get_optional_decimal(r);
    l.soft = get_optional_decimal(r);
    l.approval = get_optional_decimal(r);
  }
  return limits;
}

void put_amounts(Writer& w, const NamedAmounts& amounts) {
  w.u64(amounts.size());
  for (const auto& [name, amount] : amounts) {
    w.str(name);
    w.dec(amount);
  }
}

NamedAmounts get_amounts(Reader& r) {
  NamedAmounts amounts(r.count(2));
  for (auto& [name, amount] : amounts) {
    name = r.str();
    amount = r.dec();
  }
  return amounts;
}

}  // namespace

// ---- ProcessRecord ----------------------------------------------------------------------

void encode_record(const ProcessRecord& p, std::string& out) {
  Writer w(out, Tag::process);
  w.str(p.id);
  w.str(p.scope);
  w.str(p.parent);
  w.boolean(p.quota.has_value());
  if (p.quota) put_quota(w, *p.quota);
  put_usage(w, p.usage);
  w.time(p.allocated_at);
  w.u64(p.owner);
  for (uint8_t f : p.fired) w.u8(f);
  w.u8(static_cast<uint8_t>((p.soft_fired ? 1 : 0) | (p.hard_fired ? 2 : 0)));
}

template <>
Result<ProcessRecord> decode_record<ProcessRecord>(std::string_view blob) {
  Reader r(blob, Tag::process);
  ProcessRecord p;
  p.id = r.str();
  p.scope = r.str();
  p.parent = r.str();
  if (r.boolean()) p.quota = get_quota(r);
  p.usage = get_usage(r);
  p.allocated_at = r.time();
  uint64_t owner = r.u64();
  if (owner > UINT32_MAX) r.corrupt("owner out of range");
  p.owner = static_cast<uint32_t>(owner);
  for (uint8_t& f : p.fired) f = r.u8();
  uint8_t flags = r.enumerated<uint8_t>(3);
  p.soft_fired = flags & 1;
  p.hard_fired = flags & 2;
  return r.finish(std::move(p));
}

// ---- ScopeRecord ------------------------------------------------------------------------

void encode_record(const ScopeRecord& s, std::string& out) {
  Writer w(out, Tag::scope);
  w.str(s.path);
  w.str(s.plan);
  w.str(s.tier);
  put_limits(w, s.overrides);
  w.boolean(s.reset_override.has_value());
  if (s.reset_override) w.u8(static_cast<uint8_t>(*s.reset_override));
  w.time(s.last_reset_at);
  w.u64(s.slots.size());
  for (const auto& slot : s.slots) {
    w.str(slot.resource);
    w.dec(slot.used);
    w.u8(slot.fired);
  }
  w.time(s.period_since);
}

template <>
Result<ScopeRecord> decode_record<ScopeRecord>(std::string_view blob) {
  Reader r(blob, Tag::scope);
  ScopeRecord s;
  s.path = r.str();
  s.plan = r.str();
  s.tier = r.str();
  s.overrides = get_limits(r);
  if (r.boolean()) s.reset_override = r.enumerated<ResetPeriod>(kMaxResetPeriod);
  s.last_reset_at = r.time();
  s.slots.resize(r.count(3));
  for (auto& slot : s.slots) {
    slot.resource = r.str();
    slot.used = r.dec();
    slot.fired = r.u8();
  }
  s.period_since = r.time();
  return r.finish(std::move(s));
}

// ---- ThreadRecord -----------------------------------------------------------------------

void encode_record(const ThreadRecord& t, std::string& out) {
  Writer w(out, Tag::thread);
  w.str(t.id);
  w.u64(t.max_tokens);
  w.u64(t.prompt_tokens);
  w.u64(t.completion_tokens);
  w.u64(t.request_count);
  w.str(t.process);
  w.str(t.scope);
}

template <>
Result<ThreadRecord> decode_record<ThreadRecord>(std::string_view blob) {
  Reader r(blob, Tag::thread);
  ThreadRecord t;
  t.id = r.str();
  t.max_tokens = r.u64();
  t.prompt_tokens = r.u64();
  t.completion_tokens = r.u64();
  t.request_count = r.u64();
  t.process = r.str();
  t.scope = r.str();
  return r.finish(std::move(t));
}

// ---- HoldRecord -------------------------------------------------------------------------

void encode_record(const HoldRecord& h, std::string& out) {
  Writer w(out, Tag::hold);
  w.u64(h.id);
  w.u8(h.kind);
  w.str(h.process);
  w.str(h.thread);
  w.str(h.scope);
  put_amounts(w, h.amount);
  w.time(h.created_at);
  w.time(h.expires_at);
  w.str(h.resource);
  w.str(h.context);
}

template <>
Result<HoldRecord> decode_record<HoldRecord>(std::string_view blob) {
  Reader r(blob, Tag::hold);
  HoldRecord h;
  h.id = r.u64();
  h.kind = r.u8();
  h.process = r.str();
  h.thread = r.str();
  h.scope = r.str();
  h.amount = get_amounts(r);
  h.created_at = r.time();
  h.expires_at = r.time();
  h.resource = r.str();
  h.context = r.str();
  return r.finish(std::move(h));
}

// ---- TemplateRecord ---------------------------------------------------------------------

void encode_record(const TemplateRecord& t, std::string& out) {
  Writer w(out, Tag::template_);
  w.str(t.name);
  w.u8(t.kind);
  put_limits(w, t.limits);
  w.u8(static_cast<uint8_t>(t.reset));
}

template <>
Result<TemplateRecord> decode_record<TemplateRecord>(std::string_view blob) {
  Reader r(blob, Tag::template_);
  TemplateRecord t;
  t.name = r.str();
  t.kind = r.u8();
  t.limits = get_limits(r);
  t.reset = r.enumerated<ResetPeriod>(kMaxResetPeriod);
  return r.finish(std::move(t));
}

// ---- RateWindowRecord -------------------------------------------------------------------

void encode_record(const RateWindowRecord& rw, std::string& out) {
  Writer w(out, Tag::rate_window);
  w.str(rw.user);
  w.str(rw.endpoint);
  uint8_t present = 0;
  for (std::size_t i = 0; i < rw.present.size(); ++i) present |= static_cast<uint8_t>(rw.present[i] ? 1u << i : 0u);
  w.u8(present);
  for (std::size_t i = 0; i < rw.buckets.size(); ++i) {
    w.i64(rw.newest[i]);
    w.u64(rw.buckets[i].size());
    for (const auto& [index, count] : rw.buckets[i]) {
      w.i64(index);
      w.u64(count);
    }
  }
}

template <>
Result<RateWindowRecord> decode_record<RateWindowRecord>(std::string_view blob) {
  Reader r(blob, Tag::rate_window);
  RateWindowRecord rw;
  rw.user = r.str();
  rw.endpoint = r.str();
  uint8_t present = r.enumerated<uint8_t>(0x0f);
  for (std::size_t i = 0; i < rw.present.size(); ++i) rw.present[i] = present & (1u << i);
  for (std::size_t i = 0; i < rw.buckets.size(); ++i) {
    rw.newest[i] = r.i64();
    rw.buckets[i].resize(r.count(2));
    for (auto& [index, count] : rw.buckets[i]) {
      index = r.i64();
      count = r.u64();
    }
  }
  return r.finish(std::move(rw));
}

// ---- RateLimitRecord --------------------------------------------------------------------

void encode_record(const RateLimitRecord& rl, std::string& out) {
  Writer w(out, Tag::rate_limit);
  w.boolean(rl.endpoint);
  w.str(rl.name);
  w.u64(rl.config.requests_per_minute);
  w.u64(rl.config.requests_per_hour);
  w.u64(rl.config.requests_per_day);
  w.u64(rl.config.burst);
}

template <>
Result<RateLimitRecord> decode_record<RateLimitRecord>(std::string_view blob) {
  Reader r(blob, Tag::rate_limit);
  RateLimitRecord rl;
  rl.endpoint = r.boolean();
  rl.name = r.str();
  rl.config.requests_per_minute = r.u64();
  rl.config.requests_per_hour = r.u64();
  rl.config.requests_per_day = r.u64();
  rl.config.burst = r.u64();
  return r.finish(std::move(rl));
}

// ---- CountersRecord ---------------------------------------------------------------------

void encode_record(const CountersRecord& c, std::string& out) {
  Writer w(out, Tag::counters);
  w.u64(c.next_hold_id);
  w.u64(c.total_events);
  w.u64(c.consumed_count);
  w.u64(c.rejected_count);
  w.u64(c.partial);
  w.u64(c.thread_default_max_tokens);
}

template <>
Result<CountersRecord> decode_record<CountersRecord>(std::string_view blob) {
  Reader r(blob, Tag::counters);
  CountersRecord c;
  c.next_hold_id = r.u64();
  c.total_events = r.u64();
  c.consumed_count = r.u64();
  c.rejected_count = r.u64();
  c.partial = r.u64();
  c.thread_default_max_tokens = r.u64();
  return r.finish(std::move(c));
}

// ---- Returning forms --------------------------------------------------------------------

#define BUDGETD_ENCODE_RETURNING(Type) \
  std::string encode_record(const Type& r) { \
    std::string out; \
    encode_record(r, out); \
    return out; \
  }
BUDGETD_ENCODE_RETURNING(ProcessRecord)
BUDGETD_ENCODE_RETURNING(ScopeRecord)
BUDGETD_ENCODE_RETURNING(ThreadRecord)
BUDGETD_ENCODE_RETURNING(HoldRecord)
BUDGETD_ENCODE_RETURNING(TemplateRecord)
BUDGETD_ENCODE_RETURNING(RateWindowRecord)
BUDGETD_ENCODE_RETURNING(RateLimitRecord)
BUDGETD_ENCODE_RETURNING(CountersRecord)
#undef BUDGETD_ENCODE_RETURNING

// ---- Ledger items and labels ------------------------------------------------------------

std::string encode_ledger_items(const std::vector<LedgerItem>& items) {
  std::string out;
  Writer w(out, Tag::ledger_items);
  w.u64(items.size());
  for (const auto& i : items) {
    w.str(i.resource);
    w.dec(i.quantity);
    w.str(i.unit);
    w.dec(i.unit_cost);
    w.dec(i.total_cost);
  }
  return out;
}

Result<std::vector<LedgerItem>> decode_ledger_items(std::string_view blob) {
  Reader r(blob, Tag::ledger_items);
  std::vector<LedgerItem> items(r.count(5));
  for (auto& i : items) {
    i.resource = r.str();
    i.quantity = r.dec();
    i.unit = r.str();
    i.unit_cost = r.dec();
    i.total_cost = r.dec();
  }
  return r.finish(std::move(items));
}

std::string encode_labels(const std::map<std::string, std::string>& labels) {
  std::string out;
  Writer w(out, Tag::labels);
  w.u64(labels.size());
  for (const auto& [k, v] : labels) {
    w.str(k);
    w.str(v);
  }
  return out;
}

Result<std::map<std::string, std::string>> decode_labels(std::string_view blob) {
  Reader r(blob, Tag::labels);
  std::map<std::string, std::string> labels;
  std::size_t n = r.count(2);
  for (std::size_t i = 0; i < n && !r.failed(); ++i) {
    std::string k = r.str();
    labels.insert_or_assign(std::move(k), r.str());
  }
  return r.finish(std::move(labels));
}

// ---- Ledger rows (store schema 2) ------------------------------------------------------

void encode_ledger_amounts(Decimal total_cost, const std::vector<LedgerItem>& items, std::string& out) {
  Writer w(out, Tag::ledger_amounts);
  w.raw_dec(total_cost);
  w.u64(items.size());
  for (const auto& i : items) {
    w.str(i.resource);
    w.raw_dec(i.quantity);
    w.str(i.unit);
    w.raw_dec(i.unit_cost);
    w.raw_dec(i.total_cost);
  }
}

Result<LedgerAmounts> decode_ledger_amounts(std::string_view blob) {
  Reader r(blob, Tag::ledger_amounts);
  LedgerAmounts a;
  a.total_cost = r.raw_dec();
  a.items.resize(r.count(5));
  for (auto& i : a.items) {
    i.resource = r.str();
    i.quantity = r.raw_dec();
    i.unit = r.str();
    i.unit_cost = r.raw_dec();
    i.total_cost = r.raw_dec();
  }
  return r.finish(std::move(a));
}

Result<Decimal> decode_ledger_total(std::string_view blob) {
  Reader r(blob, Tag::ledger_amounts);
  Decimal total = r.raw_dec();
  if (r.failed()) return r.finish(Decimal{});
  return total;
}

void encode_ledger_details(const LedgerRecord& rec, std::span<const std::string_view> skip_labels, std::string& out) {
  Writer w(out, Tag::ledger_details);
  w.str(rec.id);
  w.u64(rec.uid);
  w.i64(rec.pid);
  w.str(rec.detail);
  w.str(rec.idempotency_key);
  auto skipped = [&](std::string_view k) {
    for (auto s : skip_labels)
      if (k == s) return true;
    return false;
  };
  std::size_t n = 0;
  for (const auto& [k, v] : rec.labels) n += skipped(k) ? 0 : 1;
  w.u64(n);
  for (const auto& [k, v] : rec.labels) {
    if (skipped(k)) continue;
    w.str(k);
    w.str(v);
  }
}

Result<void> decode_ledger_details(std::string_view blob, LedgerRecord& rec) {
  Reader r(blob, Tag::ledger_details);
  rec.id = r.str();
  uint64_t uid = r.u64();
  int64_t pid = r.i64();
  if (uid > UINT32_MAX || pid < INT32_MIN || pid > INT32_MAX) r.corrupt("uid or pid out of range");
  rec.uid = static_cast<uint32_t>(uid);
  rec.pid = static_cast<int32_t>(pid);
  rec.detail = r.str();
  rec.idempotency_key = r.str();
  std::size_t n = r.count(2);
  for (std::size_t i = 0; i < n && !r.failed(); ++i) {
    std::string k = r.str();
    rec.labels.insert_or_assign(std::move(k), r.str());
  }
  if (auto done = r.finish(true); !done) return std::unexpected(done.error());
  return {};
}

}  // namespace budgetd
