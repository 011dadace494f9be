// Fused sparse attention backward (FlashAttention-2 recurrence) over the same plans as the forward, in three
// directions of one kernel spec:
//   preprocess: Delta_i = rowsum(dO_i * O_i) and lse_i * log2 e per query row (into the caller's workspace);
//   dQ: one CTA per task of the forward plan (query rows; spans of keys): S = Q K^T, P = exp2(S scale log2e - L),
//       dP = dO V^T, dS = P (dP - Delta), dQ += scale dS K;
//   dK/dV: one CTA per task of the transposed plan (key rows; spans of the queries that attend them; masks from the
//       transposed ACSR with the same span geometry code): S^T = K Q^T, P^T, dV += P^T dO, dP^T = V dO^T,
//       dS^T = P^T (dP^T - Delta), dK += scale dS^T Q, looping over the query heads of a GQA group inside the CTA.
// Every gradient row is written by one CTA of one launch, and a later pass of a multi-pass plan continues from the
// earlier pass's result (CONTINUE): no atomics, bitwise-identical results run to run.
// mma.sync m16n8k16 or, on sm_90a (WGMMA), warpgroup MMAs (both score products from shared memory, both
// gradient updates with the 16-bit P / dS from registers), fp32 accumulation; K/V (dQ) or Q/dO (dK/dV) tiles stream
// through a cp.async ring of STAGES swizzled buffers as in the forward. Rows without keys (lse = -inf) get L = +inf, so
// P = 0.
#pragma once
#include "splat/device/attention_parts.cuh"

namespace splat {
namespace dev {

// One row per CH = D/8 threads (16-byte chunks), over all B*H*N rows.
template <class C>
__device__ __forceinline__ void attn_bwd_pre(const AttnParams& p) {
  constexpr int CH = C::D / 8;
  const i64 row = (i64(blockIdx.x) * blockDim.x + threadIdx.x) / CH;
  const int ch = int(threadIdx.x % CH);
  const i64 rows = i64(p.B) * p.H * p.N;
  const i64 r = row < rows ? row : 0;
  const int bh = int(r / p.N), i = int(r % p.N), b = bh / p.H, h = bh % p.H;
  const uint4 o = *reinterpret_cast<const uint4*>(static_cast<const u16*>(p.o) + b * p.o_sb + h * p.o_sh +
                                                  i64(i) * p.o_sn + ch * 8);
  const uint4 d = *reinterpret_cast<const uint4*>(static_cast<const u16*>(p.dout) + b * p.do_sb + h * p.do_sh +
                                                  i64(i) * p.do_sn + ch * 8);
  const u32 ow[4] = {o.x, o.y, o.z, o.w}, dw[4] = {d.x, d.y, d.z, d.w};
  float sum = 0.f;
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    sum = fmaf(to_float<C::BF16>(u16(ow[w] & 0xffffu)), to_float<C::BF16>(u16(dw[w] & 0xffffu)), sum);
    sum = fmaf(to_float<C::BF16>(u16(ow[w] >> 16)), to_float<C::BF16>(u16(dw[w] >> 16)), sum);
  }
#pragma unroll
  for (int off = CH / 2; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (row < rows && ch == 0) {
    p.delta[r] = sum;
    const float l = p.lse[r];
    p.lse2[r] = l == neg_inf() ? -neg_inf() : l * 1.4426950408889634f;
  }
}

// s = A rows [wr0, wr0+16) of a swizzled [ROWS][D] tile times B^T, B a swizzled [BN][D] tile (both D-contiguous).
template <class C, int ROWS>
__device__ __forceinline__ void mma_abt(float (&s)[C::BN / 8][4], const u16* sA, const u16* sB, int wr0) {
  constexpr int D = C::D, BN = C::BN, NT = BN / 8;
  const int lane = threadIdx.x & 31, mi = lane >> 3, lr = lane & 7;
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[j][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    u32 a[4];
    ldmatrix_x4(a[0], a[1], a[2], a[3], smem_addr(sA + swz<D, ROWS>(wr0 + (mi & 1) * 8 + lr, 2 * kk + (mi >> 1))));
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      u32 b0, b1, b2, b3;
      ldmatrix_x4(b0, b1, b2, b3, smem_addr(sB + swz<D, BN>(j * 8 + (mi >> 1) * 8 + lr, 2 * kk + (mi & 1))));
      mma16816<C::BF16>(s[j], a, b0, b1);
      mma16816<C::BF16>(s[j + 1], a, b2, b3);
    }
  }
}

// acc += X B: X the 16 x BN values of s (rounded to 16 bits; the C layout of two n8 tiles is the A layout of one
// k16), B a swizzled [BN][D] tile read transposed (its rows are the reduction dimension).
template <class C>
__device__ __forceinline__ void mma_xb(float (&acc)[C::D / 8][4], const float (&s)[C::BN / 8][4], const u16* sB) {
  constexpr int D = C::D, BN = C::BN, CH = D / 8;
  const int lane = threadIdx.x & 31, mi = lane >> 3, lr = lane & 7;
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    u32 pa[4];
    pa[0] = pack2<C::BF16>(s[2 * kk][0], s[2 * kk][1]);
    pa[1] = pack2<C::BF16>(s[2 * kk][2], s[2 * kk][3]);
    pa[2] = pack2<C::BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pa[3] = pack2<C::BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dn = 0; dn < CH; dn += 2) {
      u32 b0, b1, b2, b3;
      ldmatrix_x4_trans(b0, b1, b2, b3, smem_addr(sB + swz<D, BN>(kk * 16 + (mi & 1) * 8 + lr, dn + (mi >> 1))));
      mma16816<C::BF16>(acc[dn], pa, b0, b1);
      mma16816<C::BF16>(acc[dn + 1], pa, b2, b3);
    }
  }
}

