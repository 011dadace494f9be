// CUDA backward vs the float64 oracle (gradient buffers NaN-poisoned on the device by flurka_backward_cuda_host),
// every method, D in {32, 64, 128}, bf16 (and f32, f16 at D = 64), sizes off every block, shared and per-head
// E/F/W. fp32 SIMT arithmetic: err <= 6 * err(storage of the exact gradient in the dtype) + atol. Skipped
// without a device.
#include <gtest/gtest.h>

#include "test_flurka_grad_util.hpp"

using namespace flurka_test;

namespace {

using Param = CudaParam;

class FlurkaCudaBackward : public ::testing::TestWithParam<Param> {};

TEST_P(FlurkaCudaBackward, MatchesReference) {
  std::string why;
  if (!flurka_cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  const Param pr = GetParam();
  uint32_t seed = 1300 + uint32_t(pr.D);
  for (const Case base : {Case{2, 3, 130, 201, pr.D, 40, 72}, Case{1, 2, 65, 300, pr.D, 129, 256}}) {
    Case c = base;
    c.dtype = pr.t, c.shared = (seed % 2) == 1;
    Problem p = make_problem(c, seed++);
    F64Inputs x = as_f64(p);
    Grads ours = make_grads(p, pr.t, seed), ref = make_grads(p, DType::F64, seed);
    use_dout_of(ref, ours);
    flurka_backward_reference(pr.m, x.in, ref.g);
    flurka_backward_cuda_host(pr.m, p.in, ours.g);
    const double atol = pr.t == DType::F32 ? 2e-4 : 2e-3;
    std::vector<std::pair<const char*, std::pair<Buf*, Buf*>>> gs = {
        {"dq", {&ours.dq, &ref.dq}}, {"dk", {&ours.dk, &ref.dk}}, {"dv", {&ours.dv, &ref.dv}}};
    if (uses_projection(pr.m)) gs.push_back({"dE", {&ours.de, &ref.de}}), gs.push_back({"dF", {&ours.df, &ref.df}});
    for (auto& [name, ab] : gs) {
      const double err = grad_err(*ab.first, *ab.second), tol = 6 * storage_err(*ab.second, pr.t) + atol;
      EXPECT_LE(err, tol) << name << " " << flurka_method_name(pr.m) << " " << dtype_name(pr.t) << " D=" << c.D
                          << " N=" << c.N << (c.shared ? " shared" : " per-head");
    }
  }
}

// Every partial has one owner and every sum a fixed order: two calls give bitwise-equal gradients (bf16: the
// tensor-core kernels; f32: the SIMT ones), for every method, shared and per-head E/F/W.
TEST(FlurkaCudaBackwardDeterminism, BitwiseEqualOverCalls) {
  std::string why;
  if (!flurka_cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  uint32_t seed = 1700;
  for (FlurkaMethod m : all_flurka_methods())
    for (DType t : {DType::BF16, DType::F32}) {
      Case c{2, 3, 300, 517, 64, 96, 128};
      c.dtype = t, c.shared = (seed % 2) == 1;
      Problem p = make_problem(c, seed++);
      Grads a = make_grads(p, t, seed), b = make_grads(p, t, seed);
      flurka_backward_cuda_host(m, p.in, a.g);
      flurka_backward_cuda_host(m, p.in, b.g);
      for (auto [x, y] : {std::pair{&a.dq, &b.dq}, {&a.dk, &b.dk}, {&a.dv, &b.dv}, {&a.de, &b.de}, {&a.df, &b.df}}) {
        if ((x == &a.de || x == &a.df) && !uses_projection(m)) continue;
        EXPECT_EQ(x->bytes, y->bytes) << flurka_method_name(m) << " " << dtype_name(t);
      }
    }
}

std::vector<Param> params() {
  std::vector<Param> v;
  for (FlurkaMethod m : all_flurka_methods())
    for (int64_t D : {32, 64, 128}) v.push_back({m, DType::BF16, D});
  for (FlurkaMethod m : all_flurka_methods()) v.push_back({m, DType::F16, 64}), v.push_back({m, DType::F32, 64});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FlurkaCudaBackward, ::testing::ValuesIn(params()), [](const auto& info) {
  std::string n = std::string(flurka_method_name(info.param.m)) + "_" + dtype_name(info.param.t) + "_D" +
                  std::to_string(info.param.D);
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
});

}  // namespace
