// Span and segment geometry of the attention kernels: which (row, key) entries a span attends, as closed-form
// per-row key ranges (RowRange) where possible and entry by entry otherwise, the masks applied to a score tile,
// and the cursor over a task's key steps. Compiles under nvcc and NVRTC (no host includes).
#pragma once
#include "splat/device/plan_layout.cuh"
#include "splat/device/ptx.cuh"

namespace splat {
namespace dev {

__device__ __forceinline__ bool segment_contains_dev(const DevSegment& s, int i, int j) {
  if (i < s.row_begin || i >= s.row_end || j < s.key_begin || j >= s.key_end) return false;
  int d = j - s.slope * i - s.offset;
  int t = d;
  if (s.stride != 1) {
    if (d % s.stride != 0) return false;
    t = d / s.stride;
  }
  return t >= s.t_begin && t < s.t_end;
}

template <class C>
__device__ __forceinline__ int span_key(const AttnParams& p, const DevSpan& sp, int c) {
  if (C::HAS_GATHER && sp.kind == kGather) return p.gather_keys[sp.key_begin + c];
  return sp.key_begin + sp.key_stride * c;  // Block spans are packed with key_stride 1
}

// Whether (local row r of the task, global row i) attends key index c (global key j) of a masked span.
template <class C>
__device__ __forceinline__ bool span_attends(const AttnParams& p, const DevSpan& sp, int r, int i, int c, int j) {
  if (C::HAS_GATHER && sp.kind == kGather) {
    const i64 bit = sp.mask_offset + i64(r) * sp.key_count + c;
    return (p.gather_mask[bit >> 6] >> (bit & 63)) & 1ull;
  }
  if (C::HAS_BLOCK && sp.kind == kBlock) {
    for (int s = 0; s < p.num_segments; ++s)
      if (segment_contains_dev(p.segments[s], i, j)) return false;
    return true;
  }
  if (!C::HAS_AFFINE_MASK) return true;  // every affine span of this kernel is full
  return segment_contains_dev(p.segments[sp.segment], i, j) ||
         (C::HAS_SEGMENT2 && sp.segment2 >= 0 && segment_contains_dev(p.segments[sp.segment2], i, j));
}

__device__ __forceinline__ int floor_div_dev(int a, int b) {  // b > 0
  const int q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
__device__ __forceinline__ int ceil_div_dev(int a, int b) {
  return -floor_div_dev(-a, b);
}

// The keys of segment s in row i, expressed in span indices c (key = kb + ks*c) of a span: c is attended
// iff lo <= c < hi, c != hole and (c - lo) % mod == 0. mod == 0: no closed form, test each entry (never for
// plans make_plan builds: spans step by 1 or by the segment's stride). hole: the one key between the two
// segments of a two-segment span (-1: none).
struct RowRange {
  int lo, hi, mod;
  int hole = -1;
};

// Union of the ranges of a two-segment span's segments in one row: make_plan merges two segments only where
// both are unit-step (mod 1) and meet with at most one key between them, so the union is one range and a hole.
__device__ __forceinline__ RowRange join_ranges(RowRange a, RowRange b) {
  if (a.lo >= a.hi) return b;
  if (b.lo >= b.hi) return a;
  if (b.lo < a.lo) {
    const RowRange t = a;
    a = b, b = t;
  }
  RowRange u = {a.lo, b.hi, 1};
  u.hole = b.lo == a.hi + 1 ? a.hi : -1;
  return u;
}
__device__ __forceinline__ RowRange segment_span_range(const DevSegment& s, int i, int kb, int ks) {
  RowRange e = {0, 0, 1};
  if (i < s.row_begin || i >= s.row_end) return e;
  const int st = s.stride, base = s.slope * i + s.offset;
  const int t0 = max(s.t_begin, ceil_div_dev(s.key_begin - base, st));
  const int t1 = min(s.t_end, floor_div_dev(s.key_end - 1 - base, st) + 1);
  if (t1 <= t0) return e;
  const int first = base + st * t0, last = base + st * (t1 - 1);
  if (st == 1 || ks % st == 0) {
    const int lo = ceil_div_dev(first - kb, ks), hi = floor_div_dev(last - kb, ks) + 1;
    if (st != 1 && (kb + ks * lo - first) % st != 0) return e;  // the span's keys miss this row's residue
    e.lo = lo, e.hi = hi;
    return e;
  }
  if (ks == 1) {
    e.lo = first - kb, e.hi = last - kb + 1, e.mod = st;
    return e;
  }
  e.lo = -2147483647, e.hi = 2147483647, e.mod = 0;
  return e;
}

// Entry-by-entry mask for what has no per-row closed form (Block/Gather spans that are not full, affine
// rows with a residue condition): bit (mt*NT + j)*4 + e set = attended. Out of line: rare, and large.
template <class C>
__device__ __noinline__ u64 slow_mask_bits(const AttnParams& p, const DevSpan sp, const DevTask task, int kt, int wr0,
                                           int klen) {
  constexpr int NT = C::BN / 8, MT = C::MT;
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  u64 bits = 0;
  for (int x = 0; x < MT * 2; ++x) {
    const int r = wr0 + (x >> 1) * 16 + g + 8 * (x & 1);
    if (r < sp.row_lo || r >= sp.row_hi) continue;
    const int i = task.row_begin + task.row_stride * r;
    RowRange y = {0, sp.key_count, 1};
    if (!sp.full && sp.kind == kAffine) y = segment_span_range(p.segments[sp.segment], i, sp.key_begin, sp.key_stride);
    if (C::HAS_SEGMENT2 && !sp.full && sp.kind == kAffine && sp.segment2 >= 0)
      y.lo = 0, y.hi = sp.key_count, y.mod = 0;  // test each entry against both segments
    for (int j = 0; j < NT; ++j)
      for (int e1 = 0; e1 < 2; ++e1) {
        const int c = kt * C::BN + j * 8 + 2 * tq + e1;
        bool ok = c >= y.lo && c < y.hi && c < sp.key_count;
        if (ok && y.mod > 1) ok = (c - y.lo) % y.mod == 0;
        if (ok && (y.mod == 0 || (!sp.full && sp.kind != kAffine)))
          ok = span_attends<C>(p, sp, r, i, c, span_key<C>(p, sp, c));
        if (ok && C::KEY_PAD && !C::DKDV && sp.kind == kGather) ok = span_key<C>(p, sp, c) < klen;
        if (ok) bits |= 1ull << (((x >> 1) * NT + j) * 4 + (x & 1) * 2 + e1);
      }
  }
  return bits;
}

// Span si as the kernel sees it. Key padding (KEY_PAD, keys are the span's keys: not the dK/dV direction, whose
// spans list queries): affine and block spans keep only keys j < klen, as a shorter key_count, so their masks
// and loads stop there and spans wholly beyond it vanish; gathered spans are masked entry by entry.
template <class C>
__device__ __forceinline__ DevSpan fetch_span(const AttnParams& p, int si, int klen) {
  DevSpan sp = p.spans[si];
  if (C::KEY_PAD && !C::DKDV && sp.kind != kGather) {
    const int room = klen - sp.key_begin;
    sp.key_count = room <= 0 ? 0 : min(sp.key_count, (room + sp.key_stride - 1) / sp.key_stride);
  }
  return sp;
}

struct StepCursor {
  int si, kt;
  DevSpan sp;
  int klen;  // valid keys of this CTA's batch row (KEY_PAD), else N
};
// Moves to the next span with keys, from c.si (exclusive when `next`).
template <class C>
__device__ __forceinline__ void seek_span(const AttnParams& p, const DevTask& task, StepCursor& c, bool next) {
  if (next) ++c.si;
  if constexpr (!C::KEY_PAD) {  // every span has keys
    if (c.si < task.span_end) c.sp = p.spans[c.si];
    return;
  }
  for (; c.si < task.span_end; ++c.si) {
    c.sp = fetch_span<C>(p, c.si, c.klen);
    if (!C::KEY_PAD || c.sp.key_count > 0) break;
  }
}
template <class C>
__device__ __forceinline__ StepCursor first_step(const AttnParams& p, const DevTask& task, int klen) {
  StepCursor c;
  c.si = task.span_begin, c.kt = 0, c.klen = klen;
  seek_span<C>(p, task, c, false);
  return c;
}
template <class C>
__device__ __forceinline__ void advance(const AttnParams& p, const DevTask& task, StepCursor& c) {
  if (++c.kt * C::BN >= c.sp.key_count) {
    c.kt = 0;
    seek_span<C>(p, task, c, true);
  }
}

// Closed-form key ranges of this thread's rows in span sp (computed once per span).
template <class C>
__device__ __forceinline__ void span_row_ranges(const AttnParams& p, const DevTask& task, const DevSpan& sp, int wr0,
                                                RowRange (&rr)[C::MT * 2]) {
  const int g = (threadIdx.x & 31) >> 2;
#pragma unroll
  for (int x = 0; x < C::MT * 2; ++x) {
    const int r = wr0 + (x >> 1) * 16 + g + 8 * (x & 1);
    RowRange y = {0, sp.key_count, 1};
    if (r < sp.row_lo || r >= sp.row_hi) {
      y.hi = 0;
    } else if (!sp.full && sp.kind == kAffine && C::HAS_AFFINE_MASK) {
      const int i = task.row_begin + task.row_stride * r;
      y = segment_span_range(p.segments[sp.segment], i, sp.key_begin, sp.key_stride);
      if (C::HAS_SEGMENT2 && sp.segment2 >= 0)
        y = join_ranges(y, segment_span_range(p.segments[sp.segment2], i, sp.key_begin, sp.key_stride));
      y.hi = min(y.hi, sp.key_count);
    }
    rr[x] = y;
  }
}

// Sets the scores of key tile kt that this thread's rows do not attend to -inf. Only where some row's key range
// does not cover the whole tile (edges of bands, ragged ends, row sub-ranges); entries without a closed form go
// through slow_mask_bits.
template <class C>
__device__ __forceinline__ void mask_scores(const AttnParams& p, const DevTask& task, const StepCursor& cur, int wr0,
                                            const RowRange (&rr)[C::MT * 2], float (&s)[C::MT][C::BN / 8][4]) {
  constexpr int MT = C::MT, NT = C::BN / 8, BN = C::BN;
  const DevSpan& sp = cur.sp;
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int c0 = cur.kt * BN;
  bool covered = true, slow = (!sp.full && sp.kind != kAffine) || (C::KEY_PAD && !C::DKDV && sp.kind == kGather);
#pragma unroll
  for (int x = 0; x < MT * 2; ++x) {
    const int r = wr0 + (x >> 1) * 16 + g + 8 * (x & 1);
    const bool row_used = r < task.row_count;
    covered &= !row_used || (rr[x].lo <= c0 && rr[x].hi >= c0 + BN && rr[x].mod == 1 &&
                             (!C::HAS_SEGMENT2 || rr[x].hole < c0 || rr[x].hole >= c0 + BN));
    slow |= row_used && rr[x].mod != 1 && rr[x].hi > c0 && rr[x].lo < c0 + BN;
  }
  if (__all_sync(0xffffffffu, covered && !slow)) return;
  if (__any_sync(0xffffffffu, slow)) {
    const u64 bits = slow_mask_bits<C>(p, sp, task, cur.kt, wr0, cur.klen);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (!((bits >> ((mt * NT + j) * 4 + e)) & 1ull)) s[mt][j][e] = neg_inf();
  } else {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const RowRange& x = rr[mt * 2 + (e >> 1)];
          const int c = c0 + j * 8 + 2 * tq + (e & 1);
          if (c < x.lo || c >= x.hi || (C::HAS_SEGMENT2 && c == x.hole)) s[mt][j][e] = neg_inf();
        }
  }
}

}  // namespace dev
}  // namespace splat
