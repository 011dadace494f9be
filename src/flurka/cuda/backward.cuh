// FLuRKA CUDA backward, first version: fp32 SIMT kernels that mirror the CPU fast path (backward_cpu.cpp has
// the formulas) step by step: project -> state (slots) -> query rows (dq, per-block partials of G, g) -> reduce
// -> key rows (dK', dV') -> E^T dK', F^T dV' -> dE, dF. No atomics: every partial has one owner and every
// reduction runs in a fixed order, so gradients are bitwise reproducible. Not on the tensor cores yet.
#pragma once
#include "flurka/cuda/tiles.cuh"

namespace splat::fk::bwd {

constexpr int kThreads = 128;   // threads of the row kernels
constexpr int kMaxSlots = 512;  // k, m <= 512 (flurka_cuda_supports)
constexpr int kMaxD = 128;
constexpr int kRowBlock = 64;  // query rows per partial
enum Map { kSoftmax = 0, kFavor = 1, kRelu = 2, kElu = 3 };

__device__ __forceinline__ float nan_max(float a, float b) {
  return (b > a || b != b) ? b : a;
}
__device__ __forceinline__ float relu(float x) {  // NaN stays NaN (fmaxf would drop it)
  return (x > 0 || x != x) ? x : 0.0f;
}
__device__ __forceinline__ float elu1(float x) {
  return x > 0 ? x + 1.0f : expf(x);
}
__device__ __forceinline__ float elu_grad(float x) {
  return x > 0 ? 1.0f : expf(x);
}

// Block-wide sum / max, the same order on every run. red: shared [kThreads / 32 + 1].
__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = 0;
  for (int i = 0; i < int(blockDim.x / 32); ++i) r += red[i];
  return r;
}
__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = -INFINITY;
  for (int i = 0; i < int(blockDim.x / 32); ++i) r = nan_max(r, red[i]);
  return r;
}

// out[bh, r, :] = P_h[r, :] X[b, h] (P: E or F [k, N]), or a float copy of X's rows when P.p is null.
// grid (rows, B H), block kThreads over D.
template <class T>
__global__ void project_kernel(Rows P, Rows X, int64_t H, int64_t N, int64_t D, float* out) {
  const int64_t r = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, rows = gridDim.x;
  const T* x = reinterpret_cast<const T*>(X.base(b, h, sizeof(T)));
  float* o = out + (bh * rows + r) * D;
  if (!P.p) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = to_f(x[r * X.ld + d]);
    return;
  }
  const T* p = reinterpret_cast<const T*>(P.base(0, h, sizeof(T))) + r * P.ld;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0;
    for (int64_t j = 0; j < N; ++j) acc += to_f(p[j]) * to_f(x[j * X.ld + d]);
    o[d] = acc;
  }
}

// Kernel-map slots of every head: offsets c (favor), z, U = S / z, bias = c + log z (favor; -inf if z = 0).
// grid (ceil(m / 32), B H), block 32 (one feature per thread). kp, vp: [BH, L, D].
template <class T>
__global__ void state_kernel(int map, const float* kp, const float* vp, Rows W, int64_t H, int64_t L, int64_t D,
                             int64_t m, float a, float* c_out, float* z_out, float* U, float* bias) {
  __shared__ float xs[kMaxD], ys[kMaxD], S[32 * kMaxD];
  const int64_t bh = blockIdx.y, h = bh % H, l = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const bool valid = l < m;
  const T* w = W.p ? reinterpret_cast<const T*>(W.base(0, h, sizeof(T))) : nullptr;
  float* Sl = S + threadIdx.x * kMaxD;
  for (int64_t d = 0; d < D; ++d) Sl[d] = 0;
  float c = map == kFavor ? -INFINITY : 0.0f, z = 0;
  for (int64_t j = 0; j < L; ++j) {
    __syncwarp();
    for (int64_t d = threadIdx.x; d < D; d += 32) xs[d] = kp[(bh * L + j) * D + d], ys[d] = vp[(bh * L + j) * D + d];
    __syncwarp();
    if (!valid) continue;
    float p;
    if (map == kElu) {
      p = elu1(xs[l]);
    } else {
      float dot = 0, nrm = 0;
      for (int64_t d = 0; d < D; ++d) {
        const float x = a * xs[d];
        dot += x * to_f(w[d * m + l]), nrm += x * x;
      }
      p = map == kFavor ? dot - nrm / 2 : relu(dot);
    }
    if (map == kFavor) {  // online per-feature max (as add_state on the CPU)
      if (p == -INFINITY) {
        p = 0;
      } else {
        if (p > c || p != p) {
          const float r = c == -INFINITY ? 0.0f : expf(c - p);
          z *= r;
          for (int64_t d = 0; d < D; ++d) Sl[d] *= r;
          c = p;
        }
        p = expf(p - c);
      }
    }
    z += p;
    for (int64_t d = 0; d < D; ++d) Sl[d] += p * ys[d];
  }
  if (!valid) return;
  c_out[bh * m + l] = c, z_out[bh * m + l] = z;
  for (int64_t d = 0; d < D; ++d) U[(bh * m + l) * D + d] = z != 0 ? Sl[d] / z : Sl[d];
  bias[bh * m + l] = map == kFavor ? (z != 0 ? c + logf(z) : -INFINITY) : 0.0f;
}

