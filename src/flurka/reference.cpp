// float64 oracles: the normative formulas evaluated literally, no stabilisation beyond softmax's max.
#include <cmath>
#include <vector>

#include "flurka/common.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
using namespace flurka_detail;

namespace {

// phi of the n x D rows of x into n x m (favor, relu: W is D x m; elu: m = D).
void feature_map(FeatureMap fm, const std::vector<double>& x, int64_t n, int64_t D, const std::vector<double>& W,
                 int64_t m, std::vector<double>& phi) {
  phi.assign(static_cast<size_t>(n * m), 0.0);
  for (int64_t i = 0; i < n; ++i) phi_row(fm, &x[i * D], D, W.data(), m, &phi[i * m]);
}

// rows x N matrix times N x D -> rows x D.
void project(const std::vector<double>& P, int64_t rows, int64_t N, const double* X, int64_t D,
             std::vector<double>& out) {
  out.assign(static_cast<size_t>(rows * D), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < N; ++j) {
      const double e = P[r * N + j];
      for (int64_t d = 0; d < D; ++d) out[r * D + d] += e * X[j * D + d];
    }
}

// S = phi^T Y (m x D), z = phi^T 1, accumulated.
void accumulate_state(const std::vector<double>& phi, const double* Y, int64_t n, int64_t m, int64_t D,
                      std::vector<double>& S, std::vector<double>& z) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t l = 0; l < m; ++l) {
      const double p = phi[j * m + l];
      z[l] += p;
      for (int64_t d = 0; d < D; ++d) S[l * D + d] += p * Y[j * D + d];
    }
}

}  // namespace

void flurka_reference(FlurkaMethod method, const FlurkaInputs& in, const TensorView& out) {
  const FlurkaShape s = check_flurka_args(method, in, out);
  require(out.device < 0, "flurka_reference needs host tensors");
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D, m = s.m;
  RegionErrors errors;
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(call_threads(0, s))
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      errors.guard([&] {
        HeadInputs<double> x;
        load_head_inputs(method, in, b, h, x);
        const auto& [Q, K, V, E, F, W] = x;
        std::vector<double> Kp, Vp, phiK, phiQ, row(static_cast<size_t>(D));
        const double *X = K.data(), *Y = V.data();
        int64_t L = s.N;
        if (uses_projection(method)) {
          project(E, s.k, s.N, K.data(), D, Kp);
          project(F, s.k, s.N, V.data(), D, Vp);
          X = Kp.data(), Y = Vp.data(), L = s.k;
        }
        if (fm == FeatureMap::None) {  // linformer: softmax over the k projected keys
          std::vector<double> sc(static_cast<size_t>(L));
          for (int64_t i = 0; i < s.Nq; ++i) {
            double mx = -INFINITY, den = 0;
            for (int64_t j = 0; j < L; ++j) {
              double dot = 0;
              for (int64_t d = 0; d < D; ++d) dot += Q[i * D + d] * X[j * D + d];
              sc[j] = dot / std::sqrt(double(D));
              mx = std::max(mx, sc[j]);
            }
            std::fill(row.begin(), row.end(), 0.0);
            for (int64_t j = 0; j < L; ++j) {
              const double p = std::exp(sc[j] - mx);
              den += p;
              for (int64_t d = 0; d < D; ++d) row[d] += p * Y[j * D + d];
            }
            for (auto& x : row) x /= den;
            store_row(out, b, h, i, row.data());
          }
          return;
        }
        std::vector<double> Xv(X, X + L * D);
        feature_map(fm, Xv, L, D, W, m, phiK);
        feature_map(fm, Q, s.Nq, D, W, m, phiQ);
        std::vector<double> S(static_cast<size_t>(m * D), 0.0), z(static_cast<size_t>(m), 0.0);
        accumulate_state(phiK, Y, L, m, D, S, z);
        for (int64_t i = 0; i < s.Nq; ++i) {
          double den = 0;
          std::fill(row.begin(), row.end(), 0.0);
          for (int64_t l = 0; l < m; ++l) {
            const double p = phiQ[i * m + l];
            den += p * z[l];
            for (int64_t d = 0; d < D; ++d) row[d] += p * S[l * D + d];
          }
          for (auto& x : row) x = den != 0 ? x / den : 0.0;
          store_row(out, b, h, i, row.data());
        }
      });
  errors.rethrow();
}

void flurka_causal_reference(FlurkaMethod method, const FlurkaInputs& in, const TensorView& out, int64_t C) {
  require(C >= 1, "the causal chunk length C must be >= 1");
  const FlurkaShape s = check_flurka_args(method, in, out, C);
  require(out.device < 0, "flurka_causal_reference needs host tensors");
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D, m = s.m, r = s.k, N = s.N;
  RegionErrors errors;
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(call_threads(0, s))
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      errors.guard([&] {
        HeadInputs<double> x;
        load_head_inputs(method, in, b, h, x);
        const auto& [Q, K, V, E, F, W] = x;
        std::vector<double> Kp, Vp, phiK, phiQ, row(static_cast<size_t>(D));
        feature_map(fm, Q, N, D, W, m, phiQ);
        std::vector<double> S(static_cast<size_t>(m * D), 0.0), z(static_cast<size_t>(m), 0.0);
        for (int64_t c0 = 0; c0 < N; c0 += C) {
          const int64_t c1 = std::min(N, c0 + C);
          for (int64_t i = c0; i < c1; ++i) {
            double den = 0;
            std::fill(row.begin(), row.end(), 0.0);
            for (int64_t l = 0; l < m; ++l) {
              const double p = phiQ[i * m + l];
              den += p * z[l];
              for (int64_t d = 0; d < D; ++d) row[d] += p * S[l * D + d];
            }
            for (int64_t j = c0; j <= i; ++j) {
              double dot = 0;
              for (int64_t d = 0; d < D; ++d) dot += Q[i * D + d] * K[j * D + d];
              const double p = std::exp(dot / std::sqrt(double(D)));
              den += p;
              for (int64_t d = 0; d < D; ++d) row[d] += p * V[j * D + d];
            }
            for (auto& x : row) x /= den;
            store_row(out, b, h, i, row.data());
          }
          if (c1 - c0 == C) {  // a full chunk joins the state of the chunks after it
            project(E, r, C, &K[c0 * D], D, Kp);
            project(F, r, C, &V[c0 * D], D, Vp);
            feature_map(fm, Kp, r, D, W, m, phiK);
            accumulate_state(phiK, Vp.data(), r, m, D, S, z);
          }
        }
      });
  errors.rethrow();
}

}  // namespace splat
