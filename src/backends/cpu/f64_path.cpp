#include "f64_path.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace splat::cpu {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

const double* row_of(const TensorView& t, int64_t b, int64_t h, int64_t n) {
  return static_cast<const double*>(t.data) + t.offset(b, h, n);
}
double* out_row(const TensorView& t, int64_t b, int64_t h, int64_t n) {
  return static_cast<double*>(t.data) + t.offset(b, h, n);
}
double dot(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

// Keys of a sorted row that batch row b sees: a prefix (keys below key_lengths[b]).
int64_t visible(const std::vector<int32_t>& keys, const int32_t* key_lengths, int64_t b) {
  if (!key_lengths) return int64_t(keys.size());
  return std::lower_bound(keys.begin(), keys.end(), key_lengths[b]) - keys.begin();
}

// Per-thread buffers, allocated before the parallel region (an allocation failure inside one terminates).
struct RowBuffers {
  std::vector<std::vector<int32_t>> keys;
  std::vector<double> scores, acc;
  int64_t n, d;
  RowBuffers(int threads, int64_t n_, int64_t d_, int accumulators) : keys(size_t(threads)), n(n_), d(d_) {
    for (auto& k : keys) k.reserve(size_t(n));  // a row has at most n keys: row_keys never reallocates
    scores.resize(size_t(threads) * size_t(n));
    acc.resize(size_t(threads) * size_t(accumulators) * size_t(d));
  }
};

// Scores s[t] = scale * q . k_{keys[t]} for t < cnt and their max (a NaN score never wins, as in the oracle).
double scores_and_max(const double* qi, const TensorView& k, int64_t b, int64_t hk, const int32_t* keys, int64_t cnt,
                      double scale, double* s) {
  double mx = -kInf;
  for (int64_t t = 0; t < cnt; ++t) {
    s[t] = scale * dot(qi, row_of(k, b, hk, keys[t]), k.D());
    if (s[t] > mx) mx = s[t];
  }
  return mx;
}

}  // namespace

void attention_f64(const Acsr& a, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   double scale, const int32_t* key_lengths, int threads, float* lse) {
  const int64_t B = q.B(), H = q.H(), N = q.N(), D = q.D(), group = H / k.H();
  RowBuffers buf(threads, N, D, 1);
#pragma omp parallel num_threads(threads)
  {
    const int th = omp_get_thread_num();
    std::vector<int32_t>& keys = buf.keys[size_t(th)];
    double* s = buf.scores.data() + size_t(th) * size_t(N);
    double* acc = buf.acc.data() + size_t(th) * size_t(D);
#pragma omp for schedule(dynamic, 8)
    for (int64_t i = 0; i < N; ++i) {
      row_keys(a, i, keys);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t cnt = visible(keys, key_lengths, b);
        for (int64_t h = 0; h < H; ++h) {
          const int64_t hk = h / group;
          const double mx = scores_and_max(row_of(q, b, h, i), k, b, hk, keys.data(), cnt, scale, s);
          std::fill(acc, acc + D, 0.0);
          double l = 0.0;
          for (int64_t t = 0; t < cnt; ++t) {
            const double p = std::exp(s[t] - mx);
            l += p;
            const double* vj = row_of(v, b, hk, keys[size_t(t)]);
            for (int64_t c = 0; c < D; ++c) acc[c] += p * vj[c];
          }
          double* o = out_row(out, b, h, i);
          for (int64_t c = 0; c < D; ++c) o[c] = cnt ? acc[c] / l : 0.0;
          if (lse) lse[(b * H + h) * N + i] = cnt ? float(mx + std::log(l)) : -std::numeric_limits<float>::infinity();
        }
      }
    }
  }
}

