// The exact transpose of ACSR, derived from the affine description (what backward's dK/dV direction tiles):
//   - a slope-1 segment (keys j = i + offset + stride*t) is a slope-1 segment of the transpose
//     (queries i = j - offset - stride*t): t' = -t, so [t_begin, t_end) becomes [1 - t_end, 1 - t_begin), and the
//     row range and the key clamp swap;
//   - slope-0 segments (the same key set on a row range) become rectangles rows x keys; a stride-s key set gives
//     one row per key (a sweep per residue class merges the row ranges of all segments holding that key). The
//     rectangles are re-cut into row slabs with touching key ranges merged and key ranges that continue across
//     slabs kept as one segment, so a block band stays one rectangle per block row, sink columns become global
//     rows and fixed's column families become rows that see every key;
//   - the block remainder swaps block rows and block columns (O(blocks)), the column remainder is CSR -> CSC
//     (O(nnz)).
// Entries map one to one, so the parts stay pairwise disjoint and the block remainder's "not in any segment"
// rule keeps its meaning.
#include <algorithm>
#include <map>
#include <queue>

#include "common/int_math.hpp"
#include "format/segment_algebra.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

struct Rect {
  int64_t r0, r1, k0, k1;  // rows [r0, r1) x keys [k0, k1)
};

Segment rect_segment(int64_t n, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
  Segment s;  // the convention of the spec analysis: keys offset + t, t in [k0, k1), clamp [0, n)
  s.row_begin = r0, s.row_end = r1, s.slope = 0, s.offset = 0, s.stride = 1;
  s.t_begin = k0, s.t_end = k1, s.key_begin = 0, s.key_end = n;
  return s;
}

// Slope 1: (i, j) with j - i = offset + stride*t, so i - j = -offset + stride*(-t): the t range [t_begin, t_end)
// becomes [1 - t_end, 1 - t_begin), and the row range and the key clamp swap. Nothing is tightened: transposing twice
// gives the segment back, and both halves of a split band (strided's residue class) keep equal row ranges, so the plan
// still merges them.
Segment transpose_band(const Segment& s) {
  Segment t;
  t.slope = 1, t.offset = -s.offset, t.stride = s.stride;
  t.t_begin = 1 - s.t_end, t.t_end = 1 - s.t_begin;
  t.row_begin = s.key_begin, t.row_end = s.key_end;
  t.key_begin = s.row_begin, t.key_end = s.row_end;
  return t;
}

// Slope 0 with stride 1: rows [row_begin, row_end) x one key interval, which simply swaps.
void interval_rect(const Segment& s, std::vector<Rect>& out) {
  const int64_t k0 = std::max(s.key_begin, s.offset + s.t_begin), k1 = std::min(s.key_end, s.offset + s.t_end);
  if (k0 < k1) out.push_back({k0, k1, s.row_begin, s.row_end});
}

// Slope 0 with stride > 1: rows [r0, r1) see keys residue + stride*u, u in [u0, u1). Its keys become rows of the
// transpose that are stride apart, so each gets its own rectangles (the slabs below may join them to neighbours
// from other classes, as with fixed's c adjacent column families).
struct ColumnRun {
  int64_t u0, u1, r0, r1;
};

// Disjoint row intervals, touching ones merged; each inserted interval can be removed again.
struct MergedIntervals {
  std::map<int64_t, int64_t> m;  // begin -> end
  void insert(int64_t a, int64_t b) {
    auto next = m.lower_bound(a);
    const bool join_next = next != m.end() && next->first == b;
    if (next != m.end() && next->first < b) fail(ErrorCode::Internal, "transpose: ACSR segments overlap");
    if (next != m.begin()) {
      auto prev = std::prev(next);
      if (prev->second > a) fail(ErrorCode::Internal, "transpose: ACSR segments overlap");
      if (prev->second == a) {
        prev->second = join_next ? next->second : b;
        if (join_next) m.erase(next);
        return;
      }
    }
    const int64_t end = join_next ? next->second : b;
    if (join_next) m.erase(next);
    m.emplace(a, end);
  }
  void remove(int64_t a, int64_t b) {
    auto it = m.upper_bound(a);
    if (it == m.begin() || std::prev(it)->second < b) fail(ErrorCode::Internal, "transpose: interval not present");
    --it;
    const int64_t lo = it->first, hi = it->second;
    m.erase(it);
    if (lo < a) m.emplace(lo, a);
    if (b < hi) m.emplace(b, hi);
  }
};

