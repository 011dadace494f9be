// FLuRKA backward: the float64 oracle against central differences of the forward oracle, and the fast CPU
// paths (non-causal and causal) against the oracle, for every method, odd sizes, shared and per-head E/F/W,
// with NaN-poisoned gradient buffers; determinism across thread counts.
#include <gtest/gtest.h>

#include <cmath>

#include "test_flurka_grad_util.hpp"

using namespace flurka_test;

namespace {

void run_reference(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g, int64_t chunk) {
  if (chunk > 0)
    flurka_causal_backward_reference(m, in, g, chunk);
  else
    flurka_backward_reference(m, in, g);
}

// L = sum(out * dout) through the forward oracle (float64).
double loss(FlurkaMethod m, const F64Inputs& x, const Buf& dout, int64_t chunk) {
  const Case c{x.in.q.B(), x.in.q.H(), x.in.q.N(), x.in.k.N(), x.in.q.D()};
  Buf out(DType::F64, dout.size());
  const TensorView o = contiguous_view(out.data(), DType::F64, c.B, c.H, c.Nq, c.D);
  if (chunk > 0)
    flurka_causal_reference(m, x.in, o, chunk);
  else
    flurka_reference(m, x.in, o);
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += load_element_f64(out.bytes.data(), DType::F64, i) * dout.get(i);
  return s;
}

// The oracle's gradient of a few entries of every input against central differences.
void check_oracle(FlurkaMethod m, const Case& c, uint32_t seed) {
  Problem p = make_problem(c, seed);
  F64Inputs x = as_f64(p);
  Grads gr = make_grads(p, DType::F64, seed + 1);
  run_reference(m, x.in, gr.g, c.chunk);
  std::vector<std::pair<Buf*, Buf*>> pairs = {{&x.q, &gr.dq}, {&x.k, &gr.dk}, {&x.v, &gr.dv}};
  if (uses_projection(m)) pairs.push_back({&x.e, &gr.de}), pairs.push_back({&x.f, &gr.df});
  std::mt19937 gen(seed + 2);
  for (auto [in, grad] : pairs)
    for (int trial = 0; trial < 4; ++trial) {
      const size_t i = gen() % in->size();
      double* v = reinterpret_cast<double*>(in->data()) + i;
      const double v0 = *v, h = 1e-5 * std::max(1.0, std::fabs(v0));
      *v = v0 + h;
      const double lp = loss(m, x, gr.dout, c.chunk);
      *v = v0 - h;
      const double lm = loss(m, x, gr.dout, c.chunk);
      *v = v0;
      const double fd = (lp - lm) / (2 * h), an = load_element_f64(grad->bytes.data(), DType::F64, i);
      EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::fabs(fd)))
          << flurka_method_name(m) << (c.chunk ? " causal" : "") << " element " << i;
    }
}

TEST(FlurkaBackwardOracle, MatchesFiniteDifferences) {
  for (FlurkaMethod m : all_flurka_methods()) {
    check_oracle(m, Case{2, 2, 7, 9, 8, 3, 5}, 100);
    Case sh{1, 2, 6, 5, 4, 2, 3};
    sh.shared = true;
    check_oracle(m, sh, 101);
  }
  for (FlurkaMethod m : {FlurkaMethod::FlurkaFavor, FlurkaMethod::FlurkaElu, FlurkaMethod::FlurkaRelu}) {
    Case c{1, 2, 11, 11, 4, 2, 5};
    c.chunk = 3;  // last chunk partial
    check_oracle(m, c, 102);
    c.shared = true;
    check_oracle(m, c, 103);
  }
}

struct Param {
  FlurkaMethod m;
  bool shared;
  bool causal;
};

class FlurkaBackward : public ::testing::TestWithParam<Param> {};

// err(fast) <= 4 * err(storing the oracle in float32) + atol, per gradient.
void expect_close(const Buf& ours, const Buf& ref, const std::string& label) {
  const double err = grad_err(ours, ref), naive = storage_err(ref, DType::F32);
  EXPECT_LE(err, 4 * naive + 3e-5) << label;
}

TEST_P(FlurkaBackward, MatchesReference) {
  const Param pr = GetParam();
  uint32_t seed = 500;
  std::vector<Case> cases;
  if (pr.causal) {
    cases = {Case{1, 2, 37, 37, 16, 4, 12}, Case{2, 1, 64, 64, 32, 8, 32}, Case{1, 1, 1, 1, 8, 1, 4}};
    cases[0].chunk = 8, cases[1].chunk = 16, cases[2].chunk = 4;
  } else {
    cases = {Case{1, 2, 37, 53, 16, 8, 12}, Case{2, 3, 64, 130, 32, 32, 64}, Case{1, 1, 1, 1, 8, 1, 1}};
  }
  for (Case c : cases) {
    c.shared = pr.shared;
    Problem p = make_problem(c, seed++);
    F64Inputs x = as_f64(p);
    Grads ref = make_grads(p, DType::F64, seed), ours = make_grads(p, DType::F32, seed);
    run_reference(pr.m, x.in, ref.g, c.chunk);
    if (pr.causal)
      flurka_causal_backward_cpu(pr.m, p.in, ours.g, c.chunk);
    else
      flurka_backward_cpu(pr.m, p.in, ours.g);
    const std::string label = std::string(flurka_method_name(pr.m)) + " N=" + std::to_string(c.N) +
                              " Nq=" + std::to_string(c.Nq) + " D=" + std::to_string(c.D);
    expect_close(ours.dq, ref.dq, label + " dq");
    expect_close(ours.dk, ref.dk, label + " dk");
    expect_close(ours.dv, ref.dv, label + " dv");
    if (uses_projection(pr.m)) {
      expect_close(ours.de, ref.de, label + " dE");
      expect_close(ours.df, ref.df, label + " dF");
    }
  }
}