void attention_backward_f64(const Acsr& a, const Acsr& at, const BackwardTensors& t, double scale,
                            const int32_t* key_lengths, int threads) {
  const TensorView &q = t.q, &k = t.k, &v = t.v;
  const int64_t B = q.B(), H = q.H(), Hkv = k.H(), N = q.N(), D = q.D(), group = H / Hkv;
  // Per query row: lse (+inf for rows without keys, so their P is 0) and Delta = dO . O.
  std::vector<double> L(size_t(B * H * N)), delta(size_t(B * H * N));
  RowBuffers buf(threads, N, D, 2);

#pragma omp parallel num_threads(threads)
  {
    const int th = omp_get_thread_num();
    std::vector<int32_t>& keys = buf.keys[size_t(th)];
    double* s = buf.scores.data() + size_t(th) * size_t(N);
    double* acc = buf.acc.data() + size_t(th) * size_t(2 * D);
    double* acc2 = acc + D;
    // dQ_i = scale * sum_j P_ij (dO_i . v_j - Delta_i) k_j over the rows of a.
#pragma omp for schedule(dynamic, 8)
    for (int64_t i = 0; i < N; ++i) {
      row_keys(a, i, keys);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t cnt = visible(keys, key_lengths, b);
        for (int64_t h = 0; h < H; ++h) {
          const int64_t hk = h / group, e = (b * H + h) * N + i;
          const double* qi = row_of(q, b, h, i);
          const double* doi = row_of(t.dout, b, h, i);
          const double mx = scores_and_max(qi, k, b, hk, keys.data(), cnt, scale, s);
          double l = 0.0;
          for (int64_t u = 0; u < cnt; ++u) l += std::exp(s[u] - mx);
          const double lse = cnt ? mx + std::log(l) : kInf;
          const double dl = dot(doi, row_of(t.out, b, h, i), D);
          L[size_t(e)] = lse, delta[size_t(e)] = dl;
          std::fill(acc, acc + D, 0.0);
          for (int64_t u = 0; u < cnt; ++u) {
            const double p = std::exp(s[u] - lse);
            const double ds = p * (dot(doi, row_of(v, b, hk, keys[size_t(u)]), D) - dl);
            const double* kj = row_of(k, b, hk, keys[size_t(u)]);
            for (int64_t c = 0; c < D; ++c) acc[c] += ds * kj[c];
          }
          double* dq = out_row(t.dq, b, h, i);
          for (int64_t c = 0; c < D; ++c) dq[c] = scale * acc[c];
        }
      }
    }
    // implicit barrier: L and delta complete
    // dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i dS_ij q_i over the rows of at (the queries attending key j),
    // each kv head summing its group's query heads in order.
#pragma omp for schedule(dynamic, 8)
    for (int64_t j = 0; j < N; ++j) {
      row_keys(at, j, keys);
      for (int64_t b = 0; b < B; ++b) {
        const bool padded = key_lengths && j >= key_lengths[b];
        for (int64_t hk = 0; hk < Hkv; ++hk) {
          std::fill(acc, acc + 2 * D, 0.0);
          const double* kj = row_of(k, b, hk, j);
          const double* vj = row_of(v, b, hk, j);
          for (int64_t h = hk * group; h < (hk + 1) * group && !padded; ++h)
            for (const int32_t i : keys) {
              const int64_t e = (b * H + h) * N + i;
              const double* qi = row_of(q, b, h, i);
              const double* doi = row_of(t.dout, b, h, i);
              const double p = std::exp(scale * dot(qi, kj, D) - L[size_t(e)]);
              const double ds = p * (dot(doi, vj, D) - delta[size_t(e)]);
              for (int64_t c = 0; c < D; ++c) acc2[c] += p * doi[c], acc[c] += ds * qi[c];
            }
          double* dk = out_row(t.dk, b, hk, j);
          double* dv = out_row(t.dv, b, hk, j);
          for (int64_t c = 0; c < D; ++c) dk[c] = scale * acc[c], dv[c] = acc2[c];
        }
      }
    }
  }
}

}  // namespace splat::cpu