// One residue class (stride, residue): a sweep over u keeps the merged row intervals of the segments holding key
// residue + stride*u, so the cost is O(segments log segments) plus the rectangles emitted, never segments x keys.
void class_rects(int64_t stride, int64_t residue, std::vector<ColumnRun>& runs, std::vector<Rect>& out) {
  struct Event {
    int64_t u;
    bool insert;  // removals first at the same u
    int64_t r0, r1;
  };
  std::vector<Event> ev;
  ev.reserve(runs.size() * 2);
  for (const ColumnRun& c : runs) ev.push_back({c.u0, true, c.r0, c.r1}), ev.push_back({c.u1, false, c.r0, c.r1});
  std::sort(ev.begin(), ev.end(), [](const Event& x, const Event& y) {
    return x.u != y.u ? x.u < y.u : (x.insert != y.insert ? !x.insert : x.r0 < y.r0);
  });
  MergedIntervals rows;
  for (size_t e = 0; e < ev.size();) {
    const int64_t u = ev[e].u;
    for (; e < ev.size() && ev[e].u == u; ++e)
      ev[e].insert ? rows.insert(ev[e].r0, ev[e].r1) : rows.remove(ev[e].r0, ev[e].r1);
    const int64_t u_next = e < ev.size() ? ev[e].u : u;
    for (int64_t v = u; v < u_next && !rows.m.empty(); ++v) {
      const int64_t j = residue + stride * v;
      for (const auto& [r0, r1] : rows.m) out.push_back({j, j + 1, r0, r1});
    }
  }
}

using Intervals = std::vector<std::pair<int64_t, int64_t>>;

// Disjoint rectangles -> slope-0 segments: rows are cut where a rectangle starts or ends, touching key ranges of a
// slab merge (one span per tile instead of one per source rectangle), and a key range that continues into the next
// slab extends its segment. O(R log R + sum over slabs of the rectangles active there).
void emit_rects(int64_t n, std::vector<Rect> rects, std::vector<Segment>& out) {
  if (rects.empty()) return;
  std::vector<int64_t> cuts;
  cuts.reserve(rects.size() * 2);
  for (const Rect& r : rects) cuts.push_back(r.r0), cuts.push_back(r.r1);
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::sort(rects.begin(), rects.end(), [](const Rect& x, const Rect& y) { return x.r0 < y.r0; });
  std::map<int64_t, int64_t> active;         // key begin -> key end; disjoint within a slab
  using Exit = std::pair<int64_t, int64_t>;  // (row end, key begin)
  std::priority_queue<Exit, std::vector<Exit>, std::greater<Exit>> exits;
  struct Open {
    int64_t k0, k1, r0;  // key range [k0, k1) on rows [r0, last_r1)
  };
  std::vector<Open> open, still_open;  // sorted by key range
  Intervals cur;
  int64_t last_r1 = 0;
  const size_t first = out.size();
  auto close = [&](const Open& o) { out.push_back(rect_segment(n, o.r0, last_r1, o.k0, o.k1)); };
  size_t next = 0;
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const int64_t r0 = cuts[c], r1 = cuts[c + 1];
    while (!exits.empty() && exits.top().first <= r0) active.erase(exits.top().second), exits.pop();
    for (; next < rects.size() && rects[next].r0 <= r0; ++next) {
      if (!active.emplace(rects[next].k0, rects[next].k1).second)
        fail(ErrorCode::Internal, "transpose: ACSR segments overlap");
      exits.push({rects[next].r1, rects[next].k0});
    }
    cur.clear();
    for (const auto& [k0, k1] : active) {
      if (!cur.empty() && cur.back().second > k0) fail(ErrorCode::Internal, "transpose: ACSR segments overlap");
      if (!cur.empty() && cur.back().second == k0)
        cur.back().second = k1;
      else
        cur.push_back({k0, k1});
    }
    if (r0 != last_r1) {
      for (const Open& o : open) close(o);
      open.clear();
    }
    still_open.clear();
    size_t q = 0;  // both lists are sorted: one merge walk
    for (const auto& [k0, k1] : cur) {
      for (; q < open.size() && std::make_pair(open[q].k0, open[q].k1) < std::make_pair(k0, k1); ++q) close(open[q]);
      const bool same = q < open.size() && open[q].k0 == k0 && open[q].k1 == k1;
      still_open.push_back({k0, k1, same ? open[q++].r0 : r0});
    }
    for (; q < open.size(); ++q) close(open[q]);  // ranges that stop at r0
    open.swap(still_open);
    last_r1 = r1;
  }
  for (const Open& o : open) close(o);
  std::sort(out.begin() + std::ptrdiff_t(first), out.end(), [](const Segment& x, const Segment& y) {
    return x.row_begin != y.row_begin ? x.row_begin < y.row_begin : x.t_begin < y.t_begin;
  });
}