// Two score-shaped products of this warp's 16 rows: x = A1 B1^T and y = A2 B2^T (A: [ROWS][D] tiles, B: [BN][D]).
// sm_90a: warpgroup MMAs from shared memory (this warpgroup's 64 rows of A), issued together, one wait.
template <class C, int ROWS>
__device__ __forceinline__ void two_scores(float (&x)[1][C::BN / 8][4], const u16* a1, const u16* b1,
                                           float (&y)[1][C::BN / 8][4], const u16* a2, const u16* b2, int wr0) {
  if constexpr (C::WGMMA) {
    static_assert(ROWS == C::BM && (C::BN == 64 || C::BN == 128) && C::WARPS % 4 == 0, "wgmma: 64-row warpgroups");
    const int wg = (threadIdx.x >> 7) * 64 * 64;
    wgmma_fence();
    wgmma_scores<C>(x, a1 + wg, b1);
    wgmma_scores<C>(y, a2 + wg, b2);
    wgmma_commit();
    wgmma_wait0();
  } else {
    mma_abt<C, ROWS>(x[0], a1, b1, wr0);
    mma_abt<C, ROWS>(y[0], a2, b2, wr0);
  }
}

// acc1 += X1 B1 and acc2 += X2 B2 (X: score-shaped values rounded to 16 bits; B: [BN][D] tiles, rows = reduction).
template <class C>
__device__ __forceinline__ void two_updates(float (&acc1)[1][C::D / 8][4], const float (&x1)[1][C::BN / 8][4],
                                            const u16* b1, float (&acc2)[1][C::D / 8][4],
                                            const float (&x2)[1][C::BN / 8][4], const u16* b2) {
  if constexpr (C::WGMMA) {
    u32 p1[C::BN / 16][4], p2[C::BN / 16][4];
    pack_p<C>(x1, p1);
    pack_p<C>(x2, p2);
    wgmma_fence();
    wgmma_pv<C>(acc1, p1, b1);
    wgmma_pv<C>(acc2, p2, b2);
    wgmma_commit();
    wgmma_wait0();
  } else {
    mma_xb<C>(acc1[0], x1[0], b1);
    mma_xb<C>(acc2[0], x2[0], b2);
  }
}

