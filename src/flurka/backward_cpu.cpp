// Fast CPU backward (float32, OpenMP), in the stabilised slot form of the forward (cpu.cpp). Per query row
// with normalised slot weights p_l (the forward's softmax or weights over L slots) and slot values U_l:
//   out = sum_l p_l U_l,  Delta = dout . out,  t_l = U_l . dout - Delta
//   favor: dq = s W g - s^2 q sum_l g_l, g_l = p_l t_l      (g_l = phi_l dphi_l: scale-free)
//   relu:  dq = s W (1[q.W_l > 0] z_l t_l / den)              elu: dq_d = elu'(q_d) z_d t_d / den
//   linformer: dq = a sum_l p_l t_l Kp_l,  dKp_l += a p_l t_l q,  dVp_l += p_l dout
// The key side needs only G_l = sum_i p_il dout_i and g_l = sum_i p_il Delta_i: with r_jl = phi_l(k_j) / z_l
// (favor: e^{log phi - c_l} / z_l, never above 1), dV'_j = sum_l r_jl G_l and phi dphi_jl = r_jl (G_l . v_j - g_l),
// pushed through the feature map like the queries. G, g are reduced over fixed row blocks in a fixed order, so
// gradients are bitwise identical for every thread count. E^T dK', E^T dV', dE = dK' K^T, dF = dV' V^T close it.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common/int_math.hpp"
#include "flurka/backward_common.hpp"
#include "flurka/common.hpp"
#include "flurka/cpu_state.hpp"
#include "splat/cpu_features.hpp"
#include "splat/error.hpp"

namespace splat {
using namespace flurka_detail;

namespace {

constexpr int64_t kRowBlock = 128;  // query rows per reduction partial (fixed: determinism)
constexpr int64_t kKeyBlock = 64;   // key rows / columns per task

float elu_grad(float x) {
  return x > 0 ? 1.0f : std::exp(x);
}

// Query row backward: writes dq (D) and adds p dout into G [L, D], p Delta into gz [L] (kernel maps) or
// a p t q into Ka [L, D] (linformer).
void query_row_backward(const HeadSlots& hs, const float* q, const float* dO, int64_t D, float* w, float* t, float* o,
                        float* dq, float* G, float* gz, float* Ka) {
  const int64_t L = hs.L;
  std::fill(dq, dq + D, 0.0f);
  slot_weights(hs, q, D, w);
  if (softmax_slots(hs.map)) {
    float mx = -INFINITY;
    for (int64_t l = 0; l < L; ++l) mx = nan_max(mx, w[l]);
    for (int64_t l = 0; l < L; ++l) w[l] = mx == -INFINITY ? 0.0f : std::exp(w[l] - mx);
  }
  float den = 0;
  for (int64_t l = 0; l < L; ++l) den += w[l];
  if (den == 0) return;  // out = 0, a constant: no gradient
  std::fill(o, o + D, 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    const float p = w[l] / den;
    const float* u = &hs.U[l * D];
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) o[d] += p * u[d];
  }
  float delta = 0;
  for (int64_t d = 0; d < D; ++d) delta += dO[d] * o[d];
  for (int64_t l = 0; l < L; ++l) {
    const float* u = &hs.U[l * D];
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < D; ++d) acc += u[d] * dO[d];
    t[l] = acc - delta;
  }
  // Coefficients c_l of the map's Jacobian (in t), and the key-side sums.
  for (int64_t l = 0; l < L; ++l) {
    const float p = w[l] / den;
    float* Gl = &G[l * D];
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) Gl[d] += p * dO[d];
    if (hs.map == FeatureMap::None) {
      const float c = hs.a * p * t[l];
      const float* kr = &hs.keys[l * D];
      float* kl = &Ka[l * D];
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) dq[d] += c * kr[d], kl[d] += c * q[d];
      continue;
    }
    gz[l] += p * delta;
    if (hs.map == FeatureMap::Favor)
      t[l] = p * t[l];
    else if (hs.map == FeatureMap::Relu)
      t[l] = w[l] > 0 ? hs.zw[l] * t[l] / den : 0.0f;
    else
      t[l] = hs.zw[l] * t[l] / den;
  }
  if (hs.map == FeatureMap::None) return;
  if (hs.map == FeatureMap::Elu) {
    for (int64_t d = 0; d < D; ++d) dq[d] = elu_grad(q[d]) * t[d];
    return;
  }
  for (int64_t d = 0; d < D; ++d) {  // W is D x L
    const float* wr = &hs.keys[d * L];
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t l = 0; l < L; ++l) acc += wr[l] * t[l];
    dq[d] = hs.a * acc;
  }
  if (hs.map == FeatureMap::Favor) {
    float sum = 0;
    for (int64_t l = 0; l < L; ++l) sum += t[l];
    for (int64_t d = 0; d < D; ++d) dq[d] -= hs.a * hs.a * q[d] * sum;
  }
}

}  // namespace

