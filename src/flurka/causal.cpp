// Causal FLuRKA: chunked causal projection (fast float path) and the recurrent decode step (float64 state).
// Formula: docs/FLURKA.md and include/splat/flurka.hpp.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common/int_math.hpp"
#include "flurka/common.hpp"
#include "flurka/cpu_state.hpp"
#include "splat/error.hpp"

namespace splat {
using namespace flurka_detail;

void flurka_causal_cpu(FlurkaMethod method, const FlurkaInputs& in, const TensorView& out, int64_t C,
                       const FlurkaOptions& opt) {
  require(C >= 1, "the causal chunk length C must be >= 1");
  const FlurkaShape s = check_flurka_args(method, in, out, C);
  const int threads = call_threads(opt.threads, s);
  require(out.device < 0, "flurka_causal_cpu needs host tensors (device = -1)");
  if (in.q.dtype == DType::F64) return flurka_causal_reference(method, in, out, C);  // float64 in float64
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D, m = s.m, r = s.k, N = s.N, BH = s.B * s.H;
  const float sc_q = 1.0f / std::sqrt(float(D)), sfeat = std::pow(float(D), -0.25f);
  // Constant that turns slot_weights' output into log phi(q).z (favor) or phi(q).z (relu) with the 1/sqrt(m)s.
  const float relu_div = fm == FeatureMap::Relu ? float(m) : 1.0f;
  RegionErrors errors;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t bh = 0; bh < BH; ++bh)
    errors.guard([&] {
      const int64_t b = bh / s.H, h = bh % s.H;
      HeadInputs<float> x;
      load_head_inputs(method, in, b, h, x);  // causal methods all project (check_flurka_args)
      const auto& [Q, K, V, E, F, W] = x;
      std::vector<float> c(static_cast<size_t>(m), fm == FeatureMap::Favor ? -INFINITY : 0.0f),
          Kp(static_cast<size_t>(r * D)), Vp(static_cast<size_t>(r * D));
      std::vector<float> S(static_cast<size_t>(m * D), 0.0f), z(static_cast<size_t>(m), 0.0f), Sc, zc,
          phi(static_cast<size_t>(m)), w(static_cast<size_t>(m));
      std::vector<float> sc(static_cast<size_t>(C)), row(static_cast<size_t>(D)), kv(static_cast<size_t>(D));
      HeadSlots hs;
      hs.map = fm, hs.L = m, hs.a = fm == FeatureMap::Elu ? 1.0f : sfeat, hs.keys = W;
      for (int64_t c0 = 0; c0 < N; c0 += C) {
        const int64_t c1 = std::min(N, c0 + C);
        Sc = S, zc = z;
        finalize_kernel_state(hs, Sc, zc, c, D);
        for (int64_t i = c0; i < c1; ++i) {
          const float* q = &Q[i * D];
          // Kernel part as one virtual key: log-weight la, value kv.
          float la = -INFINITY;
          std::fill(kv.begin(), kv.end(), 0.0f);
          if (c0 > 0) la = history_key(hs, q, D, sfeat, relu_div, w.data(), kv).la;
          float M = la;
          for (int64_t j = c0; j <= i; ++j) {
            float dot = 0;
            const float* kj = &K[j * D];
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < D; ++d) dot += q[d] * kj[d];
            sc[j - c0] = dot * sc_q;
            M = nan_max(M, sc[j - c0]);
          }
          const float pa = la == -INFINITY ? 0.0f : std::exp(la - M);
          float den = pa;
          for (int64_t d = 0; d < D; ++d) row[d] = pa * kv[d];
          for (int64_t j = c0; j <= i; ++j) {
            const float p = std::exp(sc[j - c0] - M);
            den += p;
            const float* vj = &V[j * D];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) row[d] += p * vj[d];
          }
          for (auto& x : row) x /= den;
          store_row(out, b, h, i, row.data());
        }
        if (c1 - c0 == C) {
          project_rows(E.data(), r, C, &K[c0 * D], D, Kp.data());
          project_rows(F.data(), r, C, &V[c0 * D], D, Vp.data());
          for (int64_t j = 0; j < r; ++j) {
            key_features(fm, &Kp[j * D], D, W.data(), m, phi.data());
            add_state(fm, phi.data(), &Vp[j * D], m, D, S.data(), z.data(), c.data());
          }
        }
      }
    });
  errors.rethrow();
}

// ---- Decoding ----

