#include "tile_kernel.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "simd.hpp"

namespace splat::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// st[u][0..16) = sum_d k_u[d] * qt[d][0..16) for NK keys: 2*NK accumulators, 2 loads + NK
// broadcasts per 2*NK FMAs.
// DC > 0: the head dim as a compile-time constant (fully unrolled d loop), else runtime D.
template <int NK, int DC = 0>
inline void qk_tile(const float* const* kp, const float* qt, int64_t D_runtime, float* st) {
  const int64_t D = DC > 0 ? DC : D_runtime;
  __m256 a0[NK], a1[NK];
  const float* k[NK];
#pragma GCC unroll 8
  for (int u = 0; u < NK; ++u) a0[u] = a1[u] = _mm256_setzero_ps(), k[u] = kp[u];
  for (int64_t d = 0; d < D; ++d) {
    const __m256 q0 = _mm256_load_ps(qt + d * kLanes), q1 = _mm256_load_ps(qt + d * kLanes + 8);
#pragma GCC unroll 8
    for (int u = 0; u < NK; ++u) {
      const __m256 kk = _mm256_broadcast_ss(k[u] + d);
      a0[u] = _mm256_fmadd_ps(kk, q0, a0[u]);
      a1[u] = _mm256_fmadd_ps(kk, q1, a1[u]);
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < NK; ++u) _mm256_store_ps(st + u * kLanes, a0[u]), _mm256_store_ps(st + u * kLanes + 8, a1[u]);
}

// ot[u][0..16) += sum_c v_c[d0+u] * pt[c][0..16) for ND head-dim columns.
template <int ND>
inline void pv_tile(const float* const* vp, int nc, int64_t d0, const float* pt, float* ot) {
  __m256 a0[ND], a1[ND];
#pragma GCC unroll 8
  for (int u = 0; u < ND; ++u) a0[u] = _mm256_load_ps(ot + u * kLanes), a1[u] = _mm256_load_ps(ot + u * kLanes + 8);
  for (int c = 0; c < nc; ++c) {
    const __m256 p0 = _mm256_load_ps(pt + c * kLanes), p1 = _mm256_load_ps(pt + c * kLanes + 8);
    const float* v = vp[c] + d0;
#pragma GCC unroll 8
    for (int u = 0; u < ND; ++u) {
      const __m256 vv = _mm256_broadcast_ss(v + u);
      a0[u] = _mm256_fmadd_ps(vv, p0, a0[u]);
      a1[u] = _mm256_fmadd_ps(vv, p1, a1[u]);
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < ND; ++u) _mm256_store_ps(ot + u * kLanes, a0[u]), _mm256_store_ps(ot + u * kLanes + 8, a1[u]);
}

constexpr int kBlk = 6;  // keys (QK) or head-dim columns (PV) per micro tile: 12 accumulators

template <int DC>
void qk_block_d(const float* const* kp, int nc, const float* qt, int64_t D, float* st) {
  int c = 0;
  for (; c + kBlk <= nc; c += kBlk) qk_tile<kBlk, DC>(kp + c, qt, D, st + c * kLanes);
  switch (nc - c) {
    case 1: qk_tile<1, DC>(kp + c, qt, D, st + c * kLanes); break;
    case 2: qk_tile<2, DC>(kp + c, qt, D, st + c * kLanes); break;
    case 3: qk_tile<3, DC>(kp + c, qt, D, st + c * kLanes); break;
    case 4: qk_tile<4, DC>(kp + c, qt, D, st + c * kLanes); break;
    case 5: qk_tile<5, DC>(kp + c, qt, D, st + c * kLanes); break;
    default: break;
  }
}

void qk_block(const float* const* kp, int nc, const float* qt, int64_t D, float* st) {
  switch (D) {  // common head dims get a compile-time d loop
    case 64: qk_block_d<64>(kp, nc, qt, D, st); break;
    case 128: qk_block_d<128>(kp, nc, qt, D, st); break;
    case 32: qk_block_d<32>(kp, nc, qt, D, st); break;
    default: qk_block_d<0>(kp, nc, qt, D, st); break;
  }
}

void pv_block(const float* const* vp, int nc, const float* pt, int64_t D, float* ot) {
  int64_t d = 0;
  for (; d + kBlk <= D; d += kBlk) pv_tile<kBlk>(vp, nc, d, pt, ot + d * kLanes);
  switch (D - d) {
    case 1: pv_tile<1>(vp, nc, d, pt, ot + d * kLanes); break;
    case 2: pv_tile<2>(vp, nc, d, pt, ot + d * kLanes); break;
    case 3: pv_tile<3>(vp, nc, d, pt, ot + d * kLanes); break;
    case 4: pv_tile<4>(vp, nc, d, pt, ot + d * kLanes); break;
    case 5: pv_tile<5>(vp, nc, d, pt, ot + d * kLanes); break;
    default: break;
  }
}

uint64_t lane_bits(int lo, int hi) {  // bits [lo, hi) of a 64-bit word
  if (lo >= hi) return 0;
  const uint64_t upto_hi = hi >= 64 ? ~uint64_t(0) : (uint64_t(1) << hi) - 1;
  return upto_hi & ~((uint64_t(1) << lo) - 1);
}

// Online softmax over the chunk for 8-lane vectors [v_lo, v_hi), keys [lo[g], hi[g]) of each
// vector's 16-lane group g: turns st into P (base 2), updates m, l and rescales the accumulated
// O^T where the running max moved. Keys outside the range are not read again.
void softmax_update(Scratch& s, const int* lo, const int* hi, int v_lo, int v_hi) {
  const __m256 ninf = _mm256_set1_ps(kNegInf), one = _mm256_set1_ps(1.0f);
  for (int vv = v_lo; vv < v_hi; ++vv) {
    const int at = vv * 8, c_lo = lo[vv / 2], c_hi = hi[vv / 2];
    if (c_lo >= c_hi) continue;
    const __m256 m_old = _mm256_load_ps(s.m + at);
    __m256 mx = m_old;
    for (int c = c_lo; c < c_hi; ++c) mx = _mm256_max_ps(mx, _mm256_load_ps(s.st + c * kLanes + at));
    // A lane that has seen no key yet keeps max -inf: subtract 0 instead (exp2(-inf) = 0, no NaN).
    const __m256 m_use = _mm256_blendv_ps(mx, _mm256_setzero_ps(), _mm256_cmp_ps(mx, ninf, _CMP_EQ_OQ));
    const __m256 alpha = exp2_ps(_mm256_sub_ps(m_old, m_use));
    __m256 sum = _mm256_setzero_ps();
    for (int c = c_lo; c < c_hi; ++c) {
      float* p = s.st + c * kLanes + at;
      const __m256 e = exp2_ps(_mm256_sub_ps(_mm256_load_ps(p), m_use));
      _mm256_store_ps(p, e);
      sum = _mm256_add_ps(sum, e);
    }
    _mm256_store_ps(s.l + at, _mm256_fmadd_ps(_mm256_load_ps(s.l + at), alpha, sum));
    _mm256_store_ps(s.m + at, mx);
    if (_mm256_movemask_ps(_mm256_cmp_ps(alpha, one, _CMP_NEQ_UQ)))
      for (int64_t d = 0; d < s.D; ++d) {
        float* o = s.ot + d * kLanes + at;
        _mm256_store_ps(o, _mm256_mul_ps(_mm256_load_ps(o), alpha));
      }
  }
}

// Masked entries become -inf (exactly 0 after exp2), whatever NaN/Inf Q or K put there.
// words[c] (or `fixed` for every key) has the attended lanes of key c.
void apply_mask(Scratch& s, const uint64_t* words, uint64_t fixed, const int* lo, const int* hi, int v_lo, int v_hi) {
  const __m256 ninf = _mm256_set1_ps(kNegInf);
  for (int vv = v_lo; vv < v_hi; ++vv)
    for (int c = lo[vv / 2]; c < hi[vv / 2]; ++c) {
      const uint32_t bits = uint32_t((words ? words[c] : fixed) >> (vv * 8)) & 0xffu;
      if (bits == 0xffu) continue;
      float* p = s.st + c * kLanes + vv * 8;
      _mm256_store_ps(p, _mm256_blendv_ps(ninf, _mm256_load_ps(p), lane_mask(bits)));
    }
}

bool row_finite(const float* r, int64_t n) {
  __m256 bad = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    const __m256 x = _mm256_loadu_ps(r + d);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(x, x), _mm256_setzero_ps(), _CMP_NEQ_UQ));
  }
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (; d < n; ++d) ok &= std::isfinite(r[d]);
  return ok;
}

