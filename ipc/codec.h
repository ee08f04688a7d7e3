// Decoding a varlink call from one framed message, and typed access to its parameters.
// simdjson parses in place: the Framer leaves kPadding readable bytes after each message.
#pragma once

#include <simdjson.h>

#include <array>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include "ipc/framer.h"
#include "lib/decimal.h"
#include "lib/quota.h"

namespace budgetd::ipc {

static_assert(Framer::kPadding >= simdjson::SIMDJSON_PADDING, "the framer must pad for simdjson");

struct Call {
  std::string_view method;  // "io.budgetd.Agent.RecordUsage"
  std::optional<simdjson::dom::element> parameters;  // absent when the call has none
  bool oneway = false;
  bool more = false;
};

enum class CallError {
  invalid_json,  // not JSON at all: the connection is closed
  not_a_call,    // JSON, but no string "method" or not an object: closed too
};
std::string_view call_error_name(CallError e);

// Parses `message`; `message.data()` must be followed by Framer::kPadding readable bytes.
// The returned elements live in `parser` until its next parse.
std::expected<Call, CallError> parse_call(simdjson::dom::parser& parser, std::string_view message);

// Typed parameter access that remembers the first problem, so a handler reads all its
// parameters and then checks ok() once; the failure becomes InvalidParameter{parameter}.
class Params {
 public:
  explicit Params(std::optional<simdjson::dom::element> e);

  bool ok() const { return bad_.empty(); }
  const std::string& bad() const { return bad_; }
  bool has(std::string_view name) const;

  std::string_view str(std::string_view name);                      // required
  std::string_view str_or(std::string_view name, std::string_view def = {});
  uint64_t u64(std::string_view name);                              // required
  uint64_t u64_or(std::string_view name, uint64_t def);
  std::optional<uint64_t> opt_u64(std::string_view name);
  int64_t i64_or(std::string_view name, int64_t def);
  bool bool_or(std::string_view name, bool def);
  // Decimal amounts: a decimal string ("0.25") or an integer; never a float.
  Decimal decimal(std::string_view name);
  std::optional<Decimal> opt_decimal(std::string_view name);
  // A limit: a count, "unlimited", or absent/null (-> nullopt).
  std::optional<uint64_t> opt_limit(std::string_view name);
  std::optional<Decimal> opt_decimal_limit(std::string_view name);
  // A string, or an integer as its decimal text; absent/null -> nullopt.
  std::optional<std::string> scalar_text(std::string_view name);
  // Nested object (absent/null -> an empty Params).
  Params object(std::string_view name);
  // Array of elements; absent/null -> empty.
  std::optional<simdjson::dom::array> array(std::string_view name);
  // Marks `name` as the offending parameter (for checks beyond types).
  void fail(std::string_view name);

  simdjson::dom::object raw() const { return obj_; }
  bool present() const { return present_; }

 private:
  std::optional<simdjson::dom::element> get(std::string_view name) const;
  // A handler asks for a dozen names, most of them absent, and simdjson's lookup walks the
  // object's tape for each. So the fields are listed once, here, and a bit per (length,
  // first byte) answers most absent names without comparing a key.
  static constexpr std::size_t kIndexed = 16;
  struct Field {
    std::string_view key;
    simdjson::dom::element value;
  };
  static uint64_t key_bit(std::string_view k) {
    return uint64_t{1} << ((k.size() * 7 + (k.empty() ? 0 : static_cast<unsigned char>(k[0]))) & 63);
  }
  simdjson::dom::object obj_;
  bool present_ = false;
  bool indexed_ = false;  // false: more than kIndexed fields, get() asks simdjson
  uint8_t count_ = 0;
  uint64_t key_bits_ = 0;
  std::array<Field, kIndexed> fields_;
  std::string bad_;
};

}  // namespace budgetd::ipc
