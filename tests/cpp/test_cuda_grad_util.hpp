// Helpers for the CUDA lse / key-padding / backward tests: host tensors mirrored on the device, and a naive
// same-dtype backward (float32 arithmetic, gradients rounded to the dtype) for the tolerance idiom
// err(cuda) <= k * err(naive) + atol against the float64 oracle.
#pragma once
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "test_cpu_util.hpp"
#include "test_cuda_util.hpp"

namespace cudatest {

using cputest::Tensor;
using namespace splat;

// A host tensor's whole storage on the device (same offsets, so strides are exercised as on the host).
struct DevTensor {
  DeviceBuffer buf;
  TensorView view;
  explicit DevTensor(const Tensor& t) : buf(t.bytes.size()) {
    if (cudaMemcpy(buf.p, t.bytes.data(), t.bytes.size(), cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("cudaMemcpy to the device failed");
    view = t.view;
    view.data = static_cast<uint8_t*>(buf.p) + (static_cast<const uint8_t*>(t.view.data) - t.bytes.data());
    view.device = 0;
  }
  void to_host(Tensor& t) const {
    if (cudaMemcpy(t.bytes.data(), buf.p, t.bytes.size(), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("cudaMemcpy to the host failed");
  }
};

template <class T>
struct DevArray {
  DeviceBuffer buf;
  explicit DevArray(const std::vector<T>& h) : buf(h.size() * sizeof(T)) {
    if (!h.empty()) cudaMemcpy(buf.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  T* get() const { return static_cast<T*>(buf.p); }
  std::vector<T> to_host(size_t n) const {
    std::vector<T> h(n);
    if (n) cudaMemcpy(h.data(), buf.p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

inline float round_to(DType t, float x) {
  if (t == DType::F16) return half_to_float(float_to_half(x));
  if (t == DType::BF16) return bf16_to_float(float_to_bf16(x));
  return x;
}

struct Grads {
  Tensor dq, dk, dv;
};

// Dense backward in float32 arithmetic from the mask (keys j < key_lengths[b] when given), rounded to `dtype`.
inline Grads naive_backward(const uint8_t* mask, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                            DType dtype, const int32_t* key_lengths = nullptr) {
  const int64_t B = q.view.B(), H = q.view.H(), Hkv = k.view.H(), N = q.view.N(), D = q.view.D(), g = H / Hkv;
  const float sc = 1.0f / std::sqrt(float(D));
  Grads r{Tensor(DType::F32, B, H, N, D, false), Tensor(DType::F32, B, Hkv, N, D, false),
          Tensor(DType::F32, B, Hkv, N, D, false)};
  std::vector<float> dq(static_cast<size_t>(N * D)), dk(static_cast<size_t>(Hkv * N * D));
  std::vector<float> dv(static_cast<size_t>(Hkv * N * D)), s(static_cast<size_t>(N)), o(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t limit = key_lengths ? key_lengths[b] : N;
    std::fill(dk.begin(), dk.end(), 0.f), std::fill(dv.begin(), dv.end(), 0.f);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / g;
      std::fill(dq.begin(), dq.end(), 0.f);
      for (int64_t i = 0; i < N; ++i) {
        float mx = -INFINITY;
        for (int64_t j = 0; j < limit; ++j) {
          if (!mask[i * N + j]) continue;
          float dot = 0.f;
          for (int64_t d = 0; d < D; ++d) dot += q.get(b, h, i, d) * k.get(b, hk, j, d);
          s[size_t(j)] = dot * sc;
          mx = std::max(mx, s[size_t(j)]);
        }
        if (mx == -INFINITY) continue;
        float l = 0.f;
        for (int64_t j = 0; j < limit; ++j)
          if (mask[i * N + j]) l += std::exp(s[size_t(j)] - mx);
        // cppcheck-suppress invalidFunctionArg ; l >= 1: the maximum's own term is exp(0)
        const float lse = mx + std::log(l);
        std::fill(o.begin(), o.end(), 0.f);
        for (int64_t j = 0; j < limit; ++j)
          if (mask[i * N + j])
            for (int64_t d = 0; d < D; ++d) o[size_t(d)] += std::exp(s[size_t(j)] - lse) * v.get(b, hk, j, d);
        float delta = 0.f;
        for (int64_t d = 0; d < D; ++d) delta += dout.get(b, h, i, d) * round_to(dtype, o[size_t(d)]);
        for (int64_t j = 0; j < limit; ++j) {
          if (!mask[i * N + j]) continue;
          const float p = std::exp(s[size_t(j)] - lse);
          float dp = 0.f;
          for (int64_t d = 0; d < D; ++d) dp += dout.get(b, h, i, d) * v.get(b, hk, j, d);
          const float ds = p * (dp - delta);
          for (int64_t d = 0; d < D; ++d) {
            dq[size_t(i * D + d)] += sc * ds * k.get(b, hk, j, d);
            dk[size_t((hk * N + j) * D + d)] += sc * ds * q.get(b, h, i, d);
            dv[size_t((hk * N + j) * D + d)] += p * dout.get(b, h, i, d);
          }
        }
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) r.dq.set(b, h, i, d, round_to(dtype, dq[size_t(i * D + d)]));
    }
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t d = 0; d < D; ++d) {
          r.dk.set(b, hk, j, d, round_to(dtype, dk[size_t((hk * N + j) * D + d)]));
          r.dv.set(b, hk, j, d, round_to(dtype, dv[size_t((hk * N + j) * D + d)]));
        }
  }
  return r;
}

// Max |lse - ref| over rows; an -inf must be matched exactly (else infinite), NaN is infinite.
inline double lse_error(const std::vector<float>& got, const std::vector<float>& want) {
  double e = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i]) || std::isinf(got[i]) || std::isnan(got[i]))
      e = std::max(e, got[i] == want[i] ? 0.0 : INFINITY);
    else
      e = std::max(e, double(std::fabs(got[i] - want[i])) / (1.0 + std::fabs(want[i])));
  }
  return e;
}

}  // namespace cudatest