// Accumulator rows g, g+8 of this warp's 16 rows: zero, or (CONTINUE) the earlier pass's gradient rows.
template <class C>
__device__ __forceinline__ void init_grad(const DevTask& task, int wr0, const u16* base, i64 sn,
                                          float (&acc)[C::D / 8][4]) {  // acc: m-tile 0 of [1][D/8][4]
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int dn = 0; dn < C::D / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[dn][e] = 0.f;
  if (!C::CONTINUE) return;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = wr0 + g + 8 * hf;
    if (r >= task.row_count) continue;
    const u32* row = reinterpret_cast<const u32*>(base + (i64(task.row_begin) + i64(task.row_stride) * r) * sn);
#pragma unroll
    for (int dn = 0; dn < C::D / 8; ++dn) {
      const u32 w = row[dn * 4 + tq];
      acc[dn][2 * hf] = to_float<C::BF16>(u16(w & 0xffffu));
      acc[dn][2 * hf + 1] = to_float<C::BF16>(u16(w >> 16));
    }
  }
}

template <class C>
__device__ __forceinline__ void store_grad(const DevTask& task, int wr0, u16* base, i64 sn,
                                           const float (&acc)[C::D / 8][4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = wr0 + g + 8 * hf;
    if (r >= task.row_count) continue;
    u32* row = reinterpret_cast<u32*>(base + (i64(task.row_begin) + i64(task.row_stride) * r) * sn);
#pragma unroll
    for (int dn = 0; dn < C::D / 8; ++dn) row[dn * 4 + tq] = pack2<C::BF16>(acc[dn][2 * hf], acc[dn][2 * hf + 1]);
  }
}

__device__ __forceinline__ u16* align_1024(unsigned char* smem) {
  return reinterpret_cast<u16*>(smem + ((1024 - (smem_addr(smem) & 1023)) & 1023));
}

