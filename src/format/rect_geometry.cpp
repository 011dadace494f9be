// Rectangle queries on an ACSR (include/splat/rect_geometry.hpp). Segments are clipped to the rectangle and
// answered in closed form; listed blocks and explicit columns are visited only where they meet it.
#include "splat/rect_geometry.hpp"

#include <algorithm>
#include <climits>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/int_math.hpp"
#include "format/segment_algebra.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

Segment clip(const Segment& s, const Rect& b) {
  Segment c = s;
  c.row_begin = std::max(s.row_begin, b.r0), c.row_end = std::min(s.row_end, b.r1);
  c.key_begin = std::max(s.key_begin, b.k0), c.key_end = std::min(s.key_end, b.k1);
  return c;
}

// (smallest, largest) j - i of a clipped segment's pairs, if it has any. Slope 1: j - i = offset + stride*t, and a
// difference d is realised by some row iff key_begin - d < row_end and row_begin < key_end - d. Slope 0: the same
// keys on every row.
std::optional<std::pair<int64_t, int64_t>> diff_range(const Segment& c) {
  if (segment_empty(c)) return std::nullopt;
  if (c.slope == 0) {
    const SegmentRow k = segment_row(c, c.row_begin);
    if (k.count == 0) return std::nullopt;
    return std::make_pair(k.first - (c.row_end - 1), k.first + c.stride * (k.count - 1) - c.row_begin);
  }
  const int64_t lo = c.key_begin - c.row_end + 1, hi = c.key_end - 1 - c.row_begin;
  const int64_t t0 = std::max(c.t_begin, ceil_div(lo - c.offset, c.stride));
  const int64_t t1 = std::min(c.t_end - 1, floor_div(hi - c.offset, c.stride));
  if (t0 > t1) return std::nullopt;
  return std::make_pair(c.offset + c.stride * t0, c.offset + c.stride * t1);
}

// (first key, last key) of a clipped segment's pairs.
std::optional<std::pair<int64_t, int64_t>> key_range(const Segment& c) {
  const auto d = diff_range(c);
  if (!d) return std::nullopt;
  if (c.slope == 0) return std::make_pair(d->first + c.row_end - 1, d->second + c.row_begin);
  return std::make_pair(std::max(c.row_begin + d->first, c.key_begin),
                        std::min(c.row_end - 1 + d->second, c.key_end - 1));
}

// Listed remainder blocks met by the rectangle, as boxes (their cells all attend: a block's cells inside segments are
// nonzeros too, so hulls and masks may take the whole block; counts subtract the segments).
template <class F>
void for_blocks(const Acsr& a, const Rect& b, F&& f) {
  if (a.blocks.empty() || b.empty()) return;
  const int64_t br = a.blocks.block_rows, bc = a.blocks.block_cols;
  for (int64_t qb = b.r0 / br; qb * br < b.r1; ++qb)
    for (int64_t e = a.blocks.row_ptr[size_t(qb)]; e < a.blocks.row_ptr[size_t(qb + 1)]; ++e) {
      const int64_t kb = a.blocks.col_block[size_t(e)];
      const Rect c{std::max(b.r0, qb * br), std::min({b.r1, (qb + 1) * br, a.n}), std::max(b.k0, kb * bc),
                   std::min({b.k1, (kb + 1) * bc, a.n})};
      if (!c.empty()) f(c);
    }
}

// Explicit columns of rows in the rectangle that fall in its keys: f(row, first, last, count).
template <class F>
void for_columns(const Acsr& a, const Rect& b, F&& f) {
  if (a.columns.empty() || b.empty()) return;
  for (int64_t i = b.r0; i < b.r1; ++i) {
    const int32_t* p0 = a.columns.cols.data() + a.columns.row_ptr[size_t(i)];
    const int32_t* p1 = a.columns.cols.data() + a.columns.row_ptr[size_t(i + 1)];
    const int32_t* lo = std::lower_bound(p0, p1, int32_t(b.k0));
    const int32_t* hi = std::lower_bound(lo, p1, int32_t(std::min<int64_t>(b.k1, INT32_MAX)));
    if (lo < hi) f(i, int64_t(*lo), int64_t(hi[-1]), int64_t(hi - lo));
  }
}