FlurkaDecodeState flurka_decode_init(FlurkaMethod method, int64_t B, int64_t H, int64_t D, int64_t C,
                                     const MatrixView& e, const MatrixView& f, const MatrixView& w) {
  require(B >= 1 && H >= 1 && D >= 1, "decode: B, H and D must be positive");
  require(C >= 1, "decode: the chunk length C must be >= 1");
  // Validate E/F/W through the causal argument check with a dummy one-token view.
  std::vector<float> dummy(static_cast<size_t>(D));
  FlurkaInputs in;
  in.q = in.k = in.v = contiguous_view(dummy.data(), DType::F32, 1, H, 1, D);
  in.q.stride[0] = in.q.stride[1] = 0;
  in.k = in.v = in.q;
  in.e = e, in.f = f, in.w = w;
  const FlurkaShape s = check_flurka_args(method, in, in.q, C);
  checked_bytes({B, H, std::max<int64_t>(s.m, C), D}, 8, "decode state [B, H, max(m, C), D]");
  FlurkaDecodeState st;
  st.method = method, st.B = B, st.H = H, st.D = D, st.m = s.m, st.r = s.k, st.C = C;
  st.S.assign(static_cast<size_t>(B * H * s.m * D), 0.0);
  st.z.assign(static_cast<size_t>(B * H * s.m), 0.0);
  st.ck.assign(static_cast<size_t>(B * H * C * D), 0.0);
  st.cv.assign(static_cast<size_t>(B * H * C * D), 0.0);
  st.He = e.heads;
  auto copy = [](const MatrixView& x, std::vector<double>& dst) {
    dst.resize(static_cast<size_t>(x.heads * x.rows * x.cols));
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = load_element(x.data, x.dtype, i);
  };
  copy(e, st.E);
  copy(f, st.F);
  if (uses_random_features(method)) {
    copy(w, st.W);
    st.Hw = w.heads;
  }
  return st;
}

void flurka_decode_step(FlurkaDecodeState& st, const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out) {
  const int64_t B = st.B, H = st.H, D = st.D, m = st.m, r = st.r, C = st.C;
  for (const TensorView* t : {&q, &k, &v, &out}) {
    require(t->B() == B && t->H() == H && t->N() == 1 && t->D() == D,
            "decode: q, k, v and out must be [B, H, 1, D] = [" + std::to_string(B) + ", " + std::to_string(H) +
                ", 1, " + std::to_string(D) + "]");
    require(t->device < 0 && t->data != nullptr, "decode: tensors must be host views with data");
    require(t->stride[3] == 1, "decode: D must be contiguous");
  }
  const FeatureMap fm = feature_map_of(st.method);
  const int64_t slot = st.pos % C;
  const double isd = 1.0 / std::sqrt(double(D));
  RegionErrors errors;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      errors.guard([&] {
        const int64_t bh = b * H + h;
        double* ck = &st.ck[static_cast<size_t>(bh * C * D)];
        double* cv = &st.cv[static_cast<size_t>(bh * C * D)];
        double* S = &st.S[static_cast<size_t>(bh * m * D)];
        double* z = &st.z[static_cast<size_t>(bh * m)];
        const double* W = st.W.empty() ? nullptr : &st.W[static_cast<size_t>((st.Hw == 1 ? 0 : h) * D * m)];
        std::vector<double> qd(static_cast<size_t>(D)), phi(static_cast<size_t>(std::max(m, r))),
            row(static_cast<size_t>(D), 0.0);
        for (int64_t d = 0; d < D; ++d) {
          qd[d] = load_element(q.data, q.dtype, q.offset(b, h, 0) + d);
          ck[slot * D + d] = load_element(k.data, k.dtype, k.offset(b, h, 0) + d);
          cv[slot * D + d] = load_element(v.data, v.dtype, v.offset(b, h, 0) + d);
        }
        double den = 0;
        if (st.pos >= C) {  // O(m D): phi(q) against the state of the finished chunks
          phi_row(fm, qd.data(), D, W, m, phi.data());
          for (int64_t l = 0; l < m; ++l) {
            den += phi[l] * z[l];
            for (int64_t d = 0; d < D; ++d) row[d] += phi[l] * S[l * D + d];
          }
        }
        for (int64_t j = 0; j <= slot; ++j) {  // O(C D): exact softmax inside the current chunk
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qd[d] * ck[j * D + d];
          const double p = std::exp(dot * isd);
          den += p;
          for (int64_t d = 0; d < D; ++d) row[d] += p * cv[j * D + d];
        }
        for (int64_t d = 0; d < D; ++d)
          store_element(out.data, out.dtype, out.offset(b, h, 0) + d, float(row[d] / den));
        if (slot == C - 1) {  // chunk complete: compress to r rows and fold into the state
          const double* E = &st.E[static_cast<size_t>((st.He == 1 ? 0 : h) * r * C)];
          const double* F = &st.F[static_cast<size_t>((st.He == 1 ? 0 : h) * r * C)];
          std::vector<double> kp(static_cast<size_t>(D)), vp(static_cast<size_t>(D)), ph(static_cast<size_t>(m));
          for (int64_t i = 0; i < r; ++i) {
            std::fill(kp.begin(), kp.end(), 0.0);
            std::fill(vp.begin(), vp.end(), 0.0);
            for (int64_t j = 0; j < C; ++j)
              for (int64_t d = 0; d < D; ++d) {
                kp[d] += E[i * C + j] * ck[j * D + d];
                vp[d] += F[i * C + j] * cv[j * D + d];
              }
            phi_row(fm, kp.data(), D, W, m, ph.data());
            for (int64_t l = 0; l < m; ++l) {
              z[l] += ph[l];
              for (int64_t d = 0; d < D; ++d) S[l * D + d] += ph[l] * vp[d];
            }
          }
        }
      });
  errors.rethrow();
  st.pos += 1;
}

}  // namespace splat
