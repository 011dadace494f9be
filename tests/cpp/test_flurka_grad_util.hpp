// Shared helpers of the FLuRKA gradient tests: float64 copies of a problem, gradient buffers (NaN-poisoned),
// and the gradient error measure.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "test_flurka_util.hpp"

namespace flurka_test {

// Inputs in float64 with the values of p (the oracle runs on exactly the values the fast path sees).
inline Buf to_f64(const Buf& x) {
  Buf y(DType::F64, x.size());
  for (size_t i = 0; i < x.size(); ++i) store_element(y.data(), DType::F64, i, x.get(i));
  return y;
}

struct Grads {
  Buf dout, dq, dk, dv, de, df;
  FlurkaGrads g;
};

// Gradient buffers of dtype t (poisoned) for problem p; dout random (same values for every dtype by seed).
inline Grads make_grads(const Problem& p, DType t, uint32_t seed) {
  std::mt19937 gen(seed);
  const Case& c = p.c;
  Grads r;
  r.dout = Buf(DType::F32, p.q.size());
  r.dout.fill_normal(gen, 1.0f);
  if (t == DType::F64) {
    r.dout = to_f64(r.dout);
  } else if (t != DType::F32) {  // rounded to t
    Buf x(t, r.dout.size());
    for (size_t i = 0; i < x.size(); ++i) store_element(x.data(), t, i, r.dout.get(i));
    r.dout = x;
  }
  r.dq = Buf(t, p.q.size()), r.dk = Buf(t, p.k.size()), r.dv = Buf(t, p.v.size());
  r.de = Buf(t, p.e.size()), r.df = Buf(t, p.f.size());
  for (Buf* b : {&r.dq, &r.dk, &r.dv, &r.de, &r.df}) b->poison();
  r.g.dout = contiguous_view(r.dout.data(), t, c.B, c.H, c.Nq, c.D);
  r.g.dq = contiguous_view(r.dq.data(), t, c.B, c.H, c.Nq, c.D);
  r.g.dk = contiguous_view(r.dk.data(), t, c.B, c.H, c.N, c.D);
  r.g.dv = contiguous_view(r.dv.data(), t, c.B, c.H, c.N, c.D);
  r.g.de = r.de.data(), r.g.df = r.df.data();
  return r;
}

// The problem's inputs as float64 buffers and views.
struct F64Inputs {
  Buf q, k, v, e, f, w;
  FlurkaInputs in;
};
inline F64Inputs as_f64(const Problem& p) {
  F64Inputs x{to_f64(p.q), to_f64(p.k), to_f64(p.v), to_f64(p.e), to_f64(p.f), to_f64(p.w), p.in};
  x.in.q.data = x.q.data(), x.in.k.data = x.k.data(), x.in.v.data = x.v.data();
  x.in.q.dtype = x.in.k.dtype = x.in.v.dtype = DType::F64;
  x.in.e.data = x.e.data(), x.in.f.data = x.f.data(), x.in.w.data = x.w.data();
  x.in.e.dtype = x.in.f.dtype = x.in.w.dtype = DType::F64;
  return x;
}

// The oracle's gradients for exactly the dout values of `like` (e.g. bf16-rounded).
inline void use_dout_of(Grads& ref, const Grads& like) {
  ref.dout = to_f64(like.dout);
  ref.g.dout.data = ref.dout.data();
}

// ||a - b|| / max(||b||, sqrt(n)): relative, with an RMS-1 floor for gradients that vanish (N = 1: out does
// not depend on q); NaN anywhere gives +inf.
inline double grad_err(const Buf& a, const Buf& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a.get(i), y = load_element_f64(b.bytes.data(), b.dtype, i);
    if (!std::isfinite(x)) return INFINITY;
    num += (x - y) * (x - y), den += y * y;
  }
  return std::sqrt(num / std::max(den, double(a.size())));
}

}  // namespace flurka_test
