// Chunk states and their scan in one kernel (EXPERIMENTAL, SPLAT_FLURKA_CAUSAL_FUSED=1; not yet run on a GPU): a block
// owns 128 features of one (b, h), keeps its W tile, and walks the chunks in order, accumulating phi(K'_c)^T V'_c and
// phi(K'_c)^T 1 into the same registers (the favor shift c_l is the same for every chunk, so the prefix is a plain sum)
// and writing after each chunk the query side of the prefix (U = S / z in bf16, bias c_l + log z_l or weight z_l).
// Replaces state_kernel over B nS H "heads" + chunk_scan (no per-chunk fp32 U round trip).
#pragma once
#include "flurka/cuda/kernels.cuh"

namespace splat::fk {

// grid (ceil(m / 128), B H); block 256 = 8 warps x 16 features; dynamic smem as state_kernel. kp, vp [B, nS, H, r, D];
// up [B, nS, H, m, D] bf16, slp [B, nS, H, m]: entry c is the prefix through chunk c (read by query chunk c + 1).
template <int D>
__global__ void __launch_bounds__(256)
    chunk_state_scan(const float* kp, const float* vp, const bf16* wt, int64_t Hw, int64_t H, int64_t r, int64_t m,
                     int64_t nS, int map, float s, bf16* up, float* slp) {
  constexpr int BM = 128, BN = 64, NT = 256;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ws = reinterpret_cast<bf16*>(smem_raw);             // [BM][D + 8]
  bf16* Xs = Ws + BM * (D + 8);                             // [BN][D + 8]
  bf16* Yt = Xs + BN * (D + 8);                             // [D][BN + 8]
  float* xn = reinterpret_cast<float*>(Yt + D * (BN + 8));  // [BN] ||s x||^2 / 2
  __shared__ float wn[BM];
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t hw = Hw == 1 ? 0 : h, l0 = int64_t(blockIdx.x) * BM;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  tile_to_smem<bf16, BM, D, NT>(wt + hw * m * D, D, l0, m, 0, D, Ws);
  __syncthreads();
  if (threadIdx.x < BM) {  // favor shift c_l = ||w_l||^2 / 2 - 40, as state_kernel
    float n2 = 0;
    for (int d = 0; d < D; ++d) {
      const float x = __bfloat162float(Ws[threadIdx.x * (D + 8) + d]);
      n2 += x * x;
    }
    wn[threadIdx.x] = n2 / 2 - 40.0f;
  }
  __syncthreads();
  uint32_t wf[D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    const bf16* a = Ws + (warp * 16 + g) * (D + 8) + kc * 16 + 2 * t;
    wf[kc][0] = lds32(a), wf[kc][1] = lds32(a + 8 * (D + 8)), wf[kc][2] = lds32(a + 8),
    wf[kc][3] = lds32(a + 8 * (D + 8) + 8);
  }
  const int64_t la = l0 + warp * 16 + g, lb = la + 8;
  const float ca = map == kFavor ? wn[warp * 16 + g] : 0.0f;
  const float cb = map == kFavor ? wn[warp * 16 + g + 8] : 0.0f;
  const int64_t tpc = (r + BN - 1) / BN, tiles = nS * tpc;
  auto chunk = [&](int64_t c) { return ((b * nS + c) * H + h); };
  float acc[D / 8][4] = {};  // running S of the prefix (never reset: the scan)
  float za = 0, zb = 0;      // this thread's part of the running z
  Tile<float, BN, D, NT, false> xtile;
  Tile<float, BN, D, NT, true> ytile;
  xtile.load(kp + chunk(0) * r * D, D, 0, r, 0, D);
  ytile.load(vp + chunk(0) * r * D, D, 0, r, 0, D);
  for (int64_t it = 0; it < tiles; ++it) {
    const int64_t c = it / tpc, j0 = (it % tpc) * BN;
    __syncthreads();
    xtile.store(Xs);
    ytile.store(Yt);
    __syncthreads();
    if (it + 1 < tiles) {  // the next tile's loads in flight during this one's MMAs
      const int64_t cn = (it + 1) / tpc, jn = ((it + 1) % tpc) * BN;
      xtile.load(kp + chunk(cn) * r * D, D, jn, r, 0, D);
      ytile.load(vp + chunk(cn) * r * D, D, jn, r, 0, D);
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
        const float p = j0 + col >= r ? 0.0f : feature_map(map, s * lg[nt][i], xn[col], i < 2 ? ca : cb);
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
    if (it % tpc != tpc - 1) continue;
    // Chunk c done: the prefix through it, as query chunk c + 1 reads it.
    float fa = za + __shfl_xor_sync(0xffffffff, za, 1), fb = zb + __shfl_xor_sync(0xffffffff, zb, 1);
    fa += __shfl_xor_sync(0xffffffff, fa, 2), fb += __shfl_xor_sync(0xffffffff, fb, 2);
    const float ia = fa > 0 ? 1.0f / fa : 0.0f, ib = fb > 0 ? 1.0f / fb : 0.0f;
    bf16* U = up + chunk(c) * m * D;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int cc = nt * 8 + 2 * t;
      if (la < m) store2(U + la * D + cc, acc[nt][0] * ia, acc[nt][1] * ia);
      if (lb < m) store2(U + lb * D + cc, acc[nt][2] * ib, acc[nt][3] * ib);
    }
    if (t == 0) {
      float* sl = slp + chunk(c) * m;
      if (la < m) sl[la] = map == kFavor ? (fa > 0 ? ca + __logf(fa) : -INFINITY) : fa;
      if (lb < m) sl[lb] = map == kFavor ? (fb > 0 ? cb + __logf(fb) : -INFINITY) : fb;
    }
  }
}

}  // namespace splat::fk
