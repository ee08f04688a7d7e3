// A small streaming JSON writer for replies. Parsing is simdjson's job; writing is only
// escaping and commas, and doing it by hand keeps the reply path free of a DOM.
//
// It is on the path of every reply, so each value is formatted on the stack and appended
// to the output in one piece: no temporary strings, no per-character appends.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lib/decimal.h"

namespace budgetd::ipc {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);

  JsonWriter& str(std::string_view v);
  JsonWriter& u64(uint64_t v);
  JsonWriter& i64(int64_t v);
  JsonWriter& boolean(bool v);
  JsonWriter& dbl(double v);
  JsonWriter& null();
  // Decimal amounts travel as strings so no client parses money into a binary float.
  // The text is Decimal::to_string()'s.
  JsonWriter& decimal(Decimal v);
  // A limit as the wire carries it: "unlimited", or the amount as a decimal string
  // (lib/quota.h limit_text, without its temporary string).
  JsonWriter& limit(Decimal v);
  // Inserts already-encoded JSON as one value.
  JsonWriter& raw(std::string_view json);
  // Inserts already-encoded members ("a":1,"b":2) into the object being written, as if
  // each had been written by field().
  JsonWriter& members(std::string_view json) { return raw(json); }

  // key + value shorthands.
  JsonWriter& field(std::string_view k, std::string_view v) { return key(k).str(v); }
  JsonWriter& field(std::string_view k, const char* v) { return key(k).str(v); }
  JsonWriter& field(std::string_view k, const std::string& v) { return key(k).str(v); }
  JsonWriter& field(std::string_view k, uint64_t v) { return key(k).u64(v); }
  JsonWriter& field(std::string_view k, uint32_t v) { return key(k).u64(v); }
  JsonWriter& field(std::string_view k, int64_t v) { return key(k).i64(v); }
  JsonWriter& field(std::string_view k, int v) { return key(k).i64(v); }
  JsonWriter& field(std::string_view k, bool v) { return key(k).boolean(v); }
  JsonWriter& field(std::string_view k, double v) { return key(k).dbl(v); }
  JsonWriter& field(std::string_view k, Decimal v) { return key(k).decimal(v); }

  std::string& out() { return out_; }

 private:
  // Appends the separator the next value needs (a comma after an earlier value) and `s`.
  void value(std::string_view s);
  std::string& out_;
  bool need_comma_ = false;
};

// Appends `s` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view s);

// The text of JsonWriter::decimal and JsonWriter::dbl written at `p`, for a reply assembled
// in one buffer; each returns the end of what it wrote.
inline constexpr std::size_t kMaxDecimalText = 48;  // quoted, sign, 27 + 12 digits, point
inline constexpr std::size_t kMaxDoubleText = 40;
char* format_decimal(char* p, Decimal v);
char* format_double(char* p, double v);

}  // namespace budgetd::ipc
