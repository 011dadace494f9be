// The decode oracle: float64, every key of row p tested with pattern_contains at the sequence's length (the
// normative semantics, not the row program), read through the cache's addressing.
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "decode_common.hpp"
#include "splat/error.hpp"

namespace splat {

void decode_reference(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                      const AttentionOptions& opt, float* lse) {
  const cpu::DecodeShape s = cpu::check_decode(plan, q, cache, out, opt, lse, "decode_reference");
  const int64_t D = s.D;
  const double ninf = -std::numeric_limits<double>::infinity();
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(s.threads)
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t L = cache.seqlens[b], hk = h / s.group;
      std::vector<double> qi(static_cast<size_t>(D)), acc(static_cast<size_t>(D)), sc;
      std::vector<int64_t> keys;
      for (int64_t t = 0; t < s.T; ++t) {
        const int64_t p = L - s.T + t;
        keys.clear();
        for (int64_t j = 0; j <= p; ++j)
          if (pattern_contains(plan.source, L, p, j)) keys.push_back(j);
        for (int64_t c = 0; c < D; ++c)
          qi[size_t(c)] = load_element_f64(q.data, q.dtype, q.offset(b, h, t) + size_t(c));
        double mx = ninf;
        sc.assign(keys.size(), 0.0);
        for (size_t e = 0; e < keys.size(); ++e) {
          const size_t at = cpu::cache_offset(cache, cache.k, s.page, b, hk, keys[e]);
          double dot = 0;
          for (int64_t c = 0; c < D; ++c)
            dot += qi[size_t(c)] * load_element_f64(cache.k.data, q.dtype, at + size_t(c));
          sc[e] = dot * s.scale;
          if (sc[e] > mx) mx = sc[e];  // a NaN score never wins; exp(NaN - mx) below spreads it
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double l = 0;
        for (size_t e = 0; e < keys.size(); ++e) {
          const double w = std::exp(sc[e] - mx);
          l += w;
          const size_t at = cpu::cache_offset(cache, cache.v, s.page, b, hk, keys[e]);
          for (int64_t c = 0; c < D; ++c) acc[size_t(c)] += w * load_element_f64(cache.v.data, q.dtype, at + size_t(c));
        }
        const bool any = !keys.empty();
        for (int64_t c = 0; c < D; ++c)
          store_element_f64(out.data, out.dtype, out.offset(b, h, t) + size_t(c), any ? acc[size_t(c)] / l : 0.0);
        if (lse) lse[(b * s.H + h) * s.T + t] = any ? float(mx + std::log(l)) : -std::numeric_limits<float>::infinity();
      }
    }
}

}  // namespace splat
