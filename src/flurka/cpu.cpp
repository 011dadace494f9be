// Fast CPU path: float32, OpenMP over heads (state) and over (head, query block) (outputs); inner loops run
// over contiguous D or m so the compiler vectorises them (-O3 -march=x86-64-v3).
//
// Every method reduces to one query-side form over L "slots" (features or projected keys):
//   out_i = sum_l p_il U_l / sum_l p_il
// softmax slots (favor, linformer): p_il = exp(a q_i.key_l + bias_l - max); weighted slots (relu, elu):
// p_il = g(q_i . key_l) zw_l. For kernel maps U_l = S_l / z_l (S = phi(K)^T V, z = phi(K)^T 1) and
// bias_l = c_l + log z_l, so values stay bounded and constants of phi(q) cancel in the ratio.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "flurka/common.hpp"
#include "flurka/cpu_state.hpp"
#include "splat/cpu_features.hpp"
#include "splat/error.hpp"

namespace splat {
using namespace flurka_detail;

namespace flurka_detail {

void project_rows(const float* P, int64_t rows, int64_t n, const float* X, int64_t D, float* out) {
  std::fill(out, out + rows * D, 0.0f);
  // Four rows of P per pass over X: X streams from memory rows / 4 times instead of rows times.
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    float *o0 = out + r * D, *o1 = o0 + D, *o2 = o1 + D, *o3 = o2 + D;
    const float *p0 = P + r * n, *p1 = p0 + n, *p2 = p1 + n, *p3 = p2 + n;
    for (int64_t j = 0; j < n; ++j) {
      const float e0 = p0[j], e1 = p1[j], e2 = p2[j], e3 = p3[j];
      const float* x = X + j * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const float xd = x[d];
        o0[d] += e0 * xd, o1[d] += e1 * xd, o2[d] += e2 * xd, o3[d] += e3 * xd;
      }
    }
  }
  for (; r < rows; ++r) {
    float* o = out + r * D;
    const float* p = P + r * n;
    for (int64_t j = 0; j < n; ++j) {
      const float e = p[j];
      const float* x = X + j * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) o[d] += e * x[d];
    }
  }
}

void key_features(FeatureMap fm, const float* x, int64_t D, const float* W, int64_t m, float* phi) {
  if (fm == FeatureMap::Elu) {
    for (int64_t d = 0; d < D; ++d) phi[d] = elu1(x[d]);
    return;
  }
  const float s = std::pow(float(D), -0.25f);
  float nrm = 0;
  std::fill(phi, phi + m, 0.0f);
  for (int64_t d = 0; d < D; ++d) {
    const float xs = s * x[d];
    nrm += xs * xs;
    const float* w = W + d * m;
#pragma omp simd
    for (int64_t l = 0; l < m; ++l) phi[l] += xs * w[l];
  }
  if (fm == FeatureMap::Favor) {
    for (int64_t l = 0; l < m; ++l) phi[l] -= nrm / 2;  // log phi (up to -log sqrt(m))
  } else {
    for (int64_t l = 0; l < m; ++l) phi[l] = std::max(phi[l], 0.0f);
  }
}

void add_state(FeatureMap fm, const float* phi, const float* y, int64_t m, int64_t D, float* S, float* z, float* c) {
  for (int64_t l = 0; l < m; ++l) {
    float p = phi[l];
    float* Sl = S + l * D;
    if (fm == FeatureMap::Favor) {  // online per-feature max: S_l, z_l are held relative to e^{c_l}
      if (p == -INFINITY) {
        p = 0.0f;  // phi = 0 exactly (still added: 0 * inf or 0 * NaN in y is NaN, as in the formula)
      } else {
        if (p > c[l] || p != p) {  // a NaN becomes the offset: everything after it stays NaN
          const float r = c[l] == -INFINITY ? 0.0f : std::exp(c[l] - p);
          z[l] *= r;
          for (int64_t d = 0; d < D; ++d) Sl[d] *= r;
          c[l] = p;
        }
        p = std::exp(p - c[l]);
      }
    }
    z[l] += p;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) Sl[d] += p * y[d];
  }
}

