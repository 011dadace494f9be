#include "tile_kernel.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "simd.hpp"
#include "tile_ops.hpp"

namespace splat::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

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

}  // namespace

int64_t visible_keys(const Plan& plan, const KeySpan& span, int64_t key_limit) {
  const int64_t kc = std::max<int64_t>(span.key_count, 0);
  if (kc == 0) return 0;  // empty spans are not checked (their stride may be anything)
  switch (span.kind) {
    case SpanKind::Affine:
    case SpanKind::Block: {
      const int64_t step = span.kind == SpanKind::Affine ? span.key_stride : 1;
      if (key_limit <= span.key_begin) return 0;
      return std::min(kc, (key_limit - span.key_begin + step - 1) / step);
    }
    default: {
      const int32_t* k = plan.gather_keys.data() + span.key_begin;
      return std::lower_bound(k, k + kc, key_limit) - k;
    }
  }
}

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
    const int64_t kc = visible_keys(plan, span, hv.key_limit);  // keys beyond key_lengths are never visited
    if (lane_lo >= lane_hi || kc <= 0) continue;
    const int g_lo = lane_lo / 16, g_hi = (lane_hi + 15) / 16;  // 16-lane groups computed
    const uint64_t rows = lane_bits(lane_lo, lane_hi);
    const bool row_masked = rows != lane_bits(g_lo * 16, std::min(g_hi * 16, R));
    const uint64_t* words = span.full ? nullptr : masks.find(pass_index, si, sub, span.key_count);
    const bool masked = words || row_masked;

    for (int64_t c0 = 0; c0 < kc; c0 += kKeyChunk) {
      const int nc = int(std::min<int64_t>(kKeyChunk, kc - c0));
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
      if (masked) apply_mask(s.st, words ? words + c0 : nullptr, rows, lo, hi, g_lo * 2, g_hi * 2);
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
      if (hv.lse) hv.lse[i] = l == 0.0f ? kNegInf : (s.m[r] + std::log2(l)) * 0.6931471805599453f;
    }
  }
}

}  // namespace splat::cpu
