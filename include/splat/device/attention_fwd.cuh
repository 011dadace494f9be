// Fused sparse attention forward over a plan's tile tasks (FlashAttention-2 style).
// One CTA computes one task for one (batch, head): the task's query rows (possibly residue-permuted,
// row_stride > 1) against each of its key spans, BN keys at a time. K/V rows are gathered by the span's
// key formula (each row is D contiguous elements: 16-byte cp.async, coalesced) into swizzled shared
// memory, double buffered; S = Q K^T and O += P V run on mma.sync m16n8k16 with fp32 accumulation;
// the softmax is online, in registers. Masks are evaluated only on partial tiles, from the affine
// segment constants (no mask in memory) or, for gathered spans, from the plan's bitset.
// A continuation pass (CONTINUE) starts from the (out, lse) an earlier pass left: exact merge.
// On sm_90a (WGMMA) both MMAs are warpgroup MMAs: each warpgroup of 4 warps owns 64 query rows (WARPS = 8:
// two warpgroups share every K/V tile), S reads Q and K from shared memory, O += P V takes P from registers.
#pragma once
#include "splat/device/plan_layout.cuh"
#include "splat/device/ptx.cuh"

namespace splat {
namespace dev {

// Config contract (generated per kernel spec):
//   D, BM, BN, MT (16-row m-tiles per warp), WARPS, STAGES, BF16, WRITE_LSE, CONTINUE,
//   HAS_AFFINE_MASK, HAS_BLOCK, HAS_GATHER (which span kinds / masks can occur),
//   WGMMA (sm_90a: S = Q K^T and O += P V as warpgroup MMAs reading K/V straight from shared memory).

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
  return segment_contains_dev(p.segments[sp.segment], i, j);
}

__device__ __forceinline__ int floor_div_dev(int a, int b) {  // b > 0
  const int q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
__device__ __forceinline__ int ceil_div_dev(int a, int b) {
  return -floor_div_dev(-a, b);
}

// The keys of segment s in row i, expressed in span indices c (key = kb + ks*c) of a span: c is attended
// iff lo <= c < hi and (c - lo) % mod == 0. mod == 0: no closed form, test each entry (never for plans
// make_plan builds: spans step by 1 or by the segment's stride).
struct RowRange {
  int lo, hi, mod;
};
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

// Element offset of 16-byte chunk `ch` of row `row` in a swizzled tile of ROWS rows: 64-column blocks
// [D/64][ROWS][64], each row's 8 chunks XOR-swizzled by row % 8. Conflict-free for ldmatrix, and exactly the
// 128-byte-swizzle layout (8-row groups of 1024 bytes) the sm_90 wgmma descriptors describe.
template <int D, int ROWS>
__device__ __forceinline__ int swz(int row, int ch) {
  return (ch >> 3) * (ROWS * 64) + row * 64 + (((ch & 7) ^ (row & 7)) << 3);
}

// Loads K and V rows c = kt*BN + r (r < BN) of a span's keys into swizzled smem tiles (zero past the end).
// Thread t copies chunk t % CH of rows t / CH + RPI*it: RPI is a multiple of 8, so every row it copies has
// the same swizzle and the addresses advance by constant strides.
template <class C>
__device__ __forceinline__ void load_kv(const AttnParams& p, const DevSpan& sp, int kt, const u16* kbase,
                                        const u16* vbase, u16* sK, u16* sV) {
  constexpr int D = C::D, BN = C::BN, CH = D / 8, THREADS = C::WARPS * 32, RPI = THREADS / CH;
  static_assert(RPI % 8 == 0, "rows per iteration keep the swizzle");
  const int r0 = threadIdx.x / CH, ch = threadIdx.x % CH;
  const int c0 = kt * BN + r0;
  const u32 dk = smem_addr(sK + swz<D, BN>(r0, ch)), dv = smem_addr(sV + swz<D, BN>(r0, ch));
  if (C::HAS_GATHER && sp.kind == kGather) {
#pragma unroll
    for (int it = 0; it < BN / RPI; ++it) {
      const int c = c0 + it * RPI;
      const bool ok = c < sp.key_count;
      const i64 key = ok ? p.gather_keys[sp.key_begin + c] : 0;
      cp_async16(dk + it * RPI * 64 * 2, kbase + key * p.k_sn + ch * 8, ok ? 16 : 0);
      cp_async16(dv + it * RPI * 64 * 2, vbase + key * p.v_sn + ch * 8, ok ? 16 : 0);
    }
    return;
  }
  const i64 key0 = i64(sp.key_begin) + i64(sp.key_stride) * c0;
  const u16* ks = kbase + key0 * p.k_sn + ch * 8;
  const u16* vs = vbase + key0 * p.v_sn + ch * 8;
  const i64 kstep = i64(sp.key_stride) * RPI * p.k_sn, vstep = i64(sp.key_stride) * RPI * p.v_sn;
#pragma unroll
  for (int it = 0; it < BN / RPI; ++it) {
    const bool ok = c0 + it * RPI < sp.key_count;
    cp_async16(dk + it * RPI * 64 * 2, ok ? ks + it * kstep : kbase, ok ? 16 : 0);
    cp_async16(dv + it * RPI * 64 * 2, ok ? vs + it * vstep : vbase, ok ? 16 : 0);
  }
}

// Entry-by-entry mask for what has no per-row closed form (Block/Gather spans that are not full, affine
// rows with a residue condition): bit (mt*NT + j)*4 + e set = attended. Out of line: rare, and large.
template <class C>
__device__ __noinline__ u64 slow_mask_bits(const AttnParams& p, const DevSpan sp, const DevTask task, int kt, int wr0) {
  constexpr int NT = C::BN / 8, MT = C::MT;
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  u64 bits = 0;
  for (int x = 0; x < MT * 2; ++x) {
    const int r = wr0 + (x >> 1) * 16 + g + 8 * (x & 1);
    if (r < sp.row_lo || r >= sp.row_hi) continue;
    const int i = task.row_begin + task.row_stride * r;
    RowRange y = {0, sp.key_count, 1};
    if (!sp.full && sp.kind == kAffine) y = segment_span_range(p.segments[sp.segment], i, sp.key_begin, sp.key_stride);
    for (int j = 0; j < NT; ++j)
      for (int e1 = 0; e1 < 2; ++e1) {
        const int c = kt * C::BN + j * 8 + 2 * tq + e1;
        bool ok = c >= y.lo && c < y.hi && c < sp.key_count;
        if (ok && y.mod > 1) ok = (c - y.lo) % y.mod == 0;
        if (ok && (y.mod == 0 || (!sp.full && sp.kind != kAffine)))
          ok = span_attends<C>(p, sp, r, i, c, span_key<C>(p, sp, c));
        if (ok) bits |= 1ull << (((x >> 1) * NT + j) * 4 + (x & 1) * 2 + e1);
      }
  }
  return bits;
}

struct StepCursor {
  int si, kt;
  DevSpan sp;
};
template <class C>
__device__ __forceinline__ void advance(const AttnParams& p, const DevTask& task, StepCursor& c) {
  if (++c.kt * C::BN >= c.sp.key_count) {
    c.kt = 0;
    if (++c.si < task.span_end) c.sp = p.spans[c.si];
  }
}

template <class C>
__device__ __forceinline__ void attn_fwd(const AttnParams& p, unsigned char* smem) {
  constexpr int D = C::D, BM = C::BM, BN = C::BN, MT = C::MT, THREADS = C::WARPS * 32;
  constexpr int CH = D / 8;    // 16-byte chunks per row; also n8 tiles of O
  constexpr int NT = BN / 8;   // n8 tiles of S
  constexpr int KQ = D / 16;   // k16 steps of Q K^T
  constexpr int KP = BN / 16;  // k16 steps of P V
  constexpr bool BF16 = C::BF16;
  static_assert(BM == 16 * MT * C::WARPS, "BM = 16 * MT * WARPS");
  static_assert(D % 64 == 0 && BN % 16 == 0 && (BN * CH) % THREADS == 0 && (BM * CH) % THREADS == 0, "tile");
  static_assert(MT * NT * 4 <= 64, "one 64-bit mask word per thread");

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int BH = p.B * p.H;
  const int task_id = int(blockIdx.x / unsigned(BH));
  const int bh = int(blockIdx.x % unsigned(BH));
  const int b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv);
  const DevTask task = p.tasks[task_id];

  const u16* qbase = static_cast<const u16*>(p.q) + b * p.q_sb + h * p.q_sh;
  const u16* kbase = static_cast<const u16*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const u16* vbase = static_cast<const u16*>(p.v) + b * p.v_sb + hk * p.v_sh;
  u16* obase = static_cast<u16*>(p.o) + b * p.o_sb + h * p.o_sh;

  // Tiles start 1024-byte aligned (the host allocates 1 KB extra): wgmma's swizzle atoms need it.
  u16* sQ = reinterpret_cast<u16*>(smem + ((1024 - (smem_addr(smem) & 1023)) & 1023));
  u16* sK = sQ + BM * D;              // [STAGES][BN][D]
  u16* sV = sK + C::STAGES * BN * D;  // [STAGES][BN][D]

  // Q tile: rows row_begin + row_stride*r (gathered), zero past row_count.
#pragma unroll
  for (int it = 0; it < (BM * CH) / THREADS; ++it) {
    const int id = tid + it * THREADS;
    const int r = id / CH, ch = id % CH;
    const bool ok = r < task.row_count;
    const i64 i = ok ? i64(task.row_begin) + i64(task.row_stride) * r : 0;
    cp_async16(smem_addr(sQ + swz<D, BM>(r, ch)), qbase + i * p.q_sn + ch * 8, ok ? 16 : 0);
  }
  // Steps = (span, key tile) pairs in order. A load cursor runs STAGES-1 steps ahead of the compute
  // cursor; one barrier per step frees the buffer the next load overwrites.
  constexpr int S = C::STAGES;
  StepCursor ld;
  ld.si = task.span_begin, ld.kt = 0;
  if (ld.si < task.span_end) ld.sp = p.spans[ld.si];
  StepCursor cu = ld;
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (ld.si < task.span_end) {
      load_kv<C>(p, ld.sp, ld.kt, kbase, vbase, sK + st * BN * D, sV + st * BN * D);
      advance<C>(p, task, ld);
    }
    cp_async_commit();  // group st (group 0 also holds Q)
  }

