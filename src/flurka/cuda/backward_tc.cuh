// FLuRKA CUDA backward on the tensor cores (bf16 storage, mma.sync m16n8k16 with fp32 accumulation), non-causal.
// Every method is a softmax or weighted attention of the queries over L slots (backward_cpu.cpp has the
// formulas): slot l has a key (W^T row for the kernel maps, K'_l for linformer), a value U_l (S~_l / z~_l, or V'_l)
// and a bias (favor: log2-scaled c_l + log z~_l) or a weight (relu, elu: z~_l). The kernels here:
//   query_rows:  per 128 query rows: the forward pass again (row max, denominator, out in registers), delta =
//                rowsum(dO * out), then dq = a * sum_l ds_l key_l; writes dq and the row stats (log2 normaliser or
//                1 / den, delta) for query_slots.
//   query_slots: per 64 slots and a split of the rows (FlashAttention-2's dK/dV order): dU = P^T dO, g = P^T delta
//                and, for linformer, dkey = dS^T Q, in registers; one fp32 partial per split.
//   key_rows:    kernel maps: per 128 key rows (K' or K): phi recomputed, dphi = Y dS~^T + dz~, dY = phi dS~,
//                dX through the feature map (W fixed).
//   project_back: projected methods: per head and 64 columns of N, dX = P^T G for each batch and dP = sum G X^T
//                over the batches (and heads, for shared E/F) in registers, in a fixed order.
// Partials have one owner each and are summed in a fixed order: gradients are bitwise reproducible. Slots and
// projected rows are at most 256 (kSlotMax); larger k or m run
// the SIMT kernels (backward.cuh).
#pragma once
#include "flurka/cuda/kernels.cuh"
#include "flurka/cuda/pipe.cuh"

namespace splat::fk::tc {

constexpr int kSlotMax = 256;
constexpr float kLog2e = 1.4426950408889634f;

// acc (C layout, D / 8 n8 tiles) += A B with A the k16 slice kc of p (C layout of NT n8 tiles, packed to bf16) and
// B a bf16 [k][n] tile in shared memory (n contiguous, row pitch ld), read with ldmatrix.trans.
template <int D, int NT>
__device__ __forceinline__ void mma_pa_kn(const float (&p)[NT][4], int kc, const bf16* b, int ld, int lane,
                                          float (&acc)[D / 8][4]) {
  const uint32_t af[4] = {pack_bf16(p[2 * kc][0], p[2 * kc][1]), pack_bf16(p[2 * kc][2], p[2 * kc][3]),
                          pack_bf16(p[2 * kc + 1][0], p[2 * kc + 1][1]), pack_bf16(p[2 * kc + 1][2], p[2 * kc + 1][3])};
#pragma unroll
  for (int np = 0; np < D / 16; ++np) {
    uint32_t bu[4];
    ldsm_x4_t(bu, frag_b_kn(b, ld, np * 16, kc * 16, lane));
    mma16816<bf16>(acc[2 * np], af, bu[0], bu[1]);
    mma16816<bf16>(acc[2 * np + 1], af, bu[2], bu[3]);
  }
}

// out (NT n8 tiles) += A B^T, A the 16 rows r0.. of a bf16 [m][D] smem tile, B a bf16 [n][D] smem tile (both
// row pitch ld); A fragments loaded per use.
template <int D, int NT>
__device__ __forceinline__ void mma_s_bt(float (&out)[NT][4], const bf16* a, int r0, const bf16* b, int ld, int lane) {
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    uint32_t af[4];
    ldsm_x4(af, frag_a(a, ld, r0, kc * 16, lane));
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t bq[4];
      ldsm_x4(bq, frag_b_nk(b, ld, np * 16, kc * 16, lane));
      mma16816<bf16>(out[2 * np], af, bq[0], bq[1]);
      mma16816<bf16>(out[2 * np + 1], af, bq[2], bq[3]);
    }
  }
}

// A fragment of A = S^T for S stored [k][m] (m contiguous): the 16 x 16 block at (m0, k0) of A.
__device__ __forceinline__ const bf16* frag_a_t(const bf16* s, int ld, int m0, int k0, int lane) {
  return s + (k0 + (lane & 7) + (lane >> 4) * 8) * ld + m0 + ((lane >> 3) & 1) * 8;
}

