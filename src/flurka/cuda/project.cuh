// Pipelined projection K' = E K, V' = F V for 2-byte storage (bf16, fp16). It is a bandwidth-bound GEMM per head:
// [k, N] x [N, B D] (the batches' K side by side share one E). A block computes a 256 x 128 tile of it (256 rows
// of E, 128 / D batches' columns, D <= 128) over one chunk of N, streaming E and K tiles straight into shared
// memory with a 3-stage cp.async pipeline of 64-column stages (128-byte E row segments) (no register staging, no
// conversion: the tensor cores read the storage type). The tile reads each E element once per 128 / D batches and each
// K element once per 256 rows, so L2 traffic stays near the DRAM bytes. fp32 results: plain stores with one split, else
// atomics.
#pragma once
#include "flurka/cuda/kernels.cuh"
#include "flurka/cuda/pipe.cuh"

namespace splat::fk {

struct ProjPipe {
  static constexpr int BM = 256, BC = 128, BK = 64, ST = 3, NT = 512;
  static constexpr int PA = BK + 8, PX = BC + 8;  // row pitches (elements): conflict-free ldmatrix
  static constexpr size_t smem_bytes = size_t(ST) * (BM * PA + BK * PX) * 2;
};

// grid (row tiles * col tiles, splits, members * H * 2); block 512 = 16 warps as 8 (32 rows) x 2 (64 columns).
// members > 1 (the causal path: one member per batch element, whose chunks are the "batch"): member i reads K, V at
// + i km, + i vm elements and writes at + i om.
template <class T, int D>
__global__ void __launch_bounds__(512, 1)
    project_pipe_kernel(Rows e, Rows f, Rows k, Rows v, int64_t Bn, int64_t H, int64_t kk, int64_t N, int64_t chunk,
                        int ctiles, bool atomic, float* kp, float* vp, int64_t split_stride = 0, int64_t km = 0,
                        int64_t vm = 0, int64_t om = 0) {
  using C = ProjPipe;
  constexpr int BM = C::BM, BC = C::BC, BK = C::BK, ST = C::ST, NT = C::NT, PA = C::PA, PX = C::PX;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* As = reinterpret_cast<T*>(smem_raw);  // [ST][BM][PA]
  T* Xs = As + ST * BM * PA;               // [ST][BK][PX]
  const int rt = blockIdx.x / ctiles, ct = blockIdx.x % ctiles;
  const int64_t hz = blockIdx.z / 2, mem = hz / H, h = hz % H;
  const bool second = blockIdx.z & 1;
  const Rows pr = second ? f : e, xr = second ? v : k;
  const T* P = reinterpret_cast<const T*>(pr.base(0, h, sizeof(T)));
  const int64_t r0 = int64_t(rt) * BM, c0 = int64_t(ct) * BC;
  const int64_t n0 = int64_t(blockIdx.y) * chunk, n1 = min(N, n0 + chunk);
  const int steps = int((n1 - n0 + BK - 1) / BK);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wr = warp % 8, wc = warp / 8;

  // This thread's X vectors (rows xrow + 32 p of each stage): column c0 + xc of the batched [N, B D] operand.
  const int xrow = tid / (BC / 8), xc = (tid % (BC / 8)) * 8;
  const int64_t xb = (c0 + xc) / D;
  const T* X =
      reinterpret_cast<const T*>(xr.base(xb < Bn ? xb : 0, h, sizeof(T))) + (c0 + xc) % D + mem * (second ? vm : km);
  auto load = [&](int s, int64_t j) {
    T* as = As + s * BM * PA;
#pragma unroll
    for (int p = 0; p < BM * BK / 8 / NT; ++p) {
      const int i = tid + p * NT, r = i / (BK / 8), c = (i % (BK / 8)) * 8;
      const int64_t gr = r0 + r, gn = j + c;
      const int valid = gr < kk ? int(min(int64_t(8), n1 - gn)) : 0;
      copy8(as + r * PA + c, P + (gr < kk ? gr : 0) * pr.ld + gn, valid);
    }
#pragma unroll
    for (int p = 0; p < BK * BC / 8 / NT; ++p) {
      const int r = xrow + p * (NT / (BC / 8));
      const int64_t gn = j + r;
      copy8(Xs + s * BK * PX + r * PX + xc, X + (gn < n1 ? gn : 0) * xr.ld, (xb < Bn && gn < n1) ? 8 : 0);
    }
  };

  float acc[2][8][4] = {};
  const bool live = r0 + wr * 32 < kk && c0 + wc * 64 < Bn * D;  // warps wholly outside k or B D skip the MMAs
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < steps) load(s, n0 + int64_t(s) * BK);
    cp_async_commit();
  }
  for (int it = 0; it < steps; ++it) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // stage it landed for everyone; stage it - 1 is free for the prefetch
    if (it + ST - 1 < steps) load((it + ST - 1) % ST, n0 + int64_t(it + ST - 1) * BK);
    cp_async_commit();
    if (!live) continue;
    const T* as = As + (it % ST) * BM * PA;
    const T* xs = Xs + (it % ST) * BK * PX;
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      uint32_t af[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) ldsm_x4(af[mt], frag_a(as, PA, wr * 32 + mt * 16, ks, lane));
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        ldsm_x4_t(b, frag_b_kn(xs, PX, wc * 64 + np * 16, ks, lane));
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma16816<T>(acc[mt][2 * np], af[mt], b[0], b[1]);
          mma16816<T>(acc[mt][2 * np + 1], af[mt], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  if (!live) return;
  const int g = lane / 4, t = lane % 4;
  // split_stride > 0: split y writes its own slice at + y split_stride (plain stores, summed later in order).
  float* out = (second ? vp : kp) + int64_t(blockIdx.y) * split_stride + mem * om;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const int64_t col = c0 + wc * 64 + nt * 8 + 2 * t, b = col / D, d = col % D;
    if (b >= Bn) continue;
    float* ob = out + (b * H + h) * kk * D + d;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int64_t ra = r0 + wr * 32 + mt * 16 + g, rb = ra + 8;
      if (ra < kk) add2(ob + ra * D, acc[mt][nt][0], acc[mt][nt][1], atomic);
      if (rb < kk) add2(ob + rb * D, acc[mt][nt][2], acc[mt][nt][3], atomic);
    }
  }
}

}  // namespace splat::fk
