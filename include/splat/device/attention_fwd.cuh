// Fused sparse attention forward over a plan's tile tasks (FlashAttention-2 style).
// One CTA computes one task for one (batch, head): the task's query rows (possibly residue-permuted,
// row_stride > 1) against each of its key spans, BN keys at a time. K/V rows are gathered by the span's
// key formula (each row is D contiguous elements: 16-byte cp.async, coalesced) into swizzled shared
// memory, in a ring of STAGES buffers; S = Q K^T and O += P V run on mma.sync m16n8k16 with fp32 accumulation;
// the softmax is online, in registers. Masks are evaluated only on partial tiles, from the affine
// segment constants (no mask in memory) or, for gathered spans, from the plan's bitset.
// A continuation pass (CONTINUE) starts from the (out, lse) an earlier pass left: exact merge.
// On sm_90a (WGMMA) both MMAs are warpgroup MMAs: each warpgroup of 4 warps owns 64 query rows (WARPS = 8:
// two warpgroups share every K/V tile), S reads Q and K from shared memory, O += P V takes P from registers.
// OVERLAP (wgmma only, attention_overlap.cuh): S of the next key tile runs on the tensor cores during the
// softmax of the current one. TMA (attention_tma.cuh, experimental): a producer warpgroup loads K/V by TMA for
// consumer warpgroups (contiguous key spans only).
#pragma once
#include "splat/device/attention_overlap.cuh"
#include "splat/device/attention_parts.cuh"
#include "splat/device/attention_tma.cuh"

namespace splat {
namespace dev {

// Config contract (generated per kernel spec):
//   D, BM, BN, MT (16-row m-tiles per warp), WARPS, STAGES, BF16, WRITE_LSE, CONTINUE,
//   HAS_AFFINE_MASK, HAS_BLOCK, HAS_GATHER, HAS_SEGMENT2 (which span kinds / masks can occur), KEY_PAD (keys
//   j >= p.key_lengths[b] masked), DKDV (false: the spans list keys),
//   WGMMA (sm_90a: S = Q K^T and O += P V as warpgroup MMAs reading K/V straight from shared memory),
//   OVERLAP (WGMMA only: software-pipelined steps, STAGES >= 3),
//   TMA, PINGPONG (attention_tma.cuh: producer warpgroup + two consumer warpgroups; its own entry point).

// One step after the other: S(n), softmax(n), O += P(n) V(n).
template <class C>
__device__ __forceinline__ void attn_fwd_serial(const AttnParams& p, unsigned char* smem) {
  constexpr int D = C::D, BM = C::BM, BN = C::BN, MT = C::MT;
  constexpr int DP = padded_dim<D>;  // tile columns (attention_parts.cuh)
  constexpr int CH = DP / 8;         // 16-byte chunks per tile row; also n8 tiles of O
  constexpr int NT = BN / 8;         // n8 tiles of S
  constexpr int KQ = D / 16;         // k16 steps of Q K^T
  constexpr int KP = BN / 16;        // k16 steps of P V
  constexpr bool BF16 = C::BF16;
  static_assert(BM == 16 * MT * C::WARPS, "BM = 16 * MT * WARPS");
  static_assert(D % 32 == 0 && BN % 16 == 0 && (BN * CH) % (C::WARPS * 32) == 0 && (BM * CH) % (C::WARPS * 32) == 0,
                "tile");
  static_assert(MT * NT * 4 <= 64, "one 64-bit mask word per thread");

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const CtaCtx x = cta_ctx<C>(p, smem);
  const DevTask& task = x.task;
  u16 *const sQ = x.sQ, *const sK = x.sK, *const sV = x.sV;

  load_q<C>(p, x);
  // Steps = (span, key tile) pairs in order. A load cursor runs STAGES-1 steps ahead of the compute
  // cursor; one barrier per step frees the buffer the next load overwrites.
  constexpr int S = C::STAGES;
  StepCursor ld = first_step<C>(p, task, x.klen);
  StepCursor cu = ld;
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (ld.si < task.span_end) {
      load_kv<C>(p, ld.sp, ld.kt, x.kbase, x.vbase, sK + st * BN * DP, sV + st * BN * DP);
      advance<C>(p, task, ld);
    }
    cp_async_commit();  // group st (group 0 also holds Q)
  }

  const int wr0 = warp * 16 * MT;
  float acc[MT][CH][4];
  float m[MT][2], l[MT][2];
  init_state<C>(p, x, wr0, acc, m, l);

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

  RowRange rr[MT * 2];  // per-span, per-row key ranges (closed form), computed when a span starts
  int prev_si = -1, cbuf = 0, lbuf = S - 1;
  while (cu.si < task.span_end) {
    const DevSpan& sp = cu.sp;
    if (cu.si != prev_si) {
      span_row_ranges<C>(p, task, sp, wr0, rr);
      prev_si = cu.si;
    }
    cp_async_wait<S - 2>();                       // this step's K and V have landed (later steps may be in flight)
    if constexpr (C::WGMMA) fence_proxy_async();  // cp.async wrote them (generic proxy); wgmma reads (async)
    __syncthreads();  // ... for every thread; and everyone is done with the buffer loaded next
    if (ld.si < task.span_end) {
      load_kv<C>(p, ld.sp, ld.kt, x.kbase, x.vbase, sK + lbuf * BN * DP, sV + lbuf * BN * DP);
      advance<C>(p, task, ld);
    }
    cp_async_commit();
    lbuf = lbuf + 1 == S ? 0 : lbuf + 1;

    const u16* cK = sK + cbuf * BN * DP;
    const u16* cV = sV + cbuf * BN * DP;
    // wgmma is warpgroup-collective: every warp takes part (rows outside the span are masked).
    const bool warp_active = C::WGMMA || (wr0 < task.row_count && wr0 < sp.row_hi && wr0 + 16 * MT > sp.row_lo);
    float s[MT][NT][4];
    if (warp_active) {
      if constexpr (C::WGMMA) {
        static_assert(MT == 1 && (BN == 64 || BN == 128) && C::WARPS % 4 == 0,
                      "wgmma: warpgroups of 64 rows, 64- or 128-key steps");
        // A = this warpgroup's 64 Q rows straight from shared memory (same 128B-swizzled K-major layout as K):
        // no Q fragments in registers (ptxas once reused such registers across the async MMAs, v4 notes).
        wgmma_fence();
        wgmma_scores<C>(s, sQ + (warp >> 2) * 64 * 64, cK);
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
      mask_scores<C>(p, task, cu, wr0, rr, s);
      float alpha[MT][2];
      softmax_update<C>(p.scale_log2, s, m, l, alpha);
      rescale_acc<C>(acc, alpha);
    }
    if (warp_active) {
      // O += P V (P from the S accumulators: the C layout of two n8 tiles is the A layout of one k16).
      if constexpr (C::WGMMA) {
        u32 pa[KP][4];
        pack_p<C>(s, pa);
        wgmma_fence();
        wgmma_pv<C>(acc, pa, cV);
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
          for (int dn = 0; dn < D / 8; dn += 2) {  // the tensor's columns only (the padding's are zero)
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
  write_out<C>(p, x, wr0, acc, m, l);
}

template <class C>
__device__ __forceinline__ void attn_fwd(const AttnParams& p, unsigned char* smem) {
  if constexpr (C::OVERLAP)
    attn_fwd_overlap<C>(p, smem);
  else
    attn_fwd_serial<C>(p, smem);
}

}  // namespace dev
}  // namespace splat
