// make_plan: tiles ACSR into passes of tile tasks. Natural-order tiles carry bands, fixed columns,
// remainder blocks and gathered columns; stride-d segments (dilated, strided's residue classes) are
// tiled in residue-permuted order, where each class is a dense band with keys gathered at stride d.
// Band spans are split into partial | full | partial pieces so only edge tiles are masked.
#include "splat/plan.hpp"

#include <algorithm>
#include <map>

#include "common/int_math.hpp"
#include "format/segment_algebra.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

struct Builder {
  Plan& plan;
  const Acsr& a;
  int64_t bn;
  std::vector<int32_t> residue_segments;  // all segments tiled in residue order

  // Spans of segment k for local rows [r_lo, r_hi) of task; keys step `step` (1, or the residue stride).
  void segment_spans(Pass& pass, const TileTask& task, int32_t k, int32_t r_lo, int32_t r_hi) {
    const Segment& s = a.segments[size_t(k)];
    auto row = [&](int32_t r) { return segment_row(s, task.row_begin + task.row_stride * r); };
    const bool band = s.slope != 0 && s.stride == task.row_stride * s.slope;  // keys move with the rows
    const int64_t step = s.slope == 0 || band ? s.stride : 1;
    int64_t lo = INT64_MAX, hi = INT64_MIN, full_lo = INT64_MIN, full_hi = INT64_MAX;
    const SegmentRow top = row(r_lo), bottom = row(r_hi - 1);
    if ((band || s.slope == 0) && top.count > 0 && bottom.count > 0) {
      // Rows with keys form one interval and first/end move monotonically with the row: the end rows
      // give the hull and the fully covered range in O(1).
      lo = top.first, hi = bottom.first + (bottom.count - 1) * s.stride + 1;
      full_lo = bottom.first, full_hi = top.first + step * top.count;
    } else {
      for (int32_t r = r_lo; r < r_hi; ++r) {
        const SegmentRow sr = row(r);
        const int64_t end = sr.first + step * sr.count;
        if (sr.count > 0) lo = std::min(lo, sr.first), hi = std::max(hi, sr.first + (sr.count - 1) * s.stride + 1);
        full_lo = std::max(full_lo, sr.first);
        full_hi = sr.count > 0 ? std::min(full_hi, end) : INT64_MIN;
      }
    }
    if (lo >= hi) return;
    if (!band && s.slope == 0) {  // same keys for every row: one full span
      add(pass, KeySpan{SpanKind::Affine, lo, step, (hi - lo + step - 1) / step, r_lo, r_hi, k, true, 0});
      return;
    }
    const int64_t total = ceil_div(hi - lo, step);
    if (!band) {  // stride-d keys in natural row order (residue permutation off): masked hull
      add(pass, KeySpan{SpanKind::Affine, lo, 1, hi - lo, r_lo, r_hi, k, false, 0});
      return;
    }
    // In key-index units c (key = lo + step*c): full part aligned to block_n chunks from the hull start.
    int64_t f0 = full_lo > lo ? ceil_div(full_lo - lo, step) : 0, f1 = full_hi > lo ? (full_hi - lo) / step : 0;
    f0 = ceil_div(f0, bn) * bn;
    f1 = f0 + std::max<int64_t>(0, (f1 - f0) / bn) * bn;
    if (f1 <= f0) {
      add(pass, KeySpan{SpanKind::Affine, lo, step, total, r_lo, r_hi, k, false, 0});
      return;
    }
    if (f0 > 0) add(pass, KeySpan{SpanKind::Affine, lo, step, f0, r_lo, r_hi, k, false, 0});
    add(pass, KeySpan{SpanKind::Affine, lo + step * f0, step, f1 - f0, r_lo, r_hi, k, true, 0});
    if (f1 < total) add(pass, KeySpan{SpanKind::Affine, lo + step * f1, step, total - f1, r_lo, r_hi, k, false, 0});
  }

  void add(Pass& pass, const KeySpan& span) {
    if (span.key_count > 0 && span.row_hi > span.row_lo) pass.spans.push_back(span);
  }