std::vector<Param> params() {
  std::vector<Param> v;
  for (FlurkaMethod m : all_flurka_methods())
    for (bool sh : {false, true}) {
      v.push_back({m, sh, false});
      if (m == FlurkaMethod::FlurkaFavor || m == FlurkaMethod::FlurkaElu || m == FlurkaMethod::FlurkaRelu)
        v.push_back({m, sh, true});
    }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FlurkaBackward, ::testing::ValuesIn(params()), [](const auto& info) {
  std::string n = std::string(flurka_method_name(info.param.m)) + (info.param.shared ? "_shared" : "_perhead") +
                  (info.param.causal ? "_causal" : "");
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
});

// Large favor exponents (|q|, |k| ~ 5): the stabilised backward stays finite and matches the oracle.
TEST(FlurkaBackwardStability, LargeInputs) {
  Case c{1, 2, 40, 64, 32, 16, 32};
  Problem p = make_problem(c, 77);
  for (Buf* b : {&p.q, &p.k})
    for (size_t i = 0; i < b->size(); ++i) store_element(b->data(), c.dtype, i, 5.0f * b->get(i));
  F64Inputs x = as_f64(p);
  for (FlurkaMethod m : {FlurkaMethod::PerformerFavor, FlurkaMethod::FlurkaFavor, FlurkaMethod::Linformer}) {
    Grads ref = make_grads(p, DType::F64, 78), ours = make_grads(p, DType::F32, 78);
    flurka_backward_reference(m, x.in, ref.g);
    flurka_backward_cpu(m, p.in, ours.g);
    for (auto [a, r] : {std::pair{&ours.dq, &ref.dq}, {&ours.dk, &ref.dk}, {&ours.dv, &ref.dv}})
      EXPECT_LE(rel_err(*a, *r), 2e-3) << flurka_method_name(m);
  }
}

// Same gradients, bit for bit, with 1 and 3 threads.
TEST(FlurkaBackwardDeterminism, ThreadCountDoesNotMatter) {
  Case c{2, 2, 300, 300, 16, 8, 16};
  c.shared = true;
  Problem p = make_problem(c, 9);
  for (FlurkaMethod m : {FlurkaMethod::FlurkaFavor, FlurkaMethod::Linformer, FlurkaMethod::PerformerRelu}) {
    Grads a = make_grads(p, DType::F32, 10), b = make_grads(p, DType::F32, 10);
    FlurkaOptions one, three;
    one.threads = 1, three.threads = 3;
    flurka_backward_cpu(m, p.in, a.g, one);
    flurka_backward_cpu(m, p.in, b.g, three);
    EXPECT_EQ(a.dq.bytes, b.dq.bytes) << flurka_method_name(m);
    EXPECT_EQ(a.dk.bytes, b.dk.bytes) << flurka_method_name(m);
    EXPECT_EQ(a.de.bytes, b.de.bytes) << flurka_method_name(m);
  }
}

TEST(FlurkaBackwardErrors, BadGradientViews) {
  Problem p = make_problem(Case{1, 2, 10, 12, 8, 4, 6}, 3);
  Grads g = make_grads(p, DType::F32, 4);
  FlurkaGrads bad = g.g;
  bad.dk.shape[2] = 11;
  EXPECT_THROW(flurka_backward_cpu(FlurkaMethod::Linear, p.in, bad), splat::Error);
  bad = g.g;
  bad.de = nullptr;
  EXPECT_THROW(flurka_backward_cpu(FlurkaMethod::FlurkaFavor, p.in, bad), splat::Error);
  bad = g.g;
  bad.dk = p.in.k;  // a gradient over an input
  EXPECT_THROW(flurka_backward_cpu(FlurkaMethod::FlurkaFavor, p.in, bad), splat::Error);
  bad = g.g;
  bad.df = bad.de;  // two gradients in one buffer
  EXPECT_THROW(flurka_backward_cpu(FlurkaMethod::Linformer, p.in, bad), splat::Error);
  bad = g.g;
  bad.dout.dtype = DType::BF16;
  EXPECT_THROW(flurka_backward_cpu(FlurkaMethod::PerformerFavor, p.in, bad), splat::Error);
  std::string why;
  if (!flurka_cuda_available(&why))
    EXPECT_THROW(flurka_backward_cuda(FlurkaMethod::FlurkaFavor, p.in, g.g), splat::Error);
}

}  // namespace
