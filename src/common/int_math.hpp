// Integer helpers for affine index arithmetic (floor/ceil division for negative operands, gcd/lcm, CRT).
#pragma once
#include <cstdint>
#include <numeric>

namespace splat {

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }  // b > 0
inline int64_t pos_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

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

}  // namespace splat