// Query-side log-weights (softmax slots) or weights (weighted slots) of one query against a head's slots.
void slot_weights(const HeadSlots& hs, const float* q, int64_t D, float* w) {
  const int64_t L = hs.L;
  if (hs.map == FeatureMap::Elu) {
    for (int64_t l = 0; l < L; ++l) w[l] = elu1(q[l]) * hs.zw[l];
    return;
  }
  std::fill(w, w + L, 0.0f);
  if (hs.map == FeatureMap::None) {  // keys are rows of Kp (L x D)
    for (int64_t l = 0; l < L; ++l) {
      const float* kr = hs.keys.data() + l * D;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < D; ++d) dot += q[d] * kr[d];
      w[l] = hs.a * dot;
    }
    return;
  }
  for (int64_t d = 0; d < D; ++d) {  // keys are W (D x L), row-major
    const float qd = hs.a * q[d];
    const float* wr = hs.keys.data() + d * L;
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) w[l] += qd * wr[l];
  }
  if (hs.map == FeatureMap::Favor) {
    for (int64_t l = 0; l < L; ++l) w[l] += hs.bias[l];
  } else {
    for (int64_t l = 0; l < L; ++l) w[l] = std::max(w[l], 0.0f) * hs.zw[l];
  }
}

HistoryKey history_key(const HeadSlots& hs, const float* q, int64_t D, float sfeat, float relu_div, float* w,
                       std::vector<float>& kv) {
  const int64_t m = hs.L;
  HistoryKey h;
  slot_weights(hs, q, D, w);
  if (hs.map == FeatureMap::Favor) {
    for (int64_t l = 0; l < m; ++l) h.mx = nan_max(h.mx, w[l]);
    for (int64_t l = 0; l < m; ++l) w[l] = h.mx == -INFINITY ? 0.0f : std::exp(w[l] - h.mx);
  }
  for (int64_t l = 0; l < m; ++l) {
    h.wsum += w[l];
    const float* u = &hs.U[size_t(l * D)];
    for (int64_t d = 0; d < D; ++d) kv[size_t(d)] += w[l] * u[d];
  }
  if (h.wsum != 0) {  // NaN too: la = NaN carries it into the row
    for (auto& x : kv) x /= h.wsum;
    if (hs.map == FeatureMap::Favor) {
      float n2 = 0;
      for (int64_t d = 0; d < D; ++d) n2 += (sfeat * q[d]) * (sfeat * q[d]);
      h.la = h.mx + std::log(h.wsum) - n2 / 2 - std::log(float(m));
    } else {
      h.la = std::log(h.wsum / relu_div);
    }
  }
  return h;
}

bool softmax_slots(FeatureMap fm) {
  return fm == FeatureMap::None || fm == FeatureMap::Favor;
}

void finalize_kernel_state(HeadSlots& hs, std::vector<float>& S, std::vector<float>& z, const std::vector<float>& c,
                           int64_t D) {
  hs.U.assign(S.size(), 0.0f);
  hs.bias.assign(static_cast<size_t>(hs.L), -INFINITY);
  hs.zw = z;
  for (int64_t l = 0; l < hs.L; ++l) {
    if (z[l] != 0) {  // NaN too: U and the bias become NaN and reach every query
      for (int64_t d = 0; d < D; ++d) hs.U[l * D + d] = S[l * D + d] / z[l];
      if (hs.map == FeatureMap::Favor) hs.bias[l] = c[l] + std::log(z[l]);
    } else {  // no key feeds slot l (weight 0); S_l is 0 unless a value was inf/NaN, which 0 * S_l keeps
      for (int64_t d = 0; d < D; ++d) hs.U[l * D + d] = S[l * D + d];
    }
  }
}