// Rows [r0, r0 + R) of a bf16 matrix (row stride ld, D contiguous) into smem [R][D + 8] by cp.async; rows at or
// past r1 are zero.
template <int R, int D, int NT>
__device__ __forceinline__ void rows_async(bf16* s, const bf16* g, int64_t ld, int64_t r0, int64_t r1) {
#pragma unroll
  for (int p = 0; p < (R * D / 8 + NT - 1) / NT; ++p) {
    const int i = threadIdx.x + p * NT;
    if (i >= R * D / 8) break;
    const int r = i / (D / 8), c = (i % (D / 8)) * 8;
    const bool ok = r0 + r < r1;
    copy8(s + r * (D + 8) + c, g + (ok ? r0 + r : 0) * ld + c, ok ? 8 : 0);
  }
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Weighted maps' derivative of f at its argument x (relu: x > 0; elu: 1 or e^x).
__device__ __forceinline__ float map_grad(int map, float x) {
  if (map == kRelu) return x > 0 ? 1.0f : 0.0f;
  return x > 0 ? 1.0f : __expf(x);
}

template <int D>
struct QRows {
  static constexpr int BQ = 128, NT = 256, PK = D + 8, BL = 32;
  static constexpr size_t smem_bytes = size_t(2 * kSlotMax + 2 * BQ) * PK * 2 + kSlotMax * 4;
};

// grid (ceil(Nq / 128), B H); block 256 = 8 warps x 16 rows. Keys and U of all (<= 256) slots stay in shared
// memory. stats[bh Nq + i] = (log2 normaliser m2 (softmax) or 1 / den (weighted), delta).
template <int D>
__global__ void __launch_bounds__(256, (D <= 64 ? 2 : 1))
    query_rows(Rows q, Rows dout, Rows dq, const bf16* keys, int keys_bh, int64_t Hk, const bf16* u, const float* slot,
               int64_t H, int64_t Nq, int L, int map, float a, float2* stats) {
  using C = QRows<D>;
  constexpr int BQ = C::BQ, NT = C::NT, PK = C::PK, BL = C::BL;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);        // [Lp][PK]
  bf16* Us = Ks + kSlotMax * PK;                       // [Lp][PK]
  bf16* Qs = Us + kSlotMax * PK;                       // [BQ][PK]
  bf16* Ds = Qs + BQ * PK;                             // [BQ][PK]
  float* sl = reinterpret_cast<float*>(Ds + BQ * PK);  // [Lp]
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, i0 = int64_t(blockIdx.x) * BQ;
  const bf16* K = keys + (keys_bh ? bh : (Hk == 1 ? 0 : h)) * int64_t(L) * D;
  const bf16* U = u + bh * int64_t(L) * D;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int nch = (L + BL - 1) / BL, Lp = nch * BL;
  rows_async<kSlotMax, D, NT>(Ks, K, D, 0, L);  // (rows past Lp are not read)
  rows_async<kSlotMax, D, NT>(Us, U, D, 0, L);
  rows_async<BQ, D, NT>(Qs, reinterpret_cast<const bf16*>(q.base(b, h, 2)), q.ld, i0, Nq);
  rows_async<BQ, D, NT>(Ds, reinterpret_cast<const bf16*>(dout.base(b, h, 2)), dout.ld, i0, Nq);
  cp_async_commit();
  const bool softmax = map == kFavor || map == kSoftmax;
  for (int i = tid; i < Lp; i += NT) {
    const float v = i < L ? (slot ? slot[bh * L + i] : 0.0f) : (softmax ? -INFINITY : 0.0f);
    sl[i] = softmax ? v * kLog2e : v;
  }
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4], df[D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    ldsm_x4(qf[kc], frag_a(Qs, PK, warp * 16, kc * 16, lane));
    ldsm_x4(df[kc], frag_a(Ds, PK, warp * 16, kc * 16, lane));
  }
  const float as = softmax ? a * kLog2e : a;
  // Pass 1: the forward (as query_kernel) for out, the row max and the denominator.
  float acc[D / 8][4] = {}, accs[4] = {};
  float mxa = -1e30f, mxb = -1e30f;
  for (int c = 0; c < nch; ++c) {
    float sc[BL / 8][4] = {};
    mma_a_bt<D, BL / 8>(sc, qf, Ks + c * BL * PK, PK, lane);
    const float* slc = sl + c * BL;
    if (softmax) {
      float ma = mxa, mb = mxb;
#pragma unroll
      for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float v = fmaf(as, sc[nt][i], slc[nt * 8 + 2 * t + (i & 1)]);
          sc[nt][i] = v;
          if (i < 2)
            ma = fmaxf(ma, v);
          else
            mb = fmaxf(mb, v);
        }
      ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, 1));
      ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, 2));
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, 1));
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, 2));
      const float ra = exp2f(mxa - ma), rb = exp2f(mxb - mb);
      mxa = ma, mxb = mb;
      accs[0] *= ra, accs[1] *= ra, accs[2] *= rb, accs[3] *= rb;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] *= ra, acc[nt][1] *= ra, acc[nt][2] *= rb, acc[nt][3] *= rb;