namespace flurka_detail {

// Key row backward of a kernel map: x = K'_j, y = V'_j; Gt, gt = G / z, g / z per slot (favor: z relative to
// e^{c_l}). Writes dx, dy (D each). phi, u: scratch of m.
void key_row_backward(const HeadSlots& hs, const float* x, const float* y, int64_t D, const float* Gt, const float* gt,
                      float* phi, float* u, float* dx, float* dy) {
  const int64_t m = hs.L;
  const FeatureMap fm = hs.map;
  key_features(fm, x, D, hs.keys.data(), m, phi);
  if (fm == FeatureMap::Favor)
    for (int64_t l = 0; l < m; ++l) phi[l] = std::exp(phi[l] - hs.c[l]);  // r_l z_l, at most 1
  std::fill(dy, dy + D, 0.0f);
  for (int64_t l = 0; l < m; ++l) {
    const float* Gl = &Gt[l * D];
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < D; ++d) acc += Gl[d] * y[d];
    const float r = phi[l];
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) dy[d] += r * Gl[d];
    u[l] = acc - gt[l];
    if (fm == FeatureMap::Favor) u[l] *= r;
    if (fm == FeatureMap::Relu && !(r > 0)) u[l] = 0.0f;
  }
  if (fm == FeatureMap::Elu) {
    for (int64_t d = 0; d < D; ++d) dx[d] = elu_grad(x[d]) * u[d];
    return;
  }
  for (int64_t d = 0; d < D; ++d) {
    const float* wr = &hs.keys[d * m];
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t l = 0; l < m; ++l) acc += wr[l] * u[l];
    dx[d] = hs.a * acc;
  }
  if (fm == FeatureMap::Favor) {
    float sum = 0;
    for (int64_t l = 0; l < m; ++l) sum += u[l];
    for (int64_t d = 0; d < D; ++d) dx[d] -= hs.a * hs.a * x[d] * sum;
  }
}

}  // namespace flurka_detail

namespace {

// dE = sum dK' K^T, dF = sum dV' V^T over the heads sharing E, F (in a fixed order). dKp, dVp: [BH][k D].
void projection_backward(const FlurkaInputs& in, const FlurkaGrads& g, const FlurkaShape& s, int64_t cols,
                         const std::vector<std::vector<float>>& dKp, const std::vector<std::vector<float>>& dVp,
                         int threads) {
  const int64_t BH = s.B * s.H, D = s.D, k = s.k, N = cols, He = in.e.heads;
  const int64_t nb = (N + kKeyBlock - 1) / kKeyBlock;
  RegionErrors errors;
  // dE, dF: tasks (he, column block); each sums its heads in order.
  std::vector<float> dE(size_t(checked_product({He, k, N}, "dE"))), dF(dE.size());
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < He * nb; ++t)
    errors.guard([&] {
      const int64_t he = t / nb, j0 = (t % nb) * kKeyBlock, j1 = std::min(N, j0 + kKeyBlock);
      // Columns j0 .. j1 as [k, JB] tiles: per head, K and V rows transposed to [D, JB], then axpys over j
      // (vectorised, no horizontal sums).
      constexpr int64_t JB = kKeyBlock;
      const int64_t nj = j1 - j0;
      std::vector<float> KT(static_cast<size_t>(D * JB)), VT(KT.size()), ae(static_cast<size_t>(k * JB), 0.0f),
          af(ae.size(), 0.0f);
      for (int64_t bh = 0; bh < BH; ++bh) {
        const int64_t b = bh / s.H, h = bh % s.H;
        if (He != 1 && h != he) continue;
        const float *dk = dKp[size_t(bh)].data(), *dv = dVp[size_t(bh)].data();
        for (int64_t j = 0; j < nj; ++j)
          for (int64_t d = 0; d < D; ++d) {
            KT[d * JB + j] = load_element(in.k.data, in.k.dtype, in.k.offset(b, h, j0 + j) + d);
            VT[d * JB + j] = load_element(in.v.data, in.v.dtype, in.v.offset(b, h, j0 + j) + d);
          }
        for (int64_t r = 0; r < k; ++r) {
          float *er = &ae[r * JB], *fr = &af[r * JB];
          for (int64_t d = 0; d < D; ++d) {
            const float a = dk[r * D + d], c = dv[r * D + d];
            const float *kt = &KT[d * JB], *vt = &VT[d * JB];
#pragma omp simd
            for (int64_t j = 0; j < JB; ++j) er[j] += a * kt[j], fr[j] += c * vt[j];
          }
        }
      }
      float* e = &dE[size_t(he * k * N)];
      float* f = &dF[size_t(he * k * N)];
      for (int64_t r = 0; r < k; ++r)
        for (int64_t j = 0; j < nj; ++j) e[r * N + j0 + j] = ae[r * JB + j], f[r * N + j0 + j] = af[r * JB + j];
    });
  errors.rethrow();
  store_matrix(g.de, in.e, dE.data());
  store_matrix(g.df, in.f, dF.data());
}

}  // namespace

