// FLuRKA CUDA kernels of the register-staged path (fp32 storage, and the small prepare / convert / finalize
// kernels of every path); the cp.async pipelines are in project.cuh, state.cuh and query.cuh. Fragment layout
// and helpers: tiles.cuh.
#pragma once
#include "flurka/cuda/tiles.cuh"

namespace splat::fk {

// ---- 1. Projection: P X for P [k, N] (E or F), X [N, D] (K or V), split over N, fp32 atomics into out ----
// grid (ceil(k / (128 MT)), splits, B*H*2); block 256 = 8 warps x 16 MT rows of P; a warp computes 16 MT x D.
template <class T, int D, int MT>
__global__ void __launch_bounds__(256, (D <= 64 ? 2 : 1))
    project_kernel(Rows e, Rows f, Rows k, Rows v, int64_t Bn, int64_t H, int64_t kk, int64_t N, int64_t chunk,
                   float* kp, float* vp) {
  constexpr int BR = 128 * MT, BN = 64, NT = 256;
  __shared__ __align__(16) bf16 Ps[BR * (BN + 8)];
  __shared__ __align__(16) bf16 Xt[D * (BN + 8)];
  // z = (h * B + b) * 2 + which: the blocks that read one head's E (or F) for every batch are adjacent,
  // so E, F come from DRAM about once and from L2 for the other batches.
  const int64_t hb = blockIdx.z / 2, h = hb / Bn, b = hb % Bn, bh = b * H + h;
  const bool second = blockIdx.z & 1;
  const T* P = reinterpret_cast<const T*>((second ? f : e).base(b, h, sizeof(T)));
  const T* X = reinterpret_cast<const T*>((second ? v : k).base(b, h, sizeof(T)));
  const int64_t ldx = (second ? v : k).ld;
  float* out = (second ? vp : kp) + bh * kk * D;
  const int64_t r0 = int64_t(blockIdx.x) * BR, n0 = int64_t(blockIdx.y) * chunk, n1 = min(N, n0 + chunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float acc[MT][D / 8][4] = {};
  Tile<T, BR, BN, NT, false> pt;
  Tile<T, BN, D, NT, true> xt;
  pt.load(P, N, r0, kk, n0, n1);
  xt.load(X, ldx, n0, n1, 0, D);
  for (int64_t j0 = n0; j0 < n1; j0 += BN) {
    __syncthreads();
    pt.store(Ps);
    xt.store(Xt);
    __syncthreads();
    if (j0 + BN < n1) {
      pt.load(P, N, r0, kk, j0 + BN, n1);
      xt.load(X, ldx, j0 + BN, n1, 0, D);
    }
#pragma unroll
    for (int kc = 0; kc < BN; kc += 16) {
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const bf16* a = Ps + ((warp * MT + mt) * 16 + g) * (BN + 8) + kc + 2 * t;
        af[mt][0] = lds32(a), af[mt][1] = lds32(a + 8 * (BN + 8)), af[mt][2] = lds32(a + 8),
        af[mt][3] = lds32(a + 8 * (BN + 8) + 8);
      }
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        const bf16* bp = Xt + (nt * 8 + g) * (BN + 8) + kc + 2 * t;
        const uint32_t b0 = lds32(bp), b1 = lds32(bp + 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_bf16(acc[mt][nt], af[mt], b0, b1);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t r = r0 + (warp * MT + mt) * 16 + g + (i >= 2 ? 8 : 0);
        const int c = nt * 8 + 2 * t + (i & 1);
        if (r < kk) atomicAdd(out + r * D + c, acc[mt][nt][i]);
      }
}

// ---- 2. Conversion of the projected fp32 K', V' to bf16 for the softmax path (keys K', values U = V') ----
static __global__ void convert_projection(const float* kp, const float* vp, int64_t n, bf16* kp16, bf16* vp16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    kp16[i] = __float2bfloat16_rn(kp[i]);
    vp16[i] = __float2bfloat16_rn(vp[i]);
  }
}

// ---- 3. Prepare: zero the two fp32 accumulation regions (nz4a, nz4b float4s; replaces memset launches) and
// write the feature keys Wt [Hw, m, D] = W^T in bf16 (reads coalesced along m). For the elu map Wt is the
// D x D identity, making phi's argument the plain coordinates. ----
template <class T>
__global__ void prepare_features(const T* w, int64_t Hw, int64_t D, int64_t m, bool identity, bf16* wt, float4* za,
                                 int64_t nz4a, float4* zb, int64_t nz4b) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x, i0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = i0; i < nz4a; i += stride) za[i] = make_float4(0, 0, 0, 0);
  for (int64_t i = i0; i < nz4b; i += stride) zb[i] = make_float4(0, 0, 0, 0);
  const int64_t n = Hw * m * D;
  const bool small = n <= INT32_MAX;  // 32-bit index arithmetic (64-bit division costs ~10x more)
  for (int64_t i = i0; i < n; i += stride) {
    int64_t l, d, h;
    if (small) {
      const uint32_t u = uint32_t(i), q = u / uint32_t(m);
      l = u - q * uint32_t(m), d = q % uint32_t(D), h = q / uint32_t(D);
    } else {
      l = i % m, d = (i / m) % D, h = i / (m * D);
    }
    wt[(h * m + l) * D + d] = __float2bfloat16_rn(identity ? (d == l ? 1.0f : 0.0f) : to_f(w[i]));
  }
}