#pragma unroll
      for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) sc[nt][i] = exp2f(sc[nt][i] - (i < 2 ? ma : mb));
    } else {
#pragma unroll
      for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          sc[nt][i] = feature_map(map, as * sc[nt][i], 0.0f, 0.0f) * slc[nt * 8 + 2 * t + (i & 1)];
    }
#pragma unroll
    for (int kc = 0; kc < BL / 16; ++kc) mma_p_u<D, BL / 8>(sc, kc, Us + c * BL * PK, PK, lane, acc, accs);
  }
  const float ia = accs[0] > 0 ? 1.0f / accs[0] : 0.0f, ib = accs[2] > 0 ? 1.0f / accs[2] : 0.0f;
  float da = 0, db = 0;  // delta of rows g, g + 8: dO . out
  const bf16* dra = Ds + (warp * 16 + g) * PK;
  const bf16* drb = dra + 8 * PK;
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int c = nt * 8 + 2 * t;
    da += acc[nt][0] * __bfloat162float(dra[c]) + acc[nt][1] * __bfloat162float(dra[c + 1]);
    db += acc[nt][2] * __bfloat162float(drb[c]) + acc[nt][3] * __bfloat162float(drb[c + 1]);
  }
  da = quad_sum(da) * ia, db = quad_sum(db) * ib;
  // Row statistics: p = exp2(as s + bias - m2) (softmax) or f(a s) w / den.
  const float sa = softmax ? (accs[0] > 0 ? mxa + __log2f(accs[0]) : INFINITY) : ia;
  const float sb = softmax ? (accs[2] > 0 ? mxb + __log2f(accs[2]) : INFINITY) : ib;
  const int64_t ra = i0 + warp * 16 + g, rb = ra + 8;
  if (t == 0) {
    if (ra < Nq) stats[bh * Nq + ra] = make_float2(sa, da);
    if (rb < Nq) stats[bh * Nq + rb] = make_float2(sb, db);
  }
  // Pass 2: ds and dq.
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0;
  for (int c = 0; c < nch; ++c) {
    float sc[BL / 8][4] = {}, dp[BL / 8][4] = {};
    mma_a_bt<D, BL / 8>(sc, qf, Ks + c * BL * PK, PK, lane);
    mma_a_bt<D, BL / 8>(dp, df, Us + c * BL * PK, PK, lane);
    const float* slc = sl + c * BL;
#pragma unroll
    for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float w = slc[nt * 8 + 2 * t + (i & 1)], st = i < 2 ? sa : sb, dl = i < 2 ? da : db;
        float v;
        if (softmax) {
          const float p = exp2f(fmaf(as, sc[nt][i], w) - st);
          v = a * p * (dp[nt][i] - dl);
        } else {
          const float x = a * sc[nt][i];
          v = a * (dp[nt][i] - dl) * st * w * map_grad(map, x);
        }
        sc[nt][i] = v;
      }
#pragma unroll
    for (int kc = 0; kc < BL / 16; ++kc) mma_pa_kn<D, BL / 8>(sc, kc, Ks + c * BL * PK, PK, lane, acc);
  }
  bf16* dqb = reinterpret_cast<bf16*>(const_cast<char*>(dq.base(b, h, 2)));
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int c = nt * 8 + 2 * t;
    if (ra < Nq) store2(dqb + ra * dq.ld + c, acc[nt][0], acc[nt][1]);
    if (rb < Nq) store2(dqb + rb * dq.ld + c, acc[nt][2], acc[nt][3]);
  }
}

template <int D>
struct QSlots {
  static constexpr int BS = 64, NT = 128, PK = D + 8, BR = D <= 64 ? 64 : 32, ST = 2;
  static constexpr size_t smem_bytes = size_t(2 * BS + 2 * ST * BR) * PK * 2 + ST * BR * 8 + BS * 4;
};

