#include "backward_kernel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "simd.hpp"
#include "tile_kernel.hpp"
#include "tile_ops.hpp"

namespace splat::cpu {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

int64_t key_of(const Plan& plan, const KeySpan& span, int64_t c) {
  switch (span.kind) {
    case SpanKind::Affine: return span.key_begin + span.key_stride * c;
    case SpanKind::Block: return span.key_begin + c;
    default: return plan.gather_keys[size_t(span.key_begin + c)];
  }
}

// Rows r < R of a tensor's (b, h) into T [Dp][64] (times scale); pad rows and dims are zero.
template <class RowOf>
void load_t(const TensorView& t, int64_t b, int64_t h, int R, int RP, RowOf row_of, float scale, BackwardScratch& s,
            float* dst) {
  std::fill(s.rows, s.rows + RP * s.Dp, 0.0f);
  for (int r = 0; r < R; ++r) load_row(t.data, t.dtype, t.offset(b, h, row_of(r)), s.D, s.rows + r * s.Dp);
  rows_to_t(s.rows, s.Dp, RP, dst, scale);
}

// Row pointers of a chunk: F32 rows in place, F16/BF16 rows converted into buf.
const float* chunk_row(const TensorView& t, int64_t b, int64_t h, int64_t n, float* buf, int64_t D) {
  if (t.dtype == DType::F32) return static_cast<const float*>(t.data) + t.offset(b, h, n);
  load_row(t.data, t.dtype, t.offset(b, h, n), D, buf);
  return buf;
}

// Which lanes are live and how the span's keys are masked for the 16-lane groups of a subtile.
struct SpanLanes {
  int lane_lo, lane_hi, g_lo, g_hi;
  uint64_t rows;
  const uint64_t* words;  // per key c: attended lanes (nullptr: full span)
  bool masked;
};

bool span_lanes(const SpanMasks& masks, int pass_index, int32_t si, const KeySpan& span, int sub, int base, int R,
                SpanLanes& L) {
  L.lane_lo = std::max(span.row_lo - base, 0), L.lane_hi = std::min(span.row_hi - base, R);
  if (L.lane_lo >= L.lane_hi) return false;
  L.g_lo = L.lane_lo / 16, L.g_hi = (L.lane_hi + 15) / 16;
  L.rows = lane_bits(L.lane_lo, L.lane_hi);
  const bool row_masked = L.rows != lane_bits(L.g_lo * 16, std::min(L.g_hi * 16, R));
  L.words = span.full ? nullptr : masks.find(pass_index, si, sub, span.key_count);
  L.masked = L.words || row_masked;
  return true;
}

// Per group, the keys [lo, hi) of the chunk that any of its lanes attends.
void trim(const SpanLanes& L, int64_t c0, int nc, int* lo, int* hi) {
  for (int g = L.g_lo; g < L.g_hi; ++g) {
    lo[g] = 0, hi[g] = nc;
    if (!L.words) continue;
    const uint64_t gm = uint64_t(0xffff) << (16 * g);
    while (lo[g] < nc && !(L.words[c0 + lo[g]] & gm)) ++lo[g];
    while (hi[g] > lo[g] && !(L.words[c0 + hi[g] - 1] & gm)) --hi[g];
  }
}

uint64_t attended(const SpanLanes& L, int64_t c) {
  return (L.words ? L.words[c] : L.rows) & L.rows;
}

// Writes rows r < R of a T accumulator (times scale) to rows row_of(r): the output directly (single pass, F16/BF16),
// or the float32 accumulator (stored by the first pass, added to by later ones). zero(r): the row is padding.
template <class RowOf, class Zero>
void store_t(const float* t, float scale, int R, int RP, RowOf row_of, Zero zero, bool first_pass, float* acc,
             int64_t ld, const TensorView* out, int64_t b, int64_t h, BackwardScratch& s) {
  t_to_rows(t, s.Dp, RP, s.rows);
  for (int r = 0; r < R; ++r) {
    const int64_t i = row_of(r);
    float* o = s.rows + r * s.Dp;
    if (zero(r))
      std::fill(o, o + s.D, 0.0f);
    else
      for (int64_t d = 0; d < s.D; ++d) o[d] *= scale;
    if (!acc) {
      store_row(o, out->dtype, out->data, out->offset(b, h, i), s.D);
    } else if (first_pass) {
      std::copy(o, o + s.D, acc + i * ld);
    } else {
      float* a = acc + i * ld;
      for (int64_t d = 0; d < s.D; ++d) a[d] += o[d];
    }
  }
}

}  // namespace

