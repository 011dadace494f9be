// Recurrent causal FLuRKA decode step on CUDA (experimental): flurka_decode_step's arithmetic in fp32, one block
// per (b, h) sequence. Per step: append (k, v) to the current chunk, the output of q from the state of the finished
// chunks (as one virtual key, the query of causal.cuh) merged with the exact softmax over the chunk so far, and,
// when the chunk is full, its compression to r rows folded into the state (favor offsets merged as in the scan).
// The position lives on the device (decode_advance adds one after each step), so a step is capturable in a graph.
#pragma once
#include "flurka/cuda/causal.cuh"

namespace splat::fk::dec {

using causal::elu1;
using causal::kElu;
using causal::kFavor;
using causal::kRelu;
using causal::nmax;
using causal::warp_max;
using causal::warp_sum;

constexpr int kNT = 256;
constexpr int64_t kMaxChunk = 4096;  // the chunk's scores live in shared memory

struct State {              // one device allocation (decode_cuda.cu)
  float *S, *z, *off;       // [BH, m, D], [BH, m], [BH, m]: S, z relative to e^{off} (favor; off = 0 otherwise)
  float *ck, *cv;           // current chunk keys / values [BH, C, D]
  float *kp, *vp;           // flush scratch: K' = E ck, V' = F cv [BH, r, D]
  unsigned long long* pos;  // tokens consumed
};

template <bool Max>
__device__ float block_reduce(float x, float* red) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  x = Max ? warp_max(x) : warp_sum(x);
  if (lane == 0) red[warp] = x;
  __syncthreads();
  if (warp == 0) {
    float y = lane < kNT / 32 ? red[lane] : (Max ? -INFINITY : 0.0f);
    y = Max ? warp_max(y) : warp_sum(y);
    if (lane == 0) red[32] = y;
  }
  __syncthreads();
  const float r = red[32];
  __syncthreads();
  return r;
}

constexpr int decode_smem_floats(int D, int m, int C) {
  return D + m + C + 40;
}

