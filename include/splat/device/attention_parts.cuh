// Building blocks of the attention kernels (attention_fwd.cuh): K/V tile loads into swizzled shared memory, the
// online-softmax update, the warpgroup-MMA issue of both products, the CTA context and the epilogue (span geometry
// and masks: span_geometry.cuh).
// Each step helper works on one thread's fragments: rows g and g+8 of each 16-row m-tile, columns 2*tq, 2*tq+1
// of each n8 tile (the mma.sync C layout, which is also the layout of a wgmma m64nN accumulator per warp).
#pragma once
#include "splat/device/plan_layout.cuh"
#include "splat/device/ptx.cuh"
#include "splat/device/span_geometry.cuh"

namespace splat {
namespace dev {

// Columns of the shared-memory tiles and output accumulators of head dim D: whole 64-column (128-byte) swizzle
// blocks, so every head dim (32, 64, 96, 128, 256) shares one layout and one set of wgmma descriptors. Columns from D
// to the padded width are zero in every tile (loads zero-fill them): they add nothing to Q K^T (whose k-steps stop at
// D anyway) and give zero output columns, which the epilogue does not write.
template <int D>
constexpr int padded_dim = (D + 63) / 64 * 64;

// Element offset of 16-byte chunk `ch` of row `row` in a swizzled tile of ROWS rows: 64-column blocks
// [padded_dim<D>/64][ROWS][64], each row's 8 chunks XOR-swizzled by row % 8. Conflict-free for ldmatrix, and exactly
// the 128-byte-swizzle layout (8-row groups of 1024 bytes) the sm_90 wgmma descriptors describe.
template <int D, int ROWS>
__device__ __forceinline__ int swz(int row, int ch) {
  return (ch >> 3) * (ROWS * 64) + row * 64 + (((ch & 7) ^ (row & 7)) << 3);
}

// Bytes from chunk ch of row r0 to the same chunk of row r0 + it * RPI in a swizzled tile of ROWS rows.
template <int D, int ROWS, int RPI>
__device__ __forceinline__ int row_step(int r0, int ch, int it) {
  if constexpr (RPI % 8 == 0)
    return it * RPI * 64 * 2;  // the same swizzle: a constant
  else
    return (swz<D, ROWS>(r0 + it * RPI, ch) - swz<D, ROWS>(r0, ch)) * 2;
}

// Loads rows c = kt*BN + r (r < BN) of a span's keys of two tensors, K and V (QDO: Q and dO, for the dK/dV direction)
// into swizzled smem tiles (zero past the end, and in the padding columns from D on). Thread t copies chunk t % CH of
// rows t / CH + RPI*it: where RPI is a multiple of 8 every row it copies has the same swizzle and the addresses
// advance by constant strides; otherwise (D=256 with 128 threads: RPI 4) the offset is recomputed per row. The
// row strides are read from the parameters where they are used (a copy in a variable measured 56 more instructions
// and 5-8% slower D=64 forwards on the H200).
template <class C, bool QDO = false>
__device__ __forceinline__ void load_pair(const AttnParams& p, const DevSpan& sp, int kt, const u16* abase,
                                          const u16* bbase, u16* sA, u16* sB) {
  constexpr int D = C::D, BN = C::BN, CH = padded_dim<D> / 8, THREADS = C::WARPS * 32, RPI = THREADS / CH;
  static_assert(THREADS % CH == 0 && BN % RPI == 0, "whole rows per iteration, whole iterations per tile");
  constexpr i64 AttnParams::*A_SN = QDO ? &AttnParams::q_sn : &AttnParams::k_sn;
  constexpr i64 AttnParams::*B_SN = QDO ? &AttnParams::do_sn : &AttnParams::v_sn;
  const int r0 = threadIdx.x / CH, ch = threadIdx.x % CH;
  const int c0 = kt * BN + r0;
  const bool real = padded_dim<D> == D || ch < D / 8;  // a chunk of the tensor (else padding: zero-filled)
  const u32 da = smem_addr(sA + swz<D, BN>(r0, ch)), db = smem_addr(sB + swz<D, BN>(r0, ch));
  if (C::HAS_GATHER && sp.kind == kGather) {
#pragma unroll
    for (int it = 0; it < BN / RPI; ++it) {
      const int c = c0 + it * RPI;
      const bool ok = c < sp.key_count && real;
      const i64 key = ok ? p.gather_keys[sp.key_begin + c] : 0;
      cp_async16(da + row_step<D, BN, RPI>(r0, ch, it), abase + key * (p.*A_SN) + ch * 8, ok ? 16 : 0);
      cp_async16(db + row_step<D, BN, RPI>(r0, ch, it), bbase + key * (p.*B_SN) + ch * 8, ok ? 16 : 0);
    }
    return;
  }
  const i64 key0 = i64(sp.key_begin) + i64(sp.key_stride) * c0;
  const u16* as = abase + key0 * (p.*A_SN) + ch * 8;
  const u16* bs = bbase + key0 * (p.*B_SN) + ch * 8;
  const i64 astep = i64(sp.key_stride) * RPI * (p.*A_SN), bstep = i64(sp.key_stride) * RPI * (p.*B_SN);
#pragma unroll
  for (int it = 0; it < BN / RPI; ++it) {
    const bool ok = c0 + it * RPI < sp.key_count && real;
    cp_async16(da + row_step<D, BN, RPI>(r0, ch, it), ok ? as + it * astep : abase, ok ? 16 : 0);
    cp_async16(db + row_step<D, BN, RPI>(r0, ch, it), ok ? bs + it * bstep : bbase, ok ? 16 : 0);
  }
}
template <class C>
__device__ __forceinline__ void load_kv(const AttnParams& p, const DevSpan& sp, int kt, const u16* kbase,
                                        const u16* vbase, u16* sK, u16* sV) {
  load_pair<C>(p, sp, kt, kbase, vbase, sK, sV);
}

// Online softmax update: s becomes exp2(s * scale * log2 e - new max), l the running partial row sums; alpha is
// the factor the output accumulators must be scaled by (1 where the row max did not move). m is kept in the scaled
// log2 domain; one FMA + one ex2 per score.
template <class C>
__device__ __forceinline__ void softmax_update(float sl2, float (&s)[C::MT][C::BN / 8][4], float (&m)[C::MT][2],
                                               float (&l)[C::MT][2], float (&alpha)[C::MT][2]) {
  constexpr int NT = C::BN / 8;
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = neg_inf();
#pragma unroll
      for (int j = 0; j < NT; ++j) mx = fmaxf(mx, fmaxf(s[mt][j][2 * hf], s[mt][j][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mnew = fmaxf(m[mt][hf], mx * sl2);
      const float base = mnew == neg_inf() ? 0.f : mnew;
      alpha[mt][hf] = fast_exp2(m[mt][hf] - base);
      m[mt][hf] = mnew;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        s[mt][j][2 * hf] = fast_exp2(fmaf(s[mt][j][2 * hf], sl2, -base));
        s[mt][j][2 * hf + 1] = fast_exp2(fmaf(s[mt][j][2 * hf + 1], sl2, -base));
        sum += s[mt][j][2 * hf] + s[mt][j][2 * hf + 1];
      }
      l[mt][hf] = l[mt][hf] * alpha[mt][hf] + sum;
    }
}

// acc *= alpha per row, skipped when no row of the warp moved its max (warp-uniform test). The padding columns
// (from D on) stay zero: not scaled.
template <class C>
__device__ __forceinline__ void rescale_acc(float (&acc)[C::MT][padded_dim<C::D> / 8][4],
                                            const float (&alpha)[C::MT][2]) {
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf)
      if (__any_sync(0xffffffffu, alpha[mt][hf] != 1.f)) {
#pragma unroll
        for (int dn = 0; dn < C::D / 8; ++dn) {
          acc[mt][dn][2 * hf] *= alpha[mt][hf];
          acc[mt][dn][2 * hf + 1] *= alpha[mt][hf];
        }
      }
}

// P (16-bit) from the exponentiated scores of m-tile 0: the C layout of two n8 tiles is the A layout of one k16.
template <class C>
__device__ __forceinline__ void pack_p(const float (&s)[C::MT][C::BN / 8][4], u32 (&pa)[C::BN / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < C::BN / 16; ++kk) {
    pa[kk][0] = pack2<C::BF16>(s[0][2 * kk][0], s[0][2 * kk][1]);
    pa[kk][1] = pack2<C::BF16>(s[0][2 * kk][2], s[0][2 * kk][3]);
    pa[kk][2] = pack2<C::BF16>(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
    pa[kk][3] = pack2<C::BF16>(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
  }
}

// sm_90a: issues S = Q K^T for this warpgroup's 64 rows (wq: its Q rows, cK: the K tile), D/16 wgmmas of
// m64 x BN x k16, A and B from 128B-swizzled shared memory (K-major). The caller fences, commits and waits.
// Descriptors address in 16-byte units: a sub-block's descriptor is the tile's plus its byte offset / 16.
template <class C>
__device__ __forceinline__ void wgmma_scores(float (&s)[C::MT][C::BN / 8][4], const u16* wq, const u16* cK) {
  const unsigned long long dq = wgmma_desc_sw128(smem_addr(wq)), dk = wgmma_desc_sw128(smem_addr(cK));
#pragma unroll
  for (int kk = 0; kk < C::D / 16; ++kk)
    wgmma_ss<C::BF16, C::BN>(&s[0][0][0], dq + (kk >> 2) * (C::BM * 64 * 2 / 16) + (kk & 3) * 2,
                             dk + (kk >> 2) * (C::BN * 64 * 2 / 16) + (kk & 3) * 2, kk > 0);
}

// sm_90a: issues O += P V: per k16 of keys and per 64-column block of D, B = V rows (keys) x 64 columns, N-major,
// 8-key groups 1024 bytes apart. The caller fences, commits and waits (pa must stay untouched until then). A head
// dim that is not a multiple of 64 runs its last block whole (its padding columns are zero).
template <class C>
__device__ __forceinline__ void wgmma_pv(float (&acc)[C::MT][padded_dim<C::D> / 8][4], const u32 (&pa)[C::BN / 16][4],
                                         const u16* cV) {
  const unsigned long long dv = wgmma_desc_sw128(smem_addr(cV));
#pragma unroll
  for (int kk = 0; kk < C::BN / 16; ++kk)
#pragma unroll
    for (int hb = 0; hb < padded_dim<C::D> / 64; ++hb)
      wgmma_m64n64k16<C::BF16, 1>(&acc[0][hb * 8][0], pa[kk], dv + hb * (C::BN * 64 * 2 / 16) + kk * (16 * 64 * 2 / 16),
                                  1);
}

// What one CTA works on: its task, the (batch, head) and the bases of its rows, and the shared-memory tiles.
struct CtaCtx {
  DevTask task;
  int bh;
  int klen;  // keys of this batch row (KEY_PAD), else N
  const u16 *qbase, *kbase, *vbase;
  u16* obase;
  u16 *sQ, *sK, *sV;  // sQ [BM][DP], sK / sV [STAGES][BN][DP] (DP = padded_dim<D>), all swizzled
};

template <class C>
__device__ __forceinline__ CtaCtx cta_ctx(const AttnParams& p, unsigned char* smem) {
  CtaCtx x;
  const int BH = p.B * p.H;
  const int task_id = int(blockIdx.x / unsigned(BH));
  x.bh = int(blockIdx.x % unsigned(BH));
  const int b = x.bh / p.H, h = x.bh % p.H, hk = h / (p.H / p.Hkv);
  x.task = p.tasks[task_id];
  x.klen = C::KEY_PAD ? p.key_lengths[b] : p.N;
  x.qbase = static_cast<const u16*>(p.q) + b * p.q_sb + h * p.q_sh;
  x.kbase = static_cast<const u16*>(p.k) + b * p.k_sb + hk * p.k_sh;
  x.vbase = static_cast<const u16*>(p.v) + b * p.v_sb + hk * p.v_sh;
  x.obase = static_cast<u16*>(p.o) + b * p.o_sb + h * p.o_sh;
  // Tiles start 1024-byte aligned (the host allocates 1 KB extra): wgmma's swizzle atoms need it.
  x.sQ = reinterpret_cast<u16*>(smem + ((1024 - (smem_addr(smem) & 1023)) & 1023));
  x.sK = x.sQ + C::BM * padded_dim<C::D>;
  x.sV = x.sK + C::STAGES * C::BN * padded_dim<C::D>;
  return x;
}

// A task's rows row_begin + row_stride*r (gathered) of one tensor into a swizzled [BM][D] tile, zero past
// row_count and in the padding columns: Q (forward, dQ) or K and V (dK/dV, whose rows are keys). cp.async, not
// committed.
template <class C>
__device__ __forceinline__ void load_rows(const DevTask& task, const u16* base, i64 sn, u16* tile) {
  constexpr int CH = padded_dim<C::D> / 8, THREADS = C::WARPS * 32;
#pragma unroll
  for (int it = 0; it < (C::BM * CH) / THREADS; ++it) {
    const int id = threadIdx.x + it * THREADS;
    const int r = id / CH, ch = id % CH;
    const bool ok = r < task.row_count && (padded_dim<C::D> == C::D || ch < C::D / 8);
    const i64 i = ok ? i64(task.row_begin) + i64(task.row_stride) * r : 0;
    cp_async16(smem_addr(tile + swz<C::D, C::BM>(r, ch)), base + i * sn + ch * 8, ok ? 16 : 0);
  }
}
template <class C>
__device__ __forceinline__ void load_q(const AttnParams& p, const CtaCtx& x) {
  load_rows<C>(x.task, x.qbase, p.q_sn, x.sQ);
}

// Online-softmax state at the start: empty, or (CONTINUE) the (out, lse) of the earlier pass: m = lse, l = 1,
// acc = out.
template <class C>
__device__ __forceinline__ void init_state(const AttnParams& p, const CtaCtx& x, int wr0,
                                           float (&acc)[C::MT][padded_dim<C::D> / 8][4], float (&m)[C::MT][2],
                                           float (&l)[C::MT][2]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      m[mt][hf] = neg_inf();
      l[mt][hf] = 0.f;
    }
#pragma unroll
    for (int dn = 0; dn < padded_dim<C::D> / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][dn][e] = 0.f;
  }
  if (!C::CONTINUE) return;
  const float* lse = p.lse + i64(x.bh) * p.N;
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = wr0 + mt * 16 + g + 8 * hf;
      if (r < x.task.row_count) {
        const i64 i = i64(x.task.row_begin) + i64(x.task.row_stride) * r;
        m[mt][hf] = lse[i] * 1.4426950408889634f;
        l[mt][hf] = tq == 0 ? 1.f : 0.f;
        const u32* orow = reinterpret_cast<const u32*>(x.obase + i * p.o_sn);
#pragma unroll
        for (int dn = 0; dn < C::D / 8; ++dn) {
          const u32 w = orow[dn * 4 + tq];
          acc[mt][dn][2 * hf] = to_float<C::BF16>(u16(w & 0xffffu));
          acc[mt][dn][2 * hf + 1] = to_float<C::BF16>(u16(w >> 16));
        }
      }
    }
}

// Epilogue: normalise, scatter rows back (row_stride), write lse for a later pass.
template <class C>
__device__ __forceinline__ void write_out(const AttnParams& p, const CtaCtx& x, int wr0,
                                          const float (&acc)[C::MT][padded_dim<C::D> / 8][4],
                                          const float (&m)[C::MT][2], const float (&l)[C::MT][2]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float lt = l[mt][hf];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const int r = wr0 + mt * 16 + g + 8 * hf;
      if (r >= x.task.row_count) continue;
      const i64 i = i64(x.task.row_begin) + i64(x.task.row_stride) * r;
      const float inv = lt > 0.f ? 1.f / lt : 0.f;
      u32* orow = reinterpret_cast<u32*>(x.obase + i * p.o_sn);
#pragma unroll
      for (int dn = 0; dn < C::D / 8; ++dn)
        orow[dn * 4 + tq] = pack2<C::BF16>(acc[mt][dn][2 * hf] * inv, acc[mt][dn][2 * hf + 1] * inv);
      if (C::WRITE_LSE && tq == 0)
        p.lse[i64(x.bh) * p.N + i] = lt > 0.f ? (m[mt][hf] + fast_log2(lt)) * 0.6931471805599453f : neg_inf();
    }
}

}  // namespace dev
}  // namespace splat
