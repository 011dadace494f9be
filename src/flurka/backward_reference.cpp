// float64 backward oracles: the chain rule through the literal formulas of include/splat/flurka.hpp (the only
// stabiliser is softmax's max, a constant). Per head: Q, K, V -> (E K, F V) -> phi / softmax -> out.
#include <omp.h>

#include <cmath>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/backward_common.hpp"
#include "flurka/common.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
using namespace flurka_detail;

namespace {

using Vec = std::vector<double>;

// dx = J_phi(x)^T dphi for one row (favor: phi_l (s W_l - s^2 x); relu: 1[s x.W_l > 0] s W_l / sqrt(m);
// elu: elu'(x) + 0). phi: the row's features (favor only).
void phi_backward_row(FeatureMap fm, const double* x, int64_t D, const double* W, int64_t m, const double* phi,
                      const double* dphi, double* dx) {
  if (fm == FeatureMap::Elu) {
    for (int64_t d = 0; d < D; ++d) dx[d] = dphi[d] * (x[d] > 0 ? 1.0 : std::exp(x[d]));
    return;
  }
  const double s = std::pow(double(D), -0.25);
  for (int64_t d = 0; d < D; ++d) dx[d] = 0;
  for (int64_t l = 0; l < m; ++l) {
    if (fm == FeatureMap::Favor) {
      const double g = dphi[l] * phi[l];
      for (int64_t d = 0; d < D; ++d) dx[d] += g * (s * W[d * m + l] - s * s * x[d]);
    } else {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += s * x[d] * W[d * m + l];
      const double g = dot > 0 ? dphi[l] * s / std::sqrt(double(m)) : 0.0;
      for (int64_t d = 0; d < D; ++d) dx[d] += g * W[d * m + l];
    }
  }
}

// rows x n times n x D; and its transpose-side: P^T (rows x n)^T times rows x D -> n x D.
void matmul(const double* P, int64_t rows, int64_t n, const double* X, int64_t D, Vec& out) {
  out.assign(size_t(rows * D), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < D; ++d) out[r * D + d] += P[r * n + j] * X[j * D + d];
}
void matmul_t(const double* P, int64_t rows, int64_t n, const double* Y, int64_t D, double* out) {  // out += P^T Y
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < D; ++d) out[j * D + d] += P[r * n + j] * Y[r * D + d];
}
// out[r, j] += A[r, :] . X[j, :] (A rows x D, X n x D)
void add_outer(const double* A, int64_t rows, const double* X, int64_t n, int64_t D, double* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t d = 0; d < D; ++d) acc += A[r * D + d] * X[j * D + d];
      out[r * n + j] += acc;
    }
}

void features(FeatureMap fm, const Vec& x, int64_t n, int64_t D, const Vec& W, int64_t m, Vec& phi) {
  phi.assign(size_t(n * m), 0.0);
  for (int64_t i = 0; i < n; ++i) phi_row(fm, &x[i * D], D, W.data(), m, &phi[i * m]);
}

// The kernel part's backward given dphiK (L x m) for keys X (L x D) and the map: dX.
void keys_backward(FeatureMap fm, const Vec& X, int64_t L, int64_t D, const Vec& W, int64_t m, const Vec& phiK,
                   const Vec& dphiK, Vec& dX) {
  dX.assign(size_t(L * D), 0.0);
  for (int64_t j = 0; j < L; ++j)
    phi_backward_row(fm, &X[j * D], D, W.data(), m, &phiK[j * m], &dphiK[j * m], &dX[j * D]);
}

struct HeadGrad {
  Vec dQ, dK, dV, dKp, dVp;  // dKp, dVp: projected methods
};

