// Fused sparse attention backward (FlashAttention-2 recurrence) over the same plans as the forward, in three
// directions of one kernel spec:
//   preprocess: Delta_i = rowsum(dO_i * O_i) and lse_i * log2 e per query row (into the caller's workspace);
//   dQ: one CTA per task of the forward plan (query rows; spans of keys): S = Q K^T, P = exp2(S scale log2e - L),
//       dP = dO V^T, dS = P (dP - Delta), dQ += scale dS K;
//   dK/dV: one CTA per task of the transposed plan (key rows; spans of the queries that attend them; masks from the
//       transposed ACSR with the same span geometry code): S^T = K Q^T, P^T, dV += P^T dO, dP^T = V dO^T,
//       dS^T = P^T (dP^T - Delta), dK += scale dS^T Q, looping over the query heads of a GQA group inside the CTA.
// Every gradient row is written by one CTA of one launch, and a later pass of a multi-pass plan continues from the
// earlier pass's result (CONTINUE): no atomics, bitwise-identical results run to run. The opt-in non-deterministic
// mode (ATOMIC_DQ, sm_90a) runs no dQ pass: the dK/dV kernel also forms dQ = scale dS K per step (dS^T through
// shared memory, one more warpgroup MMA) and adds it with fp32 atomics into a workspace accumulator that the
// preprocess zeroes and attn_bwd_dq_cast converts; the order of those additions varies from run to run.
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
  if (C::ATOMIC_DQ && row < rows) {
    float4* acc = reinterpret_cast<float4*>(p.dq_acc + r * C::D + ch * 8);
    acc[0] = make_float4(0.f, 0.f, 0.f, 0.f);
    acc[1] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// dQ = the fp32 accumulator (ATOMIC_DQ) in the gradient's dtype and strides; one 8-column chunk per thread.
template <class C>
__device__ __forceinline__ void attn_bwd_dq_cast(const AttnParams& p) {
  constexpr int CH = C::D / 8;
  const i64 row = (i64(blockIdx.x) * blockDim.x + threadIdx.x) / CH;
  const int ch = int(threadIdx.x % CH);
  if (row >= i64(p.B) * p.H * p.N) return;
  const int bh = int(row / p.N), i = int(row % p.N), b = bh / p.H, h = bh % p.H;
  const float4* acc = reinterpret_cast<const float4*>(p.dq_acc + row * C::D + ch * 8);
  const float4 x = acc[0], y = acc[1];
  u32* out = reinterpret_cast<u32*>(static_cast<u16*>(p.dq) + b * p.dq_sb + h * p.dq_sh + i64(i) * p.dq_sn + ch * 8);
  out[0] = pack2<C::BF16>(x.x, x.y);
  out[1] = pack2<C::BF16>(x.z, x.w);
  out[2] = pack2<C::BF16>(y.x, y.y);
  out[3] = pack2<C::BF16>(y.z, y.w);
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

// sm_90a, ATOMIC_DQ: D(64x64, f32) (+)= A(64x16) * B(16x64), both from 128B-swizzled shared memory stored MN-major
// (rows of k, m or n contiguous: the transposed layouts, allowed for 16-bit types).
__device__ __forceinline__ void wgmma_m64n64k16_tt(float* d, unsigned long long adesc, unsigned long long bdesc,
                                                   int accumulate, bool bf16) {
#define SPLAT_DQ_ACC                                                                                          \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define SPLAT_DQ_BODY(T)                                                                                         \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                                   \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." T "." T                                                          \
  " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28," \
  "%29,%30,%31}, %32, %33, p, 1, 1, 1, 1;\n}\n"
  if (bf16)
    asm volatile(SPLAT_DQ_BODY("bf16") : SPLAT_DQ_ACC : "l"(adesc), "l"(bdesc), "r"(accumulate));
  else
    asm volatile(SPLAT_DQ_BODY("f16") : SPLAT_DQ_ACC : "l"(adesc), "l"(bdesc), "r"(accumulate));
#undef SPLAT_DQ_BODY
#undef SPLAT_DQ_ACC
}

// ATOMIC_DQ: this step's dQ rows (its BN queries) += scale dS K over this warpgroup's 64 key rows. pb: dS^T in the A
// layout (rows: keys, columns: queries); it goes to sDS ([64 keys][BN queries], swizzled) and from there, read
// transposed, into one m64 x D x k64 warpgroup MMA with the K tile; the result is added to dq_acc with vector fp32
// atomics (red.global.add.v4: the two quad neighbours swap half their values so each holds four columns of one row).
// sQi: the step's query rows (-1 past the span). wgmma groups in flight (dK) stay in flight until the final wait.
template <class C>
__device__ __forceinline__ void dq_atomic_step(const AttnParams& p, const u32 (&pb)[C::BN / 16][4], u16* sDS,
                                               const u16* sK, const int* sQi, i64 bh) {
  constexpr int D = C::D, BN = C::BN, BM = C::BM;
  static_assert(BN == 64, "ATOMIC_DQ: 64-query steps (one m64 MMA)");
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3, wg = threadIdx.x >> 7;
  const int kr = ((threadIdx.x >> 5) & 3) * 16 + g;  // this thread's key rows kr, kr + 8 (of the warpgroup's 64)
  u16* wds = sDS + wg * 64 * BN;
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int c = kk * 16 + (e >> 1) * 8 + 2 * tq;
      *reinterpret_cast<u32*>(wds + swz<BN, 64>(kr + 8 * (e & 1), c >> 3) + (c & 7)) = pb[kk][e];
    }
  fence_proxy_async();  // the generic-proxy stores, then the warpgroup's async-proxy reads
  if (wg == 0)          // named barriers 1, 2: one per warpgroup (immediates: ptxas then reserves only those)
    asm volatile("bar.sync 1, 128;\n" ::: "memory");
  else
    asm volatile("bar.sync 2, 128;\n" ::: "memory");
  const unsigned long long da = wgmma_desc_sw128(smem_addr(wds));
  const unsigned long long dk = wgmma_desc_sw128(smem_addr(sK + wg * 64 * 64));
  // After the swap an even tq holds row g, columns 4 (tq/2) .. +3 of each n8 tile; an odd tq row g + 8, the same.
  const bool odd = tq & 1;
  const int qrow = sQi[((threadIdx.x >> 5) & 3) * 16 + g + (odd ? 8 : 0)];
  float* dst = p.dq_acc + (bh * p.N + qrow) * D + 2 * (tq & ~1);
  // One 64-column block of dQ at a time: 32 accumulators (64 at D=128 spilled next to dK, dV and dS^T).
#pragma unroll
  for (int hb = 0; hb < D / 64; ++hb) {
    float acc[8][4];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n64k16_tt(&acc[0][0], da + kk * (16 * 64 * 2 / 16),
                         dk + hb * (BM * 64 * 2 / 16) + kk * (16 * 64 * 2 / 16), kk > 0, C::BF16);
    wgmma_commit();
    wgmma_wait0();
#pragma unroll
    for (int dn = 0; dn < 8; ++dn) {
      // even tq sends its row g + 8 pair, odd tq its row g pair
      const float s0 = odd ? acc[dn][0] : acc[dn][2], s1 = odd ? acc[dn][1] : acc[dn][3];
      const float r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
      const float v0 = odd ? r0 : acc[dn][0], v1 = odd ? r1 : acc[dn][1];
      const float v2 = odd ? acc[dn][2] : r0, v3 = odd ? acc[dn][3] : r1;
      if (qrow >= 0)
        asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst + hb * 64 + dn * 8), "f"(v0), "f"(v1),
                     "f"(v2), "f"(v3)
                     : "memory");
    }
  }
}

