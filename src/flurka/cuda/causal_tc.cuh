// Causal chunked FLuRKA on the tensor cores (bf16 storage): the chunk states come from the non-causal path's
// projection and state kernels run once per chunk (a chunk is a "batch member" of N = C columns), so only the
// scan over the chunks and the query pass are new here.
//   chunk_scan:  per (b, h, slot, d) the prefix over chunks 0 .. c of the per-chunk slots (U_c = S_c / z_c in fp32,
//                log-weight c_l + log z_l for favor or weight z_l otherwise), written as query chunk c + 1's U (bf16)
//                and slot; a fixed order per element, so results are bitwise reproducible.
//   causal_query_tc: per 128-row query tile of one chunk, the non-causal query kernel's slot loop (history: phi(q)
//                against the chunk's prefix state) followed by a FlashAttention loop over the keys j <= i of the own
//                chunk, both through one 3-stage cp.async ring and one online max / denominator (log2 units).
#pragma once
#include "flurka/cuda/kernels.cuh"
#include "flurka/cuda/pipe.cuh"

namespace splat::fk {

// grid (ceil(m D / 256), B H). us [B, nS, H, m, D] fp32, sl [B, nS, H, m]; up (bf16) and slp like them.
static __global__ void __launch_bounds__(256) chunk_scan(const float* us, const float* sl, int64_t H, int64_t m,
                                                         int64_t D, int64_t nS, int map, bf16* up, float* slp) {
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, e = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (e >= m * D) return;
  const int64_t l = e / D, d = e % D;
  float acc = 0.0f, Z = 0.0f, lw = -INFINITY;  // favor: value sum and weight sum relative to exp(lw)
  for (int64_t c = 0; c < nS; ++c) {
    const int64_t idx = (b * nS + c) * H + h;
    const float u = us[idx * m * D + e], w = sl[idx * m + l];
    float U, W;
    if (map == kFavor) {
      if (w != -INFINITY) {  // an empty slot (z = 0) adds nothing; a NaN weight reaches the output
        const float nl = (w > lw || w != w) ? w : lw, ro = lw == -INFINITY ? 0.0f : __expf(lw - nl);
        const float rw = __expf(w - nl);
        acc = acc * ro + u * rw, Z = Z * ro + rw, lw = nl;
      }
      U = Z > 0 ? acc / Z : (Z == Z ? 0.0f : Z), W = Z > 0 ? lw + __logf(Z) : (Z == Z ? -INFINITY : Z);
    } else {
      acc += w * u, Z += w;
      U = Z > 0 ? acc / Z : (Z == Z ? 0.0f : Z), W = Z;
    }
    up[idx * m * D + e] = __float2bfloat16_rn(U);
    if (d == 0) slp[idx * m + l] = W;
  }
}

template <int D>
struct CausalPipe {
  static constexpr int BQ = 128, BL = 64, ST = 3, NT = 256, PK = D + 8, LMAX = 512;
  static constexpr size_t smem_bytes = size_t(BQ + 2 * ST * BL) * PK * 2 + (LMAX + BQ) * 4;
};

// grid (nC * tiles, B H), tiles = ceil(min(C, N) / 128); block 256 = 8 warps x 16 query rows. wt [Hw, m, D] the
// feature keys (W^T; the identity for elu), up / slp the scanned slots (query chunk c reads entry c - 1). a: the
// feature scale (s for favor / relu, 1 for elu).
template <int D>
__global__ void __launch_bounds__(256, (D <= 64 ? 2 : 1))
    causal_query_tc(Rows q, Rows k, Rows v, const bf16* wt, int64_t Hw, const bf16* up, const float* slp, int64_t H,
                    int64_t N, int64_t C, int64_t m, int64_t nS, int64_t tiles, int map, float a, bf16* out, int64_t ob,
                    int64_t oh, int64_t on) {
  using P = CausalPipe<D>;
  constexpr int BQ = P::BQ, BL = P::BL, ST = P::ST, NT = P::NT, PK = P::PK;
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);             // [BQ][PK]
  bf16* Ks = Qs + BQ * PK;                                  // [ST][BL][PK] feature keys or keys
  bf16* Us = Ks + ST * BL * PK;                             // [ST][BL][PK] slot values or values
  float* sl = reinterpret_cast<float*>(Us + ST * BL * PK);  // [LMAX] slot bias (log2 units) or weight
  float* qn = sl + P::LMAX;                                 // [BQ] ||s q||^2 / 2
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t c = blockIdx.x / tiles, c0 = c * C, i0 = c0 + (blockIdx.x % tiles) * BQ;
  const int64_t i1 = min(min(N, c0 + C), i0 + BQ);
  if (i0 >= i1) return;                               // block-uniform: a tile past a short last chunk
  const int nh = c > 0 ? int((m + BL - 1) / BL) : 0;  // history steps (slot chunks)
  const int steps = nh + int((i1 - c0 + BL - 1) / BL);
  const bf16* Wk = wt + (Hw == 1 ? 0 : h) * m * D;
  const int64_t sidx = c > 0 ? (b * nS + c - 1) * H + h : 0;
  const bf16* U = up + sidx * m * D;
  const bf16* Kg = reinterpret_cast<const bf16*>(k.base(b, h, 2));
  const bf16* Vg = reinterpret_cast<const bf16*>(v.base(b, h, 2));
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  auto load = [&](int s, int step) {
#pragma unroll
    for (int p = 0; p < BL * D / 8 / NT; ++p) {
      const int i = tid + p * NT, r = i / (D / 8), cc = (i % (D / 8)) * 8;
      bf16* kd = Ks + (s * BL + r) * PK + cc;
      bf16* vd = Us + (s * BL + r) * PK + cc;
      if (step < nh) {
        const int64_t l = int64_t(step) * BL + r;
        const bool ok = l < m;
        cp_async16(kd, Wk + (ok ? l : 0) * D + cc, ok ? 16 : 0);
        cp_async16(vd, U + (ok ? l : 0) * D + cc, ok ? 16 : 0);
      } else {
        const int64_t j = c0 + int64_t(step - nh) * BL + r;
        const bool ok = j < i1;
        copy8(kd, Kg + (ok ? j : 0) * k.ld + cc, ok ? 8 : 0);
        copy8(vd, Vg + (ok ? j : 0) * v.ld + cc, ok ? 8 : 0);
      }
    }
  };
  const bf16* Qg = reinterpret_cast<const bf16*>(q.base(b, h, 2));
#pragma unroll
  for (int p = 0; p < BQ * D / 8 / NT; ++p) {
    const int i = tid + p * NT, r = i / (D / 8), cc = (i % (D / 8)) * 8;
    const bool ok = i0 + r < i1;
    copy8(Qs + r * PK + cc, Qg + (ok ? i0 + r : 0) * q.ld + cc, ok ? 8 : 0);
  }
  cp_async_commit();
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < steps) load(s, s);
    cp_async_commit();
  }
  const bool softmax = map == kFavor;
  for (int i = tid; i < nh * BL && i < m; i += NT) sl[i] = softmax ? slp[sidx * m + i] * kLog2e : slp[sidx * m + i];
  cp_async_wait<ST - 1>();  // the Q group
  __syncthreads();
  if (lane < 16) {  // this warp's rows only: read back after __syncwarp
    float n2 = 0.0f;
    const bf16* qr = Qs + (warp * 16 + lane) * PK;
#pragma unroll 8
    for (int d = 0; d < D; ++d) {
      const float x = __bfloat162float(qr[d]) * a;
      n2 += x * x;
    }
    qn[warp * 16 + lane] = n2 / 2;
  }
  __syncwarp();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) ldsm_x4(qf[kc], frag_a(Qs, PK, warp * 16, kc * 16, lane));
  const int64_t ra = i0 + warp * 16 + g, rb = ra + 8, wlast = i0 + warp * 16 + 15;
  float acc[D / 8][4] = {}, accs[4] = {};
  float mxa = -1e30f, mxb = -1e30f;  // finite start: exp2(-inf - max) stays 0, never NaN
  // History chunk (64 slots): the non-causal query kernel's arithmetic.
  auto history = [&](const bf16* ks, const bf16* us, const float* slc, int lim) {
    float sc[BL / 8][4] = {};
    mma_a_bt<D>(sc, qf, ks, PK, lane);
    if (softmax) {
      const float as = a * kLog2e;
      float ma = mxa, mb = mxb;
#pragma unroll
      for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int col = nt * 8 + 2 * t + (i & 1);
          const float x = col < lim ? fmaf(as, sc[nt][i], slc[col]) : -INFINITY;
          sc[nt][i] = x;
          if (i < 2)
            ma = fmaxf(ma, x);
          else
            mb = fmaxf(mb, x);
        }
      ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, 1));
      ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, 2));
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, 1));
      mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, 2));
      const float fa = exp2f(mxa - ma), fb = exp2f(mxb - mb);
      mxa = ma, mxb = mb;
      accs[0] *= fa, accs[1] *= fa, accs[2] *= fb, accs[3] *= fb;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] *= fa, acc[nt][1] *= fa, acc[nt][2] *= fb, acc[nt][3] *= fb;
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
          const float f = feature_map(map, a * sc[nt][i], 0.0f, 0.0f);  // relu or elu
          sc[nt][i] = col < lim ? f * slc[col] : 0.0f;
        }
    }