  // segs: natural segments overlapping the task's rows.
  void block_spans(Pass& pass, const TileTask& task, const std::vector<int32_t>& segs) {
    const BlockRemainder& br = a.blocks;
    const int64_t t0 = task.row_begin, t1 = t0 + task.row_count;
    for (int64_t qb = t0 / br.block_rows; qb * br.block_rows < t1; ++qb) {
      const int64_t r0 = std::max(t0, qb * br.block_rows), r1 = std::min(t1, (qb + 1) * br.block_rows);
      for (int64_t e = br.row_ptr[size_t(qb)]; e < br.row_ptr[size_t(qb + 1)]; ++e) {
        const int64_t k0 = br.col_block[size_t(e)] * br.block_cols, k1 = std::min(a.n, k0 + br.block_cols);
        bool full = true;
        for (const std::vector<int32_t>* list : std::initializer_list<const std::vector<int32_t>*>{
                 &segs, &residue_segments})  // blocks exclude every segment
          for (int32_t k : *list) {
            const Segment& s = a.segments[size_t(k)];
            if (!full || s.row_end <= r0 || s.row_begin >= r1 || s.key_end <= k0 || s.key_begin >= k1) continue;
            const int64_t last = s.slope == 0 ? std::max(r0, s.row_begin) + 1 : r1;  // slope 0: rows agree
            for (int64_t i = std::max(r0, s.row_begin); i < std::min(last, s.row_end) && full; ++i)
              if (segment_row_count_in(s, i, k0, k1) > 0) full = false;
          }
        add(pass, KeySpan{SpanKind::Block, k0, 1, k1 - k0, int32_t(r0 - t0), int32_t(r1 - t0), -1, full, 0});
      }
    }
  }

  void gather_span(Pass& pass, const TileTask& task) {
    const ColumnRemainder& cr = a.columns;
    const int64_t t0 = task.row_begin, t1 = t0 + task.row_count;
    std::vector<int32_t> keys(cr.cols.begin() + cr.row_ptr[size_t(t0)], cr.cols.begin() + cr.row_ptr[size_t(t1)]);
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    if (keys.empty()) return;
    const int64_t count = int64_t(keys.size()), key_begin = int64_t(plan.gather_keys.size());
    const int64_t mask_offset = int64_t(plan.gather_mask.size()) * 64;
    plan.gather_keys.insert(plan.gather_keys.end(), keys.begin(), keys.end());
    plan.gather_mask.resize(plan.gather_mask.size() + size_t(ceil_div(count * task.row_count, 64)), 0);
    for (int64_t i = t0; i < t1; ++i)
      for (int64_t e = cr.row_ptr[size_t(i)]; e < cr.row_ptr[size_t(i + 1)]; ++e) {
        const int64_t c = std::lower_bound(keys.begin(), keys.end(), cr.cols[size_t(e)]) - keys.begin();
        const int64_t bit = mask_offset + (i - t0) * count + c;
        plan.gather_mask[size_t(bit / 64)] |= uint64_t(1) << (bit % 64);
      }
    add(pass, KeySpan{SpanKind::Gather, key_begin, 1, count, 0, task.row_count, -1, false, mask_offset});
  }

  // Key-index range [lo, hi) of segment k's keys in span sp for row i (band spans: unit steps in c).
  std::pair<int64_t, int64_t> span_range(int32_t k, const KeySpan& sp, int64_t i) const {
    const SegmentRow sr = segment_row(a.segments[size_t(k)], i);
    if (sr.count <= 0 || pos_mod(sr.first - sp.key_begin, sp.key_stride) != 0) return {0, 0};
    const int64_t c0 = floor_div(sr.first - sp.key_begin, sp.key_stride);
    const int64_t lo = std::max<int64_t>(0, c0), hi = std::min<int64_t>(sp.key_count, c0 + sr.count);
    return lo < hi ? std::make_pair(lo, hi) : std::make_pair<int64_t, int64_t>(0, 0);
  }