// grid (ceil(L / 64), splits, B H); block 128 = 4 warps x 16 slots; rows [split chunk, + chunk) of the head.
// part_u [split][BH][L][D], part_g [split][BH][L], part_k (LIN) [split][BH][L][D] (dkey / a).
template <int D, bool LIN>
__global__ void __launch_bounds__(128)
    query_slots(Rows q, Rows dout, const bf16* keys, int keys_bh, int64_t Hk, const bf16* u, const float* slot,
                int64_t H, int64_t Nq, int L, int map, float a, const float2* stats, int64_t chunk, float* part_u,
                float* part_g, float* part_k) {
  using C = QSlots<D>;
  constexpr int BS = C::BS, NT = C::NT, PK = C::PK, BR = C::BR, ST = C::ST;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);               // [BS][PK]
  bf16* Us = Ks + BS * PK;                                    // [BS][PK]
  bf16* Qs = Us + BS * PK;                                    // [ST][BR][PK]
  bf16* Ds = Qs + ST * BR * PK;                               // [ST][BR][PK]
  float2* Ss = reinterpret_cast<float2*>(Ds + ST * BR * PK);  // [ST][BR]
  float* sl = reinterpret_cast<float*>(Ss + ST * BR);         // [BS]
  const int64_t bh = blockIdx.z, b = bh / H, h = bh % H, l0 = int64_t(blockIdx.x) * BS;
  const int64_t r0 = int64_t(blockIdx.y) * chunk, r1 = min(Nq, r0 + chunk);
  const int steps = int((r1 - r0 + BR - 1) / BR);
  const bf16* K = keys + (keys_bh ? bh : (Hk == 1 ? 0 : h)) * int64_t(L) * D;
  const bf16* U = u + bh * int64_t(L) * D;
  const bf16* Qg = reinterpret_cast<const bf16*>(q.base(b, h, 2));
  const bf16* Dg = reinterpret_cast<const bf16*>(dout.base(b, h, 2));
  const float2* stb = stats + bh * Nq;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const bool softmax = map == kFavor || map == kSoftmax;
  auto load = [&](int s, int64_t j) {
    rows_async<BR, D, NT>(Qs + s * BR * PK, Qg, q.ld, j, r1);
    rows_async<BR, D, NT>(Ds + s * BR * PK, Dg, dout.ld, j, r1);
    for (int i = tid; i < BR; i += NT)  // rows past r1: p = 0 (softmax: m2 = inf; weighted: 1 / den = 0)
      Ss[s * BR + i] = j + i < r1 ? stb[j + i] : make_float2(softmax ? INFINITY : 0.0f, 0.0f);
  };
  rows_async<BS, D, NT>(Ks, K + l0 * D, D, 0, L - l0);
  rows_async<BS, D, NT>(Us, U + l0 * D, D, 0, L - l0);
  for (int i = tid; i < BS; i += NT) {
    const float v = l0 + i < L ? (slot ? slot[bh * L + l0 + i] : 0.0f) : (softmax ? -INFINITY : 0.0f);
    sl[i] = softmax ? v * kLog2e : v;
  }
  if (steps > 0) load(0, r0);
  cp_async_commit();
  const float as = softmax ? a * kLog2e : a;
  float au[D / 8][4] = {}, ak[LIN ? D / 8 : 1][4] = {};
  float ga = 0, gb = 0;
  for (int it = 0; it < steps; ++it) {
    cp_async_wait<0>();
    __syncthreads();  // stage it landed for everyone (and the other stage is free)
    if (it + 1 < steps) load((it + 1) % ST, r0 + int64_t(it + 1) * BR);
    cp_async_commit();
    const bf16* qs = Qs + (it % ST) * BR * PK;
    const bf16* ds = Ds + (it % ST) * BR * PK;
    const float2* ss = Ss + (it % ST) * BR;
    float sc[BR / 8][4] = {};
    mma_s_bt<D, BR / 8>(sc, Ks, warp * 16, qs, PK, lane);
    float dp[LIN ? BR / 8 : 1][4] = {};
    if constexpr (LIN) mma_s_bt<D, BR / 8>(dp, Us, warp * 16, ds, PK, lane);
    const float wla = sl[warp * 16 + g], wlb = sl[warp * 16 + g + 8];
#pragma unroll
    for (int nt = 0; nt < BR / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 st = ss[nt * 8 + 2 * t + (i & 1)];
        const float w = i < 2 ? wla : wlb;
        const float p =
            softmax ? exp2f(fmaf(as, sc[nt][i], w) - st.x) : feature_map(map, as * sc[nt][i], 0.0f, 0.0f) * w * st.x;
        (i < 2 ? ga : gb) += p * st.y;
        if constexpr (LIN) dp[nt][i] = p * (dp[nt][i] - st.y);
        sc[nt][i] = p;
      }
#pragma unroll
    for (int kc = 0; kc < BR / 16; ++kc) {
      mma_pa_kn<D, BR / 8>(sc, kc, ds, PK, lane, au);
      if constexpr (LIN) mma_pa_kn<D, BR / 8>(dp, kc, qs, PK, lane, ak);
    }
  }
  cp_async_wait<0>();
  ga = quad_sum(ga), gb = quad_sum(gb);
  const int64_t split = blockIdx.y, BH = gridDim.z;
  const int64_t la = l0 + warp * 16 + g, lb = la + 8;
  float* pu = part_u + (split * BH + bh) * int64_t(L) * D;
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int c = nt * 8 + 2 * t;
    if (la < L) store2(pu + la * D + c, au[nt][0], au[nt][1]);
    if (lb < L) store2(pu + lb * D + c, au[nt][2], au[nt][3]);
  }
  if constexpr (LIN) {
    float* pk = part_k + (split * BH + bh) * int64_t(L) * D;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int c = nt * 8 + 2 * t;
      if (la < L) store2(pk + la * D + c, ak[nt][0], ak[nt][1]);
      if (lb < L) store2(pk + lb * D + c, ak[nt][2], ak[nt][3]);
    }
  }
  if (t == 0) {
    if (la < L) part_g[(split * BH + bh) * L + la] = ga;
    if (lb < L) part_g[(split * BH + bh) * L + lb] = gb;
  }
}