// dQ over a pass of the forward plan. Shared memory: Q, dO [BM][D]; K, V rings [STAGES][BN][D].
template <class C>
__device__ __forceinline__ void attn_bwd_dq(const AttnParams& p, unsigned char* smem) {
  constexpr int D = C::D, BM = C::BM, BN = C::BN, NT = BN / 8, S = C::STAGES;
  static_assert(C::MT == 1 && BM == 16 * C::WARPS && S >= 2, "backward: 16 rows per warp");
  static_assert(D % 64 == 0 && (BN * D / 8) % (C::WARPS * 32) == 0 && (BM * D / 8) % (C::WARPS * 32) == 0, "tile");
  const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
  const int BH = p.B * p.H;
  const DevTask task = p.tasks[blockIdx.x / unsigned(BH)];
  const int bh = int(blockIdx.x % unsigned(BH)), b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv);
  const u16* qbase = static_cast<const u16*>(p.q) + b * p.q_sb + h * p.q_sh;
  const u16* dobase = static_cast<const u16*>(p.dout) + b * p.do_sb + h * p.do_sh;
  const u16* kbase = static_cast<const u16*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const u16* vbase = static_cast<const u16*>(p.v) + b * p.v_sb + hk * p.v_sh;
  u16* dqbase = static_cast<u16*>(p.dq) + b * p.dq_sb + h * p.dq_sh;
  const int klen = C::KEY_PAD ? p.key_lengths[b] : p.N;
  u16* sQ = align_1024(smem);
  u16* sdO = sQ + BM * D;
  u16* sK = sdO + BM * D;
  u16* sV = sK + S * BN * D;

  load_rows<C>(task, qbase, p.q_sn, sQ);
  load_rows<C>(task, dobase, p.do_sn, sdO);
  StepCursor ld = first_step<C>(p, task, klen);
  StepCursor cu = ld;
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (ld.si < task.span_end) {
      load_kv<C>(p, ld.sp, ld.kt, kbase, vbase, sK + st * BN * D, sV + st * BN * D);
      advance<C>(p, task, ld);
    }
    cp_async_commit();
  }
  const int wr0 = warp * 16;
  float L2[2], Dl[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = wr0 + g + 8 * hf;
    const i64 i = i64(task.row_begin) + i64(task.row_stride) * r;
    L2[hf] = r < task.row_count ? p.lse2[i64(bh) * p.N + i] : -neg_inf();
    Dl[hf] = r < task.row_count ? p.delta[i64(bh) * p.N + i] : 0.f;
  }
  float acc[1][D / 8][4];
  init_grad<C>(task, wr0, dqbase, p.dq_sn, acc[0]);

  RowRange rr[2];
  int prev_si = -1, cbuf = 0, lbuf = S - 1;
  while (cu.si < task.span_end) {
    const DevSpan& sp = cu.sp;
    if (cu.si != prev_si) {
      span_row_ranges<C>(p, task, sp, wr0, rr);
      prev_si = cu.si;
    }
    cp_async_wait<S - 2>();
    if constexpr (C::WGMMA) fence_proxy_async();  // cp.async wrote the tiles (generic proxy); wgmma reads them
    __syncthreads();
    if (ld.si < task.span_end) {
      load_kv<C>(p, ld.sp, ld.kt, kbase, vbase, sK + lbuf * BN * D, sV + lbuf * BN * D);
      advance<C>(p, task, ld);
    }
    cp_async_commit();
    lbuf = lbuf + 1 == S ? 0 : lbuf + 1;
    const u16* cK = sK + cbuf * BN * D;
    const u16* cV = sV + cbuf * BN * D;
    // wgmma is warpgroup-collective: every warp takes part (rows outside the span are masked).
    if (C::WGMMA || (wr0 < task.row_count && wr0 < sp.row_hi && wr0 + 16 > sp.row_lo)) {
      float s[1][NT][4], dp[1][NT][4];
      if constexpr (C::WGMMA) {  // dP = dO V^T runs on the tensor cores while P is exponentiated
        const int wg = (threadIdx.x >> 7) * 64 * 64;
        wgmma_fence();
        wgmma_scores<C>(s, sQ + wg, cK);
        wgmma_commit();
        wgmma_scores<C>(dp, sdO + wg, cV);
        wgmma_commit();
        wgmma_wait<1>();
      } else {
        two_scores<C, BM>(s, sQ, cK, dp, sdO, cV, wr0);
      }
      mask_scores<C>(p, task, cu, wr0, rr, s);
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][j][e] = fast_exp2(fmaf(s[0][j][e], p.scale_log2, -L2[e >> 1]));
      if constexpr (C::WGMMA) wgmma_wait0_after(s[0][0][0], s[0][NT - 1][3]);  // P >= 0: after the exponentials
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][j][e] = s[0][j][e] * (dp[0][j][e] - Dl[e >> 1]) * p.scale;
      if constexpr (C::WGMMA) {
        u32 pa[BN / 16][4];
        pack_p<C>(s, pa);
        wgmma_fence();
        wgmma_pv<C>(acc, pa, cK);
        wgmma_commit();
        wgmma_wait0();
      } else {
        mma_xb<C>(acc[0], s[0], cK);
      }
    }
    advance<C>(p, task, cu);
    cbuf = cbuf + 1 == S ? 0 : cbuf + 1;
  }
  cp_async_wait<0>();
  store_grad<C>(task, wr0, dqbase, p.dq_sn, acc[0]);
}

