// The dense masked oracle: float64 accumulation, one row at a time, no tiling and no tricks,
// so that it is obviously right. Every test and `--check` compares against it.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "checks.hpp"
#include "splat/attention.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One (batch, head) of a tensor as float64 [N][D], converted once so the O(nnz * D) loops
// do not pay a dtype dispatch per element.
void load_head(const TensorView& t, int64_t b, int64_t h, std::vector<double>& dst) {
  const int64_t n = t.N(), d = t.D();
  dst.resize(size_t(n * d));
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const size_t base = t.offset(b, h, j);
    for (int64_t c = 0; c < d; ++c) dst[size_t(j * d + c)] = load_element_f64(t.data, t.dtype, base + size_t(c));
  }
}

void store_head(const std::vector<double>& src, const TensorView& t, int64_t b, int64_t h) {
  const int64_t n = t.N(), d = t.D();
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < d; ++c)
      store_element_f64(t.data, t.dtype, t.offset(b, h, j) + size_t(c), src[size_t(j * d + c)]);
}

double dot(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

struct Common {
  int64_t B, H, Hkv, N, D, group;
  double scale;
  int threads;
};

Common common_checks(const uint8_t* mask, const TensorView& q, const TensorView& k, const AttentionOptions& opt,
                     const char* what) {
  require(q.device < 0, std::string(what) + " runs on host tensors only");
  require(mask != nullptr, std::string(what) + ": null mask");
  require(opt.threads >= 0 && opt.threads <= 4096,
          "threads must be 0 (all hardware threads) or 1 ... 4096, got " + std::to_string(opt.threads));
  require(std::isfinite(opt.scale), "scale must be finite");
  cpu::check_key_lengths(opt.key_lengths, q.B(), q.N());
  Common c{q.B(), q.H(), k.H(), q.N(), q.D(), q.H() / k.H(), 0.0, 0};
  c.scale = opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(c.D));
  c.threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  return c;
}

// Row i's attended keys for batch row b: the mask's, below key_lengths[b].
int64_t key_limit(const AttentionOptions& opt, int64_t b, int64_t n) {
  return opt.key_lengths ? opt.key_lengths[b] : n;
}

}  // namespace

void attention_reference(const uint8_t* mask, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const AttentionOptions& opt, float* lse) {
  check_attention_args(q, k, v, out);
  const Common g = common_checks(mask, q, k, opt, "attention_reference");
  const int64_t N = g.N, D = g.D;
  const cpu::Memory mq = cpu::memory_of(q, "q"), mk = cpu::memory_of(k, "k"), mv = cpu::memory_of(v, "v");
  cpu::check_disjoint(cpu::memory_of(out, "out"), {mq, mk, mv});
  cpu::check_disjoint(cpu::memory_of(lse, g.B * g.H * N, "lse"), {mq, mk, mv, cpu::memory_of(out, "out")});
  // Per-thread buffers before the parallel region (an allocation failure inside one terminates).
  std::vector<double> kd, vd, bufs(size_t(g.threads) * size_t(2 * D + N));
  for (int64_t b = 0; b < g.B; ++b) {
    const int64_t limit = key_limit(opt, b, N);
    for (int64_t hk = 0; hk < g.Hkv; ++hk) {
      load_head(k, b, hk, kd);
      load_head(v, b, hk, vd);
#pragma omp parallel num_threads(g.threads)
      {
        double* qi = bufs.data() + size_t(omp_get_thread_num()) * size_t(2 * D + N);
        double *acc = qi + D, *s = acc + D;
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (int64_t h = hk * g.group; h < (hk + 1) * g.group; ++h) {
          for (int64_t i = 0; i < N; ++i) {
            const size_t qbase = q.offset(b, h, i);
            for (int64_t c = 0; c < D; ++c) qi[c] = load_element_f64(q.data, q.dtype, qbase + size_t(c));
            const uint8_t* row = mask + size_t(i) * size_t(N);
            // Max over attended scores; a NaN score never wins the comparison, and exp(NaN - mx)
            // below makes the row NaN, as the arithmetic says.
            double mx = -kInf;
            bool any = false;
            for (int64_t j = 0; j < limit; ++j) {
              if (!row[j]) continue;
              any = true;
              s[j] = dot(qi, kd.data() + j * D, D) * g.scale;
              if (s[j] > mx) mx = s[j];
            }
            std::fill(acc, acc + D, 0.0);
            double l = 0.0;
            for (int64_t j = 0; any && j < limit; ++j) {
              if (!row[j]) continue;
              const double p = std::exp(s[j] - mx);
              l += p;
              const double* vj = vd.data() + j * D;
              for (int64_t c = 0; c < D; ++c) acc[c] += p * vj[c];
            }
            const size_t obase = out.offset(b, h, i);
            for (int64_t c = 0; c < D; ++c)
              store_element_f64(out.data, out.dtype, obase + size_t(c), any ? acc[c] / l : 0.0);
            if (lse)
              lse[(b * g.H + h) * N + i] = any ? float(mx + std::log(l)) : -std::numeric_limits<float>::infinity();
          }
        }
      }
    }
  }
}