void build_head_slots(FlurkaMethod method, const FlurkaInputs& in, const FlurkaShape& s, int64_t b, int64_t h,
                      HeadSlots& hs) {
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D;
  std::vector<float> K, V, E, F, W;
  load_head(in.k, b, h, K);
  load_head(in.v, b, h, V);
  if (uses_projection(method)) {
    load_matrix(in.e, h, E);
    load_matrix(in.f, h, F);
    hs.Kp.resize(static_cast<size_t>(s.k * D));
    hs.Vp.resize(static_cast<size_t>(s.k * D));
    project_rows(E.data(), s.k, s.N, K.data(), D, hs.Kp.data());
    project_rows(F.data(), s.k, s.N, V.data(), D, hs.Vp.data());
  } else {
    hs.Kp = std::move(K), hs.Vp = std::move(V);
  }
  const int64_t L = uses_projection(method) ? s.k : s.N;
  const float *X = hs.Kp.data(), *Y = hs.Vp.data();
  hs.map = fm;
  if (fm == FeatureMap::None) {
    hs.L = L, hs.a = 1.0f / std::sqrt(float(D));
    hs.keys.assign(X, X + L * D);
    hs.U.assign(Y, Y + L * D);
    hs.bias.assign(static_cast<size_t>(L), 0.0f);
    return;
  }
  const int64_t m = s.m;
  hs.L = m, hs.a = fm == FeatureMap::Elu ? 1.0f : std::pow(float(D), -0.25f);
  hs.c.assign(static_cast<size_t>(m), fm == FeatureMap::Favor ? -INFINITY : 0.0f);
  if (fm != FeatureMap::Elu) {
    load_matrix(in.w, h, W);
    hs.keys = W;
  }
  std::vector<float> S(static_cast<size_t>(m * D), 0.0f), z(static_cast<size_t>(m), 0.0f), phi(static_cast<size_t>(m));
  for (int64_t j = 0; j < L; ++j) {
    key_features(fm, X + j * D, D, W.data(), m, phi.data());
    add_state(fm, phi.data(), Y + j * D, m, D, S.data(), z.data(), hs.c.data());
  }
  finalize_kernel_state(hs, S, z, hs.c, D);
}

}  // namespace flurka_detail

void flurka_cpu(FlurkaMethod method, const FlurkaInputs& in, const TensorView& out, const FlurkaOptions& opt) {
  const FlurkaShape s = check_flurka_args(method, in, out);
  const int threads = call_threads(opt.threads, s);
  require(out.device < 0, "flurka_cpu needs host tensors (device = -1)");
  if (in.q.dtype == DType::F64) return flurka_reference(method, in, out);  // float64 is computed in float64
  require_x86_64_v3("flurka_cpu");                                         // the fast path is built for x86-64-v3
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D, BH = s.B * s.H;
  std::vector<HeadSlots> slots(static_cast<size_t>(BH));
  RegionErrors errors;

  // Phase 1: per head, project (E K, F V) and reduce to slots.
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t bh = 0; bh < BH; ++bh)
    errors.guard([&] {
      HeadSlots& hs = slots[static_cast<size_t>(bh)];
      build_head_slots(method, in, s, bh / s.H, bh % s.H, hs);
      std::vector<float>().swap(hs.Kp), std::vector<float>().swap(hs.Vp);  // only the backward needs them
    });
  errors.rethrow();

  // Phase 2: queries in blocks of 32 rows.
  constexpr int64_t kRows = 32;
  const int64_t nblk = (s.Nq + kRows - 1) / kRows;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < BH * nblk; ++t)
    errors.guard([&] {
      const int64_t bh = t / nblk, i0 = (t % nblk) * kRows, i1 = std::min(s.Nq, i0 + kRows);
      const int64_t b = bh / s.H, h = bh % s.H;
      const HeadSlots& hs = slots[static_cast<size_t>(bh)];
      std::vector<float> q(static_cast<size_t>(D)), w(static_cast<size_t>(hs.L)), row(static_cast<size_t>(D));
      for (int64_t i = i0; i < i1; ++i) {
        const size_t o = in.q.offset(b, h, i);
        for (int64_t d = 0; d < D; ++d) q[d] = load_element(in.q.data, in.q.dtype, o + d);
        slot_weights(hs, q.data(), D, w.data());
        if (softmax_slots(fm)) {
          float mx = -INFINITY;
          for (float x : w) mx = nan_max(mx, x);
          for (auto& x : w) x = mx == -INFINITY ? 0.0f : std::exp(x - mx);
        }
        float den = 0;
        std::fill(row.begin(), row.end(), 0.0f);
        for (int64_t l = 0; l < hs.L; ++l) {
          const float p = w[l];
          den += p;
          const float* u = hs.U.data() + l * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) row[d] += p * u[d];
        }
        for (auto& x : row) x = den != 0 ? x / den : 0.0f;  // NaN den: NaN row
        store_row(out, b, h, i, row.data());
      }
    });
  errors.rethrow();
}

}  // namespace splat