void head_backward(FlurkaMethod method, const FlurkaShape& s, const HeadInputs<double>& x, const Vec& dO, HeadGrad& g) {
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D, Nq = s.Nq, m = s.m;
  const bool proj = uses_projection(method);
  const int64_t L = proj ? s.k : s.N;
  Vec Kp, Vp;
  if (proj) matmul(x.E.data(), s.k, s.N, x.K.data(), D, Kp), matmul(x.F.data(), s.k, s.N, x.V.data(), D, Vp);
  const Vec& X = proj ? Kp : x.K;
  const Vec& Y = proj ? Vp : x.V;
  const Vec& Q = x.Q;
  Vec dX(size_t(L * D), 0.0), dY(size_t(L * D), 0.0);
  g.dQ.assign(size_t(Nq * D), 0.0);
  if (fm == FeatureMap::None) {  // linformer: softmax over the L projected keys
    const double isd = 1.0 / std::sqrt(double(D));
    Vec P(static_cast<size_t>(L)), o(static_cast<size_t>(D));
    for (int64_t i = 0; i < Nq; ++i) {
      double mx = -INFINITY, den = 0;
      for (int64_t j = 0; j < L; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += Q[i * D + d] * X[j * D + d];
        P[j] = dot * isd;
        mx = std::max(mx, P[j]);
      }
      for (int64_t j = 0; j < L; ++j) den += (P[j] = std::exp(P[j] - mx));
      for (int64_t j = 0; j < L; ++j) P[j] /= den;
      std::fill(o.begin(), o.end(), 0.0);
      for (int64_t j = 0; j < L; ++j)
        for (int64_t d = 0; d < D; ++d) o[d] += P[j] * Y[j * D + d];
      double delta = 0;
      for (int64_t d = 0; d < D; ++d) delta += dO[i * D + d] * o[d];
      for (int64_t j = 0; j < L; ++j) {
        double dp = 0;
        for (int64_t d = 0; d < D; ++d) dp += dO[i * D + d] * Y[j * D + d];
        const double ds = P[j] * (dp - delta) * isd;
        for (int64_t d = 0; d < D; ++d) {
          g.dQ[i * D + d] += ds * X[j * D + d];
          dX[j * D + d] += ds * Q[i * D + d];
          dY[j * D + d] += P[j] * dO[i * D + d];
        }
      }
    }
  } else {
    Vec phiQ, phiK;
    features(fm, Q, Nq, D, x.W, m, phiQ);
    features(fm, X, L, D, x.W, m, phiK);
    Vec S(size_t(m * D), 0.0), z(size_t(m), 0.0), dS(size_t(m * D), 0.0), dz(size_t(m), 0.0);
    for (int64_t j = 0; j < L; ++j)
      for (int64_t l = 0; l < m; ++l) {
        z[l] += phiK[j * m + l];
        for (int64_t d = 0; d < D; ++d) S[l * D + d] += phiK[j * m + l] * Y[j * D + d];
      }
    Vec num(static_cast<size_t>(D)), dnum(static_cast<size_t>(D)), dphi(static_cast<size_t>(m));
    for (int64_t i = 0; i < Nq; ++i) {
      const double* pq = &phiQ[i * m];
      double den = 0;
      std::fill(num.begin(), num.end(), 0.0);
      for (int64_t l = 0; l < m; ++l) {
        den += pq[l] * z[l];
        for (int64_t d = 0; d < D; ++d) num[d] += pq[l] * S[l * D + d];
      }
      if (den == 0) continue;  // out = 0 (a constant): no gradient
      double dden = 0;
      for (int64_t d = 0; d < D; ++d) dnum[d] = dO[i * D + d] / den, dden -= dO[i * D + d] * num[d] / (den * den);
      for (int64_t l = 0; l < m; ++l) {
        double acc = z[l] * dden;
        for (int64_t d = 0; d < D; ++d) acc += S[l * D + d] * dnum[d], dS[l * D + d] += pq[l] * dnum[d];
        dphi[l] = acc;
        dz[l] += pq[l] * dden;
      }
      phi_backward_row(fm, &Q[i * D], D, x.W.data(), m, pq, dphi.data(), &g.dQ[i * D]);
    }
    Vec dphiK(size_t(L * m));
    for (int64_t j = 0; j < L; ++j)
      for (int64_t l = 0; l < m; ++l) {
        double acc = dz[l];
        for (int64_t d = 0; d < D; ++d)
          acc += dS[l * D + d] * Y[j * D + d], dY[j * D + d] += phiK[j * m + l] * dS[l * D + d];
        dphiK[j * m + l] = acc;
      }
    keys_backward(fm, X, L, D, x.W, m, phiK, dphiK, dX);
  }
  if (proj) {
    g.dK.assign(size_t(s.N * D), 0.0), g.dV.assign(size_t(s.N * D), 0.0);
    matmul_t(x.E.data(), s.k, s.N, dX.data(), D, g.dK.data());
    matmul_t(x.F.data(), s.k, s.N, dY.data(), D, g.dV.data());
    g.dKp = std::move(dX), g.dVp = std::move(dY);
  } else {
    g.dK = std::move(dX), g.dV = std::move(dY);
  }
}

void store_rows(const TensorView& t, int64_t b, int64_t h, const Vec& x) {
  for (int64_t i = 0; i < t.N(); ++i) store_row(t, b, h, i, &x[i * t.D()]);
}

}  // namespace