// Sums the query_slots partials in split order. Kernel maps: dS~ = dU / z~ (bf16 [BH, L, D]) and dz~ = -g / z~
// (fp32 [BH, L]), 0 where z~ = 0. Linformer: dV' = dU, dK' = a dkey (bf16). grid-stride over BH L D.
static __global__ void reduce_slots(const float* part_u, const float* part_g, const float* part_k, int64_t splits,
                                    int64_t BH, int64_t L, int D, const float* z, float a, bf16* out_u, float* out_z,
                                    bf16* out_k) {
  const int64_t n = BH * L * D, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += stride) {
    float su = 0, sk = 0;
    for (int64_t s = 0; s < splits; ++s) {
      su += part_u[s * n + e];
      if (part_k) sk += part_k[s * n + e];
    }
    if (z) {
      const int64_t r = e / D;
      const float zz = z[r];
      out_u[e] = __float2bfloat16_rn(zz > 0 ? su / zz : 0.0f);
      if (e % D == 0) {
        float sg = 0;
        for (int64_t s = 0; s < splits; ++s) sg += part_g[s * BH * L + r];
        out_z[r] = zz > 0 ? -sg / zz : 0.0f;
      }
    } else {
      out_u[e] = __float2bfloat16_rn(su);
      out_k[e] = __float2bfloat16_rn(a * sk);
    }
  }
}

template <int D>
struct KRows {
  static constexpr int BQ = 128, NT = 256, PK = D + 8, BL = 32;
  static constexpr size_t smem_bytes = size_t(2 * kSlotMax + 2 * BQ) * PK * 2 + (2 * kSlotMax + BQ) * 4;
};

