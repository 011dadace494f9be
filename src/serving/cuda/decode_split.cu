// CUDA decode, split-KV (flash-decoding): the keys of one query row are split into S chunks over S CTAs, each
// CTA computes the partial softmax state (max, sum, unnormalised output) of GP query heads of one kv head (GQA: the
// K/V rows are read once per group of heads), and a second kernel merges the S states in split order (deterministic).
// With S = 1 the CTA writes the output itself. Thread 0 evaluates the row program (splat/device/decode_rows.cuh) at
// the length read from device memory, so a captured graph replays every step without re-planning. In the key loop
// each lane holds DPL contiguous dims of one key (16-byte vector loads of K and V, issued together for U keys), a
// group of D / DPL lanes reduces the scores with shuffles, and the warps of a CTA take interleaved blocks of keys.
// Bad indices in device memory give NaN rows and a status bit, never a plausible answer (see decode.hpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "serving/cuda/decode_launch.hpp"
#include "serving/cuda/elements.cuh"

namespace splat::cudadecode {
namespace {

constexpr int kWarps = 4;

// One run in 32-bit form (cache positions are int32): keys lo..hi with (j - base) mod stride < width; first: index of
// its first key among the row's keys; fkey: its first key (width-1 runs); dup: an earlier run may hold its keys.
struct FastRun {
  int lo, hi, base, stride, width, first, fkey, dup, count;
};

// Thread 0: the row's runs at position p of a sequence of length L (none when p < 0) in fast form; returns their count.
// Not inlined: the evaluator's 64-bit arithmetic stays out of the key loop's register allocation.
__device__ __noinline__ int row_runs(const dev::DecodeInstr* prog, int n_instr, i64 p, i64 L, dev::DecodeRun* runs,
                                     int* ends, FastRun* fr) {
  int n = 0;
  if (p >= 0) {
    n = dev::decode_row_eval(prog, n_instr, p, L, runs, runs + kMaxRuns, runs + 2 * kMaxRuns, ends, kMaxRuns);
    if (n < 0) n = 0;  // cannot happen: the host checked max_runs
  }
  int first = 0;
  for (int r = 0; r < n; ++r) {
    const dev::DecodeRun& x = runs[r];
    FastRun f;
    f.lo = int(x.lo), f.hi = int(x.hi), f.base = int(x.base), f.stride = int(x.stride), f.width = int(x.width);
    f.first = first;
    f.fkey = int(x.lo + dev::decode_pos_mod(x.base - x.lo, x.stride));
    f.dup = 0;
    for (int e = 0; e < r; ++e) f.dup |= runs[e].lo <= x.hi && runs[e].hi >= x.lo;
    f.count = int(dev::decode_run_count(x));
    fr[r] = f;
    first += f.count;
  }
  return n;
}

template <class E>
__device__ __forceinline__ void unpack(const uint4& x, float* f) {
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
  if constexpr (std::is_same_v<E, __nv_bfloat16>) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      f[2 * i] = __uint_as_float(w[i] << 16), f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  } else if constexpr (std::is_same_v<E, __half>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2 h;
      memcpy(&h, &w[i], 4);
      const float2 v = __half22float2(h);
      f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(w[i]);
  }
}

__device__ __forceinline__ int pos_mod32(int a, int m) {
  const int r = a % m;
  return r < 0 ? r + m : r;
}

__device__ __forceinline__ bool fast_contains(const FastRun& r, int j) {
  return j >= r.lo && j <= r.hi && (r.stride == 1 || pos_mod32(j - r.base, r.stride) < r.width);
}

// Key c (0-based) of run r.
__device__ __forceinline__ int fast_key(const FastRun& r, int c) {
  if (r.stride == 1) return r.lo + c;
  if (r.width == 1) return r.fkey + c * r.stride;
  // general residue runs (fixed's column families): the keys below lo counted as decode_run_count does, then step
  const i64 y = i64(r.lo) - 1 - r.base;
  const i64 e =
      dev::decode_floor_div(y, r.stride) * r.width + dev::decode_min(dev::decode_pos_mod(y, r.stride) + 1, r.width) + c;
  return int(r.base + dev::decode_floor_div(e, r.width) * r.stride + dev::decode_pos_mod(e, r.width));
}

// DPL: dims per lane, 16 (fewer shuffles per key) or 8 (fewer registers: three CTAs per multiprocessor for groups of
// up to 4 heads; always for 8 heads).
template <class E, int D, int GP, int DPL>
struct Cfg {
  static constexpr int kDpl = DPL;
  static constexpr int kLpr = D / kDpl;                    // lanes per key row
  static constexpr int kKpi = 32 / kLpr;                   // keys per warp and step
  static constexpr int kU = kDpl == 8 ? 4 : 2;             // steps per iteration (loads in flight)
  static constexpr int kKw = kKpi * kU;                    // keys per warp and iteration
  static constexpr int kVec = kDpl * int(sizeof(E)) / 16;  // 16-byte loads per lane and row
  static constexpr int kPer = 16 / int(sizeof(E));         // elements per 16-byte load
  static constexpr int kMinBlocks = DPL == 8 && GP <= 4 ? 3 : 2;
};

template <class E, int D, int GP, int DPL>
__global__ void __launch_bounds__(kWarps * 32, (Cfg<E, D, GP, DPL>::kMinBlocks)) decode_split_kernel(const Args a) {
  using C = Cfg<E, D, GP, DPL>;
  constexpr int LPR = C::kLpr, KPI = C::kKpi, U = C::kU, KW = C::kKw;
  __shared__ dev::DecodeRun runs[3 * kMaxRuns];
  __shared__ int ends[kMaxInstr];
  __shared__ FastRun fr[kMaxRuns];
  __shared__ dev::DecodeInstr prog[kMaxInstr];
  __shared__ int s_nruns, s_total;
  __shared__ float wm[kWarps][GP], wl[kWarps][GP], wacc[kWarps][GP][D];

  const int ng = blockIdx.x % a.NG, bh = blockIdx.x / a.NG, hk = bh % a.Hkv, b = bh / a.Hkv;
  const int split = blockIdx.y, t = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, sub = lane % LPR, slot = lane / LPR;
  const int h0 = hk * a.G + ng * GP, gn = min(GP, a.G - ng * GP);  // this CTA's query heads h0 .. h0 + gn - 1
  const i64 start = a.starts ? a.starts[b] : 0, len = a.seqlens[b];
  const bool bad_len = len < 0 || start < 0 || start + len > a.capacity;
  const i64 L = bad_len ? 0 : len, p = L - a.T + t;

  // The queries' loads are issued first, to overlap thread 0's evaluation of the row; used after the barrier.
  uint4 qraw[GP][C::kVec];
  {
    const E* qb = static_cast<const E*>(a.q) + b * a.q_sb + t * a.q_st + sub * DPL;
#pragma unroll
    for (int g = 0; g < GP; ++g)
#pragma unroll
      for (int v = 0; v < C::kVec; ++v)
        qraw[g][v] = g < gn ? reinterpret_cast<const uint4*>(qb + (h0 + g) * a.q_sh)[v] : make_uint4(0, 0, 0, 0);
  }
  if (threadIdx.x == 0) {
    // The program from the parameters into shared memory by static indices (a dynamic index into the parameters
    // would copy them all to local memory), then evaluated there.
#pragma unroll
    for (int i = 0; i < kMaxInstr; ++i)
      if (i < a.n_instr) prog[i] = a.prog[i];
    const int n = row_runs(prog, a.n_instr, p, L, runs, ends, fr);
    s_nruns = n, s_total = n > 0 ? fr[n - 1].first + fr[n - 1].count : 0;
    if (bad_len && a.status && hk == 0 && ng == 0 && split == 0 && t == 0) atomicOr(a.status, kStatusBadLength);
  }
  __syncthreads();
  const int nr = s_nruns, total = s_total;
  // This split's keys [c0, c1): chunks rounded to whole iterations of the CTA.
  const int step = KW * kWarps;
  const i64 per = (i64(total) + a.S - 1) / a.S, chunk = (per + step - 1) / step * step;
  const int c0 = int(dev::decode_min(total, split * chunk)), c1 = int(dev::decode_min(total, c0 + chunk));

  float q[GP][DPL], m[GP], l[GP], acc[GP][DPL];
#pragma unroll
  for (int g = 0; g < GP; ++g) {
#pragma unroll
    for (int v = 0; v < C::kVec; ++v) unpack<E>(qraw[g][v], &q[g][v * C::kPer]);
#pragma unroll
    for (int d = 0; d < DPL; ++d) q[g][d] *= a.q_scale;  // zero for the heads past gn
    m[g] = -INFINITY, l[g] = 0;
#pragma unroll
    for (int d = 0; d < DPL; ++d) acc[g][d] = 0;
  }
  bool bad_page = false;
  const E* kbase = static_cast<const E*>(a.k) + hk * a.k_sh + sub * DPL;
  const E* vbase = static_cast<const E*>(a.v) + hk * a.v_sh + sub * DPL;
  for (int base = c0 + warp * KW; base < c1; base += step) {
    uint4 kv[U][C::kVec], vv[U][C::kVec];
    bool ok[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int idx = base + u * KPI + slot;
      ok[u] = false;
      i64 koff = 0, voff = 0;
      if (idx < c1) {
        int r = 0;
        while (r + 1 < nr && fr[r + 1].first <= idx) ++r;
        const FastRun f = fr[r];
        const int j = fast_key(f, idx - f.first);
        bool dup = false;  // a key of several runs counts in the first only
        if (f.dup)
          for (int x = 0; x < r && !dup; ++x) dup = fast_contains(fr[x], j);
        if (!dup) {
          const i64 row = start + j;
          if (!a.table) {
            ok[u] = true;
            koff = b * a.k_sb + row * a.k_sn, voff = b * a.v_sb + row * a.v_sn;
          } else {
            const unsigned pr = unsigned(row) / unsigned(a.page);  // row < capacity < 2^32 (host-checked)
            const int pg = a.table[b * a.max_pages + pr];
            const i64 in = unsigned(row) - pr * unsigned(a.page);
            if (pg < 0 || pg >= a.pool) {
              bad_page = true;
            } else {
              ok[u] = true;
              koff = pg * a.k_sb + in * a.k_sn, voff = pg * a.v_sb + in * a.v_sn;
            }
          }
        }
      }
#pragma unroll
      for (int v = 0; v < C::kVec; ++v) {
        kv[u][v] = ok[u] ? reinterpret_cast<const uint4*>(kbase + koff)[v] : make_uint4(0, 0, 0, 0);
        vv[u][v] = ok[u] ? reinterpret_cast<const uint4*>(vbase + voff)[v] : make_uint4(0, 0, 0, 0);
      }
    }
    float s[U][GP];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[DPL];
#pragma unroll
      for (int v = 0; v < C::kVec; ++v) unpack<E>(kv[u][v], &kf[v * C::kPer]);
#pragma unroll
      for (int g = 0; g < GP; ++g) {
        float x = 0;
#pragma unroll
        for (int d = 0; d < DPL; ++d) x = fmaf(q[g][d], kf[d], x);
#pragma unroll
        for (int o = LPR / 2; o >= 1; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
        s[u][g] = ok[u] ? x : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < GP; ++g) {
      float mx = s[0][g];
#pragma unroll
      for (int u = 1; u < U; ++u) mx = fmaxf(mx, s[u][g]);
#pragma unroll
      for (int o = 16; o >= LPR; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));  // NaN never wins
      const float mn = fmaxf(m[g], mx);                                                        // warp-uniform
      if (mn == -INFINITY) {
#pragma unroll
        for (int u = 0; u < U; ++u) s[u][g] = 0;
        continue;
      }
      if (mn > m[g]) {
        const float alpha = exp2f(m[g] - mn);
        l[g] *= alpha;
#pragma unroll
        for (int d = 0; d < DPL; ++d) acc[g][d] *= alpha;
        m[g] = mn;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        s[u][g] = ok[u] ? exp2f(s[u][g] - mn) : 0.0f;
        l[g] += s[u][g];
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[DPL];
#pragma unroll
      for (int v = 0; v < C::kVec; ++v) unpack<E>(vv[u][v], &vf[v * C::kPer]);
#pragma unroll
      for (int g = 0; g < GP; ++g)
#pragma unroll
        for (int d = 0; d < DPL; ++d) acc[g][d] = fmaf(s[u][g], vf[d], acc[g][d]);
    }
  }
  // The warp's state: sum the lane groups' partial sums and outputs (m is warp-uniform).
#pragma unroll
  for (int g = 0; g < GP; ++g) {
#pragma unroll
    for (int o = 16; o >= LPR; o /= 2) {
      l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
      for (int d = 0; d < DPL; ++d) acc[g][d] += __shfl_xor_sync(0xffffffffu, acc[g][d], o);
    }
    if (lane == 0) wm[warp][g] = m[g], wl[warp][g] = l[g];
    if (slot == 0)
#pragma unroll
      for (int d = 0; d < DPL; ++d) wacc[warp][g][sub * DPL + d] = acc[g][d];
  }
  const bool bad = __syncthreads_or(bad_page) || bad_len;
  if (bad_page && a.status) atomicOr(a.status, kStatusBadPage);
  // The CTA's state, merged over the warps exactly; written as the output (S = 1) or as split `split`'s partial.
  for (int x = threadIdx.x; x < gn * D; x += blockDim.x) {
    const int g = x / D, d = x % D, h = h0 + g;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w][g]);
    float sum = 0, o = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (wm[w][g] == -INFINITY) continue;
      const float f = exp2f(wm[w][g] - mx);
      sum += wl[w][g] * f, o += wacc[w][g][d] * f;
    }
    if (bad) sum = NAN, mx = NAN;
    if (a.S == 1) {
      const bool any = mx != -INFINITY;  // NaN counts as any
      static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + d] = from_f<E>(any ? o / sum : 0.0f);
      if (a.lse && d == 0)
        a.lse[(i64(b) * a.H + h) * a.T + t] = any ? (mx + log2f(sum)) * 0.6931471805599453f : -INFINITY;
    } else {
      const i64 row = ((i64(b) * a.H + h) * a.T + t) * a.S + split;
      a.ws_acc[row * D + d] = o;
      if (d == 0) a.ws_ml[2 * row] = mx, a.ws_ml[2 * row + 1] = sum;
    }
  }
}

