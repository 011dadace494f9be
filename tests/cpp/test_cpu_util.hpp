// Helpers for the CPU attention tests: random tensors in any dtype and layout, the float64
// oracle (attention_reference on f32 copies), a naive same-precision computation for the
// tolerance idiom err(ours) <= k * err(naive) + atol.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "splat/attention.hpp"
#include "splat/pattern.hpp"
#include "splat/tensor.hpp"

namespace cputest {

using namespace splat;

struct Shape {
  int64_t B = 1, H = 2, Hkv = 1, N = 64, D = 64;
};

// A [B, heads, N, D] tensor in its own storage; `bnhd` lays memory out as [B, N, heads, D]
// (the view still says [B, heads, N, D]: strides over B, H and N are all non-trivial).
struct Tensor {
  std::vector<uint8_t> bytes;
  TensorView view;
  Tensor(DType t, int64_t B, int64_t Hh, int64_t N, int64_t D, bool bnhd) {
    bytes.assign(size_t(B * Hh * N * D) * dtype_size(t) + 64, 0);
    view = contiguous_view(bytes.data(), t, B, Hh, N, D);
    if (bnhd) {
      view.stride[2] = Hh * D;
      view.stride[1] = D;
      view.stride[0] = N * Hh * D;
    }
  }
  float get(int64_t b, int64_t h, int64_t n, int64_t d) const {
    return load_element(view.data, view.dtype, view.offset(b, h, n) + size_t(d));
  }
  double get64(int64_t b, int64_t h, int64_t n, int64_t d) const {
    return load_element_f64(view.data, view.dtype, view.offset(b, h, n) + size_t(d));
  }
  void set(int64_t b, int64_t h, int64_t n, int64_t d, double x) {
    store_element_f64(view.data, view.dtype, view.offset(b, h, n) + size_t(d), x);
  }
  template <class F>
  void each(F f) {
    for (int64_t b = 0; b < view.B(); ++b)
      for (int64_t h = 0; h < view.H(); ++h)
        for (int64_t n = 0; n < view.N(); ++n)
          for (int64_t d = 0; d < view.D(); ++d) f(b, h, n, d);
  }
  void randomise(std::mt19937& rng, float sd) {
    std::normal_distribution<float> dist(0.0f, sd);
    each([&](int64_t b, int64_t h, int64_t n, int64_t d) { set(b, h, n, d, dist(rng)); });
  }
  void poison() {
    each([&](int64_t b, int64_t h, int64_t n, int64_t d) { set(b, h, n, d, std::nanf("")); });
  }
  // Same values, float32, contiguous.
  Tensor to_f32() const {
    Tensor t(DType::F32, view.B(), view.H(), view.N(), view.D(), false);
    t.each([&](int64_t b, int64_t h, int64_t n, int64_t d) { t.set(b, h, n, d, get(b, h, n, d)); });
    return t;
  }
};

// Naive attention in float32 arithmetic (no float64 anywhere), output rounded to `dtype`.
inline Tensor naive_same_dtype(const uint8_t* mask, const Tensor& q, const Tensor& k, const Tensor& v, DType dtype,
                               float scale = 0.0f, const int32_t* key_lengths = nullptr) {
  const int64_t B = q.view.B(), H = q.view.H(), N = q.view.N(), D = q.view.D(), g = H / k.view.H();
  const float sc = scale != 0.0f ? scale : 1.0f / std::sqrt(float(D));
  Tensor o(DType::F32, B, H, N, D, false);
  std::vector<float> s(static_cast<size_t>(N)), acc(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        float mx = -std::numeric_limits<float>::infinity();
        bool any = false;
        const int64_t limit = key_lengths ? key_lengths[b] : N;
        for (int64_t j = 0; j < limit; ++j) {
          if (!mask[i * N + j]) continue;
          float dot = 0.0f;
          for (int64_t d = 0; d < D; ++d) dot += q.get(b, h, i, d) * k.get(b, h / g, j, d);
          s[size_t(j)] = dot * sc;
          mx = std::max(mx, s[size_t(j)]);
          any = true;
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        float l = 0.0f;
        for (int64_t j = 0; any && j < limit; ++j) {
          if (!mask[i * N + j]) continue;
          const float p = std::exp(s[size_t(j)] - mx);
          l += p;
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += p * v.get(b, h / g, j, d);
        }
        for (int64_t d = 0; d < D; ++d) {
          float x = any ? acc[size_t(d)] / l : 0.0f;
          if (dtype == DType::F16) x = half_to_float(float_to_half(x));  // round as the output storage would
          if (dtype == DType::BF16) x = bf16_to_float(float_to_bf16(x));
          o.set(b, h, i, d, x);
        }
      }
  return o;
}

inline double max_abs_err(const Tensor& a, const Tensor& ref) {
  double e = 0.0;
  const_cast<Tensor&>(ref).each([&](int64_t b, int64_t h, int64_t n, int64_t d) {
    const double x = a.get64(b, h, n, d), y = ref.get64(b, h, n, d);
    const double diff =
        std::isnan(x) || std::isnan(y) ? (std::isnan(x) && std::isnan(y) ? 0.0 : INFINITY) : std::fabs(x - y);
    e = std::max(e, diff);
  });
  return e;
}

// float64 log-sum-exp of row i (natural log), -inf without keys: the lse oracle.
inline double lse64(const uint8_t* mask, const Tensor& q, const Tensor& k, int64_t b, int64_t h, int64_t i,
                    float scale = 0.0f, const int32_t* key_lengths = nullptr) {
  const int64_t N = q.view.N(), D = q.view.D(), g = q.view.H() / k.view.H();
  const double sc = scale != 0.0f ? double(scale) : 1.0 / std::sqrt(double(D));
  const int64_t limit = key_lengths ? key_lengths[b] : N;
  std::vector<double> s;
  double mx = -INFINITY;
  for (int64_t j = 0; j < limit; ++j) {
    if (!mask[i * N + j]) continue;
    double dot = 0.0;
    for (int64_t d = 0; d < D; ++d) dot += q.get64(b, h, i, d) * k.get64(b, h / g, j, d);
    s.push_back(dot * sc);
    mx = std::max(mx, dot * sc);
  }
  if (s.empty()) return -INFINITY;
  double l = 0.0;
  for (double x : s) l += std::exp(x - mx);
  return mx + std::log(l);
}

// Max |lse - lse64| / (1 + |lse64|) over [B, H, N]; an -inf or NaN that is not matched exactly counts as infinite.
inline double lse_err(const std::vector<float>& lse, const uint8_t* mask, const Tensor& q, const Tensor& k,
                      float scale = 0.0f, const int32_t* key_lengths = nullptr) {
  const int64_t B = q.view.B(), H = q.view.H(), N = q.view.N();
  double e = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const double want = lse64(mask, q, k, b, h, i, scale, key_lengths), got = lse[size_t((b * H + h) * N + i)];
        if (std::isnan(want) || std::isnan(got))  // NaN in, NaN out: both or neither
          e = std::max(e, std::isnan(want) && std::isnan(got) ? 0.0 : INFINITY);
        else if (std::isinf(want) || std::isinf(got))
          e = std::max(e, got == want ? 0.0 : INFINITY);
        else
          e = std::max(e, std::fabs(got - want) / (1.0 + std::fabs(want)));
      }
  return e;
}

}  // namespace cputest