  // A band segment (slope 1, stride = the task's row stride = the span's key stride) seen from span m: row r
  // has key indices [max(C + tb + r, L), min(C + te + r, U)), non-empty for r in [r_lo, r_hi). Every range
  // end is linear in r except at the two breaks (r = L - C - tb, r = U - C - te).
  struct BandRows {
    int64_t r_lo, r_hi, break_lo, break_hi;
  };
  bool band_rows(int32_t k, const TileTask& task, const KeySpan& m, BandRows& b) const {
    const Segment& s = a.segments[size_t(k)];
    const int64_t d = m.key_stride, i0 = task.row_begin;
    if (s.slope != 1 || s.stride != d || task.row_stride != d || pos_mod(i0 + s.offset - m.key_begin, d) != 0)
      return false;
    const int64_t C = floor_div(i0 + s.offset - m.key_begin, d);
    const int64_t L = std::max<int64_t>(0, ceil_div(s.key_begin - m.key_begin, d));
    const int64_t U = std::min<int64_t>(m.key_count, ceil_div(s.key_end - m.key_begin, d));
    b.r_lo = std::max({int64_t(m.row_lo), ceil_div(s.row_begin - i0, d), L - C - s.t_end + 1});
    b.r_hi = std::min({int64_t(m.row_hi), ceil_div(s.row_end - i0, d), U - C - s.t_begin});
    if (L >= U || s.t_begin >= s.t_end) b.r_hi = b.r_lo;
    b.break_lo = L - C - s.t_begin, b.break_hi = U - C - s.t_end;
    return true;
  }

  // x and y become one span m (their key hull, segment2 = y's) if both are partial band spans of the same
  // rows on one key progression, the hull is no longer than both together, and in each row their ranges are
  // disjoint and leave at most one key between them. The gap between the ranges is piecewise linear in the
  // row, so checking it where both are non-empty at the ends and around each break covers every row: O(1).
  bool merge(const TileTask& task, const KeySpan& x, const KeySpan& y, KeySpan& m) const {
    if (x.kind != SpanKind::Affine || y.kind != SpanKind::Affine || x.full || y.full || x.segment == y.segment ||
        x.segment2 >= 0 || y.segment2 >= 0 || x.key_stride != y.key_stride || x.row_lo != y.row_lo ||
        x.row_hi != y.row_hi || pos_mod(y.key_begin - x.key_begin, x.key_stride) != 0)
      return false;
    m = x;
    m.key_begin = std::min(x.key_begin, y.key_begin);
    const int64_t end = std::max(x.key_begin + x.key_stride * x.key_count, y.key_begin + y.key_stride * y.key_count);
    m.key_count = (end - m.key_begin) / x.key_stride;
    m.segment2 = y.segment;
    BandRows bx, by;
    if (m.key_count > x.key_count + y.key_count || !band_rows(x.segment, task, m, bx) ||
        !band_rows(y.segment, task, m, by))
      return false;
    const int64_t lo = std::max(bx.r_lo, by.r_lo), hi = std::min(bx.r_hi, by.r_hi);
    for (int64_t r0 : {lo, hi - 1, bx.break_lo, bx.break_hi, by.break_lo, by.break_hi})
      for (int64_t r = r0 - 1; r <= r0 + 1; ++r) {
        if (r < lo || r >= hi) continue;
        const int64_t i = task.row_begin + task.row_stride * r;
        auto [a0, a1] = span_range(x.segment, m, i);
        auto [b0, b1] = span_range(y.segment, m, i);
        if (a0 == a1 || b0 == b1) return false;  // the closed form said both are non-empty: be safe
        if (b0 < a0) std::swap(a0, b0), std::swap(a1, b1);
        if (b0 < a1 || b0 > a1 + 1) return false;
      }
    return true;
  }

  void merge_spans(Pass& pass, const TileTask& task) {
    KeySpan m;
    for (size_t u = size_t(task.span_begin); u < pass.spans.size(); ++u)
      for (size_t w = u + 1; w < pass.spans.size(); ++w)
        if (merge(task, pass.spans[u], pass.spans[w], m)) {
          pass.spans[u] = m;
          pass.spans.erase(pass.spans.begin() + std::ptrdiff_t(w));
          break;
        }
  }

