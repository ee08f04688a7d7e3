#include "lib/decimal.h"

#include <algorithm>
#include <limits>

namespace budgetd {

namespace {
constexpr __int128 kMax = Decimal::kMaxRaw;
constexpr __int128 kMin = -kMax - 1;
}

Result<Decimal> Decimal::parse(std::string_view s, bool allow_negative) {
  if (s.empty()) return fail(Errc::malformed_decimal, "empty decimal");
  if (s.size() > kMaxTextLength) return fail(Errc::malformed_decimal, "decimal too long");
  bool negative = false;
  std::size_t i = 0;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    i = 1;
  }
  __int128 whole = 0;
  std::size_t int_digits = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++int_digits) {
    if (__builtin_mul_overflow(whole, 10, &whole) || __builtin_add_overflow(whole, s[i] - '0', &whole))
      return fail(Errc::overflow, std::string(s));
  }
  __int128 frac = 0;
  int frac_digits = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      if (++frac_digits > kScale) return fail(Errc::malformed_decimal, "more than 12 fractional digits: " + std::string(s));
      frac = frac * 10 + (s[i] - '0');
    }
    if (frac_digits == 0) return fail(Errc::malformed_decimal, std::string(s));
  }
  if (i != s.size() || int_digits == 0) return fail(Errc::malformed_decimal, std::string(s));
  for (int k = frac_digits; k < kScale; ++k) frac *= 10;
  __int128 raw;
  if (__builtin_mul_overflow(whole, kOne, &raw) || __builtin_add_overflow(raw, frac, &raw))
    return fail(Errc::overflow, std::string(s));
  if (negative && raw != 0) {
    if (!allow_negative) return fail(Errc::negative_amount, std::string(s));
    raw = -raw;
  }
  return Decimal(raw);
}

std::string Decimal::to_string() const {
  // Work on the magnitude as unsigned so that the most negative value cannot overflow.
  unsigned __int128 mag = raw_ < 0 ? -static_cast<unsigned __int128>(raw_) : static_cast<unsigned __int128>(raw_);
  unsigned __int128 whole = mag / static_cast<unsigned __int128>(kOne);
  unsigned __int128 frac = mag % static_cast<unsigned __int128>(kOne);
  std::string w;
  do {
    w.push_back(static_cast<char>('0' + static_cast<int>(whole % 10)));
    whole /= 10;
  } while (whole != 0);
  if (raw_ < 0) w.push_back('-');
  std::reverse(w.begin(), w.end());
  if (frac == 0) return w;
  std::string f(kScale, '0');
  for (int k = kScale - 1; k >= 0; --k) {
    f[k] = static_cast<char>('0' + static_cast<int>(frac % 10));
    frac /= 10;
  }
  while (!f.empty() && f.back() == '0') f.pop_back();
  return w + "." + f;
}

uint64_t Decimal::to_u64_floor() const {
  if (raw_ <= 0) return 0;
  __int128 w = raw_ / kOne;
  return w > static_cast<__int128>(std::numeric_limits<uint64_t>::max()) ? std::numeric_limits<uint64_t>::max()
                                                                        : static_cast<uint64_t>(w);
}

uint64_t Decimal::to_u64_ceil() const {
  uint64_t f = to_u64_floor();
  if (raw_ > 0 && raw_ % kOne != 0 && f != std::numeric_limits<uint64_t>::max()) ++f;
  return f;
}

Result<Decimal> Decimal::checked_add(Decimal o) const {
  __int128 r;
  if (__builtin_add_overflow(raw_, o.raw_, &r)) return fail(Errc::overflow, "decimal addition");
  return Decimal(r);
}

Result<Decimal> Decimal::checked_sub(Decimal o) const {
  __int128 r;
  if (__builtin_sub_overflow(raw_, o.raw_, &r)) return fail(Errc::overflow, "decimal subtraction");
  return Decimal(r);
}