  // Online-softmax state. Thread holds rows g and g+8 of each m-tile; l is a partial sum over its columns.
  // m is kept in the scaled log2 domain (scores * scale * log2 e).
  const int g = lane >> 2, tq = lane & 3;
  const int wr0 = warp * 16 * MT;
  const float sl2 = p.scale_log2;
  float acc[MT][CH][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      m[mt][hf] = neg_inf();
      l[mt][hf] = 0.f;
    }
#pragma unroll
    for (int dn = 0; dn < CH; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][dn][e] = 0.f;
  }
  if (C::CONTINUE) {  // start from the (out, lse) of the earlier pass: m = lse, l = 1, acc = out
    const float* lse = p.lse + i64(bh) * p.N;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int r = wr0 + mt * 16 + g + 8 * hf;
        if (r < task.row_count) {
          const i64 i = i64(task.row_begin) + i64(task.row_stride) * r;
          m[mt][hf] = lse[i] * 1.4426950408889634f;
          l[mt][hf] = tq == 0 ? 1.f : 0.f;
          const u32* orow = reinterpret_cast<const u32*>(obase + i * p.o_sn);
#pragma unroll
          for (int dn = 0; dn < CH; ++dn) {
            const u32 w = orow[dn * 4 + tq];
            acc[mt][dn][2 * hf] = to_float<BF16>(u16(w & 0xffffu));
            acc[mt][dn][2 * hf + 1] = to_float<BF16>(u16(w >> 16));
          }
        }
      }
  }

  const int mi = lane >> 3, lr = lane & 7;
  // Q fragments stay in registers when they are few; otherwise they are re-read from smem per step.
  constexpr bool QREG = D * MT <= 128 && !C::WGMMA;
  u32 qreg[QREG ? MT : 1][QREG ? KQ : 1][4];
  if (QREG) {
    cp_async_wait<S - 2>();
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < KQ; ++kk)
        ldmatrix_x4(qreg[mt][kk][0], qreg[mt][kk][1], qreg[mt][kk][2], qreg[mt][kk][3],
                    smem_addr(sQ + swz<D, BM>(wr0 + mt * 16 + (mi & 1) * 8 + lr, 2 * kk + (mi >> 1))));
  }

  // Per-span, per-row key ranges (closed form), computed when a span starts.
  RowRange rr[MT * 2];
  int prev_si = -1, cbuf = 0, lbuf = S - 1;
  while (cu.si < task.span_end) {
    const DevSpan& sp = cu.sp;
    const int kt = cu.kt;
    if (cu.si != prev_si) {
#pragma unroll
      for (int x = 0; x < MT * 2; ++x) {
        const int r = wr0 + (x >> 1) * 16 + g + 8 * (x & 1);
        RowRange y = {0, sp.key_count, 1};
        if (r < sp.row_lo || r >= sp.row_hi) {
          y.hi = 0;
        } else if (!sp.full && sp.kind == kAffine && C::HAS_AFFINE_MASK) {
          y = segment_span_range(p.segments[sp.segment], task.row_begin + task.row_stride * r, sp.key_begin,
                                 sp.key_stride);
          y.hi = min(y.hi, sp.key_count);
        }
        rr[x] = y;
      }
      prev_si = cu.si;
    }
    cp_async_wait<S - 2>();                       // this step's K and V have landed (later steps may be in flight)
    if constexpr (C::WGMMA) fence_proxy_async();  // cp.async wrote them (generic proxy); wgmma reads (async)
    __syncthreads();  // ... for every thread; and everyone is done with the buffer loaded next
    if (ld.si < task.span_end) {
      load_kv<C>(p, ld.sp, ld.kt, kbase, vbase, sK + lbuf * BN * D, sV + lbuf * BN * D);
      advance<C>(p, task, ld);
    }
    cp_async_commit();
    lbuf = lbuf + 1 == S ? 0 : lbuf + 1;

    const u16* cK = sK + cbuf * BN * D;
    const u16* cV = sV + cbuf * BN * D;
    // wgmma is warpgroup-collective: every warp takes part (rows outside the span are masked).
    const bool warp_active = C::WGMMA || (wr0 < task.row_count && wr0 < sp.row_hi && wr0 + 16 * MT > sp.row_lo);
    float s[MT][NT][4];
    if (warp_active) {
      if constexpr (C::WGMMA) {
        static_assert(MT == 1 && BN == 64 && C::WARPS % 4 == 0, "wgmma: warpgroups of 64 rows, 64-key steps");
        // A = this warpgroup's 64 Q rows straight from shared memory (same 128B-swizzled K-major layout as K):
        // no Q fragments in registers (ptxas once reused such registers across the async MMAs, v4 notes).
        const u16* wq = sQ + (warp >> 2) * 64 * 64;
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KQ; ++kk)
          wgmma_m64n64k16_ss<BF16>(&s[0][0][0], wgmma_desc_sw128(smem_addr(wq + (kk >> 2) * (BM * 64) + (kk & 3) * 16)),
                                   wgmma_desc_sw128(smem_addr(cK + (kk >> 2) * (BN * 64) + (kk & 3) * 16)), kk > 0);
        wgmma_commit();
        wgmma_wait0();
      } else {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][j][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KQ; ++kk) {
          u32 qa[MT][4];
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            if (QREG) {
#pragma unroll
              for (int e = 0; e < 4; ++e) qa[mt][e] = qreg[QREG ? mt : 0][QREG ? kk : 0][e];
            } else {
              ldmatrix_x4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3],
                          smem_addr(sQ + swz<D, BM>(wr0 + mt * 16 + (mi & 1) * 8 + lr, 2 * kk + (mi >> 1))));
            }
          }
