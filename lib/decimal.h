// Exact fixed-point decimal for money and the custom amounts of seed 000.
//
// 12 fractional digits in a signed 128-bit integer: per-token prices such as
// $0.0375 per million tokens (3.75e-8) are exact, and the integer part reaches 1.7e26,
// so every uint64_t count converts without loss. Arithmetic is checked: overflow is an
// Errc::overflow value, never a wrap. No binary floating point touches a stored amount.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "lib/error.h"

namespace budgetd {

class Decimal {
 public:
  static constexpr int kScale = 12;
  static constexpr __int128 kOne = 1'000'000'000'000;  // 10^kScale
  // Longest accepted decimal string; guards the parser against unbounded input.
  static constexpr std::size_t kMaxTextLength = 64;

  constexpr Decimal() = default;

  // Parses "12", "0.5", "+3.25", "1e3" is rejected. Negative strings give
  // Errc::negative_amount unless allow_negative. More than kScale fractional digits is
  // Errc::malformed_decimal (rounding money silently is a bug, not a convenience).
  static Result<Decimal> parse(std::string_view text, bool allow_negative = false);
  static constexpr Decimal from_int(uint64_t units) { return Decimal(static_cast<__int128>(units) * kOne); }
  static constexpr Decimal from_raw(__int128 raw) { return Decimal(raw); }
  static constexpr Decimal max() { return Decimal(kMaxRaw); }
  static constexpr __int128 kMaxRaw = static_cast<__int128>((static_cast<unsigned __int128>(1) << 127) - 1);

  // Shortest exact form: "0", "1.5", "0.000002", "-3".
  std::string to_string() const;

  constexpr __int128 raw() const { return raw_; }
  constexpr bool is_zero() const { return raw_ == 0; }
  constexpr bool is_negative() const { return raw_ < 0; }
  constexpr bool is_integer() const {
    // A 64-bit remainder for amounts below 2^64 raw; the 128-bit one is a library call.
    if (raw_ >= 0 && raw_ <= static_cast<__int128>(~uint64_t{0}))
      return static_cast<uint64_t>(raw_) % static_cast<uint64_t>(kOne) == 0;
    return raw_ % kOne == 0;
  }
  // Integer part, rounded toward zero, clamped to [0, UINT64_MAX].
  uint64_t to_u64_floor() const;
  // Rounded up to the next integer, clamped to [0, UINT64_MAX].
  uint64_t to_u64_ceil() const;

  Result<Decimal> checked_add(Decimal o) const;
  Result<Decimal> checked_sub(Decimal o) const;
  Result<Decimal> checked_mul(uint64_t n) const;
  // this * num / den, exact when divisible, else rounded half away from zero.
  Result<Decimal> checked_mul_div(uint64_t num, uint64_t den) const;
  // this * o, rounded half away from zero to kScale digits.
  Result<Decimal> checked_mul(Decimal o) const;
  // max(this - o, 0): "remaining" never goes below zero.
  Decimal saturating_sub(Decimal o) const {
    __int128 r;
    if (__builtin_sub_overflow(raw_, o.raw_, &r)) return max();
    return r > 0 ? Decimal(r) : Decimal();
  }
  // Saturating add for counters that must keep counting (a recorded usage always counts).
  Decimal saturating_add(Decimal o) const;

  // Percent of `limit` this amount is, rounded down; limit 0 gives 100 when this > 0.
  uint32_t percent_of(Decimal limit) const;

  friend constexpr auto operator<=>(Decimal a, Decimal b) { return a.raw_ <=> b.raw_; }
  friend constexpr bool operator==(Decimal a, Decimal b) { return a.raw_ == b.raw_; }

 private:
  constexpr explicit Decimal(__int128 raw) : raw_(raw) {}
  __int128 raw_ = 0;
};

}  // namespace budgetd
