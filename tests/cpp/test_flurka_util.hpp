// Shared helpers of the FLuRKA tests: random inputs in any storage dtype, NaN poisoning, relative errors.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace flurka_test {
using namespace splat;

// The CUDA suites: whether a device is there (printing why not), and their (method, dtype, head dim) parameters
// with readable, deterministic names in test listings.
inline bool have_cuda_device() {
  std::string why;
  if (flurka_cuda_available(&why)) return true;
  std::printf("[  SKIPPED ] no CUDA device: %s\n", why.c_str());
  return false;
}

struct CudaParam {
  FlurkaMethod m;
  DType t;
  int64_t D;
};
inline void PrintTo(const CudaParam& p, std::ostream* os) {
  *os << flurka_method_name(p.m) << " " << dtype_name(p.t) << " D=" << p.D;
}

// A host buffer of n elements of dtype t.
struct Buf {
  DType dtype = DType::F32;
  std::vector<uint8_t> bytes;
  Buf() = default;
  Buf(DType t, size_t n) : dtype(t), bytes(n * dtype_size(t)) {}
  size_t size() const { return bytes.size() / dtype_size(dtype); }
  void* data() { return bytes.data(); }
  float get(size_t i) const { return load_element(bytes.data(), dtype, i); }
  void fill_normal(std::mt19937& g, float sd) {
    std::normal_distribution<float> nd(0.0f, sd);
    for (size_t i = 0; i < size(); ++i) store_element(bytes.data(), dtype, i, nd(g));
  }
  void poison() {
    for (size_t i = 0; i < size(); ++i) store_element(bytes.data(), dtype, i, std::numeric_limits<float>::quiet_NaN());
  }
};

struct Case {
  int64_t B = 1, H = 2, Nq = 37, N = 53, D = 16, k = 8, m = 12;
  DType dtype = DType::F32;
  bool shared = false;  // E, F, W shared by all heads
  int64_t chunk = 0;    // causal: C (E, F are [k = r, C])
};

struct Problem {
  Case c;
  Buf q, k, v, e, f, w, out, ref;
  FlurkaInputs in;
  TensorView out_view, ref_view;
};

inline Problem make_problem(const Case& c, uint32_t seed) {
  std::mt19937 g(seed);
  Problem p;
  p.c = c;
  const int64_t He = c.shared ? 1 : c.H;
  const int64_t cols = c.chunk > 0 ? c.chunk : c.N;
  p.q = Buf(c.dtype, size_t(c.B * c.H * c.Nq * c.D));
  p.k = Buf(c.dtype, size_t(c.B * c.H * c.N * c.D));
  p.v = Buf(c.dtype, size_t(c.B * c.H * c.N * c.D));
  p.e = Buf(c.dtype, size_t(He * c.k * cols));
  p.f = Buf(c.dtype, size_t(He * c.k * cols));
  p.w = Buf(c.dtype, size_t(He * c.D * c.m));
  p.out = Buf(c.dtype, p.q.size());
  p.ref = Buf(DType::F32, p.q.size());
  p.q.fill_normal(g, 1.0f);
  p.k.fill_normal(g, 1.0f);
  p.v.fill_normal(g, 1.0f);
  p.e.fill_normal(g, 1.0f / std::sqrt(float(cols)));  // rows of E have unit norm on average
  p.f.fill_normal(g, 1.0f / std::sqrt(float(cols)));
  p.w.fill_normal(g, 1.0f);
  p.out.poison();
  p.ref.poison();
  p.in.q = contiguous_view(p.q.data(), c.dtype, c.B, c.H, c.Nq, c.D);
  p.in.k = contiguous_view(p.k.data(), c.dtype, c.B, c.H, c.N, c.D);
  p.in.v = contiguous_view(p.v.data(), c.dtype, c.B, c.H, c.N, c.D);
  p.in.e = MatrixView{p.e.data(), c.dtype, He, c.k, cols, -1};
  p.in.f = MatrixView{p.f.data(), c.dtype, He, c.k, cols, -1};
  p.in.w = MatrixView{p.w.data(), c.dtype, He, c.D, c.m, -1};
  p.out_view = contiguous_view(p.out.data(), c.dtype, c.B, c.H, c.Nq, c.D);
  p.ref_view = contiguous_view(p.ref.data(), DType::F32, c.B, c.H, c.Nq, c.D);
  return p;
}

// ||a - b|| / ||b||; NaN anywhere in a gives +inf.
inline double rel_err(const Buf& a, const Buf& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a.get(i), y = b.get(i);
    if (!std::isfinite(x)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Error of merely storing the reference in dtype t: the "same-dtype naive" floor of the tolerance idiom.
inline double storage_err(const Buf& ref, DType t) {
  Buf r(t, ref.size());
  for (size_t i = 0; i < ref.size(); ++i) store_element(r.data(), t, i, ref.get(i));
  return rel_err(r, ref);
}

}  // namespace flurka_test