  void finish_task(Pass& pass, TileTask task, bool keep_empty) {
    // Merging tries every pair of the task's spans. It pays for the few split bands of strided-like patterns; a
    // task with many spans (an irregular composition's per-row segments) is left unmerged so planning stays linear.
    constexpr size_t kMergeSpansMax = 64;
    if (plan.options.merge_split_segments && pass.spans.size() - size_t(task.span_begin) <= kMergeSpansMax)
      merge_spans(pass, task);
    task.span_end = int32_t(pass.spans.size());
    for (int32_t s = task.span_begin; s < task.span_end; ++s) {
      const KeySpan& sp = pass.spans[size_t(s)];
      task.cost += int64_t(sp.row_hi - sp.row_lo) * sp.key_count;
    }
    plan.computed += task.cost;
    if (keep_empty || task.span_end > task.span_begin) pass.tasks.push_back(task);
  }

  void natural_pass(Pass& pass, const std::vector<int32_t>& segs) {
    const int64_t bm = plan.options.block_m, n = a.n, tiles = ceil_div(n, bm);
    std::vector<std::vector<int32_t>> per_tile(static_cast<size_t>(tiles));
    for (int32_t k : segs) {
      const Segment& s = a.segments[size_t(k)];
      for (int64_t t = s.row_begin / bm; t < tiles && t * bm < s.row_end; ++t) per_tile[size_t(t)].push_back(k);
    }
    for (int64_t t = 0; t < tiles; ++t) {
      TileTask task;
      task.row_begin = t * bm, task.row_stride = 1, task.row_count = int32_t(std::min(bm, n - t * bm));
      task.span_begin = int32_t(pass.spans.size());
      for (int32_t k : per_tile[size_t(t)]) {
        const Segment& s = a.segments[size_t(k)];
        const int32_t r_lo = int32_t(std::max<int64_t>(0, s.row_begin - task.row_begin));
        const int32_t r_hi = int32_t(std::min<int64_t>(task.row_count, s.row_end - task.row_begin));
        segment_spans(pass, task, k, r_lo, r_hi);
      }
      if (!a.blocks.empty()) block_spans(pass, task, per_tile[size_t(t)]);
      if (!a.columns.empty()) gather_span(pass, task);
      finish_task(pass, task, true);
    }
  }

  void residue_pass(Pass& pass, int64_t d, const std::vector<int32_t>& segs, bool keep_empty) {
    const int64_t bm = plan.options.block_m, n = a.n, classes = std::min(d, n);
    // The segments meeting each (class, tile), in segment order, so a tile never scans all of them. A segment of
    // fewer than d rows meets only the classes of its rows (per-row segments of irregular compositions: one).
    std::vector<std::vector<std::vector<int32_t>>> per_tile(static_cast<size_t>(classes));
    for (int64_t c = 0; c < classes; ++c) per_tile[size_t(c)].resize(size_t(ceil_div(ceil_div(n - c, d), bm)));
    auto bucket = [&](int32_t k, int64_t c) {
      const Segment& s = a.segments[size_t(k)];
      const int64_t rows = ceil_div(n - c, d);
      const int64_t lo = std::max<int64_t>(0, ceil_div(s.row_begin - c, d));
      const int64_t hi = std::min<int64_t>(rows, ceil_div(s.row_end - c, d));
      for (int64_t t = lo / bm; lo < hi && t <= (hi - 1) / bm; ++t) per_tile[size_t(c)][size_t(t)].push_back(k);
    };
    for (int32_t k : segs) {
      const Segment& s = a.segments[size_t(k)];
      if (s.row_end - s.row_begin >= classes) {
        for (int64_t c = 0; c < classes; ++c) bucket(k, c);
      } else {
        for (int64_t i = std::max<int64_t>(0, s.row_begin); i < std::min(s.row_end, n); ++i) bucket(k, pos_mod(i, d));
      }
    }
    for (int64_t c = 0; c < classes; ++c) {
      const int64_t rows = ceil_div(n - c, d);
      for (int64_t u0 = 0; u0 < rows; u0 += bm) {
        TileTask task;
        task.row_begin = c + d * u0, task.row_stride = d, task.row_count = int32_t(std::min(bm, rows - u0));
        task.span_begin = int32_t(pass.spans.size());
        for (int32_t k : per_tile[size_t(c)][size_t(u0 / bm)]) {
          const Segment& s = a.segments[size_t(k)];
          const int64_t lo = std::max<int64_t>(0, ceil_div(s.row_begin - task.row_begin, d));
          const int64_t hi = std::min<int64_t>(task.row_count, ceil_div(s.row_end - task.row_begin, d));
          if (lo < hi) segment_spans(pass, task, k, int32_t(lo), int32_t(hi));
        }
        finish_task(pass, task, keep_empty);
      }
    }
  }
};

}  // namespace