// Dense backward: a row pass (softmax recomputed: lse, O, Delta, dQ) and a column pass (dK, dV) per (batch, kv head),
// both in float64 straight from the mask.
void attention_backward_reference(const uint8_t* mask, const BackwardTensors& t, const AttentionOptions& opt) {
  check_attention_args(t.q, t.k, t.v, t.dout);
  check_attention_args(t.dq, t.dk, t.dv, t.dq);
  require(t.dq.dtype == t.q.dtype && t.dq.H() == t.q.H() && t.dk.H() == t.k.H() && t.dq.N() == t.q.N() &&
              t.dq.D() == t.q.D() && t.dq.B() == t.q.B() && t.dq.device == t.q.device,
          "attention_backward_reference: dq, dk, dv must match q, k, v in dtype, shape and device");
  const Common g = common_checks(mask, t.q, t.k, opt, "attention_backward_reference");
  cpu::check_backward_disjoint(t);
  const int64_t N = g.N, D = g.D;
  std::vector<double> kd, vd, dkd(size_t(N * D)), dvd(size_t(N * D));
  std::vector<std::vector<double>> qd(size_t(g.group)), dod(size_t(g.group)), dqd(size_t(g.group));
  std::vector<double> L(size_t(g.group * N)), delta(size_t(g.group * N));
  std::vector<double> bufs(size_t(g.threads) * size_t(D + N));
  for (int64_t b = 0; b < g.B; ++b) {
    const int64_t limit = key_limit(opt, b, N);
    for (int64_t hk = 0; hk < g.Hkv; ++hk) {
      load_head(t.k, b, hk, kd);
      load_head(t.v, b, hk, vd);
      for (int64_t u = 0; u < g.group; ++u) {
        load_head(t.q, b, hk * g.group + u, qd[size_t(u)]);
        load_head(t.dout, b, hk * g.group + u, dod[size_t(u)]);
        dqd[size_t(u)].assign(size_t(N * D), 0.0);
      }
#pragma omp parallel num_threads(g.threads)
      {
        double* o = bufs.data() + size_t(omp_get_thread_num()) * size_t(D + N);
        double* s = o + D;
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (int64_t u = 0; u < g.group; ++u)
          for (int64_t i = 0; i < N; ++i) {
            const double* qi = qd[size_t(u)].data() + i * D;
            const double* doi = dod[size_t(u)].data() + i * D;
            const uint8_t* row = mask + size_t(i) * size_t(N);
            double mx = -kInf;
            bool any = false;
            for (int64_t j = 0; j < limit; ++j) {
              if (!row[j]) continue;
              any = true;
              s[j] = dot(qi, kd.data() + j * D, D) * g.scale;
              if (s[j] > mx) mx = s[j];
            }
            double l = 0.0;
            std::fill(o, o + D, 0.0);
            for (int64_t j = 0; any && j < limit; ++j)
              if (row[j]) l += std::exp(s[j] - mx);
            const double lse = any ? mx + std::log(l) : kInf;  // +inf: P = 0 for rows without keys
            for (int64_t j = 0; any && j < limit; ++j) {
              if (!row[j]) continue;
              const double p = std::exp(s[j] - lse);
              for (int64_t c = 0; c < D; ++c) o[c] += p * vd[size_t(j * D + c)];
            }
            const double dl = dot(doi, o, D);
            L[size_t(u * N + i)] = lse, delta[size_t(u * N + i)] = dl;
            double* dqi = dqd[size_t(u)].data() + i * D;
            for (int64_t j = 0; any && j < limit; ++j) {
              if (!row[j]) continue;
              const double ds = std::exp(s[j] - lse) * (dot(doi, vd.data() + j * D, D) - dl);
              for (int64_t c = 0; c < D; ++c) dqi[c] += g.scale * ds * kd[size_t(j * D + c)];
            }
          }
          // implicit barrier: L, delta complete
#pragma omp for schedule(dynamic, 16)
        for (int64_t j = 0; j < N; ++j) {
          double* dkj = dkd.data() + j * D;
          double* dvj = dvd.data() + j * D;
          std::fill(dkj, dkj + D, 0.0);
          std::fill(dvj, dvj + D, 0.0);
          if (j >= limit) continue;
          for (int64_t u = 0; u < g.group; ++u)
            for (int64_t i = 0; i < N; ++i) {
              if (!mask[size_t(i) * size_t(N) + size_t(j)]) continue;
              const double* qi = qd[size_t(u)].data() + i * D;
              const double* doi = dod[size_t(u)].data() + i * D;
              const double p = std::exp(g.scale * dot(qi, kd.data() + j * D, D) - L[size_t(u * N + i)]);
              const double ds = p * (dot(doi, vd.data() + j * D, D) - delta[size_t(u * N + i)]);
              for (int64_t c = 0; c < D; ++c) dvj[c] += p * doi[c], dkj[c] += g.scale * ds * qi[c];
            }
        }
      }
      for (int64_t u = 0; u < g.group; ++u) store_head(dqd[size_t(u)], t.dq, b, hk * g.group + u);
      store_head(dkd, t.dk, b, hk);
      store_head(dvd, t.dv, b, hk);
    }
  }
}

}  // namespace splat