Decimal Decimal::saturating_add(Decimal o) const {
  __int128 r;
  if (__builtin_add_overflow(raw_, o.raw_, &r)) return Decimal(o.raw_ > 0 ? kMax : kMin);
  return Decimal(r);
}

Result<Decimal> Decimal::checked_mul(uint64_t n) const {
  __int128 r;
  if (__builtin_mul_overflow(raw_, static_cast<__int128>(n), &r)) return fail(Errc::overflow, "decimal multiplication");
  return Decimal(r);
}

namespace {
// q = a / d rounded half away from zero, for a >= 0, d > 0.
unsigned __int128 div_round(unsigned __int128 a, unsigned __int128 d) {
  unsigned __int128 q = a / d, r = a % d;
  if (r >= d - r) ++q;
  return q;
}

// Multiplies two 128-bit magnitudes and divides by `den` without losing the high half:
// splits a into 64-bit halves so each partial product fits. Returns false on overflow.
bool mul_div_u128(unsigned __int128 a, unsigned __int128 b, unsigned __int128 den, unsigned __int128* out) {
  unsigned __int128 p;
  if (!__builtin_mul_overflow(a, b, &p)) {
    *out = div_round(p, den);
    return true;
  }
  // Long form: a = ah*2^64 + al, result = (ah*b*2^64 + al*b) / den.
  // Only reached for amounts near the range limit; compute with remainders.
  unsigned __int128 ah = a >> 64, al = a & ~static_cast<uint64_t>(0);
  unsigned __int128 hb;
  if (__builtin_mul_overflow(ah, b, &hb)) return false;
  unsigned __int128 q1 = hb / den, r1 = hb % den;  // (hb * 2^64)/den = q1*2^64 + (r1*2^64)/den
  if (q1 >> 63) return false;
  unsigned __int128 lb;
  if (__builtin_mul_overflow(al, b, &lb)) return false;
  unsigned __int128 r1s;
  if (__builtin_mul_overflow(r1, static_cast<unsigned __int128>(1) << 64, &r1s)) return false;
  unsigned __int128 rest;
  if (__builtin_add_overflow(r1s, lb, &rest)) return false;
  unsigned __int128 total;
  if (__builtin_add_overflow(q1 << 64, div_round(rest, den), &total)) return false;
  *out = total;
  return true;
}

Result<Decimal> signed_mul_div(__int128 a, unsigned __int128 b, unsigned __int128 den, bool negate_b) {
  bool neg = (a < 0) != negate_b;
  unsigned __int128 mag = a < 0 ? -static_cast<unsigned __int128>(a) : static_cast<unsigned __int128>(a);
  unsigned __int128 r;
  if (!mul_div_u128(mag, b, den, &r) || r > static_cast<unsigned __int128>(kMax))
    return fail(Errc::overflow, "decimal multiplication");
  __int128 v = static_cast<__int128>(r);
  return Decimal::from_raw(neg ? -v : v);
}
}  // namespace

Result<Decimal> Decimal::checked_mul_div(uint64_t num, uint64_t den) const {
  if (den == 0) return fail(Errc::invalid_argument, "division by zero");
  return signed_mul_div(raw_, num, den, false);
}

Result<Decimal> Decimal::checked_mul(Decimal o) const {
  unsigned __int128 b = o.raw_ < 0 ? -static_cast<unsigned __int128>(o.raw_) : static_cast<unsigned __int128>(o.raw_);
  return signed_mul_div(raw_, b, static_cast<unsigned __int128>(kOne), o.raw_ < 0);
}

uint32_t Decimal::percent_of(Decimal limit) const {
  if (raw_ <= 0) return 0;
  if (limit.raw_ <= 0) return 100;
  // raw_ * 100 may overflow near the range limit; divide first in that case.
  __int128 p;
  if (__builtin_mul_overflow(raw_, 100, &p)) p = raw_ / (limit.raw_ / 100 == 0 ? 1 : limit.raw_ / 100) ;
  else p /= limit.raw_;
  return p > 100000 ? 100000u : static_cast<uint32_t>(p);
}

}  // namespace budgetd