int64_t segments_nnz(const std::vector<Segment>& segs, const Rect& b) {
  int64_t total = 0;
  for (const Segment& s : segs) {
    const Segment c = clip(s, b);
    if (!segment_empty(c)) total += segment_nnz(c, c.row_begin, c.row_end);
  }
  return total;
}

}  // namespace

Rect checked_rect(const Acsr& a, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
  require(0 <= r0 && r0 <= r1 && r1 <= a.n && 0 <= k0 && k0 <= k1 && k1 <= a.n,
          "the rectangle [" + std::to_string(r0) + ", " + std::to_string(r1) + ") x [" + std::to_string(k0) + ", " +
              std::to_string(k1) + ") is not inside [0, " + std::to_string(a.n) + ")^2");
  return {r0, r1, k0, k1};
}

// Pairs that attend in the rectangle: segments, plus listed blocks less their segment cells, plus explicit columns
// (the three parts are disjoint).
int64_t rect_nnz(const Acsr& a, const Rect& b) {
  if (b.empty()) return 0;
  std::vector<Segment> near;
  for (const Segment& s : a.segments)
    if (!segment_empty(clip(s, b))) near.push_back(s);
  int64_t total = segments_nnz(near, b);
  for_blocks(a, b, [&](const Rect& c) { total += (c.r1 - c.r0) * (c.k1 - c.k0) - segments_nnz(near, c); });
  for_columns(a, b, [&](int64_t, int64_t, int64_t, int64_t count) { total += count; });
  return total;
}

std::optional<RectHull> rect_hull(const Acsr& a, const Rect& b) {
  if (b.empty()) return std::nullopt;
  bool any = false;
  int64_t dlo = 0, dhi = 0, klo = 0, khi = 0;
  auto take = [&](int64_t d0, int64_t d1, int64_t j0, int64_t j1) {
    if (!any) {
      dlo = d0, dhi = d1, klo = j0, khi = j1, any = true;
      return;
    }
    dlo = std::min(dlo, d0), dhi = std::max(dhi, d1), klo = std::min(klo, j0), khi = std::max(khi, j1);
  };
  for (const Segment& s : a.segments) {
    const Segment c = clip(s, b);
    const auto d = diff_range(c);
    if (!d) continue;
    const auto k = key_range(c);
    take(d->first, d->second, k->first, k->second);
  }
  for_blocks(a, b, [&](const Rect& c) { take(c.k0 - (c.r1 - 1), c.k1 - 1 - c.r0, c.k0, c.k1 - 1); });
  for_columns(a, b, [&](int64_t i, int64_t first, int64_t last, int64_t) { take(first - i, last - i, first, last); });
  if (!any) return std::nullopt;
  return RectHull{dlo, dhi, klo, khi};
}