// Key side of the kernel maps. grid (ceil(Lk / 128), B H); block 256 = 8 warps x 16 rows of X (K' or K) and Y
// (V' or V). wt [Hw, m, D] the feature keys (W^T; identity for elu), dst [BH, m, D] = dS~, dz [BH, m],
// shift [Hw, m] (favor's c). Writes dX (through phi) and dY = phi dS~ (bf16 rows). xlo (p may be null): the bf16
// residual of an fp32 X (K' = hi + lo): relu's logits then come from both, so its kink is where the formula has it
// (bf16 K' alone moves it and flips the derivative of ~1% of the slots).
template <int D>
__global__ void __launch_bounds__(256, 1)
    key_rows(Rows x, Rows xlo, Rows y, const bf16* wt, int64_t Hw, const bf16* dst, const float* dz, const float* shift,
             int64_t H, int64_t Lk, int m, int map, float s, Rows dx, Rows dy) {
  using C = KRows<D>;
  constexpr int BQ = C::BQ, NT = C::NT, PK = C::PK, BL = C::BL;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ws = reinterpret_cast<bf16*>(smem_raw);        // [mp][PK]
  bf16* Gs = Ws + kSlotMax * PK;                       // [mp][PK] dS~
  bf16* Xs = Gs + kSlotMax * PK;                       // [BQ][PK]
  bf16* Ys = Xs + BQ * PK;                             // [BQ][PK]
  float* cs = reinterpret_cast<float*>(Ys + BQ * PK);  // [mp] favor shift (+inf past m)
  float* zs = cs + kSlotMax;                           // [mp] dz~
  float* xn = zs + kSlotMax;                           // [BQ] ||s x||^2 / 2
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, hw = Hw == 1 ? 0 : h, j0 = int64_t(blockIdx.x) * BQ;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int nch = (m + BL - 1) / BL, mp = nch * BL;
  rows_async<kSlotMax, D, NT>(Ws, wt + hw * int64_t(m) * D, D, 0, m);
  rows_async<kSlotMax, D, NT>(Gs, dst + bh * int64_t(m) * D, D, 0, m);
  rows_async<BQ, D, NT>(Xs, reinterpret_cast<const bf16*>(x.base(b, h, 2)), x.ld, j0, Lk);
  rows_async<BQ, D, NT>(Ys, reinterpret_cast<const bf16*>(y.base(b, h, 2)), y.ld, j0, Lk);
  cp_async_commit();
  for (int i = tid; i < mp; i += NT) {
    cs[i] = i < m ? (map == kFavor ? shift[hw * m + i] : 0.0f) : INFINITY;
    zs[i] = i < m ? dz[bh * m + i] : 0.0f;
  }
  cp_async_wait<0>();
  __syncthreads();
  if (tid < BQ) {  // as the forward's state kernel: the norm of the bf16 row
    float n2 = 0;
    for (int d = 0; d < D; ++d) {
      const float v = __bfloat162float(Xs[tid * PK + d]);
      n2 += v * v;
    }
    xn[tid] = n2 * s * s / 2;
  }
  uint32_t xf[D / 16][4], yf[D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    ldsm_x4(xf[kc], frag_a(Xs, PK, warp * 16, kc * 16, lane));
    ldsm_x4(yf[kc], frag_a(Ys, PK, warp * 16, kc * 16, lane));
  }
  __syncthreads();  // xn; every warp holds its X and Y fragments, so Ys may take the residual
  const bool lo = xlo.p != nullptr;
  if (lo) {
    rows_async<BQ, D, NT>(Ys, reinterpret_cast<const bf16*>(xlo.base(b, h, 2)), xlo.ld, j0, Lk);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  }
  const float xna = xn[warp * 16 + g], xnb = xn[warp * 16 + g + 8];
  float ax[D / 8][4] = {}, ay[D / 8][4] = {};
  float rsa = 0, rsb = 0;
  for (int c = 0; c < nch; ++c) {
    float sc[BL / 8][4] = {}, dph[BL / 8][4] = {};
    mma_a_bt<D, BL / 8>(sc, xf, Ws + c * BL * PK, PK, lane);
    if (lo) mma_s_bt<D, BL / 8>(sc, Ys, warp * 16, Ws + c * BL * PK, PK, lane);
    mma_a_bt<D, BL / 8>(dph, yf, Gs + c * BL * PK, PK, lane);
#pragma unroll
    for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = c * BL + nt * 8 + 2 * t + (i & 1);
        const float v = s * sc[nt][i];
        const float ph = feature_map(map, v, i < 2 ? xna : xnb, cs[col]);
        const float dphi = dph[nt][i] + zs[col];
        float dpre;
        if (map == kFavor) {
          dpre = dphi * ph;
          (i < 2 ? rsa : rsb) += dpre;
        } else {
          dpre = dphi * map_grad(map, v);
        }
        sc[nt][i] = ph;
        dph[nt][i] = s * dpre;
      }
#pragma unroll
    for (int kc = 0; kc < BL / 16; ++kc) {
      mma_pa_kn<D, BL / 8>(sc, kc, Gs + c * BL * PK, PK, lane, ay);
      mma_pa_kn<D, BL / 8>(dph, kc, Ws + c * BL * PK, PK, lane, ax);
    }
  }
  rsa = quad_sum(rsa) * s * s, rsb = quad_sum(rsb) * s * s;
  const int64_t ra = j0 + warp * 16 + g, rb = ra + 8;
  bf16* dxb = reinterpret_cast<bf16*>(const_cast<char*>(dx.base(b, h, 2)));
  bf16* dyb = reinterpret_cast<bf16*>(const_cast<char*>(dy.base(b, h, 2)));
  const bf16* xa = Xs + (warp * 16 + g) * PK;
  const bf16* xb = xa + 8 * PK;
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int c = nt * 8 + 2 * t;
    if (map == kFavor) {
      ax[nt][0] -= rsa * __bfloat162float(xa[c]), ax[nt][1] -= rsa * __bfloat162float(xa[c + 1]);
      ax[nt][2] -= rsb * __bfloat162float(xb[c]), ax[nt][3] -= rsb * __bfloat162float(xb[c + 1]);
    }
    if (ra < Lk) store2(dxb + ra * dx.ld + c, ax[nt][0], ax[nt][1]), store2(dyb + ra * dy.ld + c, ay[nt][0], ay[nt][1]);
    if (rb < Lk) store2(dxb + rb * dx.ld + c, ax[nt][2], ax[nt][3]), store2(dyb + rb * dy.ld + c, ay[nt][2], ay[nt][3]);
  }
}