// dst[c][r] = src[r][c] * scale for an 8 x 8 block.
inline void transpose8(const float* src, int64_t lds, float* dst, int64_t ldd, __m256 scale) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_mul_ps(_mm256_loadu_ps(src + i * lds), scale);
  for (int i = 0; i < 8; i += 2)
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44), r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44), r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// rows [RP][Dp] (row-major) <-> T [Dp][kLanes] (transposed), RP and Dp multiples of 8.
void rows_to_t(const float* rows, int64_t Dp, int RP, float* t, float scale) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (int r = 0; r < RP; r += 8)
    for (int64_t d = 0; d < Dp; d += 8) transpose8(rows + r * Dp + d, Dp, t + d * kLanes + r, kLanes, sc);
}
void t_to_rows(const float* t, int64_t Dp, int RP, float* rows) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int r = 0; r < RP; r += 8)
    for (int64_t d = 0; d < Dp; d += 8) transpose8(t + d * kLanes + r, kLanes, rows + r * Dp + d, Dp, one);
}

}  // namespace

Scratch::Scratch(int64_t d) : D(d), Dp((d + 7) / 8 * 8) {
  const size_t n = size_t(3 * Dp * kLanes + kKeyChunk * kLanes + 2 * kLanes + 2 * kKeyChunk * Dp + 64);
  storage.assign(n, 0.0f);
  float* p = storage.data();
  p += (32 - reinterpret_cast<uintptr_t>(p) % 32) % 32 / sizeof(float);
  qt = p, p += Dp * kLanes;
  ot = p, p += Dp * kLanes;
  st = p, p += kKeyChunk * kLanes;
  m = p, p += kLanes;
  l = p, p += kLanes;
  rows = p, p += Dp * kLanes;
  kbuf = p, p += kKeyChunk * Dp;
  vbuf = p;
}