BlockRemainder transpose_blocks(const BlockRemainder& b, int64_t n) {
  if (b.empty()) return {};
  BlockRemainder t;
  t.block_rows = b.block_cols, t.block_cols = b.block_rows;
  const int64_t rows = ceil_div(n, t.block_rows), qbs = int64_t(b.row_ptr.size()) - 1;
  t.row_ptr.assign(size_t(rows + 1), 0);
  for (int32_t kb : b.col_block) {
    require(kb >= 0 && kb < rows, "transpose: block column out of range");
    ++t.row_ptr[size_t(kb + 1)];
  }
  for (int64_t k = 0; k < rows; ++k) t.row_ptr[size_t(k + 1)] += t.row_ptr[size_t(k)];
  t.col_block.resize(b.col_block.size());
  std::vector<int64_t> fill(t.row_ptr.begin(), t.row_ptr.end() - 1);
  for (int64_t qb = 0; qb < qbs; ++qb)  // ascending block rows: each transposed list comes out sorted
    for (int64_t e = b.row_ptr[size_t(qb)]; e < b.row_ptr[size_t(qb + 1)]; ++e)
      t.col_block[size_t(fill[size_t(b.col_block[size_t(e)])]++)] = int32_t(qb);
  return t;
}

ColumnRemainder transpose_columns(const ColumnRemainder& c, int64_t n) {
  if (c.empty()) return {};
  ColumnRemainder t;
  t.row_ptr.assign(size_t(n + 1), 0);
  for (int32_t j : c.cols) {
    require(j >= 0 && j < n, "transpose: column out of range");
    ++t.row_ptr[size_t(j + 1)];
  }
  for (int64_t j = 0; j < n; ++j) t.row_ptr[size_t(j + 1)] += t.row_ptr[size_t(j)];
  t.cols.resize(c.cols.size());
  std::vector<int64_t> fill(t.row_ptr.begin(), t.row_ptr.end() - 1);
  for (int64_t i = 0; i < n; ++i)  // ascending rows: each transposed row comes out sorted
    for (int64_t e = c.row_ptr[size_t(i)]; e < c.row_ptr[size_t(i + 1)]; ++e)
      t.cols[size_t(fill[size_t(c.cols[size_t(e)])]++)] = int32_t(i);
  return t;
}

}  // namespace

Acsr transpose(const Acsr& a) {
  Acsr t;
  t.n = a.n;
  std::vector<Rect> rects;
  std::map<std::pair<int64_t, int64_t>, std::vector<ColumnRun>> classes;  // (stride, residue) -> runs
  for (const Segment& s : a.segments) {
    if (segment_empty(s)) continue;
    if (s.slope == 1) {
      t.segments.push_back(transpose_band(s));
    } else if (s.slope != 0) {
      fail(ErrorCode::Internal, "transpose: segment slope must be 0 or 1");
    } else if (s.stride == 1) {
      interval_rect(s, rects);
    } else {
      const int64_t u0 = std::max(s.t_begin, ceil_div(s.key_begin - s.offset, s.stride));
      const int64_t u1 = std::min(s.t_end, floor_div(s.key_end - 1 - s.offset, s.stride) + 1);
      if (u0 >= u1) continue;
      // key = offset + stride*t = residue + stride*(t + shift)
      const int64_t residue = pos_mod(s.offset, s.stride), shift = floor_div(s.offset, s.stride);
      classes[{s.stride, residue}].push_back({u0 + shift, u1 + shift, s.row_begin, s.row_end});
    }
  }
  for (auto& [cls, runs] : classes) class_rects(cls.first, cls.second, runs, rects);
  emit_rects(a.n, std::move(rects), t.segments);
  t.blocks = transpose_blocks(a.blocks, a.n);
  t.columns = transpose_columns(a.columns, a.n);
  return t;
}

}  // namespace splat
