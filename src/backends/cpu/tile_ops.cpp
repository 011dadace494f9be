#include "tile_ops.hpp"

#include <cmath>
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

}  // namespace

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

// Masked entries become -inf (exactly 0 after exp2), whatever NaN/Inf Q or K put there.
// words[c] (or `fixed` for every key) has the attended lanes of key c.
void apply_mask(float* st, const uint64_t* words, uint64_t fixed, const int* lo, const int* hi, int v_lo, int v_hi) {
  const __m256 ninf = _mm256_set1_ps(kNegInf);
  for (int vv = v_lo; vv < v_hi; ++vv)
    for (int c = lo[vv / 2]; c < hi[vv / 2]; ++c) {
      const uint32_t bits = uint32_t((words ? words[c] : fixed) >> (vv * 8)) & 0xffu;
      if (bits == 0xffu) continue;
      float* p = st + c * kLanes + vv * 8;
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
namespace {
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

}  // namespace

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

}  // namespace splat::cpu
