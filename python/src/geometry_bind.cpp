// splat._core.Geometry: what the context-parallel planner (python/splat/_cp_plan.py) asks of a pattern, answered
// from its ACSR and the ACSR's exact transpose. Every question is about a rectangle, queries [r0, r1) x keys
// [k0, k1): how many pairs attend (empty / full blocks), the hull of the keys its rows use (a halo's extent), the
// hull of the queries its keys serve (asked of the transpose: which rows need a halo), the largest i - j and
// j - i, and its mask. Each costs O(segments + listed blocks + rows with explicit columns) (the mask also its
// area), from the affine description: never an N x N scan. grid() counts a whole grid of rectangles in one call
// (the ring's (query shard, key shard) pairs), touching only the cells each segment meets.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <variant>

#include "bindings.hpp"
#include "common/int_math.hpp"
#include "format/segment_algebra.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

struct Box {
  int64_t r0, r1, k0, k1;
  bool empty() const { return r0 >= r1 || k0 >= k1; }
};

struct Geometry {
  Acsr a, t;  // the pattern and its transpose
};

Segment clip(const Segment& s, const Box& b) {
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

// Listed remainder blocks met by the box, as boxes (their cells all attend: a block's cells inside segments are
// nonzeros too, so hulls and masks may take the whole block; counts subtract the segments).
template <class F>
void for_blocks(const Acsr& a, const Box& b, F&& f) {
  if (a.blocks.empty() || b.empty()) return;
  const int64_t br = a.blocks.block_rows, bc = a.blocks.block_cols;
  for (int64_t qb = b.r0 / br; qb * br < b.r1; ++qb)
    for (int64_t e = a.blocks.row_ptr[size_t(qb)]; e < a.blocks.row_ptr[size_t(qb + 1)]; ++e) {
      const int64_t kb = a.blocks.col_block[size_t(e)];
      const Box c{std::max(b.r0, qb * br), std::min({b.r1, (qb + 1) * br, a.n}), std::max(b.k0, kb * bc),
                  std::min({b.k1, (kb + 1) * bc, a.n})};
      if (!c.empty()) f(c);
    }
}

// Explicit columns of rows in the box that fall in its keys: f(row, first, last, count).
template <class F>
void for_columns(const Acsr& a, const Box& b, F&& f) {
  if (a.columns.empty() || b.empty()) return;
  for (int64_t i = b.r0; i < b.r1; ++i) {
    const int32_t* p0 = a.columns.cols.data() + a.columns.row_ptr[size_t(i)];
    const int32_t* p1 = a.columns.cols.data() + a.columns.row_ptr[size_t(i + 1)];
    const int32_t* lo = std::lower_bound(p0, p1, int32_t(b.k0));
    const int32_t* hi = std::lower_bound(lo, p1, int32_t(std::min<int64_t>(b.k1, INT32_MAX)));
    if (lo < hi) f(i, int64_t(*lo), int64_t(hi[-1]), int64_t(hi - lo));
  }
}

Box checked(const Acsr& a, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
  require(0 <= r0 && r0 <= r1 && r1 <= a.n && 0 <= k0 && k0 <= k1 && k1 <= a.n,
          "geometry: the rectangle [" + std::to_string(r0) + ", " + std::to_string(r1) + ") x [" + std::to_string(k0) +
              ", " + std::to_string(k1) + ") is not inside [0, " + std::to_string(a.n) + ")^2");
  return {r0, r1, k0, k1};
}

int64_t segments_nnz(const std::vector<Segment>& segs, const Box& b) {
  int64_t total = 0;
  for (const Segment& s : segs) {
    const Segment c = clip(s, b);
    if (!segment_empty(c)) total += segment_nnz(c, c.row_begin, c.row_end);
  }
  return total;
}

// Pairs that attend in the box: segments, plus listed blocks less their segment cells, plus explicit columns
// (the three parts are disjoint).
int64_t box_nnz(const Acsr& a, const Box& b) {
  if (b.empty()) return 0;
  std::vector<Segment> near;
  for (const Segment& s : a.segments)
    if (!segment_empty(clip(s, b))) near.push_back(s);
  int64_t total = segments_nnz(near, b);
  for_blocks(a, b, [&](const Box& c) { total += (c.r1 - c.r0) * (c.k1 - c.k0) - segments_nnz(near, c); });
  for_columns(a, b, [&](int64_t, int64_t, int64_t, int64_t count) { total += count; });
  return total;
}

// Over the box's pairs: (smallest j - i, largest j - i, first key, last key); nullopt when it has none.
std::optional<std::tuple<int64_t, int64_t, int64_t, int64_t>> box_hull(const Acsr& a, const Box& b) {
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
  for_blocks(a, b, [&](const Box& c) { take(c.k0 - (c.r1 - 1), c.k1 - 1 - c.r0, c.k0, c.k1 - 1); });
  for_columns(a, b, [&](int64_t i, int64_t first, int64_t last, int64_t) { take(first - i, last - i, first, last); });
  if (!any) return std::nullopt;
  return std::make_tuple(dlo, dhi, klo, khi);
}

using IntArray = nb::ndarray<nb::numpy, int64_t, nb::ndim<1>>;

IntArray to_array(std::vector<int64_t>&& v) {
  auto* data = new std::vector<int64_t>(std::move(v));
  nb::capsule owner(data, [](void* p) noexcept { delete static_cast<std::vector<int64_t>*>(p); });
  return IntArray(data->data(), {data->size()}, owner);
}

// Counts of the grid cells [row_cuts[x], row_cuts[x+1]) x [key_cuts[y], key_cuts[y+1]) that are not empty, as
// (x, y, count) arrays sorted by (x, y). A segment visits the row cells it spans and, in each, only the key cells
// between its first and last key there.
std::tuple<IntArray, IntArray, IntArray> grid(const Acsr& a, const std::vector<int64_t>& rc,
                                              const std::vector<int64_t>& kc) {
  for (const auto* cuts : {&rc, &kc}) {
    require(cuts->size() >= 2, "geometry: a grid needs at least two cuts per axis");
    for (size_t x = 0; x < cuts->size(); ++x)
      require((*cuts)[x] >= 0 && (*cuts)[x] <= a.n && (x == 0 || (*cuts)[x - 1] <= (*cuts)[x]),
              "geometry: grid cuts must be sorted positions in [0, n]");
  }
  const int64_t nx = int64_t(rc.size()) - 1, ny = int64_t(kc.size()) - 1;
  std::unordered_map<int64_t, int64_t> cells;
  auto cell_of = [](const std::vector<int64_t>& cuts, int64_t p) {  // last cell whose start is <= p
    return int64_t(std::upper_bound(cuts.begin(), cuts.end(), p) - cuts.begin()) - 1;
  };
  const Box all{rc.front(), rc.back(), kc.front(), kc.back()};
  auto visit = [&](const Box& box, auto&& count) {  // every non-empty cell of the box
    for (int64_t x = std::max<int64_t>(0, cell_of(rc, box.r0)); x < nx && rc[size_t(x)] < box.r1; ++x) {
      const Box rows{std::max(box.r0, rc[size_t(x)]), std::min(box.r1, rc[size_t(x + 1)]), box.k0, box.k1};
      if (rows.empty()) continue;
      for (int64_t y = std::max<int64_t>(0, cell_of(kc, rows.k0)); y < ny && kc[size_t(y)] < rows.k1; ++y) {
        const Box c{rows.r0, rows.r1, std::max(rows.k0, kc[size_t(y)]), std::min(rows.k1, kc[size_t(y + 1)])};
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
      const Box rows{std::max(c.row_begin, rc[size_t(x)]), std::min(c.row_end, rc[size_t(x + 1)]), c.key_begin,
                     c.key_end};
      if (rows.empty()) continue;
      const auto k = key_range(clip(s, rows));
      if (!k) continue;
      visit({rows.r0, rows.r1, k->first, k->second + 1}, [&](const Box& cb) {
        const Segment cs = clip(s, cb);
        return segment_empty(cs) ? int64_t(0) : segment_nnz(cs, cs.row_begin, cs.row_end);
      });
    }
  }
  for_blocks(a, all, [&](const Box& blk) {
    std::vector<Segment> near;
    for (const Segment& s : a.segments)
      if (!segment_empty(clip(s, blk))) near.push_back(s);
    visit(blk, [&](const Box& cb) { return (cb.r1 - cb.r0) * (cb.k1 - cb.k0) - segments_nnz(near, cb); });
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
  std::vector<int64_t> xs, ys, cs;
  for (const auto& [key, v] : sorted) {
    xs.push_back(key / ny), ys.push_back(key % ny), cs.push_back(v);
  }
  return {to_array(std::move(xs)), to_array(std::move(ys)), to_array(std::move(cs))};
}

using MaskArray = nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>>;

MaskArray box_mask(const Acsr& a, const Box& b) {
  const int64_t rows = b.r1 - b.r0, cols = b.k1 - b.k0;
  auto* data = new std::vector<uint8_t>(size_t(rows * cols), 0);
  uint8_t* m = data->data();
  for (const Segment& s : a.segments) {
    const Segment c = clip(s, b);
    if (segment_empty(c)) continue;
    for (int64_t i = c.row_begin; i < c.row_end; ++i) {
      const SegmentRow k = segment_row(c, i);
      for (int64_t t = 0; t < k.count; ++t) m[(i - b.r0) * cols + k.first + c.stride * t - b.k0] = 1;
    }
  }
  for_blocks(a, b, [&](const Box& c) {
    for (int64_t i = c.r0; i < c.r1; ++i)
      std::fill(m + (i - b.r0) * cols + c.k0 - b.k0, m + (i - b.r0) * cols + c.k1 - b.k0, 1);
  });
  if (!a.columns.empty())
    for (int64_t i = b.r0; i < b.r1; ++i)
      for (int64_t e = a.columns.row_ptr[size_t(i)]; e < a.columns.row_ptr[size_t(i + 1)]; ++e) {
        const int64_t j = a.columns.cols[size_t(e)];
        if (j >= b.k0 && j < b.k1) m[(i - b.r0) * cols + j - b.k0] = 1;
      }
  nb::capsule owner(data, [](void* p) noexcept { delete static_cast<std::vector<uint8_t>*>(p); });
  return MaskArray(m, {size_t(rows), size_t(cols)}, owner);
}

std::vector<int64_t> row_cuts(const Acsr& a) {
  std::vector<int64_t> cuts{0, a.n};
  for (const Segment& s : a.segments)
    if (!segment_empty(s)) cuts.push_back(s.row_begin), cuts.push_back(s.row_end);
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  return cuts;
}

using HostMask = nb::ndarray<nb::ro, uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

Geometry make_geometry(const std::variant<std::string, HostMask>& pattern, int64_t n) {
  require(n > 0, "geometry: n must be positive");
  Geometry g;
  if (const auto* spec = std::get_if<std::string>(&pattern)) {
    const Pattern p = parse_pattern(*spec);
    validate_pattern(p, n);
    nb::gil_scoped_release release;
    g.a = analyse(p, n);
  } else {
    const HostMask& m = std::get<HostMask>(pattern);
    require(int64_t(m.shape(0)) == n && int64_t(m.shape(1)) == n,
            "geometry: the mask is " + std::to_string(m.shape(0)) + " x " + std::to_string(m.shape(1)) + " but n is " +
                std::to_string(n));
    nb::gil_scoped_release release;
    g.a = analyse_mask(m.data(), n);
  }
  nb::gil_scoped_release release;
  g.t = transpose(g.a);
  return g;
}

}  // namespace

void bind_geometry(nb::module_& m) {
  using Hull = std::optional<std::pair<int64_t, int64_t>>;
  nb::class_<Geometry>(m, "Geometry",
                       "A pattern's ACSR and its exact transpose at one N, for the context-parallel planner. "
                       "Rectangles are queries [r0, r1) x keys [k0, k1).")
      .def(nb::new_(&make_geometry), "pattern"_a, "n"_a, "pattern: a spec string or a uint8 [N, N] mask")
      .def_prop_ro("n", [](const Geometry& g) { return g.a.n; })
      .def_prop_ro("nnz", [](const Geometry& g) { return nnz(g.a); })
      .def(
          "count",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
            return box_nnz(g.a, checked(g.a, r0, r1, k0, k1));
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "Pairs that attend in the rectangle")
      .def(
          "key_span",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) -> Hull {
            const auto h = box_hull(g.a, checked(g.a, r0, r1, k0, k1));
            if (!h) return std::nullopt;
            return std::make_pair(std::get<2>(*h), std::get<3>(*h) + 1);
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "(lo, hi): the keys [lo, hi) that the rectangle's pairs use; None if none")
      .def(
          "query_span",
          [](const Geometry& g, int64_t k0, int64_t k1, int64_t r0, int64_t r1) -> Hull {
            const auto h = box_hull(g.t, checked(g.t, k0, k1, r0, r1));
            if (!h) return std::nullopt;
            return std::make_pair(std::get<2>(*h), std::get<3>(*h) + 1);
          },
          "k0"_a, "k1"_a, "r0"_a, "r1"_a,
          "(lo, hi): the queries [lo, hi) among rows [r0, r1) that use keys [k0, k1), from the transpose")
      .def(
          "reach",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) -> Hull {
            const auto h = box_hull(g.a, checked(g.a, r0, r1, k0, k1));
            if (!h) return std::nullopt;
            return std::make_pair(-std::get<0>(*h), std::get<1>(*h));
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "(left, right): the largest i - j and j - i in the rectangle; None if empty")
      .def(
          "grid",
          [](const Geometry& g, const std::vector<int64_t>& rc, const std::vector<int64_t>& kc) {
            return grid(g.a, rc, kc);
          },
          "row_cuts"_a, "key_cuts"_a, "(x, y, count) of the grid's non-empty cells, sorted")
      .def(
          "mask",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
            return box_mask(g.a, checked(g.a, r0, r1, k0, k1));
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "uint8 [r1 - r0, k1 - k0]: the rectangle's mask")
      .def(
          "row_cuts", [](const Geometry& g, bool transposed) { return row_cuts(transposed ? g.t : g.a); },
          "transposed"_a = false,
          "Sorted row bounds of the segments (of the transpose: key bounds, where global columns end)");
}

}  // namespace splat::py