// Everything a query row needs of its head.
struct Slots {
  int map;
  int64_t L, D, m;
  float a;
  const float* keys;  // softmax: K' [L, D] per head (stride L D); else unused (W below)
  Rows W;             // favor / relu: W [D, m]
  const float* U;     // [L, D] per head
  const float* bias;  // favor [L] per head
  const float* zw;    // relu / elu: z [L] per head
};

// Query rows i0 .. i0 + kRowBlock of head bh: dq, and the block's partial [G (L D) | g (L) or Ka (L D)].
// grid (ceil(Nq / kRowBlock), B H), block kThreads.
template <class T>
__global__ void query_kernel(Slots sl, Rows Q, Rows dO, Rows dQ, int64_t H, int64_t Nq, int64_t P, float* part) {
  __shared__ float q[kMaxD], g[kMaxD], o[kMaxD], w[kMaxSlots], t[kMaxSlots], red[kThreads / 32 + 1];
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, L = sl.L, D = sl.D, tid = threadIdx.x, nt = blockDim.x;
  const int64_t i0 = int64_t(blockIdx.x) * kRowBlock, i1 = min(Nq, i0 + kRowBlock);
  const bool lin = sl.map == kSoftmax;
  float* G = part + (bh * gridDim.x + blockIdx.x) * P;
  float* second = G + L * D;  // g (kernel maps) or Ka (linformer)
  for (int64_t e = tid; e < P; e += nt) G[e] = 0;
  const float* keys = sl.keys + bh * L * D;
  const float* U = sl.U + bh * L * D;
  const T* Wp = sl.W.p ? reinterpret_cast<const T*>(sl.W.base(0, h, sizeof(T))) : nullptr;
  const T* qb = reinterpret_cast<const T*>(Q.base(b, h, sizeof(T)));
  const T* gb = reinterpret_cast<const T*>(dO.base(b, h, sizeof(T)));
  T* dqb = reinterpret_cast<T*>(const_cast<char*>(dQ.base(b, h, sizeof(T))));
  for (int64_t i = i0; i < i1; ++i) {
    __syncthreads();
    for (int64_t d = tid; d < D; d += nt) q[d] = to_f(qb[i * Q.ld + d]), g[d] = to_f(gb[i * dO.ld + d]);
    __syncthreads();
    for (int64_t l = tid; l < L; l += nt) {
      float v;
      if (lin) {
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[d] * keys[l * D + d];
        v = sl.a * dot;
      } else if (sl.map == kElu) {
        v = elu1(q[l]) * sl.zw[bh * L + l];
      } else {
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[d] * to_f(Wp[d * sl.m + l]);
        v = sl.a * dot;
        v = sl.map == kFavor ? v + sl.bias[bh * L + l] : relu(v) * sl.zw[bh * L + l];
      }
      w[l] = v;
    }
    __syncthreads();
    if (lin || sl.map == kFavor) {
      float mx = -INFINITY;
      for (int64_t l = tid; l < L; l += nt) mx = nan_max(mx, w[l]);
      mx = block_max(mx, red);
      for (int64_t l = tid; l < L; l += nt) w[l] = mx == -INFINITY ? 0.0f : expf(w[l] - mx);
    }
    float part_den = 0;
    for (int64_t l = tid; l < L; l += nt) part_den += w[l];
    const float den = block_sum(part_den, red);
    if (den == 0) {  // out = 0, a constant: no gradient
      for (int64_t d = tid; d < D; d += nt) dqb[i * dQ.ld + d] = from_f<T>(0.0f);
      continue;
    }
    for (int64_t d = tid; d < D; d += nt) {
      float acc = 0;
      for (int64_t l = 0; l < L; ++l) acc += w[l] * U[l * D + d];
      o[d] = acc / den;
    }
    __syncthreads();
    float pd = 0;
    for (int64_t d = tid; d < D; d += nt) pd += g[d] * o[d];
    const float delta = block_sum(pd, red);
    for (int64_t l = tid; l < L; l += nt) {
      float tl = -delta;
      for (int64_t d = 0; d < D; ++d) tl += U[l * D + d] * g[d];
      const float p = w[l] / den;
      if (!lin) second[l] += p * delta;
      t[l] = lin || sl.map == kFavor ? (lin ? sl.a : 1.0f) * p * tl
             : sl.map == kRelu       ? (w[l] > 0 ? sl.zw[bh * L + l] * tl / den : 0.0f)
                                     : sl.zw[bh * L + l] * tl / den;
    }
    __syncthreads();
    float ps = 0;
    for (int64_t l = tid; l < L; l += nt) ps += t[l];
    const float sum_t = block_sum(ps, red);
    for (int64_t d = tid; d < D; d += nt) {
      float acc = 0;
      for (int64_t l = 0; l < L; ++l) {
        G[l * D + d] += (w[l] / den) * g[d];
        if (lin) second[l * D + d] += t[l] * q[d], acc += t[l] * keys[l * D + d];
      }
      float dq;
      if (lin) {
        dq = acc;
      } else if (sl.map == kElu) {
        dq = elu_grad(q[d]) * t[d];
      } else {
        float s = 0;
        for (int64_t l = 0; l < L; ++l) s += to_f(Wp[d * sl.m + l]) * t[l];
        dq = sl.a * s - (sl.map == kFavor ? sl.a * sl.a * q[d] * sum_t : 0.0f);
      }
      dqb[i * dQ.ld + d] = from_f<T>(dq);
    }
  }
}

