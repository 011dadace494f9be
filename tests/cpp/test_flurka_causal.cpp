// Causal FLuRKA: fast path vs the float64 reference, the reference vs a direct evaluation of the formula
// (one output row built from scratch), and the decode step vs the causal prefix results.
#include <gtest/gtest.h>

#include "test_flurka_util.hpp"

using namespace flurka_test;

namespace {

const FlurkaMethod kCausal[] = {FlurkaMethod::FlurkaFavor, FlurkaMethod::FlurkaElu, FlurkaMethod::FlurkaRelu};

// out_i straight from docs/FLURKA.md: phi of every earlier full chunk's compressed keys, exact in-chunk part.
std::vector<double> direct_row(const Problem& p, FlurkaMethod method, int64_t b, int64_t h, int64_t i) {
  const Case& c = p.c;
  const int64_t D = c.D, C = c.chunk, r = c.k, He = c.shared ? 0 : h;
  const FeatureMap fm = feature_map_of(method);
  const int64_t m = fm == FeatureMap::Elu ? D : c.m;
  auto at = [&](const Buf& t, int64_t n, int64_t d) {
    return double(t.get(size_t(((b * c.H + h) * c.N + n) * D + d)));
  };
  auto phi = [&](const std::vector<double>& x) {
    std::vector<double> f(static_cast<size_t>(m));
    const double s = std::pow(double(D), -0.25);
    double nrm = 0;
    for (int64_t d = 0; d < D; ++d) nrm += s * s * x[d] * x[d];
    for (int64_t l = 0; l < m; ++l) {
      if (fm == FeatureMap::Elu) {
        f[l] = x[l] > 0 ? x[l] + 1 : std::exp(x[l]);
        continue;
      }
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += s * x[d] * p.w.get(size_t((He * D + d) * c.m + l));
      f[l] = (fm == FeatureMap::Favor ? std::exp(dot - nrm / 2) : std::max(dot, 0.0)) / std::sqrt(double(m));
    }
    return f;
  };
  std::vector<double> q(static_cast<size_t>(D)), num(static_cast<size_t>(D), 0.0);
  for (int64_t d = 0; d < D; ++d) q[d] = double(p.q.get(size_t(((b * c.H + h) * c.N + i) * D + d)));
  const std::vector<double> fq = phi(q);
  double den = 0;
  const int64_t ci = i / C;
  for (int64_t cc = 0; cc < ci; ++cc)
    for (int64_t row = 0; row < r; ++row) {
      std::vector<double> kp(static_cast<size_t>(D), 0.0), vp(static_cast<size_t>(D), 0.0);
      for (int64_t j = 0; j < C; ++j)
        for (int64_t d = 0; d < D; ++d) {
          kp[d] += double(p.e.get(size_t((He * r + row) * C + j))) * at(p.k, cc * C + j, d);
          vp[d] += double(p.f.get(size_t((He * r + row) * C + j))) * at(p.v, cc * C + j, d);
        }
      const std::vector<double> fk = phi(kp);
      double w = 0;
      for (int64_t l = 0; l < m; ++l) w += fq[l] * fk[l];
      den += w;
      for (int64_t d = 0; d < D; ++d) num[d] += w * vp[d];
    }
  for (int64_t j = ci * C; j <= i; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += q[d] * at(p.k, j, d);
    const double w = std::exp(dot / std::sqrt(double(D)));
    den += w;
    for (int64_t d = 0; d < D; ++d) num[d] += w * at(p.v, j, d);
  }
  for (auto& x : num) x /= den;
  return num;
}

TEST(FlurkaCausal, ReferenceMatchesDirectFormula) {
  for (FlurkaMethod method : kCausal) {
    Case c{1, 2, 45, 45, 8, 3, 6};
    c.chunk = 10;
    Problem p = make_problem(c, 31);
    flurka_causal_reference(method, p.in, p.ref_view, c.chunk);
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t i : {0, 5, 9, 10, 19, 27, 44}) {
        const std::vector<double> row = direct_row(p, method, 0, h, i);
        for (int64_t d = 0; d < c.D; ++d)
          EXPECT_NEAR(p.ref.get(size_t((h * c.N + i) * c.D + d)), row[d], 1e-5 * (1 + std::abs(row[d])))
              << flurka_method_name(method) << " h=" << h << " i=" << i;
      }
  }
}

TEST(FlurkaCausal, FastMatchesReference) {
  uint32_t seed = 50;
  for (FlurkaMethod method : kCausal)
    for (DType t : {DType::F32, DType::BF16})
      for (bool shared : {false, true}) {
        Case c{2, 2, 100, 100, 16, 4, 12};
        c.chunk = 16, c.dtype = t, c.shared = shared;
        Problem p = make_problem(c, seed++);
        flurka_causal_reference(method, p.in, p.ref_view, c.chunk);
        flurka_causal_cpu(method, p.in, p.out_view, c.chunk);
        EXPECT_LE(rel_err(p.out, p.ref), 2 * storage_err(p.ref, t) + 2e-5)
            << flurka_method_name(method) << " " << dtype_name(t) << (shared ? " shared" : "");
      }
}

TEST(FlurkaCausal, DecodeStepsEqualCausalPrefix) {
  for (FlurkaMethod method : kCausal) {
    Case c{2, 3, 37, 37, 8, 3, 10};
    c.chunk = 8;
    Problem p = make_problem(c, 77);
    flurka_causal_reference(method, p.in, p.ref_view, c.chunk);
    FlurkaDecodeState st = flurka_decode_init(method, c.B, c.H, c.D, c.chunk, p.in.e, p.in.f, p.in.w);
    std::vector<float> o(size_t(c.B * c.H * c.D));
    double worst = 0;
    for (int64_t t = 0; t < c.N; ++t) {
      auto step_view = [&](const TensorView& full) {
        TensorView v = full;
        v.data = static_cast<char*>(full.data) + size_t(t * full.stride[2]) * dtype_size(full.dtype);
        v.shape[2] = 1;
        return v;
      };
      std::fill(o.begin(), o.end(), NAN);
      TensorView ov = contiguous_view(o.data(), DType::F32, c.B, c.H, 1, c.D);
      flurka_decode_step(st, step_view(p.in.q), step_view(p.in.k), step_view(p.in.v), ov);
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t d = 0; d < c.D; ++d) {
            const double want = p.ref.get(size_t(((b * c.H + h) * c.N + t) * c.D + d));
            const double got = o[size_t((b * c.H + h) * c.D + d)];
            ASSERT_TRUE(std::isfinite(got));
            worst = std::max(worst, std::abs(got - want) / (1 + std::abs(want)));
          }
    }
    EXPECT_LE(worst, 1e-6) << flurka_method_name(method);
    EXPECT_EQ(st.pos, c.N);
  }
}

TEST(FlurkaCausal, UnsupportedMethodsAndBadChunks) {
  Case c{1, 1, 20, 20, 8, 4, 4};
  c.chunk = 8;
  Problem p = make_problem(c, 3);
  EXPECT_THROW(flurka_causal_cpu(FlurkaMethod::Linformer, p.in, p.out_view, 8), splat::Error);
  EXPECT_THROW(flurka_causal_cpu(FlurkaMethod::PerformerFavor, p.in, p.out_view, 8), splat::Error);
  EXPECT_THROW(flurka_causal_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 0), splat::Error);
  EXPECT_THROW(flurka_causal_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 9), splat::Error);  // E is [r, 8]
  EXPECT_THROW(flurka_causal_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 2), splat::Error);  // r = 4 > C
}

}  // namespace
