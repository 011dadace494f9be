// Questions about one rectangle of a pattern, queries [r0, r1) x keys [k0, k1), answered from its ACSR: how many
// pairs attend, the hull of the keys (or, asked of the transpose, of the queries) they use, the range of j - i, the
// rectangle's mask, and the counts of a whole grid of rectangles. Each costs O(segments + listed blocks + rows with
// explicit columns) (the mask also its area): never an N x N scan. Context parallelism plans halos and skips empty
// (query shard, key shard) pairs with them.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "splat/acsr.hpp"

namespace splat {

struct Rect {
  int64_t r0 = 0, r1 = 0, k0 = 0, k1 = 0;
  bool empty() const { return r0 >= r1 || k0 >= k1; }
};

// Over a rectangle's attending pairs (i, j): the smallest and largest j - i, and the first and last key.
struct RectHull {
  int64_t diff_lo = 0, diff_hi = 0;
  int64_t key_lo = 0, key_hi = 0;  // inclusive
};

// The rectangle, checked to lie inside [0, a.n)^2 (Error InvalidArgument otherwise).
Rect checked_rect(const Acsr& a, int64_t r0, int64_t r1, int64_t k0, int64_t k1);
int64_t rect_nnz(const Acsr& a, const Rect& r);
std::optional<RectHull> rect_hull(const Acsr& a, const Rect& r);
// The rectangle's mask, row-major [r1 - r0][k1 - k0], into out (zeroed first).
void rect_mask(const Acsr& a, const Rect& r, uint8_t* out);

// The non-empty cells [row_cuts[x], row_cuts[x+1]) x [key_cuts[y], key_cuts[y+1]) of a grid, sorted by (x, y),
// with their counts. The cuts are sorted positions in [0, n], at least two per axis (Error InvalidArgument).
struct GridCounts {
  std::vector<int64_t> x, y, count;
};
GridCounts grid_nnz(const Acsr& a, const std::vector<int64_t>& row_cuts, const std::vector<int64_t>& key_cuts);

// The sorted row bounds of the segments, with 0 and n (of a transpose: the key bounds, where global columns end).
std::vector<int64_t> segment_row_cuts(const Acsr& a);

}  // namespace splat