enum Map : int { kFavor = 0, kRelu = 1, kElu = 2, kSoftmax = 3 };

// phi of one feature logit v = s (x . w) (the elu map runs with s = 1, v = x): favor exp(v - a - b), a and b its
// stabilising shifts; relu max(v, 0); elu elu(v) + 1. Shared by the state and query kernels.
__device__ __forceinline__ float feature_map(int map, float v, float a, float b) {
  if (map == kFavor) return __expf(v - a - b);
  if (map == kRelu) return fmaxf(v, 0.0f);
  return v > 0 ? v + 1.0f : __expf(v);
}

// ---- 4. Kernel state: S = phi(X)^T Y (m x D), z = phi(X)^T 1, split over rows of X, fp32 atomics (or, with
// one split and u != nullptr, the finalised slots U = S / z and bias / weight directly) ----
// grid (ceil(m / 128), splits, B*H); block 256 = 8 warps x 16 features. Per 64-row chunk: logits^T (16 x 64 per
// warp) = Wt X^T on tensor cores, phi in registers, reused directly as the A operand of S += phi^T Y.
template <class T, int D>
__global__ void __launch_bounds__(256)
    state_kernel(Rows x, Rows y, const bf16* wt, int64_t Hw, float* shift, int64_t H, int64_t L, int64_t m,
                 int64_t chunk, int map, float s, float* S, float* z, bf16* u, float* slot, float* u32 = nullptr) {
  constexpr int BM = 128, BN = 64, NT = 256;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ws = reinterpret_cast<bf16*>(smem_raw);             // [BM][D + 8]
  bf16* Xs = Ws + BM * (D + 8);                             // [BN][D + 8]
  bf16* Yt = Xs + BN * (D + 8);                             // [D][BN + 8]
  float* xn = reinterpret_cast<float*>(Yt + D * (BN + 8));  // [BN] ||x||^2
  const int64_t bh = blockIdx.z, b = bh / H, h = bh % H;
  const T* X = reinterpret_cast<const T*>(x.base(b, h, sizeof(T)));
  const T* Y = reinterpret_cast<const T*>(y.base(b, h, sizeof(T)));
  const int64_t hw = Hw == 1 ? 0 : h, l0 = int64_t(blockIdx.x) * BM;
  const int64_t j0s = int64_t(blockIdx.y) * chunk, j1 = min(L, j0s + chunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  __shared__ float wn[BM];
  tile_to_smem<bf16, BM, D, NT>(wt + hw * m * D, D, l0, m, 0, D, Ws);
  __syncthreads();
  // Favor shift c_l = ||w_l||^2 / 2 - 40 (s x.w - ||s x||^2/2 <= ||w||^2/2, so shifted exponents are <= 40 and
  // fp32 sums cannot overflow). One block per head writes it for the finalisation.
  if (threadIdx.x < BM) {
    float n2 = 0;
    for (int d = 0; d < D; ++d) {
      const float x = __bfloat162float(Ws[threadIdx.x * (D + 8) + d]);
      n2 += x * x;
    }
    wn[threadIdx.x] = n2 / 2 - 40.0f;
    if (map == kFavor && blockIdx.y == 0 && b == 0 && (Hw > 1 || h == 0) && l0 + threadIdx.x < m)
      shift[hw * m + l0 + threadIdx.x] = wn[threadIdx.x];
  }
  __syncthreads();
  uint32_t wf[D / 16][4];  // this warp's 16 features as A fragments, kept for the whole loop
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    const bf16* a = Ws + (warp * 16 + g) * (D + 8) + kc * 16 + 2 * t;
    wf[kc][0] = lds32(a), wf[kc][1] = lds32(a + 8 * (D + 8)), wf[kc][2] = lds32(a + 8),
    wf[kc][3] = lds32(a + 8 * (D + 8) + 8);
  }
  const int64_t la = l0 + warp * 16 + g, lb = la + 8;
  const float ca = map == kFavor ? wn[warp * 16 + g] : 0.0f;
  const float cb = map == kFavor ? wn[warp * 16 + g + 8] : 0.0f;
  float acc[D / 8][4] = {};
  float za = 0, zb = 0;
  Tile<T, BN, D, NT, false> xtile;
  Tile<T, BN, D, NT, true> ytile;
  xtile.load(X, x.ld, j0s, j1, 0, D);
  ytile.load(Y, y.ld, j0s, j1, 0, D);
  for (int64_t j0 = j0s; j0 < j1; j0 += BN) {
    __syncthreads();
    xtile.store(Xs);
    ytile.store(Yt);
    __syncthreads();
    if (j0 + BN < j1) {
      xtile.load(X, x.ld, j0 + BN, j1, 0, D);
      ytile.load(Y, y.ld, j0 + BN, j1, 0, D);
    }
    if (map == kFavor && threadIdx.x < BN) {
      float n2 = 0;
      for (int d = 0; d < D; ++d) {
        const float v = __bfloat162float(Xs[threadIdx.x * (D + 8) + d]);
        n2 += v * v;
      }
      xn[threadIdx.x] = n2 * s * s / 2;
    }
    float lg[BN / 8][4] = {};
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc)
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        const bf16* bp = Xs + (nt * 8 + g) * (D + 8) + kc * 16 + 2 * t;
        mma_bf16(lg[nt], wf[kc], lds32(bp), lds32(bp + 8));
      }
    __syncthreads();  // xn ready
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = nt * 8 + 2 * t + (i & 1);
        const float p = j0 + col >= j1 ? 0.0f : feature_map(map, s * lg[nt][i], xn[col], i < 2 ? ca : cb);
        lg[nt][i] = p;
        (i < 2 ? za : zb) += p;
      }
