// Internal helpers shared by the CPU paths: converting views to float/double buffers per head.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat::flurka_detail {

// Rows [0, n) of head (b, h) of t as a dense n x D buffer of T.
template <class T>
void load_head(const TensorView& t, int64_t b, int64_t h, std::vector<T>& dst) {
  const int64_t n = t.N(), D = t.D();
  dst.resize(size_t(n * D));
  for (int64_t i = 0; i < n; ++i) {
    const size_t o = t.offset(b, h, i);
    T* row = dst.data() + i * D;
    if (t.dtype == DType::F32) {
      const float* p = static_cast<const float*>(t.data) + o;
      for (int64_t d = 0; d < D; ++d) row[d] = T(p[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) row[d] = T(load_element_f64(t.data, t.dtype, o + d));
    }
  }
}

template <class T>
void store_row(const TensorView& t, int64_t b, int64_t h, int64_t i, const T* row) {
  const size_t o = t.offset(b, h, i);
  for (int64_t d = 0; d < t.D(); ++d) store_element_f64(t.data, t.dtype, o + d, double(row[d]));
}

// Matrix of head h (shared matrices ignore h) as a dense rows x cols buffer of T.
template <class T>
void load_matrix(const MatrixView& x, int64_t h, std::vector<T>& dst) {
  const size_t n = size_t(x.rows * x.cols), o = x.offset(h);
  dst.resize(n);
  if (x.dtype == DType::F32) {
    const float* p = static_cast<const float*>(x.data) + o;
    for (size_t i = 0; i < n; ++i) dst[i] = T(p[i]);
    return;
  }
  for (size_t i = 0; i < n; ++i) dst[i] = T(load_element_f64(x.data, x.dtype, o + i));
}

// OpenMP threads of a call: 0 = all hardware threads; 1 ... 4096 as asked (as the command-line tool caps it);
// anything else is an error (a huge count crashes the OpenMP runtime, a negative one is meaningless).
inline int resolve_threads(int requested) {
  require(requested >= 0 && requested <= 4096,
          "threads must be 0 (all) or 1 ... 4096, got " + std::to_string(requested));
  return requested > 0 ? requested : omp_get_max_threads();
}

// Threads for one call of shape s: tiny calls (gradient checks, decode-sized problems) run on one thread, where
// a parallel region would cost more than the work.
inline int call_threads(int requested, const FlurkaShape& s) {
  const int t = resolve_threads(requested);
  const double work =
      double(s.B) * double(s.H) * double(s.N + s.Nq) * double(s.D) * double(std::max<int64_t>({s.m, s.k, 1}));
  return work < double(1 << 18) ? 1 : t;
}

// Exceptions must not leave an OpenMP region (that is std::terminate, e.g. bad_alloc of per-thread scratch):
// each iteration runs under guard(); the first exception is kept and rethrown after the region.
class RegionErrors {
 public:
  template <class F>
  void guard(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!first_) first_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::exception_ptr first_;
  std::mutex mu_;
};

// Sign-safe elu(x) + 1.
template <class T>
inline T elu1(T x) {
  return x > 0 ? x + T(1) : std::exp(x);
}

// The inputs of head (b, h) as dense buffers: Q, K, V always; E, F where the method projects; W where its
// feature map has random features.
template <class T>
struct HeadInputs {
  std::vector<T> Q, K, V, E, F, W;
};
template <class T>
void load_head_inputs(FlurkaMethod method, const FlurkaInputs& in, int64_t b, int64_t h, HeadInputs<T>& x) {
  load_head(in.q, b, h, x.Q);
  load_head(in.k, b, h, x.K);
  load_head(in.v, b, h, x.V);
  if (uses_projection(method)) load_matrix(in.e, h, x.E), load_matrix(in.f, h, x.F);
  if (uses_random_features(method)) load_matrix(in.w, h, x.W);
}

// phi of one row x (D values) into phi (m values) as the normative formulas say (favor, relu: W is D x m with
// s = D^(-1/4); elu: m = D), evaluated literally in T (the float64 oracles use T = double).
template <class T>
void phi_row(FeatureMap fm, const T* x, int64_t D, const T* W, int64_t m, T* phi) {
  if (fm == FeatureMap::Elu) {
    for (int64_t d = 0; d < D; ++d) phi[d] = elu1(x[d]);
    return;
  }
  const T s = std::pow(T(D), T(-0.25));
  T nrm = 0;
  for (int64_t d = 0; d < D; ++d) nrm += s * x[d] * s * x[d];
  for (int64_t l = 0; l < m; ++l) {
    T dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += s * x[d] * W[d * m + l];
    phi[l] = (fm == FeatureMap::Favor ? std::exp(dot - nrm / 2) : std::max(dot, T(0))) / std::sqrt(T(m));
  }
}

}  // namespace splat::flurka_detail