#pragma unroll
    for (int kc = 0; kc < BL / 16; ++kc) mma_p_u<D>(sc, kc, us, PK, lane, acc, accs);
  };
  // The history as part of the row's softmax: favor's phi(q) carries exp(-||s q||^2 / 2) / m against the exact
  // part's exp(q.k / sqrt(D)) (the 1 / sqrt(m) of both sides); relu's weights 1 / m; elu's none.
  auto merge_history = [&]() {
    if (softmax) {
      const float lm = __logf(float(m));
      mxa += (-qn[warp * 16 + g] - lm) * kLog2e, mxb += (-qn[warp * 16 + g + 8] - lm) * kLog2e;
      return;
    }
    const float lm = map == kRelu ? -__log2f(float(m)) : 0.0f;
    for (int half = 0; half < 2; ++half) {
      const float s = accs[2 * half];
      if (s == 0.0f) continue;  // no history weight: stays (-1e30, 0, 0); NaN goes on and reaches the row
      const float inv = 1.0f / s;
      (half ? mxb : mxa) = __log2f(s) + lm;
      accs[2 * half] = accs[2 * half + 1] = 1.0f;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) acc[nt][2 * half] *= inv, acc[nt][2 * half + 1] *= inv;
    }
  };
  const float ak = kLog2e * rsqrtf(float(D));
  // Exact part: 64 keys from j0; keys past a row are masked (only the tiles that reach the warp's first row).
  auto exact = [&](const bf16* ks, const bf16* vs, int64_t j0) {
    float sc[BL / 8][4] = {};
    mma_a_bt<D>(sc, qf, ks, PK, lane);
    const bool full = j0 + BL - 1 <= i0 + warp * 16;
    float ma = mxa, mb = mxb;
#pragma unroll
    for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t j = j0 + nt * 8 + 2 * t + (i & 1);
        const float x = (full || j <= (i < 2 ? ra : rb)) ? sc[nt][i] * ak : -INFINITY;
        sc[nt][i] = x;
        if (i < 2)
          ma = fmaxf(ma, x);
        else
          mb = fmaxf(mb, x);
      }
    ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, 1));
    ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, 2));
    mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, 1));
    mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, 2));
    const float fa = exp2f(mxa - ma), fb = exp2f(mxb - mb);
    mxa = ma, mxb = mb;
    accs[0] *= fa, accs[1] *= fa, accs[2] *= fb, accs[3] *= fb;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] *= fa, acc[nt][1] *= fa, acc[nt][2] *= fb, acc[nt][3] *= fb;