// Sums the nblk partials of each head into its first, in block order; kernel maps divide by z (G / z, g / z).
// grid (ceil(P / 256), B H), block 256.
__global__ void reduce_kernel(float* part, int64_t nblk, int64_t P, int64_t L, int64_t D, const float* zw) {
  const int64_t bh = blockIdx.y, e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= P) return;
  float* base = part + bh * nblk * P;
  float acc = 0;
  for (int64_t blk = 0; blk < nblk; ++blk) acc += base[blk * P + e];
  if (zw) {
    const int64_t l = e < L * D ? e / D : e - L * D;
    const float z = zw[bh * L + l];
    acc = z != 0 ? acc / z : 0.0f;
  }
  base[e] = acc;
}

// Key rows of a kernel map: dK'_j, dV'_j from Gt, gt (the reduced G / z, g / z at part + bh nblk P).
// Writes fp32 rows into dkp, dvp [BH, L, D] (projected) or the dk, dv views (T). grid (ceil(L / 16), B H).
template <class T>
__global__ void key_kernel(Slots sl, const float* kp, const float* vp, const float* c_off, const float* part,
                           int64_t nblk, int64_t P, int64_t H, int64_t Lk, float* dkp, float* dvp, Rows dK, Rows dV) {
  __shared__ float x[kMaxD], y[kMaxD], r[kMaxSlots], u[kMaxSlots], red[kThreads / 32 + 1];
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, m = sl.L, D = sl.D, tid = threadIdx.x, nt = blockDim.x;
  const float* Gt = part + bh * nblk * P;
  const float* gt = Gt + m * D;
  const T* Wp = sl.W.p ? reinterpret_cast<const T*>(sl.W.base(0, h, sizeof(T))) : nullptr;
  const int64_t j0 = int64_t(blockIdx.x) * 16, j1 = min(Lk, j0 + 16);
  for (int64_t j = j0; j < j1; ++j) {
    __syncthreads();
    for (int64_t d = tid; d < D; d += nt) x[d] = kp[(bh * Lk + j) * D + d], y[d] = vp[(bh * Lk + j) * D + d];
    __syncthreads();
    for (int64_t l = tid; l < m; l += nt) {
      float ph;
      if (sl.map == kElu) {
        ph = elu1(x[l]);
      } else {
        float dot = 0, nrm = 0;
        for (int64_t d = 0; d < D; ++d) {
          const float xs = sl.a * x[d];
          dot += xs * to_f(Wp[d * m + l]), nrm += xs * xs;
        }
        ph = sl.map == kFavor ? expf(dot - nrm / 2 - c_off[bh * m + l]) : relu(dot);
      }
      float acc = -gt[l];
      for (int64_t d = 0; d < D; ++d) acc += Gt[l * D + d] * y[d];
      if (sl.map == kFavor) acc *= ph;
      if (sl.map == kRelu && !(ph > 0)) acc = 0;
      r[l] = ph, u[l] = acc;
    }
    __syncthreads();
    float ps = 0;
    for (int64_t l = tid; l < m; l += nt) ps += u[l];
    const float sum_u = block_sum(ps, red);
    for (int64_t d = tid; d < D; d += nt) {
      float dy = 0, dx = 0;
      for (int64_t l = 0; l < m; ++l) dy += r[l] * Gt[l * D + d];
      if (sl.map == kElu) {
        dx = elu_grad(x[d]) * u[d];
      } else {
        for (int64_t l = 0; l < m; ++l) dx += to_f(Wp[d * m + l]) * u[l];
        dx = sl.a * dx - (sl.map == kFavor ? sl.a * sl.a * x[d] * sum_u : 0.0f);
      }
      if (dkp) {
        dkp[(bh * Lk + j) * D + d] = dx, dvp[(bh * Lk + j) * D + d] = dy;
      } else {
        reinterpret_cast<T*>(const_cast<char*>(dK.base(b, h, sizeof(T))))[j * dK.ld + d] = from_f<T>(dx);
        reinterpret_cast<T*>(const_cast<char*>(dV.base(b, h, sizeof(T))))[j * dV.ld + d] = from_f<T>(dy);
      }
    }
  }
}

