// Query kernel: out_i = sum_l p_il U_l / sum_l p_il over L slots (features or projected keys).
// softmax maps: p = exp(a q.key_l + bias_l - running max) (flash-style online rescaling, computed as exp2 of
// log2e-prescaled scores: one FFMA + one MUFU per score); weighted maps: p = f(a q.key_l) * weight_l.
// grid (ceil(Nq / 128), B*H); block 256 = 8 warps x 16 query rows. phi(q) lives only in registers: the score
// accumulators become the A operand of the P U product. Keys [L, D] and U [L, D] (both bf16, L2-resident)
// stream through a 3-stage cp.async ring in 64-slot chunks; fragments come from ldmatrix (U transposed by
// ldmatrix.trans, so U is stored row-major and written coalesced). The row sums of p come from one extra MMA
// against an all-ones operand (no per-score adds), and full chunks skip the tail masking.
#pragma once
#include <type_traits>

#include "flurka/cuda/kernels.cuh"
#include "flurka/cuda/pipe.cuh"

namespace splat::fk {

template <int D>
struct QueryPipe {
  static constexpr int BQ = 128, BL = 64, ST = 3, NT = 256, PK = D + 8, LMAX = 512;
  static constexpr size_t smem_bytes = size_t(BQ + 2 * ST * BL) * PK * 2 + LMAX * 4;
};

template <class T, int D>
__global__ void __launch_bounds__(256, (D <= 64 ? 2 : 1))
    query_kernel(Rows q, const bf16* keys, int64_t keys_bh_stride, int64_t Hk, const bf16* u, const float* slot,
                 int64_t H, int64_t Nq, int64_t L, int map, float a, T* out, int64_t ob, int64_t oh, int64_t on) {
  using C = QueryPipe<D>;
  constexpr int BQ = C::BQ, BL = C::BL, ST = C::ST, NT = C::NT, PK = C::PK;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);             // [BQ][PK]
  bf16* Ks = Qs + BQ * PK;                                  // [ST][BL][PK]
  bf16* Us = Ks + ST * BL * PK;                             // [ST][BL][PK]
  float* sl = reinterpret_cast<float*>(Us + ST * BL * PK);  // [L] bias (log2 units) or weight per slot
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, i0 = int64_t(blockIdx.x) * BQ;
  const bf16* K = keys + (Hk == 1 ? 0 : (keys_bh_stride ? bh : h)) * L * D;
  const bf16* U = u + bh * L * D;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int chunks = int((L + BL - 1) / BL);
  auto load = [&](int s, int64_t c0) {
#pragma unroll
    for (int p = 0; p < BL * D / 8 / NT; ++p) {
      const int i = tid + p * NT, r = i / (D / 8), c = (i % (D / 8)) * 8;
      const bool ok = c0 + r < L;
      const int64_t off = (ok ? c0 + r : 0) * D + c;
      cp_async16(Ks + (s * BL + r) * PK + c, K + off, ok ? 16 : 0);
      cp_async16(Us + (s * BL + r) * PK + c, U + off, ok ? 16 : 0);
    }
  };
  // Q first (its own cp.async group when the storage is 2 bytes), then the first ST - 1 key/value chunks.
  if constexpr (sizeof(T) == 2) {
    const T* Qg = reinterpret_cast<const T*>(q.base(b, h, sizeof(T)));
#pragma unroll
    for (int p = 0; p < BQ * D / 8 / NT; ++p) {
      const int i = tid + p * NT, r = i / (D / 8), c = (i % (D / 8)) * 8;
      const bool ok = i0 + r < Nq;
      copy8(reinterpret_cast<T*>(Qs) + r * PK + c, Qg + (ok ? i0 + r : 0) * q.ld + c, ok ? 8 : 0);
    }
    cp_async_commit();
  }
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < chunks) load(s, int64_t(s) * BL);
    cp_async_commit();
  }
  const bool softmax = map == kFavor || map == kSoftmax;
  constexpr float kLog2e = 1.4426950408889634f;
  for (int i = tid; i < L; i += NT) sl[i] = slot ? (softmax ? slot[bh * L + i] * kLog2e : slot[bh * L + i]) : 0.0f;
  if constexpr (sizeof(T) == 2)
    cp_async_wait<ST - 1>();  // the Q group
  else
    tile_to_smem<T, BQ, D, NT>(reinterpret_cast<const T*>(q.base(b, h, sizeof(T))), q.ld, i0, Nq, 0, D, Qs);
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    ldsm_x4(qf[kc], frag_a(Qs, PK, warp * 16, kc * 16, lane));
    if constexpr (std::is_same_v<T, __half>) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&qf[kc][j]));
        qf[kc][j] = pack_bf16(f.x, f.y);
      }
    }
  }
  const float as = softmax ? a * kLog2e : a;
  float acc[D / 8][4] = {}, accs[4] = {};  // accs: row sums of p (rows g, g + 8), from the tensor cores
  float mxa = -1e30f, mxb = -1e30f;        // finite start: exp2(-inf - max) stays 0, never NaN
  // One 64-slot chunk; FULL: no slot past L (all but the last chunk), so no masking.
  auto chunk = [&](const bf16* ks, const bf16* us, const float* slc, int lim, auto full) {
    constexpr bool FULL = decltype(full)::value;
    float sc[BL / 8][4] = {};
    mma_a_bt<D>(sc, qf, ks, PK, lane);  // scores of this chunk's slots
    if (softmax) {
      float ma = mxa, mb = mxb;
#pragma unroll
      for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int col = nt * 8 + 2 * t + (i & 1);
          const float v = (FULL || col < lim) ? fmaf(as, sc[nt][i], slc[col]) : -INFINITY;
          sc[nt][i] = v;
          if (i < 2)
            ma = fmaxf(ma, v);
          else
            mb = fmaxf(mb, v);
        }
      ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, 1));
      ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, 2));
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, 1));
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, 2));
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
        for (int i = 0; i < 4; ++i) {
          const int col = nt * 8 + 2 * t + (i & 1);
          const float f = feature_map(map, as * sc[nt][i], 0.0f, 0.0f);  // relu or elu here
          sc[nt][i] = (FULL || col < lim) ? f * slc[col] : 0.0f;
        }
    }
