// The CUDA decode kernels, instantiated per KernelSpec of the decode direction (src/jit/decode_spec.cpp): C is the
// spec as constants (ELEM: DecodeElemKind, D: head dim, GP: query heads per CTA, DPL: dims per lane, PAGED).
// decode_split: split-KV (flash-decoding): the keys of one query row are split into S chunks over S CTAs, each CTA
// computes the partial softmax state (max, sum, unnormalised output) of GP query heads of one kv head (GQA: the K/V
// rows are read once per group of heads), and decode_merge merges the S states in split order (deterministic). With
// S = 1 the CTA writes the output itself. In the key loop each lane holds DPL contiguous dims of one key (16-byte
// vector loads of K and V, issued together for U keys), a group of D / DPL lanes reduces the scores with shuffles,
// and the warps of a CTA take interleaved blocks of keys.
// decode_simple: the first kernel (any alignment): one CTA per (sequence, kv head, query), all query heads of the kv
// head in groups of kDecodeMaxGroup; the warps share the row's keys 32 at a time.
// Thread 0 evaluates the row program (decode_rows.cuh, the CPU's own code) at the length read from device memory,
// so a captured graph replays every step without re-planning. Bad indices in device memory give NaN rows and a
// status bit, never a plausible answer (see splat/decode.hpp). No includes beyond splat's own (NVRTC).
#pragma once
#include "splat/device/decode_args.cuh"
#include "splat/device/decode_elements.cuh"

