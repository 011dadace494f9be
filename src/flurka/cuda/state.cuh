// Pipelined kernel state for bf16 K, V (performer, linear): S = phi(X)^T Y (m x D), z = phi(X)^T 1, split over
// rows of X, fp32 atomics. Same math as state_kernel (kernels.cuh), but X and Y tiles stream straight into
// shared memory through a 3-stage cp.async ring (row-major, no transposition: Y's fragments come from
// ldmatrix.trans), and z comes from one extra MMA against an all-ones operand.
// grid (ceil(m / 128), splits, B*H); block 256 = 8 warps x 16 features.
#pragma once
#include "flurka/cuda/kernels.cuh"
#include "flurka/cuda/pipe.cuh"

namespace splat::fk {

template <int D>
struct StatePipe {
  static constexpr int BM = 128, BN = 64, ST = 3, NT = 256, PK = D + 8;
  static constexpr size_t smem_bytes = size_t(BM + 2 * ST * BN) * PK * 2 + (BN + BM) * 4;
};

template <int D>
__global__ void __launch_bounds__(256, (D <= 64 ? 2 : 1))
    state_pipe_kernel(Rows x, Rows y, const bf16* wt, int64_t Hw, float* shift, int64_t H, int64_t L, int64_t m,
                      int64_t chunk, int map, float s, float* S, float* z, bool partial = false) {
  using C = StatePipe<D>;
  constexpr int BM = C::BM, BN = C::BN, ST = C::ST, NT = C::NT, PK = C::PK;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ws = reinterpret_cast<bf16*>(smem_raw);             // [BM][PK]
  bf16* Xs = Ws + BM * PK;                                  // [ST][BN][PK]
  bf16* Ys = Xs + ST * BN * PK;                             // [ST][BN][PK]
  float* xn = reinterpret_cast<float*>(Ys + ST * BN * PK);  // [BN] ||s x||^2 / 2
  float* wn = xn + BN;                                      // [BM]
  const int64_t bh = blockIdx.z, b = bh / H, h = bh % H;
  const bf16* X = reinterpret_cast<const bf16*>(x.base(b, h, 2));
  const bf16* Y = reinterpret_cast<const bf16*>(y.base(b, h, 2));
  const int64_t hw = Hw == 1 ? 0 : h, l0 = int64_t(blockIdx.x) * BM;
  const int64_t j0s = int64_t(blockIdx.y) * chunk, j1 = min(L, j0s + chunk);
  const int steps = int((j1 - j0s + BN - 1) / BN);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  auto load = [&](int st, int64_t j) {
#pragma unroll
    for (int p = 0; p < BN * D / 8 / NT; ++p) {
      const int i = tid + p * NT, r = i / (D / 8), c = (i % (D / 8)) * 8;
      const int64_t gn = j + r;
      const bool ok = gn < j1;
      copy8(Xs + (st * BN + r) * PK + c, X + (ok ? gn : 0) * x.ld + c, ok ? 8 : 0);
      copy8(Ys + (st * BN + r) * PK + c, Y + (ok ? gn : 0) * y.ld + c, ok ? 8 : 0);
    }
  };
#pragma unroll
  for (int st = 0; st < ST - 1; ++st) {
    if (st < steps) load(st, j0s + int64_t(st) * BN);
    cp_async_commit();
  }
  tile_to_smem<bf16, BM, D, NT>(wt + hw * m * D, D, l0, m, 0, D, Ws);
  __syncthreads();
  // Favor shift c_l = ||w_l||^2 / 2 - 40 (see state_kernel). One block per head writes it for the finalisation.
  if (tid < BM) {
    float n2 = 0;
    for (int d = 0; d < D; ++d) {
      const float v = __bfloat162float(Ws[tid * PK + d]);
      n2 += v * v;
    }
    wn[tid] = n2 / 2 - 40.0f;
    if (map == kFavor && blockIdx.y == 0 && b == 0 && (Hw > 1 || h == 0) && l0 + tid < m)
      shift[hw * m + l0 + tid] = wn[tid];
  }
  __syncthreads();
  uint32_t wf[D / 16][4];  // this warp's 16 features as A fragments, kept for the whole loop
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) ldsm_x4(wf[kc], frag_a(Ws, PK, warp * 16, kc * 16, lane));
  const int64_t la = l0 + warp * 16 + g, lb = la + 8;
  const float ca = map == kFavor ? wn[warp * 16 + g] : 0.0f;
  const float cb = map == kFavor ? wn[warp * 16 + g + 8] : 0.0f;
  float acc[D / 8][4] = {}, accz[4] = {};
  for (int it = 0; it < steps; ++it) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // stage it landed; stage it - 1 (and xn) is free
    if (it + ST - 1 < steps) load((it + ST - 1) % ST, j0s + int64_t(it + ST - 1) * BN);
    cp_async_commit();
    const bf16* xs = Xs + (it % ST) * BN * PK;
    const bf16* ys = Ys + (it % ST) * BN * PK;
    const int64_t j0 = j0s + int64_t(it) * BN;
    if (map == kFavor && tid < BN) {
      float n2 = 0;
#pragma unroll 8
      for (int d = 0; d < D; ++d) {
        const float v = __bfloat162float(xs[tid * PK + d]);
        n2 += v * v;
      }
      xn[tid] = n2 * s * s / 2;
    }
    float lg[BN / 8][4] = {};
    mma_a_bt<D>(lg, wf, xs, PK, lane);  // feature logits of this stage's rows
    __syncthreads();                    // xn ready
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = nt * 8 + 2 * t + (i & 1);
        lg[nt][i] = j0 + col >= j1 ? 0.0f : feature_map(map, s * lg[nt][i], xn[col], i < 2 ? ca : cb);
      }
#pragma unroll
    for (int kc = 0; kc < BN / 16; ++kc) mma_p_u<D>(lg, kc, ys, PK, lane, acc, accz);
  }
  cp_async_wait<0>();
  // partial: one slice per split (S [split][BH][m][D], z [split][BH][m]), plain stores, summed later in split
  // order (the backward's deterministic recompute); else fp32 atomics.
  const int64_t slice = partial ? int64_t(blockIdx.y) * gridDim.z + bh : bh;
  float* Sb = S + slice * m * D;
  float* zb_ = z + slice * m;
  if (t == 0) {
    if (la < m) partial ? void(zb_[la] = accz[0]) : void(atomicAdd(zb_ + la, accz[0]));
    if (lb < m) partial ? void(zb_[lb] = accz[2]) : void(atomicAdd(zb_ + lb, accz[2]));
  }
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    if (la < m) add2(Sb + la * D + nt * 8 + 2 * t, acc[nt][0], acc[nt][1], !partial);
    if (lb < m) add2(Sb + lb * D + nt * 8 + 2 * t, acc[nt][2], acc[nt][3], !partial);
  }
}

}  // namespace splat::fk
