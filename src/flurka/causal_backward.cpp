// Fast CPU backward of causal FLuRKA (float32, OpenMP over heads), stabilised like the forward (causal.cpp).
// Forward sweep per head: each query row is a softmax over "virtual keys": the kernel state of the earlier
// chunks with weight alpha = A / den (A = phi(q) . z_c) split over its slots by the slot weights p_l, and the
// exact keys j <= i of its chunk with weights pi_j. The state part of dq is the non-causal one scaled by alpha;
// chunk c collects G_c = sum_i alpha_i p_il dout_i, g_c = sum_i alpha_i p_il Delta_i. Backward sweep: chunk c'
// reaches the states of every later chunk, so its keys see T = sum_{c > c'} G_c / z_c, kept relative to the
// favor offsets of state c'+1 (every factor e^{c_{c'+1} - c_c} is at most 1).
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

struct HeadResult {
  std::vector<float> dE, dF;  // [r, C] of this head
};

void causal_head_backward(FlurkaMethod method, const FlurkaInputs& in, const FlurkaGrads& g, const FlurkaShape& s,
                          int64_t C, int64_t b, int64_t h, HeadResult& res) {
  const FeatureMap fm = feature_map_of(method);
  const int64_t D = s.D, m = s.m, r = s.k, N = s.N, nc = (N + C - 1) / C;
  const float sc_q = 1.0f / std::sqrt(float(D)), sfeat = std::pow(float(D), -0.25f);
  const float relu_div = fm == FeatureMap::Relu ? float(m) : 1.0f;
  HeadInputs<float> x;
  load_head_inputs(method, in, b, h, x);
  const auto& [Q, K, V, E, F, W] = x;
  std::vector<float> dO;
  load_head(g.dout, b, h, dO);
  const size_t mD = static_cast<size_t>(m * D);
  std::vector<float> c(static_cast<size_t>(m), fm == FeatureMap::Favor ? -INFINITY : 0.0f);
  std::vector<float> S(mD, 0.0f), z(static_cast<size_t>(m), 0.0f), Sc, zc;
  // Per chunk: the state's offsets and z (relative), and the sums G, g of its queries.
  std::vector<float> coff(static_cast<size_t>(nc * m)), zt(static_cast<size_t>(nc * m));
  std::vector<float> Gc(static_cast<size_t>(nc) * mD, 0.0f), gc(static_cast<size_t>(nc * m), 0.0f);
  std::vector<float> dQ(static_cast<size_t>(N * D), 0.0f), dK(dQ.size(), 0.0f), dV(dQ.size(), 0.0f);
  std::vector<float> w(static_cast<size_t>(m)), t(static_cast<size_t>(m)), kv(static_cast<size_t>(D)),
      o(static_cast<size_t>(D)), dq(static_cast<size_t>(D)), sc(static_cast<size_t>(C)), phi(static_cast<size_t>(m)),
      Kp(static_cast<size_t>(r * D)), Vp(static_cast<size_t>(r * D));
  HeadSlots hs;
  hs.map = fm, hs.L = m, hs.a = fm == FeatureMap::Elu ? 1.0f : sfeat, hs.keys = W;
  for (int64_t ci = 0; ci < nc; ++ci) {
    const int64_t c0 = ci * C, c1 = std::min(N, c0 + C);
    Sc = S, zc = z;
    finalize_kernel_state(hs, Sc, zc, c, D);
    std::copy(c.begin(), c.end(), coff.begin() + ci * m);
    std::copy(hs.zw.begin(), hs.zw.end(), zt.begin() + ci * m);
    float* G = &Gc[static_cast<size_t>(ci) * mD];
    float* gz = &gc[static_cast<size_t>(ci * m)];
    for (int64_t i = c0; i < c1; ++i) {
      const float* q = &Q[i * D];
      const float* dOi = &dO[i * D];
      float la = -INFINITY, wsum = 0;
      std::fill(kv.begin(), kv.end(), 0.0f);
      if (c0 > 0) {  // kernel part (as the forward): one virtual key of log-weight la and value kv
        const HistoryKey hk = history_key(hs, q, D, sfeat, relu_div, w.data(), kv);
        la = hk.la, wsum = hk.wsum;
      }
      float M = la;
      for (int64_t j = c0; j <= i; ++j) {
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[d] * K[j * D + d];
        sc[j - c0] = dot * sc_q;
        M = nan_max(M, sc[j - c0]);
      }
      const float pa = la == -INFINITY ? 0.0f : std::exp(la - M);
      float den = pa;
      for (int64_t j = c0; j <= i; ++j) den += (sc[j - c0] = std::exp(sc[j - c0] - M));
      for (int64_t d = 0; d < D; ++d) o[d] = pa * kv[d];
      for (int64_t j = c0; j <= i; ++j)
        for (int64_t d = 0; d < D; ++d) o[d] += sc[j - c0] * V[j * D + d];
      float delta = 0;
      for (int64_t d = 0; d < D; ++d) delta += dOi[d] * (o[d] /= den);
      std::fill(dq.begin(), dq.end(), 0.0f);
      if (pa != 0) {  // the state part: slots l with weight alpha p_l and values U_l
        const float alpha = pa / den;
        for (int64_t l = 0; l < m; ++l) {
          const float p = w[l] / wsum, ap = alpha * p;
          float tl = -delta;
          for (int64_t d = 0; d < D; ++d) tl += hs.U[l * D + d] * dOi[d];
          for (int64_t d = 0; d < D; ++d) G[l * D + d] += ap * dOi[d];
          gz[l] += ap * delta;
          t[l] = fm == FeatureMap::Favor  ? ap * tl
                 : fm == FeatureMap::Relu ? (w[l] > 0 ? alpha * hs.zw[l] * tl / wsum : 0.0f)
                                          : alpha * hs.zw[l] * tl / wsum;
        }
        if (fm == FeatureMap::Elu) {
          for (int64_t d = 0; d < D; ++d) dq[d] = (q[d] > 0 ? 1.0f : std::exp(q[d])) * t[d];
        } else {
          float sum = 0;
          for (int64_t l = 0; l < m; ++l) sum += t[l];
          for (int64_t d = 0; d < D; ++d) {
            float acc = 0;
            for (int64_t l = 0; l < m; ++l) acc += W[d * m + l] * t[l];
            dq[d] = sfeat * acc - (fm == FeatureMap::Favor ? sfeat * sfeat * q[d] * sum : 0.0f);
          }
        }
      }
      for (int64_t j = c0; j <= i; ++j) {  // exact part: softmax backward over the chunk's keys
        const float pi = sc[j - c0] / den;
        float dp = -delta;
        for (int64_t d = 0; d < D; ++d) dp += dOi[d] * V[j * D + d];
        const float ds = pi * dp * sc_q;
        for (int64_t d = 0; d < D; ++d) {
          dq[d] += ds * K[j * D + d];
          dK[j * D + d] += ds * q[d];
          dV[j * D + d] += pi * dOi[d];
        }
      }
      std::copy(dq.begin(), dq.end(), dQ.begin() + i * D);
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
  // Backward sweep over the chunks that feed later states.
  std::vector<float> TG(mD, 0.0f), Tg(static_cast<size_t>(m), 0.0f), u(static_cast<size_t>(m)),
      dKp(static_cast<size_t>(r * D)), dVp(static_cast<size_t>(r * D));
  res.dE.assign(static_cast<size_t>(r * C), 0.0f), res.dF.assign(static_cast<size_t>(r * C), 0.0f);
  for (int64_t ci = nc - 1; ci >= 0; --ci) {
    const int64_t c0 = ci * C;
    if (ci < nc - 1) {  // TG, Tg are relative to the offsets of state ci + 1
      hs.c.assign(coff.begin() + (ci + 1) * m, coff.begin() + (ci + 2) * m);
      project_rows(E.data(), r, C, &K[c0 * D], D, Kp.data());
      project_rows(F.data(), r, C, &V[c0 * D], D, Vp.data());
      for (int64_t j = 0; j < r; ++j)
        key_row_backward(hs, &Kp[j * D], &Vp[j * D], D, TG.data(), Tg.data(), phi.data(), u.data(), &dKp[j * D],
                         &dVp[j * D]);
      for (int64_t jr = 0; jr < r; ++jr)
        for (int64_t j = 0; j < C; ++j) {
          const float e = E[jr * C + j], f = F[jr * C + j];
          float ae = 0, af = 0;
          for (int64_t d = 0; d < D; ++d) {
            dK[(c0 + j) * D + d] += e * dKp[jr * D + d];
            dV[(c0 + j) * D + d] += f * dVp[jr * D + d];
            ae += dKp[jr * D + d] * K[(c0 + j) * D + d];
            af += dVp[jr * D + d] * V[(c0 + j) * D + d];
          }
          res.dE[jr * C + j] += ae, res.dF[jr * C + j] += af;
        }
    }
    if (ci >= 1) {  // T(ci - 1) = G_ci / z_ci + T(ci), moved to the offsets of state ci
      for (int64_t l = 0; l < m; ++l) {
        const float scale = ci + 1 < nc ? std::exp(coff[ci * m + l] - coff[(ci + 1) * m + l]) : 0.0f;
        const float z_l = zt[ci * m + l], inv = z_l != 0 ? 1.0f / z_l : 0.0f;
        const float* G = &Gc[static_cast<size_t>(ci) * mD + l * D];
        for (int64_t d = 0; d < D; ++d) TG[l * D + d] = G[d] * inv + scale * TG[l * D + d];
        Tg[l] = gc[ci * m + l] * inv + scale * Tg[l];
      }
    }
  }
  for (int64_t i = 0; i < N; ++i) {
    store_row(g.dq, b, h, i, &dQ[i * D]);
    store_row(g.dk, b, h, i, &dK[i * D]);
    store_row(g.dv, b, h, i, &dV[i * D]);
  }
}

}  // namespace

void flurka_causal_backward_cpu(FlurkaMethod method, const FlurkaInputs& in, const FlurkaGrads& g, int64_t C,
                                const FlurkaOptions& opt) {
  require(C >= 1, "the causal chunk length C must be >= 1");
  const FlurkaShape s = check_flurka_backward_args(method, in, g, C);
  const int threads = call_threads(opt.threads, s);
  require(in.q.device < 0, "flurka_causal_backward_cpu needs host tensors (device = -1)");
  if (in.q.dtype == DType::F64) return flurka_causal_backward_reference(method, in, g, C);
  require_x86_64_v3("flurka_causal_backward_cpu");
  const int64_t BH = s.B * s.H, r = s.k, He = in.e.heads;
  checked_bytes({(s.N + C - 1) / C, std::max<int64_t>(s.m, 1), s.D + 1, 2}, 4, "causal backward chunk states");
  std::vector<HeadResult> res(static_cast<size_t>(BH));
  RegionErrors errors;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t bh = 0; bh < BH; ++bh)
    errors.guard([&] { causal_head_backward(method, in, g, s, C, bh / s.H, bh % s.H, res[static_cast<size_t>(bh)]); });
  errors.rethrow();
  std::vector<float> dE(static_cast<size_t>(He * r * C), 0.0f), dF(dE.size(), 0.0f);
  for (int64_t bh = 0; bh < BH; ++bh) {  // heads in order: deterministic
    const int64_t he = He == 1 ? 0 : bh % s.H;
    for (int64_t i = 0; i < r * C; ++i)
      dE[he * r * C + i] += res[static_cast<size_t>(bh)].dE[i],
          dF[he * r * C + i] += res[static_cast<size_t>(bh)].dF[i];
  }
  store_matrix(g.de, in.e, dE.data());
  store_matrix(g.df, in.f, dF.data());
}

}  // namespace splat