#pragma unroll
          for (int j = 0; j < NT; j += 2) {
            u32 b0, b1, b2, b3;
            ldmatrix_x4(b0, b1, b2, b3, smem_addr(cK + swz<D, BN>(j * 8 + (mi >> 1) * 8 + lr, 2 * kk + (mi & 1))));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              mma16816<BF16>(s[mt][j], qa[mt], b0, b1);
              mma16816<BF16>(s[mt][j + 1], qa[mt], b2, b3);
            }
          }
        }
      }
      // Mask only where some row's key range does not cover the whole tile (edges of bands, ragged ends,
      // row sub-ranges); entries without a closed form go through slow_mask_bits.
      const int c0 = kt * BN;
      bool covered = true, slow = !sp.full && sp.kind != kAffine;
#pragma unroll
      for (int x = 0; x < MT * 2; ++x) {
        const int r = wr0 + (x >> 1) * 16 + g + 8 * (x & 1);
        const bool row_used = r < task.row_count;
        covered &= !row_used || (rr[x].lo <= c0 && rr[x].hi >= c0 + BN && rr[x].mod == 1);
        slow |= row_used && rr[x].mod != 1 && rr[x].hi > c0 && rr[x].lo < c0 + BN;
      }
      if (!__all_sync(0xffffffffu, covered && !slow)) {
        if (__any_sync(0xffffffffu, slow)) {
          const u64 bits = slow_mask_bits<C>(p, sp, task, kt, wr0);
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
                if (c < x.lo || c >= x.hi) s[mt][j][e] = neg_inf();
              }
        }
      }
      // Online softmax update (exp2 of scores * scale * log2 e - running max, one FMA each).
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float mx = neg_inf();
#pragma unroll
          for (int j = 0; j < NT; ++j) mx = fmaxf(mx, fmaxf(s[mt][j][2 * hf], s[mt][j][2 * hf + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float mnew = fmaxf(m[mt][hf], mx * sl2);
          const float base = mnew == neg_inf() ? 0.f : mnew;
          const float alpha = fast_exp2(m[mt][hf] - base);
          m[mt][hf] = mnew;
          float sum = 0.f;
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            s[mt][j][2 * hf] = fast_exp2(fmaf(s[mt][j][2 * hf], sl2, -base));
            s[mt][j][2 * hf + 1] = fast_exp2(fmaf(s[mt][j][2 * hf + 1], sl2, -base));
            sum += s[mt][j][2 * hf] + s[mt][j][2 * hf + 1];
          }
          l[mt][hf] = l[mt][hf] * alpha + sum;
          if (__any_sync(0xffffffffu, alpha != 1.f)) {  // the running max moved for some row of the warp
#pragma unroll
            for (int dn = 0; dn < CH; ++dn) {
              acc[mt][dn][2 * hf] *= alpha;
              acc[mt][dn][2 * hf + 1] *= alpha;
            }
          }
        }
    }
    if (warp_active) {
      // O += P V (P from the S accumulators: the C layout of two n8 tiles is the A layout of one k16).
      if constexpr (C::WGMMA) {
        u32 pa[KP][4];
#pragma unroll
        for (int kk = 0; kk < KP; ++kk) {
          pa[kk][0] = pack2<BF16>(s[0][2 * kk][0], s[0][2 * kk][1]);
          pa[kk][1] = pack2<BF16>(s[0][2 * kk][2], s[0][2 * kk][3]);
          pa[kk][2] = pack2<BF16>(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
          pa[kk][3] = pack2<BF16>(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
        }
        wgmma_fence();
        // B = V rows kk*16.. (keys) x one 64-column block: N-major, 8-key groups 1024 bytes apart.
#pragma unroll
        for (int kk = 0; kk < KP; ++kk)
#pragma unroll
          for (int hb = 0; hb < D / 64; ++hb)
            wgmma_m64n64k16<BF16, 1>(&acc[0][hb * 8][0], pa[kk],
                                     wgmma_desc_sw128(smem_addr(cV + hb * (BN * 64) + kk * 16 * 64)), 1);
        wgmma_commit();
        wgmma_wait0();
      } else {
#pragma unroll
        for (int kk = 0; kk < KP; ++kk) {
          u32 pa[MT][4];
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            pa[mt][0] = pack2<BF16>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            pa[mt][1] = pack2<BF16>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            pa[mt][2] = pack2<BF16>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            pa[mt][3] = pack2<BF16>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
          }
#pragma unroll
          for (int dn = 0; dn < CH; dn += 2) {
            u32 b0, b1, b2, b3;
            ldmatrix_x4_trans(b0, b1, b2, b3, smem_addr(cV + swz<D, BN>(kk * 16 + (mi & 1) * 8 + lr, dn + (mi >> 1))));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              mma16816<BF16>(acc[mt][dn], pa[mt], b0, b1);
              mma16816<BF16>(acc[mt][dn + 1], pa[mt], b2, b3);
            }
          }
        }
      }
    }
    advance<C>(p, task, cu);
    cbuf = cbuf + 1 == S ? 0 : cbuf + 1;
  }
  cp_async_wait<0>();

  // Epilogue: normalise, scatter rows back (row_stride), write lse for a later pass.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float lt = l[mt][hf];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const int r = wr0 + mt * 16 + g + 8 * hf;
      if (r >= task.row_count) continue;
      const i64 i = i64(task.row_begin) + i64(task.row_stride) * r;
      const float inv = lt > 0.f ? 1.f / lt : 0.f;
      u32* orow = reinterpret_cast<u32*>(obase + i * p.o_sn);
#pragma unroll
      for (int dn = 0; dn < CH; ++dn)
        orow[dn * 4 + tq] = pack2<BF16>(acc[mt][dn][2 * hf] * inv, acc[mt][dn][2 * hf + 1] * inv);
      if (C::WRITE_LSE && tq == 0)
        p.lse[i64(bh) * p.N + i] = lt > 0.f ? (m[mt][hf] + fast_log2(lt)) * 0.6931471805599453f : neg_inf();
    }
}

}  // namespace dev
}  // namespace splat