namespace splat {
namespace dev {

// One run in 32-bit form (cache positions are int32): keys lo..hi with (j - base) mod stride < width; first: index of
// its first key among the row's keys; fkey: its first key (width-1 runs); dup: an earlier run may hold its keys.
struct DecodeFastRun {
  int lo, hi, base, stride, width, first, fkey, dup, count;
};

// Thread 0: the row's runs at position p of a sequence of length L (none when p < 0) in fast form; returns their count.
// Not inlined: the evaluator's 64-bit arithmetic stays out of the key loop's register allocation.
__device__ __noinline__ int decode_fast_runs(const DecodeInstr* prog, int n_instr, i64 p, i64 L, DecodeRun* runs,
                                             int* ends, DecodeFastRun* fr) {
  int n = 0;
  if (p >= 0) {
    n = decode_row_eval(prog, n_instr, p, L, runs, runs + kDecodeMaxRuns, runs + 2 * kDecodeMaxRuns, ends,
                        kDecodeMaxRuns);
    if (n < 0) n = 0;  // cannot happen: the host checked max_runs
  }
  int first = 0;
  for (int r = 0; r < n; ++r) {
    const DecodeRun& x = runs[r];
    DecodeFastRun f;
    f.lo = int(x.lo), f.hi = int(x.hi), f.base = int(x.base), f.stride = int(x.stride), f.width = int(x.width);
    f.first = first;
    f.fkey = int(x.lo + decode_pos_mod(x.base - x.lo, x.stride));
    f.dup = 0;
    for (int e = 0; e < r; ++e) f.dup |= runs[e].lo <= x.hi && runs[e].hi >= x.lo;
    f.count = int(decode_run_count(x));
    fr[r] = f;
    first += f.count;
  }
  return n;
}

__device__ __forceinline__ int decode_pos_mod32(int a, int m) {
  const int r = a % m;
  return r < 0 ? r + m : r;
}

__device__ __forceinline__ bool decode_fast_contains(const DecodeFastRun& r, int j) {
  return j >= r.lo && j <= r.hi && (r.stride == 1 || decode_pos_mod32(j - r.base, r.stride) < r.width);
}

// Key c (0-based) of run r.
__device__ __forceinline__ int decode_fast_key(const DecodeFastRun& r, int c) {
  if (r.stride == 1) return r.lo + c;
  if (r.width == 1) return r.fkey + c * r.stride;
  // general residue runs (fixed's column families): the keys below lo counted as decode_run_count does, then step
  const i64 y = i64(r.lo) - 1 - r.base;
  const i64 e = decode_floor_div(y, r.stride) * r.width + decode_min(decode_pos_mod(y, r.stride) + 1, r.width) + c;
  return int(r.base + decode_floor_div(e, r.width) * r.stride + decode_pos_mod(e, r.width));
}

// The split kernel's shape: DPL dims per lane, 16 (fewer shuffles per key) or 8 (fewer registers: three CTAs per
// multiprocessor for groups of up to 4 heads; always for 8 heads).
template <class C>
struct DecodeSplitShape {
  typedef typename DecodeElem<C::ELEM>::T E;
  static constexpr int kDpl = C::DPL;
  static constexpr int kLpr = C::D / kDpl;                 // lanes per key row
  static constexpr int kKpi = 32 / kLpr;                   // keys per warp and step
  static constexpr int kU = kDpl == 8 ? 4 : 2;             // steps per iteration (loads in flight)
  static constexpr int kKw = kKpi * kU;                    // keys per warp and iteration
  static constexpr int kVec = kDpl * int(sizeof(E)) / 16;  // 16-byte loads per lane and row
  static constexpr int kPer = 16 / int(sizeof(E));         // elements per 16-byte load
};

template <class C>
__device__ __forceinline__ void decode_split(const DecodeArgs& a) {
  using S = DecodeSplitShape<C>;
  typedef typename S::E E;
  constexpr int D = C::D, GP = C::GP, DPL = C::DPL, K = C::ELEM;
  constexpr int LPR = S::kLpr, KPI = S::kKpi, U = S::kU, KW = S::kKw, kWarps = kDecodeWarps;
  const float inf = decode_inf();
  __shared__ DecodeRun runs[3 * kDecodeMaxRuns];
  __shared__ int ends[kDecodeMaxInstr];
  __shared__ DecodeFastRun fr[kDecodeMaxRuns];
  __shared__ DecodeInstr prog[kDecodeMaxInstr];
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
  uint4 qraw[GP][S::kVec];
  {
    const E* qb = static_cast<const E*>(a.q) + b * a.q_sb + t * a.q_st + sub * DPL;
#pragma unroll
    for (int g = 0; g < GP; ++g)
#pragma unroll
      for (int v = 0; v < S::kVec; ++v)
        qraw[g][v] = g < gn ? reinterpret_cast<const uint4*>(qb + (h0 + g) * a.q_sh)[v] : make_uint4(0, 0, 0, 0);
  }
  if (threadIdx.x == 0) {
    // The program from the parameters into shared memory by static indices (a dynamic index into the parameters
    // would copy them all to local memory), then evaluated there.
#pragma unroll
    for (int i = 0; i < kDecodeMaxInstr; ++i)
      if (i < a.n_instr) prog[i] = a.prog[i];
    const int n = decode_fast_runs(prog, a.n_instr, p, L, runs, ends, fr);
    s_nruns = n, s_total = n > 0 ? fr[n - 1].first + fr[n - 1].count : 0;
    if (bad_len && a.status && hk == 0 && ng == 0 && split == 0 && t == 0) atomicOr(a.status, kDecodeStatusBadLength);
  }
  __syncthreads();
  const int nr = s_nruns, total = s_total;
  // This split's keys [c0, c1): chunks rounded to whole iterations of the CTA.
  const int step = KW * kWarps;
  const i64 per = (i64(total) + a.S - 1) / a.S, chunk = (per + step - 1) / step * step;
  const int c0 = int(decode_min(total, split * chunk)), c1 = int(decode_min(total, c0 + chunk));

  float q[GP][DPL], m[GP], l[GP], acc[GP][DPL];
#pragma unroll
  for (int g = 0; g < GP; ++g) {
#pragma unroll
    for (int v = 0; v < S::kVec; ++v) decode_unpack<K>(qraw[g][v], &q[g][v * S::kPer]);
#pragma unroll
    for (int d = 0; d < DPL; ++d) q[g][d] *= a.q_scale;  // zero for the heads past gn
    m[g] = -inf, l[g] = 0;
#pragma unroll
    for (int d = 0; d < DPL; ++d) acc[g][d] = 0;
  }
  bool bad_page = false;
  const E* kbase = static_cast<const E*>(a.k) + hk * a.k_sh + sub * DPL;
  const E* vbase = static_cast<const E*>(a.v) + hk * a.v_sh + sub * DPL;
  for (int base = c0 + warp * KW; base < c1; base += step) {
    uint4 kv[U][S::kVec], vv[U][S::kVec];
    bool ok[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int idx = base + u * KPI + slot;
      ok[u] = false;
      i64 koff = 0, voff = 0;
      if (idx < c1) {
        int r = 0;
        while (r + 1 < nr && fr[r + 1].first <= idx) ++r;
        const DecodeFastRun f = fr[r];
        const int j = decode_fast_key(f, idx - f.first);
        bool dup = false;  // a key of several runs counts in the first only
        if (f.dup)
          for (int x = 0; x < r && !dup; ++x) dup = decode_fast_contains(fr[x], j);
        if (!dup) {
          const i64 row = start + j;
          if (!C::PAGED) {
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
      for (int v = 0; v < S::kVec; ++v) {
        kv[u][v] = ok[u] ? reinterpret_cast<const uint4*>(kbase + koff)[v] : make_uint4(0, 0, 0, 0);
        vv[u][v] = ok[u] ? reinterpret_cast<const uint4*>(vbase + voff)[v] : make_uint4(0, 0, 0, 0);
      }
    }
    float s[U][GP];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[DPL];
#pragma unroll
      for (int v = 0; v < S::kVec; ++v) decode_unpack<K>(kv[u][v], &kf[v * S::kPer]);
#pragma unroll
      for (int g = 0; g < GP; ++g) {
        float x = 0;
#pragma unroll
        for (int d = 0; d < DPL; ++d) x = fmaf(q[g][d], kf[d], x);
#pragma unroll
        for (int o = LPR / 2; o >= 1; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
        s[u][g] = ok[u] ? x : -inf;
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
      if (mn == -inf) {
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
      for (int v = 0; v < S::kVec; ++v) decode_unpack<K>(vv[u][v], &vf[v * S::kPer]);
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
  if (bad_page && a.status) atomicOr(a.status, kDecodeStatusBadPage);
  // The CTA's state, merged over the warps exactly; written as the output (S = 1) or as split `split`'s partial.
  for (int x = threadIdx.x; x < gn * D; x += blockDim.x) {
    const int g = x / D, d = x % D, h = h0 + g;
    float mx = -inf;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w][g]);
    float sum = 0, o = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (wm[w][g] == -inf) continue;
      const float f = exp2f(wm[w][g] - mx);
      sum += wl[w][g] * f, o += wacc[w][g][d] * f;
    }
    if (bad) sum = decode_nan(), mx = decode_nan();
    if (a.S == 1) {
      const bool any = mx != -inf;  // NaN counts as any
      static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + d] = decode_from_f<K>(any ? o / sum : 0.0f);
      if (a.lse && d == 0) a.lse[(i64(b) * a.H + h) * a.T + t] = any ? (mx + log2f(sum)) * 0.6931471805599453f : -inf;
    } else {
      const i64 row = ((i64(b) * a.H + h) * a.T + t) * a.S + split;
      a.ws_acc[row * D + d] = o;
      if (d == 0) a.ws_ml[2 * row] = mx, a.ws_ml[2 * row + 1] = sum;
    }
  }
}

// Merge of the S partial states of one (sequence, query head, query), in split order: one thread per output column.
template <class C>
__device__ __forceinline__ void decode_merge(const DecodeArgs& a) {
  constexpr int D = C::D, K = C::ELEM;
  typedef typename DecodeElem<K>::T E;
  const float inf = decode_inf();
  const int row = blockIdx.x, d = threadIdx.x;  // row = (b * H + h) * T + t
  const int t = row % a.T, h = (row / a.T) % a.H, b = row / (a.T * a.H);
  const float* ml = a.ws_ml + i64(row) * a.S * 2;
  float mx = -inf;
  bool nan = false;
  for (int s = 0; s < a.S; ++s) nan |= ml[2 * s] != ml[2 * s], mx = fmaxf(mx, ml[2 * s]);
  float sum = 0, o = 0;
  if (!nan && mx != -inf)
    for (int s = 0; s < a.S; ++s) {
      if (ml[2 * s] == -inf) continue;
      const float f = exp2f(ml[2 * s] - mx);
      sum += ml[2 * s + 1] * f, o += a.ws_acc[(i64(row) * a.S + s) * D + d] * f;
    }
  const float out = nan ? decode_nan() : mx == -inf ? 0.0f : o / sum;
  static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + d] = decode_from_f<K>(out);
  if (a.lse && d == 0) a.lse[row] = nan ? decode_nan() : mx == -inf ? -inf : (mx + log2f(sum)) * 0.6931471805599453f;
}

// Element offset of cache row `pos` of sequence b, kv head hk; -1 for a page outside the pool.
template <class C>
__device__ __forceinline__ i64 decode_row_offset(const DecodeArgs& a, int b, int hk, i64 pos, i64 sb, i64 sh, i64 sn) {
  const i64 r = (a.starts ? a.starts[b] : 0) + pos;
  if (!C::PAGED) return b * sb + hk * sh + r * sn;
  const int pg = a.table[b * a.max_pages + r / a.page];
  if (pg < 0 || pg >= a.pool) return -1;
  return pg * sb + hk * sh + (r % a.page) * sn;
}

// Key of index c of a run (the c-th key at or after lo).
__device__ __forceinline__ i64 decode_run_key(const DecodeRun& r, i64 c) {
  const i64 y = r.lo - 1 - r.base;
  const i64 e = decode_floor_div(y, r.stride) * r.width + decode_min(decode_pos_mod(y, r.stride) + 1, r.width) + c;
  return r.base + decode_floor_div(e, r.width) * r.stride + decode_pos_mod(e, r.width);
}

template <class C>
__device__ __forceinline__ void decode_simple(const DecodeArgs& a) {
  constexpr int D = C::D, K = C::ELEM, kWarps = kDecodeWarps, kMaxGroup = kDecodeMaxGroup;
  typedef typename DecodeElem<K>::T E;
  constexpr int DL = D / 32;  // output columns per lane
  const float inf = decode_inf();
  __shared__ DecodeRun runs[3 * kDecodeMaxRuns];
  __shared__ int ends[kDecodeMaxInstr];
  __shared__ i64 first[kDecodeMaxRuns + 1];
  __shared__ int nruns;
  __shared__ float qs[kMaxGroup][D];
  __shared__ float wm[kWarps][kMaxGroup], wl[kWarps][kMaxGroup], wacc[kWarps][kMaxGroup][D];
  const int b = blockIdx.x / a.Hkv, hk = blockIdx.x % a.Hkv, t = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 start = a.starts ? a.starts[b] : 0, len = a.seqlens[b];
  // A length or start that does not fit the cache: NaN outputs and lse, and the status bit (never a clamped answer).
  const bool bad_len = len < 0 || start < 0 || start + len > a.capacity;
  if (bad_len) {
    if (threadIdx.x == 0 && a.status && hk == 0 && t == 0) atomicOr(a.status, kDecodeStatusBadLength);
    for (int x = threadIdx.x; x < a.G * D; x += blockDim.x) {
      const int h = hk * a.G + x / D;
      static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + x % D] = decode_from_f<K>(decode_nan());
      if (a.lse && x % D == 0) a.lse[(i64(b) * a.H + h) * a.T + t] = decode_nan();
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
      n = decode_row_eval(a.prog, a.n_instr, p, L, runs, runs + kDecodeMaxRuns, runs + 2 * kDecodeMaxRuns, e,
                          kDecodeMaxRuns);
      if (n < 0) n = 0;  // cannot happen: the host checked max_runs
    }
    first[0] = 0;
    for (int r = 0; r < n; ++r) first[r + 1] = first[r] + decode_run_count(runs[r]);
    nruns = n;
  }
  for (int g0 = 0; g0 < a.G; g0 += kMaxGroup) {  // query heads in groups of kMaxGroup
    const int G = min(kMaxGroup, a.G - g0);
    __syncthreads();
    for (int x = threadIdx.x; x < G * D; x += blockDim.x) {
      const int g = x / D, d = x % D, h = hk * a.G + g0 + g;
      qs[g][d] = decode_to_f<K>(static_cast<const E*>(a.q)[b * a.q_sb + h * a.q_sh + t * a.q_st + d]) * a.q_scale;
    }
    __syncthreads();
    const int nr = nruns;
    const i64 total = first[nr];
    float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][DL];
    for (int g = 0; g < kMaxGroup; ++g) {
      m[g] = -inf, l[g] = 0;
      for (int d = 0; d < DL; ++d) acc[g][d] = 0;
    }
    for (i64 base = i64(warp) * 32; base < total; base += kWarps * 32) {
      const i64 idx = base + lane;
      i64 koff = -1, voff = -1;
      if (idx < total) {
        int r = 0;
        while (first[r + 1] <= idx) ++r;
        const i64 j = decode_run_key(runs[r], idx - first[r]);
        bool dup = false;  // a key of several runs counts in the first only
        for (int x = 0; x < r && !dup; ++x) dup = decode_run_contains(runs[x], j);
        if (!dup) {
          koff = decode_row_offset<C>(a, b, hk, j, a.k_sb, a.k_sh, a.k_sn);
          voff = decode_row_offset<C>(a, b, hk, j, a.v_sb, a.v_sh, a.v_sn);
          if (koff < 0 || voff < 0) koff = voff = -1, bad_page = true;
        }
      }
      float s[kMaxGroup];
      for (int g = 0; g < kMaxGroup; ++g) s[g] = 0;
      if (koff >= 0) {
        const E* kr = static_cast<const E*>(a.k) + koff;
        for (int d = 0; d < D; ++d) {
          const float kv = decode_to_f<K>(kr[d]);
          for (int g = 0; g < kMaxGroup; ++g)
            if (g < G) s[g] += qs[g][d] * kv;
        }
      }
      float pr[kMaxGroup];
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= G) break;
        const float sg = koff >= 0 ? s[g] : -inf;
        float bm = sg;
        for (int o = 16; o; o /= 2) bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, o));  // NaN never wins
        const float mn = fmaxf(m[g], bm);
        if (mn == -inf) {
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
        for (int d = 0; d < DL; ++d) vv[d] = decode_to_f<K>(vr[lane + 32 * d]);
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
    if (bad && threadIdx.x == 0 && a.status) atomicOr(a.status, kDecodeStatusBadPage);
    for (int x = threadIdx.x; x < G * D; x += blockDim.x) {  // merge the warps' states exactly
      const int g = x / D, d = x % D, h = hk * a.G + g0 + g;
      float mx = -inf;
      for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w][g]);
      float sum = 0, o = 0;
      bool nan = false;
      for (int w = 0; w < kWarps; ++w) {
        nan |= wl[w][g] != wl[w][g];
        if (wm[w][g] == -inf) continue;
        const float f = exp2f(wm[w][g] - mx);
        sum += wl[w][g] * f, o += wacc[w][g][d] * f;
      }
      const bool any = mx != -inf || nan;
      const float ov = bad ? decode_nan() : any ? o / sum : 0.0f;
      static_cast<E*>(a.o)[b * a.o_sb + h * a.o_sh + t * a.o_st + d] = decode_from_f<K>(ov);
      if (a.lse && d == 0)
        a.lse[(i64(b) * a.H + h) * a.T + t] = bad ? decode_nan() : any ? (mx + log2f(sum)) * 0.6931471805599453f : -inf;
    }
  }
}

}  // namespace dev
}  // namespace splat
