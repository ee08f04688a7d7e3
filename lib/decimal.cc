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
  // Amounts below 2^64 raw (about 1.8e7 units: every count a report carries) divide in 64
  // bits; a 128-bit division is a library call several times as long.
  if (raw_ <= static_cast<__int128>(std::numeric_limits<uint64_t>::max()))
    return static_cast<uint64_t>(raw_) / static_cast<uint64_t>(kOne);
  __int128 w = raw_ / kOne;
  return w > static_cast<__int128>(std::numeric_limits<uint64_t>::max()) ? std::numeric_limits<uint64_t>::max()
                                                                        : static_cast<uint64_t>(w);
}

uint64_t Decimal::to_u64_ceil() const {
  if (raw_ <= 0) return 0;
  if (raw_ <= static_cast<__int128>(std::numeric_limits<uint64_t>::max())) {
    const auto r = static_cast<uint64_t>(raw_);
    constexpr auto one = static_cast<uint64_t>(kOne);
    return r / one + (r % one != 0);  // below 2^64 raw, so no clamp is needed
  }
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
// a * b / den, rounded half away from zero. Both factors may be near 2^127, so the product
// can need 256 bits: it is formed in four 64-bit limbs and divided limb by limb. Each step
// divides (rem * 2^64 + limb) with rem < den < 2^64, which fits in 128 bits. Returns false
// when the quotient does not fit in 128 bits.
bool mul_div_u128(unsigned __int128 a, unsigned __int128 b, uint64_t den, unsigned __int128* out) {
  using u128 = unsigned __int128;
  constexpr u128 kLow = ~static_cast<uint64_t>(0);
  const u128 a0 = a & kLow, a1 = a >> 64, b0 = b & kLow, b1 = b >> 64;
  const u128 p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const u128 mid = (p00 >> 64) + (p01 & kLow) + (p10 & kLow);           // < 3 * 2^64
  const u128 high = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);      // < 2^128: a*b < 2^256
  const uint64_t limbs[4] = {static_cast<uint64_t>(p00), static_cast<uint64_t>(mid),
                             static_cast<uint64_t>(high), static_cast<uint64_t>(high >> 64)};
  uint64_t q[4];
  u128 rem = 0;
  for (int i = 3; i >= 0; --i) {
    const u128 cur = (rem << 64) | limbs[i];
    q[i] = static_cast<uint64_t>(cur / den);
    rem = cur % den;
  }
  if (q[3] != 0 || q[2] != 0) return false;
  u128 quotient = (static_cast<u128>(q[1]) << 64) | q[0];
  if (rem >= den - rem) {
    if (quotient == ~static_cast<u128>(0)) return false;
    ++quotient;
  }
  *out = quotient;
  return true;
}

Result<Decimal> signed_mul_div(__int128 a, unsigned __int128 b, uint64_t den, bool negate_b) {
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
  return signed_mul_div(raw_, b, static_cast<uint64_t>(kOne), o.raw_ < 0);
}

uint32_t Decimal::percent_of(Decimal limit) const {
  if (raw_ <= 0) return 0;
  if (limit.raw_ <= 0) return 100;
  constexpr uint32_t kCap = 100000;
  const __int128 whole = raw_ / limit.raw_;
  if (whole >= kCap / 100) return kCap;
  // The remainder's share, floor(100 * r / limit) for r < limit. raw_ * 100 can overflow
  // near the range limit, so it is formed by shift-and-add over the bits of 100, reducing
  // modulo limit at each step: no intermediate passes 2 * limit < 2^128.
  const unsigned __int128 l = static_cast<unsigned __int128>(limit.raw_);
  const unsigned __int128 r = static_cast<unsigned __int128>(raw_ % limit.raw_);
  unsigned __int128 rem = 0;
  uint32_t share = 0;
  for (int bit = 6; bit >= 0; --bit) {  // 100 = 0b1100100
    share <<= 1;
    rem <<= 1;
    if (rem >= l) {
      rem -= l;
      ++share;
    }
    if ((100 >> bit) & 1) {
      rem += r;
      if (rem >= l) {
        rem -= l;
        ++share;
      }
    }
  }
  return static_cast<uint32_t>(whole) * 100 + share;
}

}  // namespace budgetd
