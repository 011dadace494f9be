// Causal chunked FLuRKA on CUDA (experimental): the formula of flurka_causal_reference (flurka.hpp) in four
// fixed-order launches, fp32 arithmetic on the storage type's values:
//   chunk_project: K'_c = E K_c, V'_c = F V_c for every chunk whose state a later chunk reads (all full);
//   chunk_state:   per chunk and 32 features, phi(K'_c) (favor relative to the chunk's per-feature max),
//                  its partial state phi^T V'_c [m, D] and phi^T 1 [m];
//   state_scan:    per (b, h, l, d) a sequential prefix over the chunks (favor offsets merged as in an online
//                  softmax): chunk c + 1's slots U = S / z and bias (favor: c_l + log z_l) or weight z_l;
//   causal_query:  per row the history as one virtual key (log-weight la, value kv: history_key on the CPU)
//                  merged with the exact softmax over the keys j <= i of its own chunk in one normaliser.
// No atomics: every output has one writer and every sum one order, so results are bitwise reproducible.
#pragma once
#include "flurka/cuda/tiles.cuh"

namespace splat::fk::causal {

constexpr int kNT = 256;  // threads per block of every kernel here
constexpr int kFT = 32;   // features per chunk_state block
constexpr int kQR = 64;   // query rows per causal_query block (8 per warp)
constexpr int kKT = 32;   // keys per causal_query tile (one per lane)

enum Map { kFavor = 0, kRelu = 1, kElu = 2 };

// max that keeps a NaN (as nan_max on the CPU): a NaN score or state must reach the output.
__device__ __forceinline__ float nmax(float a, float b) {
  return (b > a || b != b) ? b : a;
}
__device__ __forceinline__ float elu1(float x) {
  return x > 0 ? x + 1.0f : __expf(x);
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x = nmax(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// ---- 1. grid (nS, B H, 2: E K | F V); kp, vp [B H, nS, r, D] fp32 ----
template <class T, int D>
__global__ void __launch_bounds__(kNT)
    chunk_project(Rows e, Rows f, Rows k, Rows v, int64_t H, int64_t r, int64_t C, int64_t nS, float* kp, float* vp) {
  constexpr int TPR = kNT / D, RJ = 8;  // thread rows per pass, rows per thread
  const int64_t c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  const bool second = blockIdx.z != 0;
  const T* P = reinterpret_cast<const T*>((second ? f : e).base(b, h, sizeof(T)));
  const Rows& xr = second ? v : k;
  const T* X = reinterpret_cast<const T*>(xr.base(b, h, sizeof(T))) + c * C * xr.ld;
  float* out = (second ? vp : kp) + (bh * nS + c) * r * D;
  const int d = threadIdx.x % D, jt = threadIdx.x / D;
  for (int64_t j0 = 0; j0 < r; j0 += TPR * RJ) {
    float acc[RJ] = {};
    for (int64_t i = 0; i < C; ++i) {
      const float x = to_f(X[i * xr.ld + d]);
#pragma unroll
      for (int q = 0; q < RJ; ++q) {
        const int64_t j = min(j0 + jt + q * TPR, r - 1);  // rows past r compute a copy of row r - 1, not stored
        acc[q] += to_f(P[j * C + i]) * x;
      }
    }
#pragma unroll
    for (int q = 0; q < RJ; ++q) {
      const int64_t j = j0 + jt + q * TPR;
      if (j < r) out[j * D + d] = acc[q];
    }
  }
}

// ---- 2. grid (ceil(m / 32), nS, B H); dynamic smem r * 33 floats. Sp [B H, nS, m, D], zp, cp [B H, nS, m] ----
// Key features as on the CPU (key_features): favor log phi = s x.W_l - |s x|^2 / 2, relu max(s x.W_l, 0), elu
// elu1(x_l) (m = D); the 1 / sqrt(m) is left out on both sides (it cancels in the normaliser).
template <class T, int D>
__global__ void __launch_bounds__(kNT)
    chunk_state(const float* kp, const float* vp, Rows w, int64_t H, int64_t r, int64_t m, int64_t nS, int map,
                float sfeat, float* Sp, float* zp, float* cp) {
  extern __shared__ float ph[];  // [r][kFT + 1]
  __shared__ float cm[kFT];
  const int64_t c = blockIdx.y, bh = blockIdx.z, h = bh % H, l0 = int64_t(blockIdx.x) * kFT;
  const float* X = kp + (bh * nS + c) * r * D;
  const float* Y = vp + (bh * nS + c) * r * D;
  const T* W = map == kElu ? nullptr : reinterpret_cast<const T*>(w.base(0, h, sizeof(T)));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t l = l0 + lane;
  for (int64_t j = warp; j < r; j += kNT / 32) {  // a warp per key row, a lane per feature
    const float* x = X + j * D;
    float val = 0.0f;
    if (l < m) {
      if (map == kElu) {
        val = elu1(x[l]);
      } else {
        float dot = 0.0f, n2 = 0.0f;
        for (int dd = 0; dd < D; ++dd) {
          const float xs = sfeat * x[dd];
          dot += xs * to_f(W[dd * w.ld + l]);
          n2 += xs * xs;
        }
        val = map == kFavor ? dot - n2 / 2 : fmaxf(dot, 0.0f);
      }
    }
    ph[j * (kFT + 1) + lane] = val;
  }
  __syncthreads();
  if (threadIdx.x < kFT) {  // favor: the chunk's per-feature offset; phi relative to it
    float mx = -INFINITY;
    if (map == kFavor)
      for (int64_t j = 0; j < r; ++j) mx = nmax(mx, ph[j * (kFT + 1) + threadIdx.x]);
    cm[threadIdx.x] = mx;
  }
  __syncthreads();
  if (map == kFavor)
    for (int64_t i = threadIdx.x; i < r * kFT; i += kNT) {
      const int64_t j = i / kFT, t = i % kFT;
      const float mx = cm[t], x = ph[j * (kFT + 1) + t];
      // a feature no row reaches (all -inf) has phi = 0, never exp(-inf + inf)
      ph[j * (kFT + 1) + t] = mx == -INFINITY ? 0.0f : __expf(x - mx);
    }
  __syncthreads();
  const int64_t base = (bh * nS + c) * m;
  if (threadIdx.x < kFT && l0 + threadIdx.x < m) {
    float z = 0.0f;
    for (int64_t j = 0; j < r; ++j) z += ph[j * (kFT + 1) + threadIdx.x];
    zp[base + l0 + threadIdx.x] = z;
    cp[base + l0 + threadIdx.x] = map == kFavor ? cm[threadIdx.x] : 0.0f;
  }
  constexpr int LG = kNT / D, FPT = kFT / LG;  // feature groups, features per thread
  const int d = threadIdx.x % D, lg = threadIdx.x / D;
  float acc[FPT] = {};
  for (int64_t j = 0; j < r; ++j) {
    const float y = Y[j * D + d];
#pragma unroll
    for (int q = 0; q < FPT; ++q) acc[q] += ph[j * (kFT + 1) + lg + q * LG] * y;
  }
#pragma unroll
  for (int q = 0; q < FPT; ++q) {
    const int64_t lq = l0 + lg + q * LG;
    if (lq < m) Sp[(base + lq) * D + d] = acc[q];
  }
}

// ---- 3. grid (ceil(m D / 256), B H). In place: Sp[c] becomes U of query chunk c + 1; slot[c] its bias / weight ----
static __global__ void __launch_bounds__(kNT)
    state_scan(float* Sp, const float* zp, const float* cp, int64_t m, int64_t D, int64_t nS, int map, float* slot) {
  const int64_t bh = blockIdx.y, e = int64_t(blockIdx.x) * kNT + threadIdx.x;
  if (e >= m * D) return;
  const int64_t l = e / D, d = e % D;
  float S = 0.0f, z = 0.0f, off = -INFINITY;
  for (int64_t c = 0; c < nS; ++c) {
    const int64_t i = (bh * nS + c) * m + l;
    const float s = Sp[i * D + d], zc = zp[i];
    if (map == kFavor) {
      const float oc = cp[i], on = nmax(off, oc);
      const float ra = off == -INFINITY ? 0.0f : __expf(off - on), rb = oc == -INFINITY ? 0.0f : __expf(oc - on);
      S = S * ra + s * rb, z = z * ra + zc * rb;
      off = on;
    } else {
      S += s, z += zc;
    }
    Sp[i * D + d] = z != 0.0f ? S / z : S;  // a NaN z gives a NaN U, as finalize_kernel_state
    if (d == 0) slot[i] = map == kFavor ? (z != 0.0f ? off + __logf(z) : -INFINITY) : z;
  }
}

// ---- 4. grid (nC * ceil(C / 64), B H); dynamic smem: see query_smem_floats ----
// A warp owns 8 consecutive rows and works on all of them at once, so that every element of W, U, a key and a
// value it reads serves 8 rows (one L2 or shared load per 8 FMAs).
template <int D>
constexpr int query_smem_floats(int m) {
  return kQR * D + kKT * (D + 1) + kKT * D + kQR * kKT + kQR * m;
}

template <class T, int D>
__global__ void __launch_bounds__(kNT)
    causal_query(Rows q, Rows k, Rows v, Rows w, const float* U, const float* slot, int64_t H, int64_t N, int64_t C,
                 int64_t m, int64_t nS, int64_t tiles, int map, float sfeat, T* out, int64_t osb, int64_t osh,
                 int64_t osr) {
  extern __shared__ float sm[];
  constexpr int RW = kQR / 8, DU = D / 32;  // rows per warp, values per lane
  float* Qs = sm;                           // [kQR][D]
  float* Ks = Qs + kQR * D;                 // [kKT][D + 1]
  float* Vs = Ks + kKT * (D + 1);           // [kKT][D]
  float* Ps = Vs + kKT * D;                 // [8 warps][RW][kKT]
  float* Ws = Ps + kQR * kKT;               // [8 warps][RW][m]
  const int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t c = blockIdx.x / tiles, c0 = c * C, r0 = c0 + (blockIdx.x % tiles) * kQR;
  const int64_t c1 = min(N, c0 + C), r1 = min(c1, r0 + kQR);
  if (r0 >= r1) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* Q = reinterpret_cast<const T*>(q.base(b, h, sizeof(T)));
  const T* K = reinterpret_cast<const T*>(k.base(b, h, sizeof(T)));
  const T* V = reinterpret_cast<const T*>(v.base(b, h, sizeof(T)));
  for (int64_t i = threadIdx.x; i < kQR * D; i += kNT) {
    const int64_t row = r0 + i / D;
    Qs[i] = row < r1 ? to_f(Q[row * q.ld + i % D]) : 0.0f;
  }
  __syncthreads();
  const float* Qw = Qs + warp * RW * D;  // the warp's rows (rows past r1 are zeros: computed, never stored)
  float Mx[RW], den[RW], acc[RW][DU];
#pragma unroll
  for (int t = 0; t < RW; ++t) {
    Mx[t] = -INFINITY, den[t] = 0.0f;
#pragma unroll
    for (int u = 0; u < DU; ++u) acc[t][u] = 0.0f;
  }
  // History: the prefix state of the chunks before c as one virtual key per row (history_key on the CPU).
  if (c > 0) {
    const float* Uc = U + ((bh * nS + c - 1) * m) * D;
    const float* sl = slot + (bh * nS + c - 1) * m;
    const T* Wh = map == kElu ? nullptr : reinterpret_cast<const T*>(w.base(0, h, sizeof(T)));
    float* wb = Ws + warp * RW * m;  // [RW][m]
    float mx[RW], wsum[RW];
#pragma unroll
    for (int t = 0; t < RW; ++t) mx[t] = -INFINITY, wsum[t] = 0.0f;
    for (int64_t l = lane; l < m; l += 32) {
      float x[RW];
      if (map == kElu) {
#pragma unroll
        for (int t = 0; t < RW; ++t) x[t] = elu1(Qw[t * D + l]) * sl[l];
      } else {
        float dot[RW] = {};
        for (int dd = 0; dd < D; ++dd) {
          const float wv = to_f(Wh[dd * w.ld + l]);
#pragma unroll
          for (int t = 0; t < RW; ++t) dot[t] += Qw[t * D + dd] * wv;
        }
        const float bias = sl[l];
#pragma unroll
        for (int t = 0; t < RW; ++t) x[t] = map == kFavor ? dot[t] * sfeat + bias : fmaxf(dot[t] * sfeat, 0.0f) * bias;
      }
#pragma unroll
      for (int t = 0; t < RW; ++t) {
        wb[t * m + l] = x[t];
        mx[t] = nmax(mx[t], x[t]);
      }
    }
#pragma unroll
    for (int t = 0; t < RW; ++t) mx[t] = map == kFavor ? warp_max(mx[t]) : 0.0f;
    __syncwarp();
    for (int64_t l = lane; l < m; l += 32)
#pragma unroll
      for (int t = 0; t < RW; ++t) {
        const float x = map != kFavor ? wb[t * m + l] : mx[t] == -INFINITY ? 0.0f : __expf(wb[t * m + l] - mx[t]);
        wb[t * m + l] = x;
        wsum[t] += x;
      }
#pragma unroll
    for (int t = 0; t < RW; ++t) wsum[t] = warp_sum(wsum[t]);
    __syncwarp();
    float kv[RW][DU] = {};
    for (int64_t l = 0; l < m; ++l) {
      float uv[DU];
#pragma unroll
      for (int u = 0; u < DU; ++u) uv[u] = Uc[l * D + lane + 32 * u];
#pragma unroll
      for (int t = 0; t < RW; ++t) {
        const float x = wb[t * m + l];
#pragma unroll
        for (int u = 0; u < DU; ++u) kv[t][u] += x * uv[u];
      }
    }
#pragma unroll
    for (int t = 0; t < RW; ++t) {
      float n2 = 0.0f;
#pragma unroll
      for (int u = 0; u < DU; ++u) {
        const float x = sfeat * Qw[t * D + lane + 32 * u];
        n2 += x * x;
      }
      n2 = warp_sum(n2);
      if (wsum[t] != 0.0f) {  // NaN too: la = NaN carries it into the row
        const float la = map == kFavor ? mx[t] + __logf(wsum[t]) - n2 / 2 - __logf(float(m))
                                       : __logf(map == kRelu ? wsum[t] / float(m) : wsum[t]);
        Mx[t] = la, den[t] = 1.0f;
#pragma unroll
        for (int u = 0; u < DU; ++u) acc[t][u] = kv[t][u] / wsum[t];
      }
    }
  }
  // Exact part: keys c0 .. i of the row's own chunk, a tile of 32 keys at a time (one per lane), online max and
  // denominator per row.
  const float scale = rsqrtf(float(D));
  const int64_t wr0 = r0 + warp * RW;  // the warp's first row
  float* Pw = Ps + warp * RW * kKT;
  for (int64_t j0 = c0; j0 < r1; j0 += kKT) {
    __syncthreads();
    for (int64_t i = threadIdx.x; i < kKT * D; i += kNT) {
      const int64_t j = j0 + i / D, dd = i % D;
      const bool in = j < r1;
      Ks[(i / D) * (D + 1) + dd] = in ? to_f(K[j * k.ld + dd]) : 0.0f;
      Vs[i] = in ? to_f(V[j * v.ld + dd]) : 0.0f;
    }
    __syncthreads();
    if (wr0 >= r1 || j0 > wr0 + RW - 1) continue;  // warp-uniform: no row of this warp sees these keys
    const int64_t j = j0 + lane;
    float dot[RW] = {};
    for (int dd = 0; dd < D; ++dd) {
      const float kx = Ks[lane * (D + 1) + dd];
#pragma unroll
      for (int t = 0; t < RW; ++t) dot[t] += Qw[t * D + dd] * kx;
    }
#pragma unroll
    for (int t = 0; t < RW; ++t) {
      const float s = j <= wr0 + t ? dot[t] * scale : -INFINITY;
      const float mn = nmax(Mx[t], warp_max(s));
      const float ro = Mx[t] == -INFINITY ? 0.0f : __expf(Mx[t] - mn);
      const float p = s == -INFINITY ? 0.0f : __expf(s - mn);
      den[t] = den[t] * ro + warp_sum(p);
      Pw[t * kKT + lane] = p;
      Mx[t] = mn;
#pragma unroll
      for (int u = 0; u < DU; ++u) acc[t][u] *= ro;
    }
    __syncwarp();
    for (int jj = 0; jj < kKT; ++jj) {
      float vv[DU];
#pragma unroll
      for (int u = 0; u < DU; ++u) vv[u] = Vs[jj * D + lane + 32 * u];
#pragma unroll
      for (int t = 0; t < RW; ++t) {
        const float p = Pw[t * kKT + jj];
#pragma unroll
        for (int u = 0; u < DU; ++u) acc[t][u] += p * vv[u];
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int t = 0; t < RW; ++t) {
    const int64_t row = wr0 + t;
    if (row >= r1) continue;
    T* o = out + b * osb + h * osh + row * osr;
#pragma unroll
    for (int u = 0; u < DU; ++u) o[lane + 32 * u] = from_f<T>(acc[t][u] / den[t]);
  }
}

}  // namespace splat::fk::causal