void flurka_backward_cpu(FlurkaMethod method, const FlurkaInputs& in, const FlurkaGrads& g, const FlurkaOptions& opt) {
  const FlurkaShape s = check_flurka_backward_args(method, in, g);
  const int threads = call_threads(opt.threads, s);
  require(in.q.device < 0, "flurka_backward_cpu needs host tensors (device = -1)");
  if (in.q.dtype == DType::F64) return flurka_backward_reference(method, in, g);  // float64 in float64
  require_x86_64_v3("flurka_backward_cpu");
  const FeatureMap fm = feature_map_of(method);
  const bool proj = uses_projection(method), lin = fm == FeatureMap::None;
  const int64_t D = s.D, BH = s.B * s.H, Lk = proj ? s.k : s.N;  // Lk: rows of K', V'
  RegionErrors errors;
  std::vector<HeadSlots> slots(static_cast<size_t>(BH));
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t bh = 0; bh < BH; ++bh)
    errors.guard([&] { build_head_slots(method, in, s, bh / s.H, bh % s.H, slots[size_t(bh)]); });
  errors.rethrow();
  const int64_t L = slots[0].L;

  // Queries: dq rows, and per (head, row block) partials [G (L D) | g (L) or Ka (L D)].
  const int64_t nblk = (s.Nq + kRowBlock - 1) / kRowBlock;
  const int64_t P = checked_sum({checked_product({L, D}, "backward partial"), lin ? L * D : L}, "backward partial");
  std::vector<float> part(size_t(checked_product({BH, nblk, P}, "backward partials")), 0.0f);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < BH * nblk; ++t)
    errors.guard([&] {
      const int64_t bh = t / nblk, i0 = (t % nblk) * kRowBlock, i1 = std::min(s.Nq, i0 + kRowBlock);
      const int64_t b = bh / s.H, h = bh % s.H;
      const HeadSlots& hs = slots[size_t(bh)];
      float* G = &part[size_t(t * P)];
      float* second = G + L * D;
      std::vector<float> q(static_cast<size_t>(D)), dO(static_cast<size_t>(D)), w(static_cast<size_t>(L)),
          tt(static_cast<size_t>(L)), o(static_cast<size_t>(D)), dq(static_cast<size_t>(D));
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t d = 0; d < D; ++d) {
          q[d] = load_element(in.q.data, in.q.dtype, in.q.offset(b, h, i) + d);
          dO[d] = load_element(g.dout.data, g.dout.dtype, g.dout.offset(b, h, i) + d);
        }
        query_row_backward(hs, q.data(), dO.data(), D, w.data(), tt.data(), o.data(), dq.data(), G,
                           lin ? nullptr : second, lin ? second : nullptr);
        store_row(g.dq, b, h, i, dq.data());
      }
    });
  errors.rethrow();
  // Reduce each head's partials into its first block, in block order.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t bh = 0; bh < BH; ++bh) {
    float* acc = &part[size_t(bh * nblk * P)];
    for (int64_t blk = 1; blk < nblk; ++blk) {
      const float* x = acc + blk * P;
      for (int64_t i = 0; i < P; ++i) acc[i] += x[i];
    }
  }

  // Keys: dK', dV' (projected: kept for the projection backward; otherwise written as dk, dv).
  std::vector<std::vector<float>> dKp(proj ? size_t(BH) : 0), dVp(proj ? size_t(BH) : 0);
  for (int64_t bh = 0; proj && bh < BH; ++bh) {
    dKp[size_t(bh)].assign(size_t(Lk * D), 0.0f), dVp[size_t(bh)].assign(size_t(Lk * D), 0.0f);
    if (lin) {
      const float* G = &part[size_t(bh * nblk * P)];
      std::copy(G, G + L * D, dVp[size_t(bh)].begin());
      std::copy(G + L * D, G + 2 * L * D, dKp[size_t(bh)].begin());
    }
  }
  if (!lin) {
    // G / z, g / z per head (slot l with z_l = 0 has p = 0 for every query: its terms vanish).
    for (int64_t bh = 0; bh < BH; ++bh) {
      float* G = &part[size_t(bh * nblk * P)];
      const std::vector<float>& z = slots[size_t(bh)].zw;
      for (int64_t l = 0; l < L; ++l) {
        const float inv = z[l] != 0 ? 1.0f / z[l] : 0.0f;
        for (int64_t d = 0; d < D; ++d) G[l * D + d] *= inv;
        G[L * D + l] *= inv;
      }
    }
    const int64_t nkb = (Lk + kKeyBlock - 1) / kKeyBlock;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t t = 0; t < BH * nkb; ++t)
      errors.guard([&] {
        const int64_t bh = t / nkb, j0 = (t % nkb) * kKeyBlock, j1 = std::min(Lk, j0 + kKeyBlock);
        const int64_t b = bh / s.H, h = bh % s.H;
        const HeadSlots& hs = slots[size_t(bh)];
        const float* G = &part[size_t(bh * nblk * P)];
        std::vector<float> phi(static_cast<size_t>(L)), u(static_cast<size_t>(L)), dx(static_cast<size_t>(D)),
            dy(static_cast<size_t>(D));
        for (int64_t j = j0; j < j1; ++j) {
          float* dxo = proj ? &dKp[size_t(bh)][j * D] : dx.data();
          float* dyo = proj ? &dVp[size_t(bh)][j * D] : dy.data();
          key_row_backward(hs, &hs.Kp[j * D], &hs.Vp[j * D], D, G, G + L * D, phi.data(), u.data(), dxo, dyo);
          if (!proj) store_row(g.dk, b, h, j, dxo), store_row(g.dv, b, h, j, dyo);
        }
      });
    errors.rethrow();
  }
  if (!proj) return;
  // dk = E^T dK', dv = F^T dV' per head, by key-row blocks.
  const int64_t nkb = (s.N + kKeyBlock - 1) / kKeyBlock;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < BH * nkb; ++t)
    errors.guard([&] {
      const int64_t bh = t / nkb, j0 = (t % nkb) * kKeyBlock, j1 = std::min(s.N, j0 + kKeyBlock);
      const int64_t b = bh / s.H, h = bh % s.H;
      const size_t eo = in.e.offset(h), fo = in.f.offset(h);
      std::vector<float> dk(static_cast<size_t>(D)), dv(static_cast<size_t>(D));
      const float *gk = dKp[size_t(bh)].data(), *gv = dVp[size_t(bh)].data();
      // E, F columns j0 .. j1 of this head as floats [k, j1 - j0].
      const int64_t nj = j1 - j0;
      std::vector<float> Et(static_cast<size_t>(s.k * nj)), Ft(Et.size());
      for (int64_t r = 0; r < s.k; ++r)
        for (int64_t j = 0; j < nj; ++j) {
          Et[r * nj + j] = load_element(in.e.data, in.e.dtype, eo + size_t(r * s.N + j0 + j));
          Ft[r * nj + j] = load_element(in.f.data, in.f.dtype, fo + size_t(r * s.N + j0 + j));
        }
      for (int64_t j = j0; j < j1; ++j) {
        std::fill(dk.begin(), dk.end(), 0.0f), std::fill(dv.begin(), dv.end(), 0.0f);
        for (int64_t r = 0; r < s.k; ++r) {
          const float e = Et[r * nj + j - j0], f = Ft[r * nj + j - j0];
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) dk[d] += e * gk[r * D + d], dv[d] += f * gv[r * D + d];
        }
        store_row(g.dk, b, h, j, dk.data());
        store_row(g.dv, b, h, j, dv.data());
      }
    });
  errors.rethrow();
  projection_backward(in, g, s, s.N, dKp, dVp, threads);
}

}  // namespace splat
