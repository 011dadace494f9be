// CUDA decode, first version (correctness first; the fallback of decode_split.cu for unaligned rows): one CTA of
// 4 warps per (sequence, kv head, query), all query heads of the kv head together (GQA). Thread 0 evaluates the row
// program (splat/device/decode_rows.cuh, the CPU's own code) at the length read from device memory; the warps share
// the row's keys 32 at a time (one key per lane for the scores, one V row per step for the outputs) and merge their
// softmax states in shared memory. The program travels in the kernel parameters: no device tables, no host work per
// call beyond the launch (CUDA-graph capturable).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "serving/cuda/decode_launch.hpp"
#include "serving/cuda/elements.cuh"

namespace splat::cudadecode {
namespace {

constexpr int kWarps = 4;

// Element offset of cache row `pos` of sequence b, kv head hk; -1 for a page outside the pool.
__device__ __forceinline__ i64 row_offset(const Args& a, int b, int hk, i64 pos, i64 sb, i64 sh, i64 sn) {
  const i64 r = (a.starts ? a.starts[b] : 0) + pos;
  if (!a.table) return b * sb + hk * sh + r * sn;
  const int pg = a.table[b * a.max_pages + r / a.page];
  if (pg < 0 || pg >= a.pool) return -1;
  return pg * sb + hk * sh + (r % a.page) * sn;
}

// Key of index c of a run (the c-th key at or after lo).
__device__ __forceinline__ i64 run_key(const dev::DecodeRun& r, i64 c) {
  const i64 y = r.lo - 1 - r.base;
  const i64 e =
      dev::decode_floor_div(y, r.stride) * r.width + dev::decode_min(dev::decode_pos_mod(y, r.stride) + 1, r.width) + c;
  return r.base + dev::decode_floor_div(e, r.width) * r.stride + dev::decode_pos_mod(e, r.width);
}

template <class E, int D>
__global__ void __launch_bounds__(kWarps * 32) decode_kernel(const Args a) {
  constexpr int DL = D / 32;  // output columns per lane
  __shared__ dev::DecodeRun runs[3 * kMaxRuns];
  __shared__ int ends[kMaxInstr];
  __shared__ i64 first[kMaxRuns + 1];
  __shared__ int nruns;
  __shared__ float qs[kMaxGroup][D];
  __shared__ float wm[kWarps][kMaxGroup], wl[kWarps][kMaxGroup], wacc[kWarps][kMaxGroup][D];
  const int b = blockIdx.x / a.Hkv, hk = blockIdx.x % a.Hkv, t = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 start = a.starts ? a.starts[b] : 0, len = a.seqlens[b];
  // A length or start that does not fit the cache: NaN outputs and lse, and the status bit (never a clamped answer).
  const bool bad_len = len < 0 || start < 0 || start + len > a.capacity;
  if (bad_len) {
    if (threadIdx.x == 0 && a.status && hk == 0 && t == 0) atomicOr(a.status, kStatusBadLength);
    for (int x = threadIdx.x; x < a.G * D; x += blockDim.x) {
      const int h = hk * a.G + x / D;
      static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + x % D] = from_f<E>(NAN);
      if (a.lse && x % D == 0) a.lse[(i64(b) * a.H + h) * a.T + t] = NAN;
    }
    return;
  }
  const i64 L = len;
  const i64 p = L - a.T + t;
  bool bad_page = false;  // a key on a page outside the pool: NaN rows and the status bit
  if (threadIdx.x == 0) {
    int n = 0;
    if (p >= 0) {
      int* e = ends;
      n = dev::decode_row_eval(a.prog, a.n_instr, p, L, runs, runs + kMaxRuns, runs + 2 * kMaxRuns, e, kMaxRuns);
      if (n < 0) n = 0;  // cannot happen: the host checked max_runs
    }
    first[0] = 0;
    for (int r = 0; r < n; ++r) first[r + 1] = first[r] + dev::decode_run_count(runs[r]);
    nruns = n;
  }
  for (int g0 = 0; g0 < a.G; g0 += kMaxGroup) {  // query heads in groups of kMaxGroup
    const int G = min(kMaxGroup, a.G - g0);
    __syncthreads();
    for (int x = threadIdx.x; x < G * D; x += blockDim.x) {
      const int g = x / D, d = x % D, h = hk * a.G + g0 + g;
      qs[g][d] = to_f(static_cast<const E*>(a.q)[b * a.q_sb + h * a.q_sh + t * a.q_st + d]) * a.q_scale;
    }
    __syncthreads();
    const int nr = nruns;
    const i64 total = first[nr];
    float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][DL];
    for (int g = 0; g < kMaxGroup; ++g) {
      m[g] = -INFINITY, l[g] = 0;
      for (int d = 0; d < DL; ++d) acc[g][d] = 0;
    }
    for (i64 base = i64(warp) * 32; base < total; base += kWarps * 32) {
      const i64 idx = base + lane;
      i64 koff = -1, voff = -1;
      if (idx < total) {
        int r = 0;
        while (first[r + 1] <= idx) ++r;
        const i64 j = run_key(runs[r], idx - first[r]);
        bool dup = false;  // a key of several runs counts in the first only
        for (int x = 0; x < r && !dup; ++x) dup = dev::decode_run_contains(runs[x], j);
        if (!dup) {
          koff = row_offset(a, b, hk, j, a.k_sb, a.k_sh, a.k_sn);
          voff = row_offset(a, b, hk, j, a.v_sb, a.v_sh, a.v_sn);
          if (koff < 0 || voff < 0) koff = voff = -1, bad_page = true;
        }
      }
      float s[kMaxGroup];
      for (int g = 0; g < kMaxGroup; ++g) s[g] = 0;
      if (koff >= 0) {
        const E* kr = static_cast<const E*>(a.k) + koff;
        for (int d = 0; d < D; ++d) {
          const float kv = to_f(kr[d]);
          for (int g = 0; g < kMaxGroup; ++g)
            if (g < G) s[g] += qs[g][d] * kv;
        }
      }
      float pr[kMaxGroup];
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= G) break;
        const float sg = koff >= 0 ? s[g] : -INFINITY;
        float bm = sg;
        for (int o = 16; o; o /= 2) bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, o));  // NaN never wins
        const float mn = fmaxf(m[g], bm);
        if (mn == -INFINITY) {
          pr[g] = 0;
          continue;
        }
        const float alpha = exp2f(m[g] - mn);
        pr[g] = koff >= 0 ? exp2f(sg - mn) : 0.0f;
        float sum = pr[g];
        for (int o = 16; o; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        l[g] = l[g] * alpha + sum, m[g] = mn;
        for (int d = 0; d < DL; ++d) acc[g][d] *= alpha;
      }
      for (int e = 0; e < 32; ++e) {  // the block's V rows, one at a time, D/32 columns per lane
        const i64 vo = __shfl_sync(0xffffffffu, voff, e);
        if (vo < 0) continue;
        const E* vr = static_cast<const E*>(a.v) + vo;
        float vv[DL];
        for (int d = 0; d < DL; ++d) vv[d] = to_f(vr[lane + 32 * d]);
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= G) break;
          const float pe = __shfl_sync(0xffffffffu, pr[g], e);
          for (int d = 0; d < DL; ++d) acc[g][d] += pe * vv[d];
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      if (lane == 0) wm[warp][g] = m[g], wl[warp][g] = l[g];
      for (int d = 0; d < DL; ++d) wacc[warp][g][lane + 32 * d] = acc[g][d];
    }
    const bool bad = __syncthreads_or(bad_page);
    if (bad && threadIdx.x == 0 && a.status) atomicOr(a.status, kStatusBadPage);
    for (int x = threadIdx.x; x < G * D; x += blockDim.x) {  // merge the warps' states exactly
      const int g = x / D, d = x % D, h = hk * a.G + g0 + g;
      float mx = -INFINITY;
      for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w][g]);
      float sum = 0, o = 0;
      bool nan = false;
      for (int w = 0; w < kWarps; ++w) {
        nan |= isnan(wl[w][g]);
        if (wm[w][g] == -INFINITY) continue;
        const float f = exp2f(wm[w][g] - mx);
        sum += wl[w][g] * f, o += wacc[w][g][d] * f;
      }
      const bool any = mx != -INFINITY || nan;
      const float ov = bad ? NAN : any ? o / sum : 0.0f;
      static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + d] = from_f<E>(ov);
      if (a.lse && d == 0)
        a.lse[(i64(b) * a.H + h) * a.T + t] = bad ? NAN : any ? (mx + log2f(sum)) * 0.6931471805599453f : -INFINITY;
    }
  }
}

template <class E>
void launch_as(const Args& a, int D, dim3 grid, cudaStream_t s) {
  if (D == 64)
    decode_kernel<E, 64><<<grid, kWarps * 32, 0, s>>>(a);
  else
    decode_kernel<E, 128><<<grid, kWarps * 32, 0, s>>>(a);
}

}  // namespace

const char* launch(const Args& a, Elem e, int head_dim, void* stream) {
  const dim3 grid(unsigned(a.B * a.Hkv), unsigned(a.T));
  auto s = static_cast<cudaStream_t>(stream);
  if (e == Elem::BF16)
    launch_as<__nv_bfloat16>(a, head_dim, grid, s);
  else if (e == Elem::F16)
    launch_as<__half>(a, head_dim, grid, s);
  else
    launch_as<float>(a, head_dim, grid, s);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace splat::cudadecode