// dK, dV over a pass of the transposed plan (rows: keys of one (batch, kv head); spans: the queries attending them,
// for each query head of the GQA group in turn). Shared memory: K, V [BM][D]; Q, dO rings [STAGES][BN][D]; the
// steps' lse * log2 e and Delta [STAGES][BN] floats.
template <class C>
__device__ __forceinline__ void attn_bwd_dkdv(const AttnParams& p, unsigned char* smem) {
  constexpr int D = C::D, BM = C::BM, BN = C::BN, NT = BN / 8, S = C::STAGES, THREADS = C::WARPS * 32;
  static_assert(C::MT == 1 && BM == 16 * C::WARPS && S >= 2 && C::DKDV, "backward: 16 rows per warp");
  static_assert(!C::ATOMIC_DQ || C::WGMMA, "ATOMIC_DQ: warpgroup MMAs only");
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
  u16* sDS = sdO + S * BN * D;  // ATOMIC_DQ: dS^T of the step, [BM][BN] (1024-aligned)
  float* sL = reinterpret_cast<float*>(sDS + (C::ATOMIC_DQ ? BM * BN : 0));
  float* sDl = sL + S * BN;
  int* sQi = reinterpret_cast<int*>(sDl + S * BN);  // ATOMIC_DQ: the steps' query rows, -1 past the span

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
        if (C::ATOMIC_DQ) sQi[buf * BN + t] = ok ? int(qi - bh * p.N) : -1;
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
        if constexpr (C::ATOMIC_DQ)  // dQ += scale dS K while dK += dS^T Q runs
          dq_atomic_step<C>(p, pb, sDS, sK, sQi + cbuf * BN, i64(b) * p.H + hk * G + cu_head);
        else
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
