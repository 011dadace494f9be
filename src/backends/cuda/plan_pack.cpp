#include "backends/cuda/plan_pack.hpp"

#include <algorithm>
#include <climits>

#include "splat/error.hpp"

namespace splat::cuda {

namespace {
int fit(int64_t v, const char* what) {
  if (v < INT_MIN / 2 || v > INT_MAX / 2)
    fail(ErrorCode::Unsupported, std::string("CUDA backend: plan value out of 32-bit range: ") + what);
  return int(v);
}
// Clamps a bound that only matters inside [-n, 2n] (ranges beyond the sequence are equivalent).
int clamp_bound(int64_t v, int64_t n) {
  return int(std::clamp<int64_t>(v, -2 * n - 1, 2 * n + 1));
}
}  // namespace

PackedPlan pack_plan(const Plan& plan) {
  PackedPlan pk;
  const int64_t n = plan.acsr.n;
  for (const Segment& s : plan.acsr.segments) {
    dev::DevSegment d{};
    d.row_begin = clamp_bound(s.row_begin, n);
    d.row_end = clamp_bound(s.row_end, n);
    d.slope = fit(s.slope, "segment slope");
    d.offset = fit(s.offset, "segment offset");
    d.stride = fit(s.stride, "segment stride");
    // t only matters through keys in [0, n): |t| <= (n + |offset| + n) / stride.
    const int64_t tl = (2 * n + (s.offset < 0 ? -s.offset : s.offset)) / std::max<int64_t>(s.stride, 1) + 2;
    d.t_begin = fit(std::clamp<int64_t>(s.t_begin, -tl, tl), "segment t_begin");
    d.t_end = fit(std::clamp<int64_t>(s.t_end, -tl, tl), "segment t_end");
    d.key_begin = clamp_bound(s.key_begin, n);
    d.key_end = clamp_bound(s.key_end, n);
    pk.segments.push_back(d);
  }
  for (const Pass& pass : plan.passes) {
    const int span_base = int(pk.spans.size());
    pk.pass_task_offset.push_back(int(pk.tasks.size()));
    pk.pass_task_count.push_back(int(pass.tasks.size()));
    for (const TileTask& t : pass.tasks) {
      dev::DevTask d{};
      d.row_begin = fit(t.row_begin, "task row");
      d.row_stride = fit(t.row_stride, "task row stride");
      d.row_count = t.row_count;
      d.span_begin = span_base + t.span_begin;
      d.span_end = span_base + t.span_end;
      pk.tasks.push_back(d);
    }
    for (const KeySpan& s : pass.spans) {
      dev::DevSpan d{};
      d.kind = s.kind == SpanKind::Affine ? dev::kAffine : s.kind == SpanKind::Block ? dev::kBlock : dev::kGather;
      d.key_begin = fit(s.key_begin, "span key");
      d.key_stride = fit(s.key_stride, "span key stride");
      d.key_count = fit(s.key_count, "span key count");
      d.row_lo = s.row_lo;
      d.row_hi = s.row_hi;
      d.segment = s.segment;
      d.segment2 = s.segment2;
      d.full = s.full ? 1 : 0;
      d.mask_offset = s.mask_offset;
      pk.spans.push_back(d);
    }
  }
  pk.gather_keys = plan.gather_keys;
  pk.gather_mask = plan.gather_mask;
  return pk;
}

}  // namespace splat::cuda