#pragma unroll
    for (int nt = 0; nt < BL / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) sc[nt][i] = exp2f(sc[nt][i] - (i < 2 ? ma : mb));
#pragma unroll
    for (int kc = 0; kc < BL / 16; ++kc) mma_p_u<D>(sc, kc, vs, PK, lane, acc, accs);
  };
  for (int it = 0; it < steps; ++it) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // step it landed for everyone; the buffer of step it - 1 is free
    if (it + ST - 1 < steps) load((it + ST - 1) % ST, it + ST - 1);
    cp_async_commit();
    const bf16* ks = Ks + (it % ST) * BL * PK;
    const bf16* us = Us + (it % ST) * BL * PK;
    if (it < nh) {
      history(ks, us, sl + it * BL, int(min(int64_t(BL), m - int64_t(it) * BL)));
      continue;
    }
    if (it == nh && nh > 0) merge_history();
    const int64_t j0 = c0 + int64_t(it - nh) * BL;
    if (j0 > wlast || i0 + warp * 16 >= i1) continue;  // warp-uniform: no row of this warp sees these keys
    exact(ks, us, j0);
  }
  cp_async_wait<0>();
  const float ia = 1.0f / accs[0], ib = 1.0f / accs[2];  // >= 1: the row's largest term is exp2(0)
  bf16* o = out + b * ob + h * oh;
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int cc = nt * 8 + 2 * t;
    if (ra < i1) store2(o + ra * on + cc, acc[nt][0] * ia, acc[nt][1] * ia);
    if (rb < i1) store2(o + rb * on + cc, acc[nt][2] * ib, acc[nt][3] * ib);
  }
}

}  // namespace splat::fk
