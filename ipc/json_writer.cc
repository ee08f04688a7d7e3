#include "ipc/json_writer.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cstring>

#include "lib/quota.h"

namespace budgetd::ipc {

namespace {

// Bytes a JSON string cannot hold as they are: control characters, '"' and '\'.
constexpr std::array<bool, 256> kNeedsEscape = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = true;
  t['"'] = t['\\'] = true;
  return t;
}();

bool needs_escape(std::string_view s) {
  for (char c : s)
    if (kNeedsEscape[static_cast<unsigned char>(c)]) return true;
  return false;
}

void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t run = 0;  // copy unescaped runs in one append
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (!kNeedsEscape[c]) continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out.append(u, sizeof u);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
}

// Strings up to this size that need no escape are assembled on the stack.
constexpr std::size_t kShort = 120;

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  if (s.size() <= kShort && !needs_escape(s)) {
    char buf[kShort + 2];
    buf[0] = '"';
    std::memcpy(buf + 1, s.data(), s.size());
    buf[s.size() + 1] = '"';
    out.append(buf, s.size() + 2);
    return;
  }
  out.push_back('"');
  append_escaped(out, s);
  out.push_back('"');
}

void JsonWriter::value(std::string_view s) {
  if (need_comma_) {
    // One append for the comma and the value.
    char buf[64];
    if (s.size() < sizeof buf) {
      buf[0] = ',';
      std::memcpy(buf + 1, s.data(), s.size());
      out_.append(buf, s.size() + 1);
      return;
    }
    out_.push_back(',');
  }
  need_comma_ = true;
  out_.append(s);
}

JsonWriter& JsonWriter::begin_object() {
  value("{");
  need_comma_ = false;
  return *this;
}
JsonWriter& JsonWriter::end_object() {
  out_.push_back('}');
  need_comma_ = true;
  return *this;
}
JsonWriter& JsonWriter::begin_array() {
  value("[");
  need_comma_ = false;
  return *this;
}
JsonWriter& JsonWriter::end_array() {
  out_.push_back(']');
  need_comma_ = true;
  return *this;
}
JsonWriter& JsonWriter::key(std::string_view k) {
  // Keys are the method handlers' own names: short, and never in need of an escape.
  if (k.size() <= kShort && !needs_escape(k)) {
    char buf[kShort + 4];
    char* p = buf;
    if (need_comma_) *p++ = ',';
    *p++ = '"';
    std::memcpy(p, k.data(), k.size());
    p += k.size();
    *p++ = '"';
    *p++ = ':';
    out_.append(buf, static_cast<std::size_t>(p - buf));
  } else {
    if (need_comma_) out_.push_back(',');
    append_json_string(out_, k);
    out_.push_back(':');
  }
  need_comma_ = false;
  return *this;
}
JsonWriter& JsonWriter::str(std::string_view v) {
  if (need_comma_) out_.push_back(',');
  need_comma_ = true;
  append_json_string(out_, v);
  return *this;
}
JsonWriter& JsonWriter::u64(uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  value(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
  return *this;
}
JsonWriter& JsonWriter::i64(int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  value(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
  return *this;
}
JsonWriter& JsonWriter::boolean(bool v) {
  value(v ? "true" : "false");
  return *this;
}
char* format_double(char* p, double v) {
  // Durations reach the wire as microseconds / 10^6 (lib/clock.h to_seconds_f). For such a
  // value between 10^-3 and 10^9 the shortest round-trip text is its microsecond count with
  // a decimal point and no trailing zeros: the spacing of doubles there is below 10^-6, so
  // no other decimal of six or fewer fractional digits rounds to it, and fmt writes no
  // exponent in that range. Printed with integer arithmetic, it skips fmt's search for the
  // shortest digits; any other value is fmt's.
  if (v >= 1e-3 && v < 1e9) {
    const auto us = static_cast<uint64_t>(v * 1e6 + 0.5);
    if (static_cast<double>(us) / 1e6 == v) {
      uint64_t whole = us / 1'000'000, frac = us % 1'000'000;
      p = std::to_chars(p, p + 20, whole).ptr;
      if (frac != 0) {
        int digits = 6;
        while (frac % 10 == 0) {
          frac /= 10;
          --digits;
        }
        *p++ = '.';
        for (char* q = p + digits; q != p;) {
          *--q = static_cast<char>('0' + frac % 10);
          frac /= 10;
        }
        p += digits;
      }
      return p;
    }
  }
  // fmt's shortest round-trip text, as fmt::format("{}", v), formatted at compile time.
  auto r = fmt::format_to_n(p, kMaxDoubleText, FMT_COMPILE("{}"), v);
  return p + std::min<std::size_t>(r.size, kMaxDoubleText);
}

JsonWriter& JsonWriter::dbl(double v) {
  char buf[kMaxDoubleText];
  char* end = format_double(buf, v);
  value(std::string_view(buf, static_cast<std::size_t>(end - buf)));
  return *this;
}
JsonWriter& JsonWriter::null() {
  value("null");
  return *this;
}
JsonWriter& JsonWriter::raw(std::string_view json) {
  value(json);
  return *this;
}

char* format_decimal(char* p, Decimal v) {
  // Decimal::to_string divides 128-bit integers digit by digit. Here one division splits
  // the whole units from the fraction (a 64-bit one when the amount fits, up to about 1.8e7
  // units), and both halves are printed with 64-bit arithmetic; only whole parts past 2^64
  // units take the slow way.
  const __int128 raw = v.raw();
  const unsigned __int128 mag =
      raw < 0 ? -static_cast<unsigned __int128>(raw) : static_cast<unsigned __int128>(raw);
  constexpr uint64_t kOne = static_cast<uint64_t>(Decimal::kOne);
  uint64_t whole, frac;
  if (mag <= UINT64_MAX) {
    whole = static_cast<uint64_t>(mag) / kOne;
    frac = static_cast<uint64_t>(mag) % kOne;
  } else {
    const unsigned __int128 w = mag / kOne;
    if (w > UINT64_MAX) {
      const std::string text = v.to_string();  // at most 41 bytes: fits with the quotes
      *p++ = '"';
      std::memcpy(p, text.data(), text.size());
      p += text.size();
      *p++ = '"';
      return p;
    }
    whole = static_cast<uint64_t>(w);
    frac = static_cast<uint64_t>(mag - w * kOne);
  }
  *p++ = '"';
  if (raw < 0) *p++ = '-';
  p = std::to_chars(p, p + 20, whole).ptr;
  if (frac != 0) {
    int digits = Decimal::kScale;
    while (frac % 10 == 0) {  // trailing zeros are not written
      frac /= 10;
      --digits;
    }
    *p++ = '.';
    char* end = p + digits;
    for (char* q = end; q != p;) {
      *--q = static_cast<char>('0' + frac % 10);
      frac /= 10;
    }
    p = end;
  }
  *p++ = '"';
  return p;
}

JsonWriter& JsonWriter::decimal(Decimal v) {
  char buf[kMaxDecimalText];
  char* end = format_decimal(buf, v);
  value(std::string_view(buf, static_cast<std::size_t>(end - buf)));
  return *this;
}

JsonWriter& JsonWriter::limit(Decimal v) {
  if (v == kUnlimitedAmount) {
    value("\"unlimited\"");
    return *this;
  }
  return decimal(v);
}

}  // namespace budgetd::ipc
