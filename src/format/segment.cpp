// Affine segments: per-row evaluation and the exact set algebra used by the analysis
// (difference for unions, intersection for '&'), all in O(1) per segment pair.
#include "format/segment_algebra.hpp"

#include <algorithm>

#include "common/int_math.hpp"

namespace splat {

SegmentRow segment_row(const Segment& s, int64_t i) {
  if (i < s.row_begin || i >= s.row_end || s.key_begin >= s.key_end || s.t_begin >= s.t_end) return {};
  const int64_t base = s.slope * i + s.offset;
  if (s.stride == 1) {  // the common case needs no division
    const int64_t t0 = std::max(s.t_begin, s.key_begin - base), t1 = std::min(s.t_end, s.key_end - base);
    return {base + t0, std::max<int64_t>(0, t1 - t0)};
  }
  const int64_t t0 = std::max(s.t_begin, ceil_div(s.key_begin - base, s.stride));
  const int64_t t1 = std::min(s.t_end, floor_div(s.key_end - 1 - base, s.stride) + 1);
  if (t1 <= t0) return {base + s.stride * t0, 0};
  return {base + s.stride * t0, t1 - t0};
}

bool segment_contains(const Segment& s, int64_t i, int64_t j) {
  if (i < s.row_begin || i >= s.row_end || j < s.key_begin || j >= s.key_end) return false;
  const int64_t d = j - (s.slope * i + s.offset);
  if (pos_mod(d, s.stride) != 0) return false;
  const int64_t t = floor_div(d, s.stride);
  return t >= s.t_begin && t < s.t_end;
}

int64_t segment_row_count_in(const Segment& s, int64_t i, int64_t k0, int64_t k1) {
  Segment c = s;
  c.key_begin = std::max(s.key_begin, k0);
  c.key_end = std::min(s.key_end, k1);
  return segment_row(c, i).count;
}

namespace {
// sum over i in [x, y) of max(0, alpha + beta*i), beta in {-1, 0, 1}.
__int128 sum_positive_linear(int64_t x, int64_t y, int64_t alpha, int64_t beta) {
  if (x >= y) return 0;
  if (beta == 0) return __int128(std::max<int64_t>(0, alpha)) * (y - x);
  if (beta == 1) {
    const int64_t start = std::max(x, 1 - alpha);
    if (start >= y) return 0;
    return __int128(y - start) * alpha + __int128(start + y - 1) * (y - start) / 2;
  }
  const int64_t end = std::min(y, alpha);
  if (end <= x) return 0;
  return __int128(end - x) * alpha - __int128(x + end - 1) * (end - x) / 2;
}
}  // namespace

// sum over u in [u0, u1) of max(0, min(te, hi - u) - max(tb, lo - u)): a clipped band, linear between
// two breakpoints.
__int128 band_sum(int64_t u0, int64_t u1, int64_t tb, int64_t te, int64_t hi, int64_t lo) {
  const int64_t p1 = hi - te, p2 = lo - tb;  // regimes change after these rows
  int64_t cuts[4] = {u0, std::clamp(p1 + 1, u0, u1), std::clamp(p2 + 1, u0, u1), u1};
  std::sort(cuts + 1, cuts + 3);
  __int128 total = 0;
  for (int k = 0; k < 3; ++k) {
    const int64_t x = cuts[k], y = cuts[k + 1];
    if (x >= y) continue;
    const int64_t ua = x <= p1 ? te : hi, ub = x <= p1 ? 0 : -1;
    const int64_t la = x <= p2 ? lo : tb, lb = x <= p2 ? -1 : 0;
    total += sum_positive_linear(x, y, ua - la, ub - lb);
  }
  return total;
}

int64_t segment_nnz(const Segment& s, int64_t r0, int64_t r1) {
  r0 = std::max(r0, s.row_begin), r1 = std::min(r1, s.row_end);
  if (r0 >= r1 || segment_empty(s)) return 0;
  if (s.slope == 0) return segment_row(s, r0).count * (r1 - r0);  // the same keys on every row
  if (s.slope != 1 || s.stride > r1 - r0) {
    int64_t total = 0;
    for (int64_t i = r0; i < r1; ++i) total += segment_row(s, i).count;
    return total;
  }
  // Rows r0 + c + stride*u share a residue class; within it count(u) is a clipped band in u.
  __int128 total = 0;
  for (int64_t c = 0; c < s.stride; ++c) {
    const int64_t first = r0 + c, rows = ceil_div(r1 - first, s.stride), base = first + s.offset;
    const int64_t lo = ceil_div(s.key_begin - base, s.stride), hi = floor_div(s.key_end - 1 - base, s.stride) + 1;
    total += band_sum(0, rows, s.t_begin, s.t_end, hi, lo);
  }
  return int64_t(total);
}

bool segment_empty(const Segment& s) {
  return s.row_begin >= s.row_end || s.key_begin >= s.key_end || s.t_begin >= s.t_end;
}

namespace {
bool is_column_interval(const Segment& s) { return s.slope == 0 && s.stride == 1; }

void push(std::vector<Segment>& out, const Segment& s) {
  if (!segment_empty(s)) out.push_back(s);
}
}  // namespace

std::optional<std::vector<Segment>> segment_subtract(const Segment& b, const Segment& a) {
  std::vector<Segment> out;
  const int64_t r0 = std::max(a.row_begin, b.row_begin), r1 = std::min(a.row_end, b.row_end);
  const int64_t k0 = std::max(a.key_begin, b.key_begin), k1 = std::min(a.key_end, b.key_end);
  if (r0 >= r1 || k0 >= k1 || segment_empty(a) || segment_empty(b)) {
    push(out, b);
    return out;
  }
  Segment x = b;
  x.row_end = r0;
  push(out, x);
  x = b;
  x.row_begin = r1;
  push(out, x);
  Segment c = b;
  c.row_begin = r0, c.row_end = r1;
  x = c;
  x.key_end = k0;
  push(out, x);
  x = c;
  x.key_begin = k1;
  push(out, x);
  c.key_begin = k0, c.key_end = k1;

  if (is_column_interval(a)) {  // a removes the same key interval from every row
    const int64_t c0 = std::max(k0, a.offset + a.t_begin), c1 = std::min(k1, a.offset + a.t_end);
    if (c0 >= c1) {
      push(out, c);
    } else {
      x = c, x.key_end = c0, push(out, x);
      x = c, x.key_begin = c1, push(out, x);
    }
    return out;
  }
  if (a.slope != c.slope) return std::nullopt;
  // Same slope: work with delta = j - slope*i, where both are arithmetic progressions.
  const int64_t a0 = a.offset + a.stride * a.t_begin, a1 = a.offset + a.stride * (a.t_end - 1);
  const int64_t tlo = std::max(c.t_begin, ceil_div(a0 - c.offset, c.stride));
  const int64_t thi = std::min(c.t_end, floor_div(a1 - c.offset, c.stride) + 1);
  if (tlo >= thi) {
    push(out, c);
    return out;
  }
  x = c, x.t_end = tlo, push(out, x);
  x = c, x.t_begin = thi, push(out, x);
  const int64_t g = std::gcd(c.stride, a.stride), diff = a.offset - c.offset;
  if (pos_mod(diff, g) != 0) {  // no common element
    x = c, x.t_begin = tlo, x.t_end = thi, push(out, x);
    return out;
  }
  const int64_t p = a.stride / g;  // inside the hull, a removes every p-th t of c
  if (p == 1) return out;
  if (p > 9) return std::nullopt;
  const int64_t t0 = int64_t((__int128(pos_mod(diff / g, p)) * mod_inverse(c.stride / g, p)) % p);
  for (int64_t q = 0; q < p; ++q) {
    if (q == t0) continue;
    const int64_t first = tlo + pos_mod(q - tlo, p);
    if (first >= thi) continue;
    x = c;
    x.offset = c.offset + c.stride * first;
    x.stride = c.stride * p;
    x.t_begin = 0;
    x.t_end = ceil_div(thi - first, p);
    push(out, x);
  }
  return out;
}

std::optional<std::optional<Segment>> segment_intersect(const Segment& a, const Segment& b) {
  Segment x;
  x.row_begin = std::max(a.row_begin, b.row_begin), x.row_end = std::min(a.row_end, b.row_end);
  x.key_begin = std::max(a.key_begin, b.key_begin), x.key_end = std::min(a.key_end, b.key_end);
  if (x.row_begin >= x.row_end || x.key_begin >= x.key_end || segment_empty(a) || segment_empty(b))
    return std::optional<Segment>();
  auto restrict_keys = [&](const Segment& interval, const Segment& other) -> std::optional<Segment> {
    Segment y = other;
    y.row_begin = x.row_begin, y.row_end = x.row_end;
    y.key_begin = std::max(x.key_begin, interval.offset + interval.t_begin);
    y.key_end = std::min(x.key_end, interval.offset + interval.t_end);
    if (segment_empty(y)) return std::nullopt;
    return y;
  };
  if (is_column_interval(a)) return restrict_keys(a, b);
  if (is_column_interval(b)) return restrict_keys(b, a);
  if (a.slope != b.slope) return std::nullopt;
  // Chinese remainder theorem on delta = j - slope*i.
  const int64_t g = std::gcd(a.stride, b.stride), diff = b.offset - a.offset;
  if (pos_mod(diff, g) != 0) return std::optional<Segment>();
  const int64_t m = b.stride / g;
  const int64_t k = int64_t((__int128(pos_mod(diff / g, m)) * mod_inverse(a.stride / g, m)) % m);
  const int64_t x0 = a.offset + a.stride * k, lcm = a.stride * m;
  const int64_t lo = std::max(a.offset + a.stride * a.t_begin, b.offset + b.stride * b.t_begin);
  const int64_t hi = std::min(a.offset + a.stride * (a.t_end - 1), b.offset + b.stride * (b.t_end - 1));
  x.slope = a.slope;
  x.offset = x0;
  x.stride = lcm;
  x.t_begin = ceil_div(lo - x0, lcm);
  x.t_end = floor_div(hi - x0, lcm) + 1;
  if (segment_empty(x)) return std::optional<Segment>();
  return std::optional<Segment>(x);
}

}  // namespace splat