// Merge of the S partial states of one (sequence, query head, query), in split order: one thread per output column.
template <class E, int D>
__global__ void __launch_bounds__(D) decode_merge_kernel(const Args a) {
  const int row = blockIdx.x, d = threadIdx.x;  // row = (b * H + h) * T + t
  const int t = row % a.T, h = (row / a.T) % a.H, b = row / (a.T * a.H);
  const float* ml = a.ws_ml + i64(row) * a.S * 2;
  float mx = -INFINITY;
  bool nan = false;
  for (int s = 0; s < a.S; ++s) nan |= isnan(ml[2 * s]), mx = fmaxf(mx, ml[2 * s]);
  float sum = 0, o = 0;
  if (!nan && mx != -INFINITY)
    for (int s = 0; s < a.S; ++s) {
      if (ml[2 * s] == -INFINITY) continue;
      const float f = exp2f(ml[2 * s] - mx);
      sum += ml[2 * s + 1] * f, o += a.ws_acc[(i64(row) * a.S + s) * D + d] * f;
    }
  const float out = nan ? NAN : mx == -INFINITY ? 0.0f : o / sum;
  static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + d] = from_f<E>(out);
  if (a.lse && d == 0) a.lse[row] = nan ? NAN : mx == -INFINITY ? -INFINITY : (mx + log2f(sum)) * 0.6931471805599453f;
}

