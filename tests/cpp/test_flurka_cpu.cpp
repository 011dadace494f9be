// CPU fast path vs the float64 reference for every method, storage dtype and E/F/W sharing.
#include <gtest/gtest.h>

#include "test_flurka_util.hpp"

using namespace flurka_test;

namespace {

struct Param {
  FlurkaMethod m;
  DType t;
  bool shared;
};

// Readable (and deterministic: no padding bytes) parameter names in test listings.
void PrintTo(const Param& p, std::ostream* os) {
  *os << flurka_method_name(p.m) << " " << dtype_name(p.t) << (p.shared ? " shared" : " per-head");
}

class FlurkaCpu : public ::testing::TestWithParam<Param> {};

TEST_P(FlurkaCpu, MatchesReference) {
  const Param pr = GetParam();
  uint32_t seed = 1234;
  for (const Case base : {Case{1, 2, 37, 53, 16, 8, 12}, Case{2, 3, 64, 128, 32, 32, 64}, Case{1, 1, 5, 7, 8, 7, 1}}) {
    Case c = base;
    c.dtype = pr.t, c.shared = pr.shared;
    Problem p = make_problem(c, seed++);
    flurka_reference(pr.m, p.in, p.ref_view);
    flurka_cpu(pr.m, p.in, p.out_view);
    const double err = rel_err(p.out, p.ref), naive = storage_err(p.ref, pr.t);
    EXPECT_LE(err, 2 * naive + 2e-5) << flurka_method_name(pr.m) << " " << dtype_name(pr.t) << " N=" << c.N
                                     << " D=" << c.D << " k=" << c.k << " m=" << c.m;
  }
}

std::vector<Param> params() {
  std::vector<Param> v;
  for (FlurkaMethod m : all_flurka_methods())
    for (DType t : {DType::F32, DType::F16, DType::BF16})
      for (bool sh : {false, true}) v.push_back({m, t, sh});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FlurkaCpu, ::testing::ValuesIn(params()), [](const auto& info) {
  std::string n = std::string(flurka_method_name(info.param.m)) + "_" + dtype_name(info.param.t) +
                  (info.param.shared ? "_shared" : "_perhead");
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
});

// The kernel formula on inputs where the favor exponents are large (|q|, |k| ~ 6): the shifts must keep
// float32 finite where the unshifted exp would overflow.
TEST(FlurkaCpuStability, LargeInputsStayFinite) {
  Case c{1, 2, 40, 64, 32, 16, 32};
  Problem p = make_problem(c, 99);
  for (size_t i = 0; i < p.k.size(); ++i) store_element(p.k.data(), c.dtype, i, 6.0f * p.k.get(i));
  for (size_t i = 0; i < p.q.size(); ++i) store_element(p.q.data(), c.dtype, i, 6.0f * p.q.get(i));
  for (FlurkaMethod m : {FlurkaMethod::PerformerFavor, FlurkaMethod::FlurkaFavor, FlurkaMethod::Linformer}) {
    p.out.poison();
    flurka_reference(m, p.in, p.ref_view);
    flurka_cpu(m, p.in, p.out_view);
    EXPECT_LE(rel_err(p.out, p.ref), 1e-3) << flurka_method_name(m);
  }
}

// relu features that are all zero for a query give a zero row (denominator 0).
TEST(FlurkaCpuStability, ZeroDenominatorGivesZeroRow) {
  Case c{1, 1, 4, 16, 8, 4, 4};
  Problem p = make_problem(c, 7);
  for (size_t i = 0; i < p.q.size(); ++i) store_element(p.q.data(), c.dtype, i, 1.0f);
  for (size_t i = 0; i < p.w.size(); ++i) store_element(p.w.data(), c.dtype, i, -1.0f);  // q.w < 0: relu = 0
  flurka_reference(FlurkaMethod::PerformerRelu, p.in, p.ref_view);
  flurka_cpu(FlurkaMethod::PerformerRelu, p.in, p.out_view);
  for (size_t i = 0; i < p.out.size(); ++i) {
    EXPECT_EQ(p.out.get(i), 0.0f);
    EXPECT_EQ(p.ref.get(i), 0.0f);
  }
}

// Strided (non-contiguous) views: q as every other head of a larger buffer.
TEST(FlurkaCpuViews, StridedQuery) {
  Case c{2, 2, 20, 30, 16, 8, 8};
  Problem p = make_problem(c, 5);
  Buf big(c.dtype, size_t(c.B * 2 * c.H * c.Nq * c.D));
  std::mt19937 g(11);
  big.fill_normal(g, 1.0f);
  TensorView q = contiguous_view(big.data(), c.dtype, c.B, 2 * c.H, c.Nq, c.D);
  q.shape[1] = c.H, q.stride[1] *= 2;
  p.in.q = q;
  flurka_reference(FlurkaMethod::FlurkaFavor, p.in, p.ref_view);
  flurka_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view);
  EXPECT_LE(rel_err(p.out, p.ref), 2e-5);
}

}  // namespace