// dX[b, h, j, :] = sum_r P_h[r, j] G[bh, r, :] (dk = E^T dK', dv = F^T dV'); G at g + bh gstride.
// grid (N, B H), block kThreads over D.
template <class T>
__global__ void project_back_kernel(Rows P, const float* g, int64_t gstride, int64_t H, int64_t k, int64_t D, Rows dX) {
  const int64_t j = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  const T* p = reinterpret_cast<const T*>(P.base(0, h, sizeof(T)));
  const float* gb = g + bh * gstride;
  T* o = reinterpret_cast<T*>(const_cast<char*>(dX.base(b, h, sizeof(T)))) + j * dX.ld;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0;
    for (int64_t r = 0; r < k; ++r) acc += to_f(p[r * P.ld + j]) * gb[r * D + d];
    o[d] = from_f<T>(acc);
  }
}

// dP[he, r, j] = sum over the heads sharing P (in order) of G[bh, r, :] . X[b, h, j, :] (dE from dK', K).
// grid (ceil(N / kThreads), k, He), block kThreads (one column j per thread).
template <class T>
__global__ void matrix_grad_kernel(const float* g, int64_t gstride, Rows X, int64_t B, int64_t H, int64_t He, int64_t k,
                                   int64_t N, int64_t D, T* dP) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, r = blockIdx.y, he = blockIdx.z;
  if (j >= N) return;
  float acc = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      if (He != 1 && h != he) continue;
      const float* gr = g + (b * H + h) * gstride + r * D;
      const T* x = reinterpret_cast<const T*>(X.base(b, h, sizeof(T))) + j * X.ld;
      for (int64_t d = 0; d < D; ++d) acc += gr[d] * to_f(x[d]);
    }
  dP[(he * k + r) * N + j] = from_f<T>(acc);
}

}  // namespace splat::fk::bwd