template <int D>
struct PBack {
  static constexpr int BN = 64, NT = 256, PK = D + 8, PP = BN + 8;
  static constexpr size_t smem_bytes = size_t(kSlotMax * PP + kSlotMax * PK + BN * PK) * 2;
};

// dX = P^T G per (b, h) and dP = sum over members of G X^T, for one head's P (E or F) and `tiles` x 64 columns of N.
// grid (ceil(N / (64 tiles)), He, 2): z = 0: (E, K, dK' -> dK, dE), 1: (F, V, dV' -> dV, dF). He = H: members (b, h)
// for every b; He = 1 (shared): every (b, h) in b H + h order. G: bf16 [BH, k, D].
template <int D>
__global__ void __launch_bounds__(256, (D <= 64 ? 2 : 1))
    project_back(Rows e, Rows f, Rows k, Rows v, const bf16* gk, const bf16* gv, int64_t B, int64_t H, int64_t He,
                 int kk, int64_t N, int tiles, Rows dk, Rows dv, bf16* de, bf16* df) {
  using C = PBack<D>;
  constexpr int BN = C::BN, NT = C::NT, PK = C::PK, PP = C::PP;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ps = reinterpret_cast<bf16*>(smem_raw);  // [k][PP]: P[:, n0 .. n0 + 64)
  bf16* Gs = Ps + kSlotMax * PP;                 // [k][PK]
  bf16* Xs = Gs + kSlotMax * PK;                 // [BN][PK]
  const bool second = blockIdx.z == 1;
  const int64_t he = blockIdx.y;
  const Rows pr = second ? f : e, xr = second ? v : k, dr = second ? dv : dk;
  const bf16* G = second ? gv : gk;
  bf16* dP = second ? df : de;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const bf16* P = reinterpret_cast<const bf16*>(pr.base(0, he, 2));
  const int kp = (kk + 15) / 16 * 16;
  // GEMM 1 (dX tile 64 x D): warp = 4 row tiles x 2 column halves; GEMM 2 (dP k x 64): warp = 32 rows of P.
  const int mt1 = warp % 4, nh = warp / 4;
  const bool live2 = warp * 32 < kk;
  const int64_t members = He == 1 ? B * H : B;
  // `tiles` column tiles per block, one after the other; with a single member its G stays in shared memory.
  for (int ti = 0; ti < tiles; ++ti) {
    const int64_t n0 = (int64_t(blockIdx.x) * tiles + ti) * BN;
    if (n0 >= N) break;
    __syncthreads();                                 // the previous tile's dP staging in Ps is stored
    for (int i = tid; i < kp * (BN / 8); i += NT) {  // P tile, rows < k, columns < N
      const int r = i / (BN / 8), c = (i % (BN / 8)) * 8;
      const int valid = r < kk ? int(min(int64_t(8), N - (n0 + c))) : 0;
      copy8(Ps + r * PP + c, P + (r < kk ? r : 0) * pr.ld + n0 + c, valid);
    }
    float ap[2][BN / 8][4] = {};
    for (int64_t mi = 0; mi < members; ++mi) {
      const int64_t b = He == 1 ? mi / H : mi, h = He == 1 ? mi % H : he, bh = b * H + h;
      __syncthreads();  // the previous member's tiles are consumed
      if (members > 1 || ti == 0) rows_async<kSlotMax, D, NT>(Gs, G + bh * int64_t(kk) * D, D, 0, kk);
      rows_async<BN, D, NT>(Xs, reinterpret_cast<const bf16*>(xr.base(b, h, 2)), xr.ld, n0, N);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      float ax[D / 16][4] = {};
      for (int kc = 0; kc < kp / 16; ++kc) {
        uint32_t af[4];
        ldsm_x4_t(af, frag_a_t(Ps, PP, mt1 * 16, kc * 16, lane));
#pragma unroll
        for (int np = 0; np < D / 32; ++np) {
          uint32_t bq[4];
          ldsm_x4_t(bq, frag_b_kn(Gs, PK, nh * (D / 2) + np * 16, kc * 16, lane));
          mma16816<bf16>(ax[2 * np], af, bq[0], bq[1]);
          mma16816<bf16>(ax[2 * np + 1], af, bq[2], bq[3]);
        }
      }
      bf16* dxb = reinterpret_cast<bf16*>(const_cast<char*>(dr.base(b, h, 2)));
      const int64_t ra = n0 + mt1 * 16 + g, rb = ra + 8;
#pragma unroll
      for (int nt = 0; nt < D / 16; ++nt) {
        const int c = nh * (D / 2) + nt * 8 + 2 * t;
        if (ra < N) store2(dxb + ra * dr.ld + c, ax[nt][0], ax[nt][1]);
        if (rb < N) store2(dxb + rb * dr.ld + c, ax[nt][2], ax[nt][3]);
      }
      if (live2) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
          uint32_t af[2][4];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) ldsm_x4(af[mt], frag_a(Gs, PK, warp * 32 + mt * 16, kc * 16, lane));
#pragma unroll
          for (int np = 0; np < BN / 16; ++np) {
            uint32_t bq[4];
            ldsm_x4(bq, frag_b_nk(Xs, PK, np * 16, kc * 16, lane));
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              mma16816<bf16>(ap[mt][2 * np], af[mt], bq[0], bq[1]);
              mma16816<bf16>(ap[mt][2 * np + 1], af[mt], bq[2], bq[3]);
            }
          }
        }
      }
    }
    // dP through shared memory (Ps is free once every warp is past the last GEMM 1): 16-byte row stores.
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        const int r = warp * 32 + mt * 16 + g, c = nt * 8 + 2 * t;
        store2(Ps + r * PP + c, ap[mt][nt][0], ap[mt][nt][1]);
        store2(Ps + (r + 8) * PP + c, ap[mt][nt][2], ap[mt][nt][3]);
      }
    __syncthreads();
    bf16* dPh = dP + he * int64_t(kk) * N;
    const bool vec = N % 8 == 0;
    for (int i = tid; i < kk * (BN / 8); i += NT) {
      const int r = i / (BN / 8), c = (i % (BN / 8)) * 8;
      const int64_t col = n0 + c;
      if (col >= N) continue;
      bf16* dst = dPh + r * N + col;
      if (vec) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(Ps + r * PP + c);
      } else {
        for (int j = 0; j < 8 && col + j < N; ++j) dst[j] = Ps[r * PP + c + j];
      }
    }
  }
}