void run_subtile(const Plan& plan, const SpanMasks& masks, int pass_index, const TileTask& task, int sub,
                 bool first_pass, const HeadView& hv, Scratch& s) {
  const int64_t D = s.D, Dp = s.Dp;
  const int base = sub * kLanes;
  const int R = std::min(kLanes, task.row_count - base);
  const int RP = (R + 15) / 16 * 16;
  const TensorView& q = *hv.q;
  auto row_of = [&](int lane) { return task.row_begin + task.row_stride * int64_t(base + lane); };

  // Q^T, pre-scaled so that scores come out in base 2. Pad lanes and pad dims are zero.
  std::fill(s.rows, s.rows + RP * Dp, 0.0f);
  for (int r = 0; r < R; ++r) load_row(q.data, q.dtype, q.offset(hv.b, hv.h, row_of(r)), D, s.rows + r * Dp);
  rows_to_t(s.rows, Dp, RP, s.qt, hv.q_scale);

  // State: fresh, or continued from the previous pass (m = lse, l = 1, O = its normalised output).
  std::fill(s.m, s.m + kLanes, kNegInf);
  std::fill(s.l, s.l + kLanes, 0.0f);
  if (first_pass) {
    for (int64_t d = 0; d < Dp; ++d) std::fill(s.ot + d * kLanes, s.ot + d * kLanes + RP, 0.0f);
  } else {
    std::fill(s.rows, s.rows + RP * Dp, 0.0f);
    for (int r = 0; r < R; ++r) {
      const int64_t i = row_of(r);
      const float lse = hv.lse2[i];
      if (lse == kNegInf) continue;
      s.m[r] = lse;
      s.l[r] = 1.0f;
      std::memcpy(s.rows + r * Dp, hv.o32 + i * hv.ld_o32, size_t(D) * sizeof(float));
    }
    rows_to_t(s.rows, Dp, RP, s.ot, 1.0f);
  }

  const Pass& pass = plan.passes[size_t(pass_index)];
  for (int32_t si = task.span_begin; si < task.span_end; ++si) {
    const KeySpan& span = pass.spans[size_t(si)];
    const int lane_lo = std::max(span.row_lo - base, 0), lane_hi = std::min(span.row_hi - base, R);
    if (lane_lo >= lane_hi || span.key_count <= 0) continue;
    const int g_lo = lane_lo / 16, g_hi = (lane_hi + 15) / 16;  // 16-lane groups computed
    const uint64_t rows = lane_bits(lane_lo, lane_hi);
    const bool row_masked = rows != lane_bits(g_lo * 16, std::min(g_hi * 16, R));
    const uint64_t* words = span.full ? nullptr : masks.find(pass_index, si, sub, span.key_count);
    const bool masked = words || row_masked;

    for (int64_t c0 = 0; c0 < span.key_count; c0 += kKeyChunk) {
      const int nc = int(std::min<int64_t>(kKeyChunk, span.key_count - c0));
      bool bad = false;
      for (int c = 0; c < nc; ++c) {
        int64_t key;
        switch (span.kind) {
          case SpanKind::Affine: key = span.key_begin + span.key_stride * (c0 + c); break;
          case SpanKind::Block: key = span.key_begin + c0 + c; break;
          default: key = plan.gather_keys[size_t(span.key_begin + c0 + c)]; break;
        }
        if (hv.kv_dtype == DType::F32) {
          s.kp[c] = static_cast<const float*>(hv.k) + key * hv.ldk;
          s.vp[c] = static_cast<const float*>(hv.v) + key * hv.ldv;
          bad |= hv.v_bad[key] != 0;
        } else {
          float *kr = s.kbuf + c * Dp, *vr = s.vbuf + c * Dp;
          load_row(hv.k, hv.kv_dtype, size_t(key * hv.ldk), D, kr);
          load_row(hv.v, hv.kv_dtype, size_t(key * hv.ldv), D, vr);
          s.kp[c] = kr, s.vp[c] = vr;
          bad |= !row_finite(vr, D);
        }
      }
      // Per 16-lane group, the keys [lo, hi) that any of its lanes attends: partial spans (band
      // edges) skip the fully masked corners; masking below turns what is skipped into -inf.
      int lo[kLanes / 16], hi[kLanes / 16];
      for (int g = g_lo; g < g_hi; ++g) {
        lo[g] = 0, hi[g] = nc;
        if (!words) continue;
        const uint64_t gm = uint64_t(0xffff) << (16 * g);
        while (lo[g] < nc && !(words[c0 + lo[g]] & gm)) ++lo[g];
        while (hi[g] > lo[g] && !(words[c0 + hi[g] - 1] & gm)) --hi[g];
      }
      for (int g = g_lo; g < g_hi; ++g)
        if (lo[g] < hi[g]) qk_block(s.kp + lo[g], hi[g] - lo[g], s.qt + g * 16, D, s.st + lo[g] * kLanes + g * 16);
      if (masked) apply_mask(s, words ? words + c0 : nullptr, rows, lo, hi, g_lo * 2, g_hi * 2);
      softmax_update(s, lo, hi, g_lo * 2, g_hi * 2);
      if (bad && masked) {
        // NaN/Inf in V: a masked entry's 0 * Inf must not reach rows that never attend that key.
        for (int c = 0; c < nc; ++c) {
          const uint64_t w = (words ? words[c0 + c] : rows) & rows;
          for (int r = lane_lo; r < lane_hi; ++r) {
            if (!((w >> r) & 1)) continue;
            const float p = s.st[c * kLanes + r];
            for (int64_t d = 0; d < D; ++d) s.ot[d * kLanes + r] += p * s.vp[c][d];
          }
        }
      } else {
        for (int g = g_lo; g < g_hi; ++g)
          if (lo[g] < hi[g]) pv_block(s.vp + lo[g], hi[g] - lo[g], s.st + lo[g] * kLanes + g * 16, D, s.ot + g * 16);
      }
    }
  }

  // Normalise and write: rows that attended nothing are exact zeros.
  t_to_rows(s.ot, Dp, RP, s.rows);
  for (int r = 0; r < R; ++r) {
    const int64_t i = row_of(r);
    const float l = s.l[r];
    float* o = s.rows + r * Dp;
    const __m256 inv = _mm256_set1_ps(l == 0.0f ? 0.0f : 1.0f / l);
    for (int64_t d = 0; d < Dp; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), inv));
    if (l == 0.0f) std::fill(o, o + D, 0.0f);  // 0 * NaN would not be zero
    if (hv.o32) {
      std::memcpy(hv.o32 + i * hv.ld_o32, o, size_t(D) * sizeof(float));
      hv.lse2[i] = l == 0.0f ? kNegInf : s.m[r] + std::log2(l);
    } else {
      store_row(o, hv.out->dtype, hv.out->data, hv.out->offset(hv.b, hv.h, i), D);
    }
  }
}

}  // namespace splat::cpu