// grid (B H), block 256; dynamic smem decode_smem_floats(D, m, C) floats.
template <class T, int D>
__global__ void __launch_bounds__(kNT)
    decode_step(Rows q, Rows k, Rows v, Rows e, Rows f, Rows w, State st, int64_t H, int64_t m, int64_t r, int64_t C,
                int map, float sfeat, T* out, int64_t osb, int64_t osh) {
  extern __shared__ float sm[];
  float* qs = sm;       // [D]
  float* wl = qs + D;   // [m]
  float* sc = wl + m;   // [C]
  float* red = sc + C;  // [33]
  const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
  const int64_t pos = int64_t(*st.pos), slot = pos % C;
  const int tid = threadIdx.x;
  float* ck = st.ck + bh * C * D;
  float* cv = st.cv + bh * C * D;
  float* S = st.S + bh * m * D;
  float* z = st.z + bh * m;
  float* off = st.off + bh * m;
  const T* Q = reinterpret_cast<const T*>(q.base(b, h, sizeof(T)));
  const T* K = reinterpret_cast<const T*>(k.base(b, h, sizeof(T)));
  const T* V = reinterpret_cast<const T*>(v.base(b, h, sizeof(T)));
  const T* W = map == kElu ? nullptr : reinterpret_cast<const T*>(w.base(0, h, sizeof(T)));
  for (int d = tid; d < D; d += kNT) {
    qs[d] = to_f(Q[d]);
    ck[slot * D + d] = to_f(K[d]);
    cv[slot * D + d] = to_f(V[d]);
  }
  __syncthreads();
  // History: the finished chunks' state seen from q as one virtual key (log-weight la, value kv).
  float la = -INFINITY, kv = 0.0f;
  if (pos >= C) {
    for (int64_t l = tid; l < m; l += kNT) {
      float x;
      if (map == kElu) {
        x = elu1(qs[l]) * z[l];
      } else {
        float dot = 0.0f;
        for (int dd = 0; dd < D; ++dd) dot += qs[dd] * to_f(W[dd * w.ld + l]);
        dot *= sfeat;
        x = map == kFavor ? (z[l] != 0.0f ? dot + off[l] + __logf(z[l]) : -INFINITY) : fmaxf(dot, 0.0f) * z[l];
      }
      wl[l] = x;
    }
    __syncthreads();
    float mx = -INFINITY;
    if (map == kFavor) {
      for (int64_t l = tid; l < m; l += kNT) mx = nmax(mx, wl[l]);
      mx = block_reduce<true>(mx, red);
    }
    float part = 0.0f;
    for (int64_t l = tid; l < m; l += kNT) {
      const float x = map != kFavor ? wl[l] : mx == -INFINITY ? 0.0f : __expf(wl[l] - mx);
      wl[l] = x;
      part += x;
    }
    const float wsum = block_reduce<false>(part, red);  // also orders the wl writes before the reads below
    float n2 = 0.0f;
    if (tid < D) {
      float a = 0.0f;
      for (int64_t l = 0; l < m; ++l) a += wl[l] * (z[l] != 0.0f ? S[l * D + tid] / z[l] : S[l * D + tid]);
      kv = a;
      const float x = sfeat * qs[tid];
      n2 = x * x;
    }
    n2 = block_reduce<false>(n2, red);
    if (wsum != 0.0f) {  // NaN too: la = NaN carries it into the row
      kv /= wsum;
      la =
          map == kFavor ? mx + __logf(wsum) - n2 / 2 - __logf(float(m)) : __logf(map == kRelu ? wsum / float(m) : wsum);
    }
  }
  // Exact part: the chunk's keys 0 .. slot, in the same normaliser.
  const float scale = rsqrtf(float(D));
  float smax = -INFINITY;
  for (int64_t j = tid; j <= slot; j += kNT) {
    float dot = 0.0f;
    for (int dd = 0; dd < D; ++dd) dot += qs[dd] * ck[j * D + dd];
    sc[j] = dot * scale;
    smax = nmax(smax, sc[j]);
  }
  const float M = nmax(la, block_reduce<true>(smax, red));
  float part = 0.0f;
  for (int64_t j = tid; j <= slot; j += kNT) {
    sc[j] = __expf(sc[j] - M);
    part += sc[j];
  }
  const float pa = la == -INFINITY ? 0.0f : __expf(la - M);
  const float den = pa + block_reduce<false>(part, red);
  if (tid < D) {
    float row = pa * kv;
    for (int64_t j = 0; j <= slot; ++j) row += sc[j] * cv[j * D + tid];
    out[b * osb + h * osh + tid] = from_f<T>(row / den);
  }
  if (slot != C - 1) return;
  // Flush: compress the full chunk to r rows and fold them into the state (after every read of it above).
  __syncthreads();
  float* kp = st.kp + bh * r * D;
  float* vp = st.vp + bh * r * D;
  const T* E = reinterpret_cast<const T*>(e.base(0, h, sizeof(T)));
  const T* F = reinterpret_cast<const T*>(f.base(0, h, sizeof(T)));
  for (int64_t i = tid; i < r * D; i += kNT) {
    const int64_t row = i / D, dd = i % D;
    float a = 0.0f, c = 0.0f;
    for (int64_t j = 0; j < C; ++j) {
      a += to_f(E[row * e.ld + j]) * ck[j * D + dd];
      c += to_f(F[row * f.ld + j]) * cv[j * D + dd];
    }
    kp[i] = a, vp[i] = c;
  }
  __syncthreads();
  for (int64_t l = tid; l < m; l += kNT) {  // a thread per feature: its logits over the r rows, then S_l, z_l
    auto logit = [&](int64_t i) {
      const float* x = kp + i * D;
      if (map == kElu) return elu1(x[l]);
      float dot = 0.0f, nn = 0.0f;
      for (int dd = 0; dd < D; ++dd) {
        const float xs = sfeat * x[dd];
        dot += xs * to_f(W[dd * w.ld + l]);
        nn += xs * xs;
      }
      return map == kFavor ? dot - nn / 2 : fmaxf(dot, 0.0f);
    };
    float* Sl = S + l * D;
    float on = 0.0f;
    if (map == kFavor) {
      float cm = -INFINITY;
      for (int64_t i = 0; i < r; ++i) cm = nmax(cm, logit(i));
      on = nmax(off[l], cm);
      const float ra = off[l] == -INFINITY ? 0.0f : __expf(off[l] - on);
      z[l] *= ra;
      for (int dd = 0; dd < D; ++dd) Sl[dd] *= ra;
      off[l] = on;
    }
    for (int64_t i = 0; i < r; ++i) {
      const float x = logit(i);
      const float p = map != kFavor ? x : on == -INFINITY ? 0.0f : __expf(x - on);
      z[l] += p;
      for (int dd = 0; dd < D; ++dd) Sl[dd] += p * vp[i * D + dd];
    }
  }
}

static __global__ void decode_advance(unsigned long long* pos) {
  *pos += 1;
}

// Reset on the device (after a memset of the whole state to zero): favor's offsets to -inf (no feature seen).
static __global__ void decode_reset_offsets(float* off, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    off[i] = -INFINITY;
}

}  // namespace splat::fk::dec