int64_t BackwardScratch::floats(int64_t d) {
  const int64_t dp = (d + 7) / 8 * 8;
  return 4 * dp * kLanes + 2 * kLanes * kLanes + 2 * kLanes + 3 * kLanes * dp + 16;
}

BackwardScratch::BackwardScratch(int64_t d) : D(d), Dp((d + 7) / 8 * 8) {
  storage.assign(size_t(floats(d)), 0.0f);
  float* p = storage.data();
  p += (32 - reinterpret_cast<uintptr_t>(p) % 32) % 32 / sizeof(float);
  for (float** t : {&t1, &t2, &a1, &a2}) *t = p, p += Dp * kLanes;
  st = p, p += kLanes * kLanes;
  dp = p, p += kLanes * kLanes;
  lvec = p, p += kLanes;
  dvec = p, p += kLanes;
  rows = p, p += kLanes * Dp;
  buf1 = p, p += kLanes * Dp;
  buf2 = p;
}

void backward_dq_subtile(const Plan& plan, const SpanMasks& masks, int pass_index, const TileTask& task, int sub,
                         bool first_pass, const BackwardView& bv, BackwardScratch& s) {
  const int64_t D = s.D, Dp = s.Dp, N = bv.q->N();
  const int base = sub * kLanes;
  const int R = std::min(kLanes, task.row_count - base), RP = (R + 15) / 16 * 16;
  auto row_of = [&](int lane) { return task.row_begin + task.row_stride * int64_t(base + lane); };
  const int64_t b = bv.b, h = bv.h, hk = h / bv.group, e0 = (b * bv.H + h) * N;

  load_t(*bv.q, b, h, R, RP, row_of, bv.q_scale, s, s.t1);  // Q^T in base-2 score units
  load_t(*bv.dout, b, h, R, RP, row_of, 1.0f, s, s.t2);     // dO^T
  for (int r = 0; r < kLanes; ++r)
    s.lvec[r] = r < R ? bv.L2[e0 + row_of(r)] : kInf, s.dvec[r] = r < R ? bv.delta[e0 + row_of(r)] : 0.0f;
  for (int64_t d = 0; d < Dp; ++d) std::fill(s.a1 + d * kLanes, s.a1 + d * kLanes + RP, 0.0f);

  const Pass& pass = plan.passes[size_t(pass_index)];
  for (int32_t si = task.span_begin; si < task.span_end; ++si) {
    const KeySpan& span = pass.spans[size_t(si)];
    SpanLanes L;
    const int64_t kc = visible_keys(plan, span, bv.key_limit);
    if (kc <= 0 || !span_lanes(masks, pass_index, si, span, sub, base, R, L)) continue;
    for (int64_t c0 = 0; c0 < kc; c0 += kKeyChunk) {
      const int nc = int(std::min<int64_t>(kKeyChunk, kc - c0));
      for (int c = 0; c < nc; ++c) {
        const int64_t key = key_of(plan, span, c0 + c);
        s.p1[c] = chunk_row(*bv.k, b, hk, key, s.buf1 + c * Dp, D);
        s.p2[c] = chunk_row(*bv.v, b, hk, key, s.buf2 + c * Dp, D);
      }
      int lo[kLanes / 16], hi[kLanes / 16];
      trim(L, c0, nc, lo, hi);
      for (int g = L.g_lo; g < L.g_hi; ++g) {
        if (lo[g] >= hi[g]) continue;
        qk_block(s.p1 + lo[g], hi[g] - lo[g], s.t1 + g * 16, D, s.st + lo[g] * kLanes + g * 16);
        qk_block(s.p2 + lo[g], hi[g] - lo[g], s.t2 + g * 16, D, s.dp + lo[g] * kLanes + g * 16);
      }
      if (L.masked) apply_mask(s.st, L.words ? L.words + c0 : nullptr, L.rows, lo, hi, L.g_lo * 2, L.g_hi * 2);
      for (int vv = L.g_lo * 2; vv < L.g_hi * 2; ++vv) {  // dS = P (dP - Delta), P = exp2(S2 - L2), into dp
        const int at = vv * 8;
        const __m256 l2 = _mm256_load_ps(s.lvec + at), dl = _mm256_load_ps(s.dvec + at);
        for (int c = lo[vv / 2]; c < hi[vv / 2]; ++c) {
          const __m256 p = exp2_ps(_mm256_sub_ps(_mm256_load_ps(s.st + c * kLanes + at), l2));
          float* x = s.dp + c * kLanes + at;
          _mm256_store_ps(x, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_load_ps(x), dl)));
        }
      }
      if (bv.guard && L.masked) {  // NaN/Inf somewhere: only attended entries may touch dQ (no 0 * Inf)
        for (int c = 0; c < nc; ++c) {
          const uint64_t w = attended(L, c0 + c);
          for (int r = L.lane_lo; r < L.lane_hi; ++r)
            if ((w >> r) & 1) {
              const float ds = s.dp[c * kLanes + r];
              for (int64_t d = 0; d < D; ++d) s.a1[d * kLanes + r] += ds * s.p1[c][d];
            }
        }
      } else {
        for (int g = L.g_lo; g < L.g_hi; ++g)
          if (lo[g] < hi[g]) pv_block(s.p1 + lo[g], hi[g] - lo[g], s.dp + lo[g] * kLanes + g * 16, D, s.a1 + g * 16);
      }
    }
  }
  store_t(
      s.a1, bv.scale, R, RP, row_of, [](int) { return false; }, first_pass, bv.acc1, bv.ld1, bv.out1, b, h, s);
}

