#include "span_masks.hpp"

#include <algorithm>

namespace splat::cpu {

namespace {

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}
int64_t ceil_div(int64_t a, int64_t b) {
  return -floor_div(-a, b);
}

// Affine span: keys kb + ks*c. Row i's keys in the segment are first + ss*t, t < count. When ks is
// a multiple of ss the attended c form one interval (computed in O(1)); otherwise test each entry.
void affine_row(const Segment& seg, const KeySpan& span, int64_t i, uint64_t bit, uint64_t* w) {
  const SegmentRow sr = segment_row(seg, i);
  if (sr.count <= 0) return;
  const int64_t ss = seg.stride, ks = span.key_stride, kb = span.key_begin, kc = span.key_count;
  if (ks > 0 && ss > 0 && ks % ss == 0) {
    if (((kb - sr.first) % ss + ss) % ss != 0) return;  // the span's keys miss this row's progression
    const int64_t last = sr.first + ss * (sr.count - 1);
    const int64_t lo = std::max<int64_t>(0, ceil_div(sr.first - kb, ks));
    const int64_t hi = std::min<int64_t>(kc, floor_div(last - kb, ks) + 1);
    for (int64_t c = lo; c < hi; ++c) w[c] |= bit;
    return;
  }
  if (ks == 1) {  // unit-step span over a strided segment (residue permutation off): walk the segment
    const int64_t t_lo = std::max<int64_t>(0, ceil_div(kb - sr.first, ss));
    const int64_t t_hi = std::min<int64_t>(sr.count, ceil_div(kb + kc - sr.first, ss));
    for (int64_t t = t_lo; t < t_hi; ++t) w[sr.first + ss * t - kb] |= bit;
    return;
  }
  for (int64_t c = 0; c < kc; ++c)
    if (segment_contains(seg, i, kb + ks * c)) w[c] |= bit;
}

}  // namespace

void fill_span_words(const Plan& plan, const TileTask& task, const KeySpan& span, int subtile, uint64_t* w) {
  const int64_t kc = span.key_count;
  std::fill(w, w + kc, uint64_t(0));
  const int32_t base = subtile * kLanes;
  const int32_t r_lo = std::max(span.row_lo, base);
  const int32_t r_hi = std::min({span.row_hi, base + kLanes, task.row_count});
  if (r_lo >= r_hi) return;

  // Block spans: attended = not in any segment touching the block (no shortlist vector: this runs inside
  // parallel regions, where an allocation failure would terminate).
  auto touches_block = [&](const Segment& s, int64_t i) {
    return i >= s.row_begin && i < s.row_end && s.key_end > span.key_begin && s.key_begin < span.key_begin + kc;
  };
  for (int32_t r = r_lo; r < r_hi; ++r) {
    const int64_t i = task.row_begin + task.row_stride * r;
    const uint64_t bit = uint64_t(1) << (r - base);
    switch (span.kind) {
      case SpanKind::Affine:
        affine_row(plan.acsr.segments[size_t(span.segment)], span, i, bit, w);
        if (span.segment2 >= 0) affine_row(plan.acsr.segments[size_t(span.segment2)], span, i, bit, w);
        break;
      case SpanKind::Block: {
        for (int64_t c = 0; c < kc; ++c) w[c] |= bit;
        for (const Segment& s : plan.acsr.segments) {
          if (!touches_block(s, i)) continue;
          const SegmentRow sr = segment_row(s, i);
          if (sr.count <= 0) continue;
          const int64_t t_lo = std::max<int64_t>(0, ceil_div(span.key_begin - sr.first, s.stride));
          const int64_t t_hi = std::min<int64_t>(sr.count, ceil_div(span.key_begin + kc - sr.first, s.stride));
          for (int64_t t = t_lo; t < t_hi; ++t) w[sr.first + s.stride * t - span.key_begin] &= ~bit;
        }
        break;
      }
      case SpanKind::Gather: {
        const int64_t at = span.mask_offset + int64_t(r) * kc;
        for (int64_t c = 0; c < kc; ++c) {
          const int64_t b = at + c;
          if ((plan.gather_mask[size_t(b >> 6)] >> (b & 63)) & 1) w[c] |= bit;
        }
        break;
      }
    }
  }
}

SpanMasks layout_span_masks(const Plan& plan) {
  SpanMasks m;
  m.offset.resize(plan.passes.size());
  int64_t total = 0;
  for (size_t p = 0; p < plan.passes.size(); ++p) {
    const Pass& pass = plan.passes[p];
    m.offset[p].assign(pass.spans.size(), -1);
    for (size_t t = 0; t < pass.tasks.size(); ++t) {
      const TileTask& task = pass.tasks[t];
      const int64_t subtiles = (task.row_count + kLanes - 1) / kLanes;
      bool any = false;
      for (int32_t s = task.span_begin; s < task.span_end; ++s) {
        const KeySpan& span = pass.spans[size_t(s)];
        if (span.full) continue;
        m.offset[p][size_t(s)] = total;
        total += subtiles * span.key_count;
        any = true;
      }
      if (any) m.jobs.push_back({int(p), int32_t(t)});
    }
  }
  m.words.resize(size_t(total));
  return m;
}

void fill_span_masks(const Plan& plan, SpanMasks& m, size_t job) {
  const auto [p, t] = m.jobs[job];
  const Pass& pass = plan.passes[size_t(p)];
  const TileTask& task = pass.tasks[size_t(t)];
  const int subtiles = (task.row_count + kLanes - 1) / kLanes;
  for (int32_t s = task.span_begin; s < task.span_end; ++s) {
    const KeySpan& span = pass.spans[size_t(s)];
    if (span.full) continue;
    uint64_t* w = m.words.data() + m.offset[size_t(p)][size_t(s)];
    for (int sub = 0; sub < subtiles; ++sub) fill_span_words(plan, task, span, sub, w + sub * span.key_count);
  }
}

}  // namespace splat::cpu
