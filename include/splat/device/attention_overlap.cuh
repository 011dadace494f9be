// sm_90a attention main loop with the next step's S = Q K^T in flight during the current softmax
// (FlashAttention-3's intra-warpgroup overlap). Per step n of a warpgroup:
//   P(n) = bf16(exp scores)  ->  issue S(n+1) = Q K(n+1)^T, issue O += P(n) V(n)  ->  wait S(n+1)
//   ->  mask + softmax(n+1) on the CUDA cores while O += P(n) V(n) runs  ->  wait PV  ->  O *= alpha(n+1)
// S(n+1) reuses the registers of S(n) (already packed into P(n)), so only P (BN/4 registers) is extra.
// K/V rings of STAGES >= 3 buffers each, step j in buffer j % STAGES. Iteration n (one barrier) loads K and V
// of step n+S-1 into the buffers of step n-1, which every warpgroup finished with before the barrier. Commit
// group G holds K(G) and V(G); group 0 also Q. (Loading K one step earlier than V measured 8-10% slower, v6.)
#pragma once
#include "splat/device/attention_parts.cuh"

namespace splat {
namespace dev {

template <class C>
__device__ __forceinline__ void attn_fwd_overlap(const AttnParams& p, unsigned char* smem) {
  constexpr int D = padded_dim<C::D>, BN = C::BN, S = C::STAGES, NT = BN / 8, KP = BN / 16;  // D: tile columns
  static_assert(C::WGMMA && C::MT == 1 && (BN == 64 || BN == 128) && C::WARPS % 4 == 0 && C::BM == 16 * C::WARPS,
                "overlap: wgmma warpgroups of 64 rows, 64- or 128-key steps");
  static_assert(S >= 3, "overlap: rings of at least 3 buffers");
  static_assert((BN * D / 8) % (C::WARPS * 32) == 0 && (C::BM * D / 8) % (C::WARPS * 32) == 0, "tile");
  const int warp = threadIdx.x >> 5;
  const CtaCtx x = cta_ctx<C>(p, smem);
  const DevTask& task = x.task;

  load_q<C>(p, x);
  StepCursor lk = first_step<C>(p, task, x.klen);  // next step whose K and V are loaded; kb: its buffer
  StepCursor cu = lk;                              // next step whose scores are computed
  int kb = 0;
  auto load_kv_step = [&]() {  // then commit: one group per step
    if (lk.si < task.span_end) {
      load_kv<C>(p, lk.sp, lk.kt, x.kbase, x.vbase, x.sK + kb * BN * D, x.sV + kb * BN * D);
      advance<C>(p, task, lk);
    }
    kb = kb + 1 == S ? 0 : kb + 1;
    cp_async_commit();
  };
#pragma unroll
  for (int g = 0; g < S - 1; ++g) load_kv_step();  // groups 0 .. S-2

  const int wr0 = warp * 16;
  float acc[1][D / 8][4];
  float m[1][2], l[1][2], alpha[1][2];
  init_state<C>(p, x, wr0, acc, m, l);
  if (cu.si >= task.span_end) {  // no keys: zeros (or the earlier pass's result)
    cp_async_wait<0>();
    write_out<C>(p, x, wr0, acc, m, l);
    return;
  }
  const u16* wq = x.sQ + (warp >> 2) * 64 * 64;  // this warpgroup's 64 Q rows
  float s[1][NT][4];
  RowRange rr[2];

  // Step 0: scores and softmax, nothing to overlap with yet.
  cp_async_wait<S - 2>();  // group 0: Q and K(0)
  fence_proxy_async();     // cp.async wrote them (generic proxy); wgmma reads (async proxy)
  __syncthreads();
  span_row_ranges<C>(p, task, cu.sp, wr0, rr);
  int prev_si = cu.si;
  wgmma_fence();
  wgmma_scores<C>(s, wq, x.sK);
  wgmma_commit();
  wgmma_wait0();
  mask_scores<C>(p, task, cu, wr0, rr, s);
  softmax_update<C>(p.scale_log2, s, m, l, alpha);
  rescale_acc<C>(acc, alpha);
  advance<C>(p, task, cu);

  int pbuf = 0;  // buffer of the step n whose P V is pending (n % S)
  while (true) {
    u32 pa[KP][4];
    pack_p<C>(s, pa);
    const u16* cV = x.sV + pbuf * BN * D;
    if (cu.si >= task.span_end) {  // last step: only its P V
      wgmma_fence();
      wgmma_pv<C>(acc, pa, cV);
      wgmma_commit();
      wgmma_wait0();
      break;
    }
    const int sbuf = pbuf + 1 == S ? 0 : pbuf + 1;  // buffer of step n+1 = cu
    // K(n+1) is in group n+1, V(n) in group n; groups up to n+S-2 are committed.
    cp_async_wait<S - 3>();
    fence_proxy_async();
    __syncthreads();  // ... for every thread; and every warpgroup finished P V(n-1) and S(n), whose buffers refill
    // Loads ahead first: issuing them after the MMAs measured 4-8% slower (their latency shows, v6 notes).
    load_kv_step();

    wgmma_fence();
    wgmma_scores<C>(s, wq, x.sK + sbuf * BN * D);
    wgmma_commit();
    wgmma_pv<C>(acc, pa, cV);
    wgmma_commit();
    if (cu.si != prev_si) {  // new span: its row ranges, while the tensor cores work
      span_row_ranges<C>(p, task, cu.sp, wr0, rr);
      prev_si = cu.si;
    }
    wgmma_wait<1>();  // S(n+1) done; O += P(n) V(n) may still run
    mask_scores<C>(p, task, cu, wr0, rr, s);
    softmax_update<C>(p.scale_log2, s, m, l, alpha);
    wgmma_wait0_after(l[0][0], l[0][1]);  // l >= 0: after the whole softmax, so it overlaps O += P(n) V(n)
    rescale_acc<C>(acc, alpha);
    advance<C>(p, task, cu);
    pbuf = sbuf;
  }
  cp_async_wait<0>();
  write_out<C>(p, x, wr0, acc, m, l);
}

}  // namespace dev
}  // namespace splat
