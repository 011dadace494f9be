// The dense masked oracle: float64 accumulation, one row at a time, no tiling and no tricks,
// so that it is obviously right. Every test and `--check` compares against it.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "splat/attention.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {

// K or V of one (batch, kv head) as float64 [N][D], converted once so the O(nnz * D) loop
// does not pay a dtype dispatch per element.
void load_head(const TensorView& t, int64_t b, int64_t h, std::vector<double>& dst) {
  const int64_t n = t.N(), d = t.D();
  dst.resize(size_t(n * d));
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const size_t base = t.offset(b, h, j);
    for (int64_t c = 0; c < d; ++c) dst[size_t(j * d + c)] = load_element(t.data, t.dtype, base + size_t(c));
  }
}

}  // namespace

void attention_reference(const uint8_t* mask, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const AttentionOptions& opt, float* lse) {
  check_attention_args(q, k, v, out);
  if (q.dtype == DType::F64) fail(ErrorCode::Unsupported, "attention_reference: float64 is not implemented yet");
  if (lse || opt.key_lengths) fail(ErrorCode::Unsupported, "attention_reference: lse and key_lengths are not implemented yet");
  require(q.device < 0, "attention_reference runs on host tensors only");
  require(mask != nullptr, "attention_reference: null mask");
  require(opt.threads >= 0, "threads must be >= 0");
  const int64_t B = q.B(), H = q.H(), Hkv = k.H(), N = q.N(), D = q.D();
  const int64_t group = H / Hkv;
  const double scale = opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(D));
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();

  std::vector<double> kd, vd;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      load_head(k, b, hk, kd);
      load_head(v, b, hk, vd);
#pragma omp parallel num_threads(threads)
      {
        std::vector<double> qi(static_cast<size_t>(D)), s(static_cast<size_t>(N)), acc(static_cast<size_t>(D));
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
          for (int64_t i = 0; i < N; ++i) {
            const size_t qbase = q.offset(b, h, i);
            for (int64_t c = 0; c < D; ++c) qi[size_t(c)] = load_element(q.data, q.dtype, qbase + size_t(c));
            const uint8_t* row = mask + size_t(i) * size_t(N);
            // Max over attended scores; a NaN score never wins the comparison, and exp(NaN - mx)
            // below makes the row NaN, as the arithmetic says.
            double mx = -std::numeric_limits<double>::infinity();
            bool any = false;
            for (int64_t j = 0; j < N; ++j) {
              if (!row[j]) continue;
              any = true;
              const double* kj = kd.data() + j * D;
              double dot = 0.0;
              for (int64_t c = 0; c < D; ++c) dot += qi[size_t(c)] * kj[c];
              s[size_t(j)] = dot * scale;
              if (s[size_t(j)] > mx) mx = s[size_t(j)];
            }
            std::fill(acc.begin(), acc.end(), 0.0);
            double l = 0.0;
            if (any) {
              for (int64_t j = 0; j < N; ++j) {
                if (!row[j]) continue;
                const double p = std::exp(s[size_t(j)] - mx);
                l += p;
                const double* vj = vd.data() + j * D;
                for (int64_t c = 0; c < D; ++c) acc[size_t(c)] += p * vj[c];
              }
            }
            const size_t obase = out.offset(b, h, i);
            for (int64_t c = 0; c < D; ++c)
              store_element(out.data, out.dtype, obase + size_t(c), any ? float(acc[size_t(c)] / l) : 0.0f);
          }
        }
      }
    }
  }
}

}  // namespace splat