// Counts of the grid cells [row_cuts[x], row_cuts[x+1]) x [key_cuts[y], key_cuts[y+1]) that are not empty, as
// (x, y, count) arrays sorted by (x, y). A segment visits the row cells it spans and, in each, only the key cells
// between its first and last key there.
GridCounts grid_nnz(const Acsr& a, const std::vector<int64_t>& rc, const std::vector<int64_t>& kc) {
  for (const auto* cuts : {&rc, &kc}) {
    require(cuts->size() >= 2, "a grid needs at least two cuts per axis");
    for (size_t x = 0; x < cuts->size(); ++x)
      require((*cuts)[x] >= 0 && (*cuts)[x] <= a.n && (x == 0 || (*cuts)[x - 1] <= (*cuts)[x]),
              "grid cuts must be sorted positions in [0, n]");
  }
  const int64_t nx = int64_t(rc.size()) - 1, ny = int64_t(kc.size()) - 1;
  std::unordered_map<int64_t, int64_t> cells;
  auto cell_of = [](const std::vector<int64_t>& cuts, int64_t p) {  // last cell whose start is <= p
    return int64_t(std::upper_bound(cuts.begin(), cuts.end(), p) - cuts.begin()) - 1;
  };
  const Rect all{rc.front(), rc.back(), kc.front(), kc.back()};
  auto visit = [&](const Rect& box, auto&& count) {  // every non-empty cell of the box
    for (int64_t x = std::max<int64_t>(0, cell_of(rc, box.r0)); x < nx && rc[size_t(x)] < box.r1; ++x) {
      const Rect rows{std::max(box.r0, rc[size_t(x)]), std::min(box.r1, rc[size_t(x + 1)]), box.k0, box.k1};
      if (rows.empty()) continue;
      for (int64_t y = std::max<int64_t>(0, cell_of(kc, rows.k0)); y < ny && kc[size_t(y)] < rows.k1; ++y) {
        const Rect c{rows.r0, rows.r1, std::max(rows.k0, kc[size_t(y)]), std::min(rows.k1, kc[size_t(y + 1)])};
        if (!c.empty()) {
          const int64_t v = count(c);
          if (v) cells[x * ny + y] += v;
        }
      }
    }
  };
  for (const Segment& s : a.segments) {
    const Segment c = clip(s, all);
    if (segment_empty(c)) continue;
    for (int64_t x = std::max<int64_t>(0, cell_of(rc, c.row_begin)); x < nx && rc[size_t(x)] < c.row_end; ++x) {
      const Rect rows{std::max(c.row_begin, rc[size_t(x)]), std::min(c.row_end, rc[size_t(x + 1)]), c.key_begin,
                      c.key_end};
      if (rows.empty()) continue;
      const auto k = key_range(clip(s, rows));
      if (!k) continue;
      visit({rows.r0, rows.r1, k->first, k->second + 1}, [&](const Rect& cb) {
        const Segment cs = clip(s, cb);
        return segment_empty(cs) ? int64_t(0) : segment_nnz(cs, cs.row_begin, cs.row_end);
      });
    }
  }
  for_blocks(a, all, [&](const Rect& blk) {
    std::vector<Segment> near;
    for (const Segment& s : a.segments)
      if (!segment_empty(clip(s, blk))) near.push_back(s);
    visit(blk, [&](const Rect& cb) { return (cb.r1 - cb.r0) * (cb.k1 - cb.k0) - segments_nnz(near, cb); });
  });
  if (!a.columns.empty())
    for (int64_t i = all.r0; i < all.r1; ++i) {
      const int64_t x = cell_of(rc, i);
      if (x < 0 || x >= nx) continue;
      for (int64_t e = a.columns.row_ptr[size_t(i)]; e < a.columns.row_ptr[size_t(i + 1)]; ++e) {
        const int64_t j = a.columns.cols[size_t(e)], y = cell_of(kc, j);
        if (j >= all.k0 && j < all.k1 && y >= 0 && y < ny) cells[x * ny + y] += 1;
      }
    }
  std::vector<std::pair<int64_t, int64_t>> sorted(cells.begin(), cells.end());
  std::sort(sorted.begin(), sorted.end());
  GridCounts g;
  for (const auto& [key, v] : sorted) g.x.push_back(key / ny), g.y.push_back(key % ny), g.count.push_back(v);
  return g;
}

void rect_mask(const Acsr& a, const Rect& b, uint8_t* m) {
  const int64_t rows = b.r1 - b.r0, cols = b.k1 - b.k0;
  std::fill(m, m + rows * cols, uint8_t(0));
  for (const Segment& s : a.segments) {
    const Segment c = clip(s, b);
    if (segment_empty(c)) continue;
    for (int64_t i = c.row_begin; i < c.row_end; ++i) {
      const SegmentRow k = segment_row(c, i);
      for (int64_t t = 0; t < k.count; ++t) m[(i - b.r0) * cols + k.first + c.stride * t - b.k0] = 1;
    }
  }
  for_blocks(a, b, [&](const Rect& c) {
    for (int64_t i = c.r0; i < c.r1; ++i)
      std::fill(m + (i - b.r0) * cols + c.k0 - b.k0, m + (i - b.r0) * cols + c.k1 - b.k0, 1);
  });
  if (!a.columns.empty())
    for (int64_t i = b.r0; i < b.r1; ++i)
      for (int64_t e = a.columns.row_ptr[size_t(i)]; e < a.columns.row_ptr[size_t(i + 1)]; ++e) {
        const int64_t j = a.columns.cols[size_t(e)];
        if (j >= b.k0 && j < b.k1) m[(i - b.r0) * cols + j - b.k0] = 1;
      }
}

std::vector<int64_t> segment_row_cuts(const Acsr& a) {
  std::vector<int64_t> cuts{0, a.n};
  for (const Segment& s : a.segments)
    if (!segment_empty(s)) cuts.push_back(s.row_begin), cuts.push_back(s.row_end);
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  return cuts;
}

}  // namespace splat