void backward_dkdv_subtile(const Plan& tplan, const SpanMasks& masks, int pass_index, const TileTask& task, int sub,
                           bool first_pass, const BackwardView& bv, BackwardScratch& s) {
  const int64_t D = s.D, Dp = s.Dp, N = bv.q->N();
  const int base = sub * kLanes;
  const int R = std::min(kLanes, task.row_count - base), RP = (R + 15) / 16 * 16;
  auto row_of = [&](int lane) { return task.row_begin + task.row_stride * int64_t(base + lane); };
  const int64_t b = bv.b, hk = bv.h;
  auto padded = [&](int r) { return row_of(r) >= bv.key_limit; };  // keys beyond key_lengths: zero gradients

  for (int64_t d = 0; d < Dp; ++d) {
    std::fill(s.a1 + d * kLanes, s.a1 + d * kLanes + RP, 0.0f);
    std::fill(s.a2 + d * kLanes, s.a2 + d * kLanes + RP, 0.0f);
  }
  bool any_key = false;
  for (int r = 0; r < R; ++r) any_key |= !padded(r);
  if (any_key) {
    load_t(*bv.k, b, hk, R, RP, row_of, bv.q_scale, s, s.t1);  // K^T in base-2 score units
    load_t(*bv.v, b, hk, R, RP, row_of, 1.0f, s, s.t2);        // V^T
  }
  const Pass& pass = tplan.passes[size_t(pass_index)];
  for (int32_t si = task.span_begin; si < task.span_end && any_key; ++si) {
    const KeySpan& span = pass.spans[size_t(si)];
    SpanLanes L;
    if (span.key_count <= 0 || !span_lanes(masks, pass_index, si, span, sub, base, R, L)) continue;
    for (int64_t c0 = 0; c0 < span.key_count; c0 += kKeyChunk) {
      const int nc = int(std::min<int64_t>(kKeyChunk, span.key_count - c0));
      int lo[kLanes / 16], hi[kLanes / 16];
      trim(L, c0, nc, lo, hi);
      for (int64_t u = 0; u < bv.group; ++u) {  // the group's query heads, in order
        const int64_t h = hk * bv.group + u, e0 = (b * bv.H + h) * N;
        for (int c = 0; c < nc; ++c) {
          const int64_t i = key_of(tplan, span, c0 + c);  // a query row attending these keys
          s.p1[c] = chunk_row(*bv.q, b, h, i, s.buf1 + c * Dp, D);
          s.p2[c] = chunk_row(*bv.dout, b, h, i, s.buf2 + c * Dp, D);
          s.lvec[c] = bv.L2[e0 + i], s.dvec[c] = bv.delta[e0 + i];
        }
        for (int g = L.g_lo; g < L.g_hi; ++g) {
          if (lo[g] >= hi[g]) continue;
          qk_block(s.p1 + lo[g], hi[g] - lo[g], s.t1 + g * 16, D, s.st + lo[g] * kLanes + g * 16);
          qk_block(s.p2 + lo[g], hi[g] - lo[g], s.t2 + g * 16, D, s.dp + lo[g] * kLanes + g * 16);
        }
        if (L.masked) apply_mask(s.st, L.words ? L.words + c0 : nullptr, L.rows, lo, hi, L.g_lo * 2, L.g_hi * 2);
        for (int vv = L.g_lo * 2; vv < L.g_hi * 2; ++vv) {  // P into st, dS into dp
          const int at = vv * 8;
          for (int c = lo[vv / 2]; c < hi[vv / 2]; ++c) {
            float *x = s.st + c * kLanes + at, *y = s.dp + c * kLanes + at;
            const __m256 p = exp2_ps(_mm256_sub_ps(_mm256_load_ps(x), _mm256_set1_ps(s.lvec[c])));
            _mm256_store_ps(x, p);
            _mm256_store_ps(y, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_load_ps(y), _mm256_set1_ps(s.dvec[c]))));
          }
        }
        if (bv.guard && L.masked) {  // NaN/Inf somewhere: only attended entries may touch dK, dV
          for (int c = 0; c < nc; ++c) {
            const uint64_t w = attended(L, c0 + c);
            for (int r = L.lane_lo; r < L.lane_hi; ++r)
              if ((w >> r) & 1) {
                const float p = s.st[c * kLanes + r], ds = s.dp[c * kLanes + r];
                for (int64_t d = 0; d < D; ++d)
                  s.a2[d * kLanes + r] += p * s.p2[c][d], s.a1[d * kLanes + r] += ds * s.p1[c][d];
              }
          }
        } else {
          for (int g = L.g_lo; g < L.g_hi; ++g) {
            if (lo[g] >= hi[g]) continue;
            pv_block(s.p2 + lo[g], hi[g] - lo[g], s.st + lo[g] * kLanes + g * 16, D, s.a2 + g * 16);
            pv_block(s.p1 + lo[g], hi[g] - lo[g], s.dp + lo[g] * kLanes + g * 16, D, s.a1 + g * 16);
          }
        }
      }
    }
  }
  store_t(s.a1, bv.scale, R, RP, row_of, padded, first_pass, bv.acc1, bv.ld1, bv.out1, b, hk, s);
  store_t(s.a2, 1.0f, R, RP, row_of, padded, first_pass, bv.acc2, bv.ld2, bv.out2, b, hk, s);
}

}  // namespace splat::cpu