// Sums the projection partials [splits][n] in split order: fp32 and bf16 copies of K' (and V' at + n).
// klo (may be null): the bf16 residual K' - bf16(K').
static __global__ void reduce_projection(const float* part, int64_t splits, int64_t n, float* kp, float* vp, bf16* kp16,
                                         bf16* vp16, bf16* klo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += stride) {
    float a = 0, c = 0;
    for (int64_t s = 0; s < splits; ++s) a += part[s * n + e], c += part[(splits + s) * n + e];
    kp[e] = a, vp[e] = c;
    const bf16 hi = __float2bfloat16_rn(a);
    kp16[e] = hi, vp16[e] = __float2bfloat16_rn(c);
    if (klo) klo[e] = __float2bfloat16_rn(a - __bfloat162float(hi));
  }
}

// Sums the state partials S [splits][BH m D], z [splits][BH m] in split order into the query-side slots (as
// finalize_state): U = S / z (bf16), slot = shift + log z (favor) or z, and z itself.
static __global__ void reduce_state(const float* S, const float* z, int64_t splits, const float* shift, int64_t Hw,
                                    int64_t H, int64_t BH, int64_t m, int D, int map, bf16* u, float* slot,
                                    float* zout) {
  const int64_t n = BH * m, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n * D; e += stride) {
    const int64_t r = e / D;
    float zz = 0, ss = 0;
    for (int64_t s = 0; s < splits; ++s) zz += z[s * n + r], ss += S[s * n * D + e];
    u[e] = __float2bfloat16_rn(zz > 0 ? ss / zz : 0.0f);
    if (e % D == 0) {
      const int64_t bh = r / m, l = r - bh * m, hw = Hw == 1 ? 0 : bh % H;
      slot[r] = map == kFavor ? (zz > 0 ? shift[hw * m + l] + __logf(zz) : -INFINITY) : zz;
      zout[r] = zz;
    }
  }
}

}  // namespace splat::fk::tc