#pragma unroll
    for (int kc = 0; kc < BN / 16; ++kc) {
      const uint32_t af[4] = {pack_bf16(lg[2 * kc][0], lg[2 * kc][1]), pack_bf16(lg[2 * kc][2], lg[2 * kc][3]),
                              pack_bf16(lg[2 * kc + 1][0], lg[2 * kc + 1][1]),
                              pack_bf16(lg[2 * kc + 1][2], lg[2 * kc + 1][3])};
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        const bf16* bp = Yt + (nt * 8 + g) * (BN + 8) + kc * 16 + 2 * t;
        mma_bf16(acc[nt], af, lds32(bp), lds32(bp + 8));
      }
    }
  }
  za += __shfl_xor_sync(0xffffffff, za, 1);
  za += __shfl_xor_sync(0xffffffff, za, 2);
  zb += __shfl_xor_sync(0xffffffff, zb, 1);
  zb += __shfl_xor_sync(0xffffffff, zb, 2);
  if (u || u32) {  // a single split (gridDim.y == 1) holds the whole sum: the query-side slots as finalize_state
    // would write them (u32: U in fp32 instead of bf16, for the causal path's scan over chunks)
    const float ia = za > 0 ? 1.0f / za : 0.0f, ib = zb > 0 ? 1.0f / zb : 0.0f;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int c = nt * 8 + 2 * t;
      if (u32) {
        if (la < m) store2(u32 + (bh * m + la) * D + c, acc[nt][0] * ia, acc[nt][1] * ia);
        if (lb < m) store2(u32 + (bh * m + lb) * D + c, acc[nt][2] * ib, acc[nt][3] * ib);
      } else {
        if (la < m) store2(u + (bh * m + la) * D + c, acc[nt][0] * ia, acc[nt][1] * ia);
        if (lb < m) store2(u + (bh * m + lb) * D + c, acc[nt][2] * ib, acc[nt][3] * ib);
      }
    }
    if (t == 0) {
      if (la < m) slot[bh * m + la] = map == kFavor ? (za > 0 ? ca + __logf(za) : -INFINITY) : za;
      if (lb < m) slot[bh * m + lb] = map == kFavor ? (zb > 0 ? cb + __logf(zb) : -INFINITY) : zb;
      if (z && la < m) z[bh * m + la] = za;  // z itself too (the backward's dS~ = dU / z~)
      if (z && lb < m) z[bh * m + lb] = zb;
    }
    return;
  }
  float* Sb = S + bh * m * D;
  if (t == 0) {
    if (la < m) atomicAdd(z + bh * m + la, za);
    if (lb < m) atomicAdd(z + bh * m + lb, zb);
  }
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t l = i < 2 ? la : lb;
      if (l < m) atomicAdd(Sb + l * D + nt * 8 + 2 * t + (i & 1), acc[nt][i]);
    }
}

// ---- 5. Finalise the state into query-side slots: U [BH, m, D] = S / z in bf16 (row-major, coalesced), and
// per slot either the softmax bias c_l + log z_l (favor) or the weight z_l (relu, elu); empty slots get -inf / 0.
// block (D, 4): threadIdx.x = d, one slot row r = bh * m + l per threadIdx.y (no index division per element).
static __global__ void finalize_state(const float* S, const float* z, const float* shift, int64_t Hw, int64_t H,
                                      int64_t BH, int64_t m, int D, int map, bf16* u, float* slot) {
  const int d = threadIdx.x;
  for (int64_t r = blockIdx.x * int64_t(blockDim.y) + threadIdx.y; r < BH * m; r += int64_t(gridDim.x) * blockDim.y) {
    const float zz = z[r];
    u[r * D + d] = __float2bfloat16_rn(zz > 0 ? S[r * D + d] / zz : 0.0f);
    if (d == 0) {
      const int64_t bh = r / m, l = r - bh * m, hw = Hw == 1 ? 0 : bh % H;
      slot[r] = map == kFavor ? (zz > 0 ? shift[hw * m + l] + __logf(zz) : -INFINITY) : zz;
    }
  }
}

}  // namespace splat::fk