void flurka_backward_reference(FlurkaMethod method, const FlurkaInputs& in, const FlurkaGrads& g) {
  const FlurkaShape s = check_flurka_backward_args(method, in, g);
  require(in.q.device < 0, "flurka_backward_reference needs host tensors");
  const int64_t BH = s.B * s.H, D = s.D;
  const bool proj = uses_projection(method);
  std::vector<Vec> dKp(proj ? size_t(BH) : 0), dVp(proj ? size_t(BH) : 0);
  RegionErrors errors;
#pragma omp parallel for schedule(dynamic) num_threads(call_threads(0, s))
  for (int64_t bh = 0; bh < BH; ++bh)
    errors.guard([&] {
      const int64_t b = bh / s.H, h = bh % s.H;
      HeadInputs<double> x;
      load_head_inputs(method, in, b, h, x);
      Vec dO;
      load_head(g.dout, b, h, dO);
      HeadGrad hg;
      head_backward(method, s, x, dO, hg);
      store_rows(g.dq, b, h, hg.dQ);
      store_rows(g.dk, b, h, hg.dK);
      store_rows(g.dv, b, h, hg.dV);
      if (proj) dKp[size_t(bh)] = std::move(hg.dKp), dVp[size_t(bh)] = std::move(hg.dVp);
    });
  errors.rethrow();
  if (!proj) return;
  // dE = sum over the heads sharing E of dKp K^T; dF likewise (serial over heads: deterministic).
  const int64_t He = in.e.heads;
  Vec dE(size_t(checked_product({He, s.k, s.N}, "dE")), 0.0), dF(dE.size(), 0.0);
  Vec K, V;
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / s.H, h = bh % s.H, he = He == 1 ? 0 : h;
    load_head(in.k, b, h, K);
    load_head(in.v, b, h, V);
    add_outer(dKp[size_t(bh)].data(), s.k, K.data(), s.N, D, &dE[size_t(he * s.k * s.N)]);
    add_outer(dVp[size_t(bh)].data(), s.k, V.data(), s.N, D, &dF[size_t(he * s.k * s.N)]);
  }
  store_matrix(g.de, in.e, dE.data());
  store_matrix(g.df, in.f, dF.data());
}