#pragma unroll
    for (int kc = 0; kc < BL / 16; ++kc) mma_p_u<D>(sc, kc, us, PK, lane, acc, accs);
  };
  for (int c = 0; c < chunks; ++c) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // chunk c landed for everyone; the buffer of chunk c - 1 is free
    if (c + ST - 1 < chunks) load((c + ST - 1) % ST, int64_t(c + ST - 1) * BL);
    cp_async_commit();
    const bf16* ks = Ks + (c % ST) * BL * PK;
    const bf16* us = Us + (c % ST) * BL * PK;
    const int lim = int(min(int64_t(BL), L - int64_t(c) * BL));  // valid slots of this chunk
    if (lim == BL)
      chunk(ks, us, sl + c * BL, lim, std::true_type{});
    else
      chunk(ks, us, sl + c * BL, lim, std::false_type{});
  }
  cp_async_wait<0>();
  const float ia = accs[0] > 0 ? 1.0f / accs[0] : 0.0f, ib = accs[2] > 0 ? 1.0f / accs[2] : 0.0f;
  const int64_t ra = i0 + warp * 16 + g, rb = ra + 8;
  T* ob_ = out + b * ob + h * oh;
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int c = nt * 8 + 2 * t;
    if (ra < Nq) store2(ob_ + ra * on + c, acc[nt][0] * ia, acc[nt][1] * ia);
    if (rb < Nq) store2(ob_ + rb * on + c, acc[nt][2] * ib, acc[nt][3] * ib);
  }
}

}  // namespace splat::fk
