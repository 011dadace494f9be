// Integer helpers for affine index arithmetic (floor/ceil division for negative operands, gcd/lcm, CRT),
// and checked arithmetic for sizes: a product of user-given sizes that does not fit is an error, never
// a wrapped (signed overflow: undefined) value.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <string>

#include "splat/error.hpp"

namespace splat {

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
// b > 0
inline int64_t ceil_div(int64_t a, int64_t b) {
  return -floor_div(-a, b);
}
inline int64_t pos_mod(int64_t a, int64_t b) {
  return a - floor_div(a, b) * b;
}

// Modular inverse of a mod m (gcd(a, m) == 1, m >= 1).
inline int64_t mod_inverse(int64_t a, int64_t m) {
  if (m == 1) return 0;
  __int128 t = 0, new_t = 1, r = m, new_r = pos_mod(a, m);
  while (new_r != 0) {
    __int128 q = r / new_r, tmp = t - q * new_t;
    t = new_t, new_t = tmp;
    tmp = r - q * new_r;
    r = new_r, new_r = tmp;
  }
  if (t < 0) t += m;
  return int64_t(t);
}

// a * b and a + b, false (out untouched) on int64 overflow.
inline bool mul_fits(int64_t a, int64_t b, int64_t& out) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return false;
  out = r;
  return true;
}
inline bool add_fits(int64_t a, int64_t b, int64_t& out) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return false;
  out = r;
  return true;
}

// The product of non-negative sizes, or Error(InvalidArgument) naming `what` and the factors on overflow.
// (The message is built only on failure: this runs on every call's sizes.)
inline int64_t checked_product(std::initializer_list<int64_t> factors, const std::string& what) {
  int64_t p = 1;
  bool ok = true;
  for (int64_t f : factors) ok = ok && f >= 0 && mul_fits(p, f, p);
  if (ok) return p;
  std::string shown;
  for (int64_t f : factors) shown += (shown.empty() ? "" : " * ") + std::to_string(f);
  for (int64_t f : factors)
    if (f < 0) fail(ErrorCode::InvalidArgument, what + ": negative size in " + shown);
  fail(ErrorCode::InvalidArgument, what + ": " + shown + " does not fit in 64 bits (sizes too large)");
}
inline int64_t checked_sum(std::initializer_list<int64_t> terms, const std::string& what) {
  int64_t s = 0;
  for (int64_t t : terms)
    require(add_fits(s, t, s), what + ": the sum of sizes does not fit in 64 bits (sizes too large)");
  return s;
}
// checked_product(...) * item bytes as a size_t (for allocations).
inline size_t checked_bytes(std::initializer_list<int64_t> factors, size_t item, const std::string& what) {
  int64_t elems = checked_product(factors, what), bytes = 0;
  require(mul_fits(elems, int64_t(item), bytes), what + ": byte count does not fit in 64 bits (sizes too large)");
  return size_t(bytes);
}

}  // namespace splat