// P^T = exp2(S^T scale log2e - L[query]) (0 on padded key rows); dS^T = scale P^T (dP^T - Delta[query]) in place of
// dP^T. Columns are queries: their L and Delta come from the step's shared-memory slots.
template <class C>
__device__ __forceinline__ void exp_cols(float (&s)[1][C::BN / 8][4], const bool (&pad_row)[2], const float* cL,
                                         float sl2) {
  const int tq = threadIdx.x & 3;
#pragma unroll
  for (int j = 0; j < C::BN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      s[0][j][e] = pad_row[e >> 1] ? 0.f : fast_exp2(fmaf(s[0][j][e], sl2, -cL[j * 8 + 2 * tq + (e & 1)]));
}
template <class C>
__device__ __forceinline__ void ds_cols(float (&dp)[1][C::BN / 8][4], const float (&s)[1][C::BN / 8][4],
                                        const float* cDl, float scale) {
  const int tq = threadIdx.x & 3;
#pragma unroll
  for (int j = 0; j < C::BN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dp[0][j][e] = s[0][j][e] * (dp[0][j][e] - cDl[j * 8 + 2 * tq + (e & 1)]) * scale;
}

// dK, dV over a pass of the transposed plan (rows: keys of one (batch, kv head); spans: the queries attending them,
// for each query head of the GQA group in turn). Shared memory: K, V [BM][D]; Q, dO rings [STAGES][BN][D]; the
// steps' lse * log2 e and Delta [STAGES][BN] floats.
template <class C>
__device__ __forceinline__ void attn_bwd_dkdv(const AttnParams& p, unsigned char* smem) {
  constexpr int D = C::D, BM = C::BM, BN = C::BN, NT = BN / 8, S = C::STAGES, THREADS = C::WARPS * 32;
  static_assert(C::MT == 1 && BM == 16 * C::WARPS && S >= 2 && C::DKDV, "backward: 16 rows per warp");
  static_assert(D % 64 == 0 && (BN * D / 8) % THREADS == 0 && (BM * D / 8) % THREADS == 0, "tile");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
  const int BK = p.B * p.Hkv, G = p.H / p.Hkv;
  const DevTask task = p.tasks[blockIdx.x / unsigned(BK)];
  const int bk = int(blockIdx.x % unsigned(BK)), b = bk / p.Hkv, hk = bk % p.Hkv;
  const u16* kbase = static_cast<const u16*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const u16* vbase = static_cast<const u16*>(p.v) + b * p.v_sb + hk * p.v_sh;
  u16* dkbase = static_cast<u16*>(p.dk) + b * p.dk_sb + hk * p.dk_sh;
  u16* dvbase = static_cast<u16*>(p.dv) + b * p.dv_sb + hk * p.dv_sh;
  const int klen = C::KEY_PAD ? p.key_lengths[b] : p.N;
  u16* sK = align_1024(smem);
  u16* sV = sK + BM * D;
  u16* sQ = sV + BM * D;
  u16* sdO = sQ + S * BN * D;
  float* sL = reinterpret_cast<float*>(sdO + S * BN * D);
  float* sDl = sL + S * BN;

  load_rows<C>(task, kbase, p.k_sn, sK);
  load_rows<C>(task, vbase, p.v_sn, sV);
  // Steps: (query head of the group, span, query tile). Key rows all beyond the padding: no steps (zeros).
  StepCursor ld = first_step<C>(p, task, klen);
  int ld_head = 0;
  if (C::KEY_PAD && task.row_begin >= klen) ld.si = task.span_end, ld_head = G;
  if (ld.si >= task.span_end) ld_head = G;
  StepCursor cu = ld;
  int cu_head = ld_head;
  auto next = [&](StepCursor& c, int& head) {
    advance<C>(p, task, c);
    if (c.si >= task.span_end && ++head < G) c = first_step<C>(p, task, klen);
  };
  auto load_step = [&](int buf) {
    if (ld_head < G) {
      const int h = hk * G + ld_head;
      const i64 bh = i64(b) * p.H + h;
      load_pair<C, true>(p, ld.sp, ld.kt, static_cast<const u16*>(p.q) + b * p.q_sb + h * p.q_sh,
                         static_cast<const u16*>(p.dout) + b * p.do_sb + h * p.do_sh, sQ + buf * BN * D,
                         sdO + buf * BN * D);
      for (int t = threadIdx.x; t < BN; t += THREADS) {
        const int c = ld.kt * BN + t;
        const bool ok = c < ld.sp.key_count;
        const i64 qi = bh * p.N + (ok ? span_key<C>(p, ld.sp, c) : 0);
        cp_async4(smem_addr(sL + buf * BN + t), p.lse2 + qi, ok ? 4 : 0);
        cp_async4(smem_addr(sDl + buf * BN + t), p.delta + qi, ok ? 4 : 0);
      }
      next(ld, ld_head);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int st = 0; st < S - 1; ++st) load_step(st);

  const int wr0 = warp * 16;
  bool pad_row[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf)
    pad_row[hf] = C::KEY_PAD && task.row_begin + task.row_stride * (wr0 + g + 8 * hf) >= klen;
  float dk[1][D / 8][4], dv[1][D / 8][4];
  init_grad<C>(task, wr0, dkbase, p.dk_sn, dk[0]);
  init_grad<C>(task, wr0, dvbase, p.dv_sn, dv[0]);

  RowRange rr[2];
  int prev_si = -1, cbuf = 0, lbuf = S - 1;
  while (cu_head < G) {
    const DevSpan& sp = cu.sp;
    if (cu.si != prev_si) {  // row ranges depend on (task, span) only, not on the query head
      span_row_ranges<C>(p, task, sp, wr0, rr);
      prev_si = cu.si;
    }
    cp_async_wait<S - 2>();
    if constexpr (C::WGMMA) fence_proxy_async();
    __syncthreads();
    load_step(lbuf);
    lbuf = lbuf + 1 == S ? 0 : lbuf + 1;
    const u16* cQ = sQ + cbuf * BN * D;
    const u16* cdO = sdO + cbuf * BN * D;
    const float* cL = sL + cbuf * BN;
    const float* cDl = sDl + cbuf * BN;
    if (C::WGMMA || (wr0 < task.row_count && wr0 < sp.row_hi && wr0 + 16 > sp.row_lo)) {
      float s[1][NT][4], dp[1][NT][4];
      if constexpr (C::WGMMA) {
        // dP^T = V dO^T runs while P^T is exponentiated, and dV += P^T dO while dS^T is formed.
        const int wg = (threadIdx.x >> 7) * 64 * 64;
        wgmma_fence();
        wgmma_scores<C>(s, sK + wg, cQ);
        wgmma_commit();
        wgmma_scores<C>(dp, sV + wg, cdO);
        wgmma_commit();
        wgmma_wait<1>();
        mask_scores<C>(p, task, cu, wr0, rr, s);
        exp_cols<C>(s, pad_row, cL, p.scale_log2);
        u32 pa[BN / 16][4];
        pack_p<C>(s, pa);
        wgmma_fence();
        wgmma_pv<C>(dv, pa, cdO);
        wgmma_commit();
        wgmma_wait1_after(s[0][0][0], s[0][NT - 1][3]);  // dP^T done (P >= 0: after the exponentials)
        ds_cols<C>(dp, s, cDl, p.scale);
        u32 pb[BN / 16][4];
        pack_p<C>(dp, pb);
        wgmma_fence();
        wgmma_pv<C>(dk, pb, cQ);
        wgmma_commit();
        wgmma_wait0();
      } else {
        two_scores<C, BM>(s, sK, cQ, dp, sV, cdO, wr0);
        mask_scores<C>(p, task, cu, wr0, rr, s);
        exp_cols<C>(s, pad_row, cL, p.scale_log2);
        ds_cols<C>(dp, s, cDl, p.scale);
        two_updates<C>(dv, s, cdO, dk, dp, cQ);
      }
    }
    next(cu, cu_head);
    cbuf = cbuf + 1 == S ? 0 : cbuf + 1;
  }
  cp_async_wait<0>();
  store_grad<C>(task, wr0, dkbase, p.dk_sn, dk[0]);
  store_grad<C>(task, wr0, dvbase, p.dv_sn, dv[0]);
}

}  // namespace dev
}  // namespace splat
