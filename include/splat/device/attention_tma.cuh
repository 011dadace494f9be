// sm_90a forward with a producer warpgroup (FlashAttention-3's structure) for plans whose key spans are contiguous
// (affine spans of key stride 1, block spans): no gathered or strided keys, no key padding.
// Warpgroup 0 is the producer: after giving most of its registers away (setmaxnreg) one thread walks the task's
// steps and loads each step's K and V tiles with TMA (cp.async.bulk.tensor, 128B swizzle: the layout the wgmma
// descriptors read) into a ring of STAGES buffers, one `full` mbarrier per buffer completing on the bytes landed,
// one `empty` mbarrier per buffer completing when all 256 consumer threads released it.
// Warpgroups 1 and 2 are consumers of 64 query rows each (BM = 128), running attn_fwd_overlap's step (S of step
// n+1 in flight during the softmax of n) with the loads and the CTA barrier replaced by the mbarrier waits.
// PINGPONG: the two consumers take turns issuing their MMAs (named barriers 2 and 3), so one's softmax runs while
// the other's MMAs hold the tensor cores.
// K/V rows past a span's end (up to the next tile edge) are loaded from the tensor, not zero-filled (TMA zero-fills
// only outside [0, N)); their scores are masked, so their values only matter if they are not finite.
#pragma once
#include "splat/device/attention_parts.cuh"
#include "splat/device/ptx_tma.cuh"