template <class E, int D, int GP, int DPL>
void launch_gp(const Args& a, cudaStream_t s) {
  const dim3 grid(unsigned(a.B * a.Hkv * a.NG), unsigned(a.S), unsigned(a.T));
  decode_split_kernel<E, D, GP, DPL><<<grid, kWarps * 32, 0, s>>>(a);
  if (a.S > 1) decode_merge_kernel<E, D><<<unsigned(a.B * a.H * a.T), D, 0, s>>>(a);
}

template <class E, int D>
void launch_d(const Args& a, cudaStream_t s) {
  constexpr bool narrow = sizeof(E) == 2;  // the 8-dims variant of groups up to 4: 16-bit types only
  switch (a.GP) {
    case 1: return launch_gp<E, D, 1, 16>(a, s);
    case 2: return narrow && a.dpl == 8 ? launch_gp<E, D, 2, 8>(a, s) : launch_gp<E, D, 2, 16>(a, s);
    case 4: return narrow && a.dpl == 8 ? launch_gp<E, D, 4, 8>(a, s) : launch_gp<E, D, 4, 16>(a, s);
    default: return launch_gp<E, D, 8, 8>(a, s);
  }
}

template <class E>
void launch_e(const Args& a, int D, cudaStream_t s) {
  if (D == 64)
    launch_d<E, 64>(a, s);
  else
    launch_d<E, 128>(a, s);
}

}  // namespace

const char* launch_split(const Args& a, Elem e, int head_dim, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (e == Elem::BF16)
    launch_e<__nv_bfloat16>(a, head_dim, s);
  else if (e == Elem::F16)
    launch_e<__half>(a, head_dim, s);
  else
    launch_e<float>(a, head_dim, s);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace splat::cudadecode