void flurka_causal_backward_reference(FlurkaMethod method, const FlurkaInputs& in, const FlurkaGrads& g, int64_t C) {
  require(C >= 1, "the causal chunk length C must be >= 1");
  const FlurkaShape s = check_flurka_backward_args(method, in, g, C);
  require(in.q.device < 0, "flurka_causal_backward_reference needs host tensors");
  const FeatureMap fm = feature_map_of(method);
  const int64_t BH = s.B * s.H, D = s.D, N = s.N, m = s.m, r = s.k, nc = (N + C - 1) / C;
  const double isd = 1.0 / std::sqrt(double(D));
  const int64_t He = in.e.heads;
  std::vector<Vec> dEh(static_cast<size_t>(BH)), dFh(static_cast<size_t>(BH));
  RegionErrors errors;
#pragma omp parallel for schedule(dynamic) num_threads(call_threads(0, s))
  for (int64_t bh = 0; bh < BH; ++bh)
    errors.guard([&] {
      const int64_t b = bh / s.H, h = bh % s.H;
      HeadInputs<double> x;
      load_head_inputs(method, in, b, h, x);
      const auto& [Q, K, V, E, F, W] = x;
      Vec dO, phiQ, Kp, Vp, phiK;
      load_head(g.dout, b, h, dO);
      features(fm, Q, N, D, W, m, phiQ);
      // States before each chunk and the gradients that reach them.
      std::vector<Vec> Sc(size_t(nc), Vec(size_t(m * D), 0.0)), zc(size_t(nc), Vec(size_t(m), 0.0));
      std::vector<Vec> dS(size_t(nc), Vec(size_t(m * D), 0.0)), dz(size_t(nc), Vec(size_t(m), 0.0));
      Vec dQ(size_t(N * D), 0.0), dK(size_t(N * D), 0.0), dV(size_t(N * D), 0.0), num(static_cast<size_t>(D)),
          dnum(static_cast<size_t>(D)), dphi(static_cast<size_t>(m)), e(static_cast<size_t>(C));
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t c0 = c * C, c1 = std::min(N, c0 + C);
        if (c > 0) {  // S_c = S_{c-1} + phi(E K_{c-1})^T F V_{c-1} (chunk c-1 is full: only the last may not be)
          Sc[size_t(c)] = Sc[size_t(c - 1)], zc[size_t(c)] = zc[size_t(c - 1)];
          matmul(E.data(), r, C, &K[(c0 - C) * D], D, Kp);
          matmul(F.data(), r, C, &V[(c0 - C) * D], D, Vp);
          features(fm, Kp, r, D, W, m, phiK);
          for (int64_t j = 0; j < r; ++j)
            for (int64_t l = 0; l < m; ++l) {
              zc[size_t(c)][l] += phiK[j * m + l];
              for (int64_t d = 0; d < D; ++d) Sc[size_t(c)][l * D + d] += phiK[j * m + l] * Vp[j * D + d];
            }
        }
        const Vec &S = Sc[size_t(c)], &z = zc[size_t(c)];
        for (int64_t i = c0; i < c1; ++i) {
          const double* pq = &phiQ[i * m];
          double den = 0;
          std::fill(num.begin(), num.end(), 0.0);
          for (int64_t l = 0; l < m; ++l) {
            den += pq[l] * z[l];
            for (int64_t d = 0; d < D; ++d) num[d] += pq[l] * S[l * D + d];
          }
          for (int64_t j = c0; j <= i; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += Q[i * D + d] * K[j * D + d];
            e[j - c0] = std::exp(dot * isd);
            den += e[j - c0];
            for (int64_t d = 0; d < D; ++d) num[d] += e[j - c0] * V[j * D + d];
          }
          double dden = 0;
          for (int64_t d = 0; d < D; ++d) dnum[d] = dO[i * D + d] / den, dden -= dO[i * D + d] * num[d] / (den * den);
          for (int64_t l = 0; l < m; ++l) {
            double acc = z[l] * dden;
            for (int64_t d = 0; d < D; ++d) acc += S[l * D + d] * dnum[d], dS[size_t(c)][l * D + d] += pq[l] * dnum[d];
            dphi[l] = acc;
            dz[size_t(c)][l] += pq[l] * dden;
          }
          phi_backward_row(fm, &Q[i * D], D, W.data(), m, pq, dphi.data(), &dQ[i * D]);
          for (int64_t j = c0; j <= i; ++j) {
            double de = dden;
            for (int64_t d = 0; d < D; ++d) de += dnum[d] * V[j * D + d];
            const double dsc = e[j - c0] * de * isd;
            for (int64_t d = 0; d < D; ++d) {
              dQ[i * D + d] += dsc * K[j * D + d];
              dK[j * D + d] += dsc * Q[i * D + d];
              dV[j * D + d] += e[j - c0] * dnum[d];
            }
          }
        }
      }
      // Chunk c' feeds the states of every c > c': its gradient is the suffix sum of dS, dz.
      Vec T(size_t(m * D), 0.0), Tz(size_t(m), 0.0), dphiK(size_t(r * m)), dKp(size_t(r * D)), dVp;
      Vec& dE = dEh[size_t(bh)];
      Vec& dF = dFh[size_t(bh)];
      dE.assign(size_t(r * C), 0.0), dF.assign(size_t(r * C), 0.0);
      for (int64_t c = nc - 1; c >= 0; --c) {
        const int64_t c0 = c * C;
        if (c < nc - 1) {  // a chunk before the last is full
          matmul(E.data(), r, C, &K[c0 * D], D, Kp);
          matmul(F.data(), r, C, &V[c0 * D], D, Vp);
          features(fm, Kp, r, D, W, m, phiK);
          dVp.assign(size_t(r * D), 0.0);
          for (int64_t j = 0; j < r; ++j)
            for (int64_t l = 0; l < m; ++l) {
              double acc = Tz[l];
              for (int64_t d = 0; d < D; ++d)
                acc += T[l * D + d] * Vp[j * D + d], dVp[j * D + d] += phiK[j * m + l] * T[l * D + d];
              dphiK[j * m + l] = acc;
            }
          keys_backward(fm, Kp, r, D, W, m, phiK, dphiK, dKp);
          matmul_t(E.data(), r, C, dKp.data(), D, &dK[c0 * D]);
          matmul_t(F.data(), r, C, dVp.data(), D, &dV[c0 * D]);
          add_outer(dKp.data(), r, &K[c0 * D], C, D, dE.data());
          add_outer(dVp.data(), r, &V[c0 * D], C, D, dF.data());
        }
        for (size_t i = 0; i < T.size(); ++i) T[i] += dS[size_t(c)][i];
        for (int64_t l = 0; l < m; ++l) Tz[l] += dz[size_t(c)][l];
      }
      store_rows(g.dq, b, h, dQ);
      store_rows(g.dk, b, h, dK);
      store_rows(g.dv, b, h, dV);
    });
  errors.rethrow();
  Vec dE(size_t(He * r * C), 0.0), dF(dE.size(), 0.0);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t he = He == 1 ? 0 : bh % s.H;
    for (int64_t i = 0; i < r * C; ++i)
      dE[he * r * C + i] += dEh[size_t(bh)][i], dF[he * r * C + i] += dFh[size_t(bh)][i];
  }
  store_matrix(g.de, in.e, dE.data());
  store_matrix(g.df, in.f, dF.data());
}

}  // namespace splat