Plan make_plan(Acsr acsr, const PlanOptions& options) {
  require(options.block_m >= 1 && options.block_m <= 1024, "plan: block_m must be in [1, 1024]");
  require(options.block_n >= 1 && options.block_n <= 1 << 20, "plan: block_n must be positive");
  require(acsr.n > 0, "plan: empty ACSR");
  Plan plan;
  plan.acsr = std::move(acsr);
  plan.options = options;
  const Acsr& a = plan.acsr;
  std::vector<int32_t> natural;
  std::map<int64_t, std::vector<int32_t>> residue;  // stride -> segments
  for (size_t k = 0; k < a.segments.size(); ++k) {
    const Segment& s = a.segments[k];
    if (options.permute_residues && s.slope == 1 && s.stride > 1)
      residue[s.stride].push_back(int32_t(k));
    else
      natural.push_back(int32_t(k));
  }
  Builder b{plan, a, options.block_n, {}};
  for (const auto& [d, segs] : residue) b.residue_segments.insert(b.residue_segments.end(), segs.begin(), segs.end());
  const bool has_natural = !natural.empty() || !a.blocks.empty() || !a.columns.empty() || residue.empty();
  if (has_natural) {
    plan.passes.emplace_back();
    plan.passes.back().describe = "natural order";
    b.natural_pass(plan.passes.back(), natural);
  }
  for (const auto& [d, segs] : residue) {
    const bool first = plan.passes.empty();
    plan.passes.emplace_back();
    plan.passes.back().describe = "residue order, stride " + std::to_string(d);
    b.residue_pass(plan.passes.back(), d, segs, first);
  }
  for (Pass& p : plan.passes)
    std::stable_sort(p.tasks.begin(), p.tasks.end(),
                     [](const TileTask& x, const TileTask& y) { return x.cost > y.cost; });
  plan.useful = nnz(a);
  return plan;
}

int64_t Plan::tile_count() const {
  int64_t t = 0;
  for (const Pass& p : passes) t += int64_t(p.tasks.size());
  return t;
}

int64_t span_key(const Plan& plan, const KeySpan& span, int64_t c) {
  if (span.kind == SpanKind::Gather) return plan.gather_keys[size_t(span.key_begin + c)];
  return span.key_begin + span.key_stride * c;
}

bool span_entry_attended(const Plan& plan, const TileTask& task, const KeySpan& span, int32_t r, int64_t c) {
  if (r < span.row_lo || r >= span.row_hi || c < 0 || c >= span.key_count) return false;
  if (span.full) return true;
  const int64_t i = task.row_begin + task.row_stride * r, j = span_key(plan, span, c);
  switch (span.kind) {
    case SpanKind::Affine:
      return segment_contains(plan.acsr.segments[size_t(span.segment)], i, j) ||
             (span.segment2 >= 0 && segment_contains(plan.acsr.segments[size_t(span.segment2)], i, j));
    case SpanKind::Block:
      for (const Segment& s : plan.acsr.segments)
        if (segment_contains(s, i, j)) return false;
      return true;
    case SpanKind::Gather: {
      const int64_t bit = span.mask_offset + int64_t(r) * span.key_count + c;
      return (plan.gather_mask[size_t(bit / 64)] >> (bit % 64)) & 1;
    }
  }
  return false;
}

void add_transpose(Plan& plan) {
  if (plan.transposed) return;  // a plan's ACSR never changes after make_plan: one transpose is enough
  plan.transposed = std::make_shared<const Plan>(make_plan(transpose(plan.acsr), plan.options));
}

}  // namespace splat