namespace splat {
namespace dev {

template <class C>
__device__ __forceinline__ void attn_fwd_tma(const AttnParams& p, unsigned char* smem, const TmaMap* tk,
                                             const TmaMap* tv) {
  // D: tile columns (padded_dim: TMA zero-fills the box columns past the tensor's head dim), CH: their chunks.
  constexpr int D = padded_dim<C::D>, BN = C::BN, S = C::STAGES, KP = BN / 16, NT = BN / 8, CH = D / 8;
  static_assert(C::WGMMA && C::TMA && C::MT == 1 && C::WARPS == 8 && C::BM == 128 && (BN == 64 || BN == 128),
                "tma: two consumer warpgroups of 64 rows, 64- or 128-key steps");
  static_assert(!C::HAS_GATHER && !C::KEY_PAD && !C::DKDV, "tma: contiguous key spans only");
  static_assert(S >= 2, "tma: a ring of at least 2 buffers");
  constexpr u32 CONSUMERS = 256, TILE_BYTES = BN * D * 2;
  const int warp = threadIdx.x >> 5;
  const CtaCtx x = cta_ctx<C>(p, smem);
  const DevTask& task = x.task;
  const u32 full0 = smem_addr(x.sV + S * BN * D), empty0 = full0 + 8 * S;  // 8-byte mbarriers after the tiles
  if (threadIdx.x == 0) {
#pragma unroll
    for (int st = 0; st < S; ++st) {
      mbar_init(full0 + 8 * st, 1);
      mbar_init(empty0 + 8 * st, CONSUMERS);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (warp < 4) {  // producer warpgroup
    regs_release<24>();
    if (threadIdx.x == 0) {
      tma_prefetch_map(tk);
      tma_prefetch_map(tv);
      const int b = x.bh / p.H, hk = (x.bh % p.H) / (p.H / p.Hkv);
      // Expanded tensors (stride 0 over heads or batch) have maps of extent 1 there (tma_maps.cpp).
      const int kh = p.k_sh == 0 ? 0 : hk, kb = p.k_sb == 0 ? 0 : b, vh = p.v_sh == 0 ? 0 : hk,
                vb = p.v_sb == 0 ? 0 : b;
      StepCursor lk = first_step<C>(p, task, x.klen);
      int st = 0;
      u32 ph = 0;
      while (lk.si < task.span_end) {
        mbar_wait(empty0 + 8 * st, ph ^ 1);  // the consumers released step n - S of this buffer
        const u32 bar = full0 + 8 * st;
        mbar_arrive_expect_tx(bar, 2 * TILE_BYTES);
        const int key0 = lk.sp.key_begin + lk.kt * BN;  // key stride 1: the tile's keys are key0 .. key0 + BN - 1
        const u32 dk = smem_addr(x.sK + st * BN * D), dv = smem_addr(x.sV + st * BN * D);
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {  // 64-column blocks [BN][64], 128 bytes per row
          tma_load_4d(dk + cb * BN * 128, tk, bar, cb * 64, key0, kh, kb);
          tma_load_4d(dv + cb * BN * 128, tv, bar, cb * 64, key0, vh, vb);
        }
        advance<C>(p, task, lk);
        if (++st == S) st = 0, ph ^= 1;
      }
    }
    return;
  }

  regs_claim<240>();
  const int ct = threadIdx.x - 128, cw = (warp - 4) >> 2;  // consumer thread, consumer warpgroup
  const int wr0 = (warp - 4) * 16;
  // Q: this CTA's rows by cp.async (rows may be residue-permuted), once.
#pragma unroll
  for (int it = 0; it < (C::BM * CH) / int(CONSUMERS); ++it) {
    const int id = ct + it * int(CONSUMERS), r = id / CH, ch = id % CH;
    const bool ok = r < task.row_count && (D == C::D || ch < C::D / 8);
    const i64 i = ok ? i64(task.row_begin) + i64(task.row_stride) * r : 0;
    cp_async16(smem_addr(x.sQ + swz<D, C::BM>(r, ch)), x.qbase + i * p.q_sn + ch * 8, ok ? 16 : 0);
  }
  cp_async_commit();
  float acc[1][D / 8][4];
  float m[1][2], l[1][2], alpha[1][2];
  init_state<C>(p, x, wr0, acc, m, l);
  cp_async_wait<0>();
  fence_proxy_async();  // cp.async wrote Q (generic proxy); wgmma reads it (async proxy)
  named_sync(1, CONSUMERS);

  // Turns: consumer cw waits on barrier 2 + cw before issuing MMAs and lets the other go after issuing them.
  // Consumer 1 lets consumer 0 go first; consumer 0 takes that extra arrival at the end.
  auto my_turn = [&]() {
    if (C::PINGPONG) named_sync(2 + cw, CONSUMERS);
  };
  auto your_turn = [&]() {
    if (C::PINGPONG) named_arrive(3 - cw, CONSUMERS);
  };
  if (C::PINGPONG && cw == 1) named_arrive(2, CONSUMERS);

  StepCursor cu = first_step<C>(p, task, x.klen);
  if (cu.si < task.span_end) {
    const u16* wq = x.sQ + cw * 64 * 64;  // this warpgroup's 64 Q rows
    float s[1][NT][4];
    RowRange rr[2];
    int st = 0;
    u32 ph = 0;
    mbar_wait(full0, 0);
    span_row_ranges<C>(p, task, cu.sp, wr0, rr);
    int prev_si = cu.si;
    my_turn();
    wgmma_fence();
    wgmma_scores<C>(s, wq, x.sK);
    wgmma_commit();
    your_turn();
    wgmma_wait0();
    mask_scores<C>(p, task, cu, wr0, rr, s);
    softmax_update<C>(p.scale_log2, s, m, l, alpha);
    rescale_acc<C>(acc, alpha);
    advance<C>(p, task, cu);
    while (true) {
      u32 pa[KP][4];
      pack_p<C>(s, pa);
      const u16* cV = x.sV + st * BN * D;
      if (cu.si >= task.span_end) {  // last step: only its P V
        my_turn();
        wgmma_fence();
        wgmma_pv<C>(acc, pa, cV);
        wgmma_commit();
        your_turn();
        wgmma_wait0();
        mbar_arrive(empty0 + 8 * st);
        break;
      }
      int nst = st + 1;
      u32 nph = ph;
      if (nst == S) nst = 0, nph ^= 1;
      mbar_wait(full0 + 8 * nst, nph);  // K and V of step n+1 landed
      my_turn();
      wgmma_fence();
      wgmma_scores<C>(s, wq, x.sK + nst * BN * D);
      wgmma_commit();
      wgmma_pv<C>(acc, pa, cV);
      wgmma_commit();
      your_turn();
      if (cu.si != prev_si) {  // new span: its row ranges, while the tensor cores work
        span_row_ranges<C>(p, task, cu.sp, wr0, rr);
        prev_si = cu.si;
      }
      wgmma_wait<1>();  // S(n+1) done; O += P(n) V(n) may still run
      mask_scores<C>(p, task, cu, wr0, rr, s);
      softmax_update<C>(p.scale_log2, s, m, l, alpha);
      wgmma_wait0_after(l[0][0], l[0][1]);  // after the softmax, so it overlaps O += P(n) V(n)
      mbar_arrive(empty0 + 8 * st);         // this thread is done with K(n) and V(n)
      rescale_acc<C>(acc, alpha);
      advance<C>(p, task, cu);
      st = nst, ph = nph;
    }
  }
  if (C::PINGPONG && cw == 0) named_sync(2, CONSUMERS);
  write_out<C>(p, x, wr0, acc, m, l);
}

}  // namespace dev
}  // namespace splat
