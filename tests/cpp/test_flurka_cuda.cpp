// CUDA path vs the float64 CPU reference, outputs NaN-poisoned (flurka_cuda_host poisons the device output).
// The CUDA path runs its GEMMs on bf16 operands whatever the storage dtype, so the tolerance is the bf16
// idiom with a chain of four bf16 roundings (K', phi, U, P): err <= 6 * err(bf16 storage of the exact result)
// + 2e-3.
#include <gtest/gtest.h>

#include "test_flurka_util.hpp"

using namespace flurka_test;

namespace {

using Param = CudaParam;

class FlurkaCuda : public ::testing::TestWithParam<Param> {};

TEST_P(FlurkaCuda, MatchesReference) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const Param pr = GetParam();
  uint32_t seed = 900 + uint32_t(pr.D);
  // Sizes off the 64-tiles on purpose; one per-head and one shared case each.
  for (const Case base : {Case{2, 3, 200, 300, pr.D, 96, 80}, Case{1, 2, 64, 1000, pr.D, 130, 256}}) {
    Case c = base;
    c.dtype = pr.t, c.shared = (seed % 2) == 1;
    Problem p = make_problem(c, seed++);
    flurka_reference(pr.m, p.in, p.ref_view);
    flurka_cuda_host(pr.m, p.in, p.out_view);
    const double err = rel_err(p.out, p.ref), tol = 6 * storage_err(p.ref, DType::BF16) + 2e-3;
    EXPECT_LE(err, tol) << flurka_method_name(pr.m) << " " << dtype_name(pr.t) << " D=" << c.D << " N=" << c.N
                        << " k=" << c.k << " m=" << c.m << (c.shared ? " shared" : " per-head");
  }
}

std::vector<Param> params() {
  std::vector<Param> v;
  for (FlurkaMethod m : all_flurka_methods())
    for (int64_t D : {32, 64, 128}) v.push_back({m, DType::BF16, D});
  for (FlurkaMethod m : all_flurka_methods()) {
    v.push_back({m, DType::F16, 64});
    v.push_back({m, DType::F32, 64});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FlurkaCuda, ::testing::ValuesIn(params()), [](const auto& info) {
  std::string n = std::string(flurka_method_name(info.param.m)) + "_" + dtype_name(info.param.t) + "_D" +
                  std::to_string(info.param.D);
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
});

// Edges of the pipelined kernels: a single projection split (plain stores, N <= 256), partial column tiles
// (B D not a multiple of 128), two 256-row projection tiles and eight 64-slot query chunks (k = m = 512), N off
// the 64-column stages and Nq off the 128-row tiles, and N whose E rows are not 16-byte aligned (250, 333: the
// element-wise copy path).
TEST(FlurkaCudaEdges, PipelineEdges) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const std::vector<std::pair<Case, std::vector<FlurkaMethod>>> cases = {
      {Case{3, 4, 70, 200, 64, 96, 64}, all_flurka_methods()},
      {Case{3, 2, 130, 250, 32, 40, 48}, {FlurkaMethod::FlurkaElu, FlurkaMethod::Linformer}},
      {Case{1, 2, 300, 1032, 64, 512, 512}, {FlurkaMethod::FlurkaFavor, FlurkaMethod::Linformer}},
      {Case{2, 2, 129, 333, 128, 260, 96}, {FlurkaMethod::FlurkaRelu, FlurkaMethod::Linformer}},
  };
  uint32_t seed = 77;
  for (const auto& [base, methods] : cases)
    for (DType t : {DType::BF16, DType::F16})
      for (FlurkaMethod m : methods) {
        Case c = base;
        c.dtype = t, c.shared = (seed % 3) == 0;
        Problem p = make_problem(c, seed++);
        flurka_reference(m, p.in, p.ref_view);
        flurka_cuda_host(m, p.in, p.out_view);
        const double err = rel_err(p.out, p.ref), tol = 6 * storage_err(p.ref, DType::BF16) + 2e-3;
        EXPECT_LE(err, tol) << flurka_method_name(m) << " " << dtype_name(t) << " B=" << c.B << " H=" << c.H
                            << " D=" << c.D << " N=" << c.N << " Nq=" << c.Nq << " k=" << c.k << " m=" << c.m;
      }
}

// [B, N, H, D] storage (the layout of a fused QKV projection): strided views for q, k, v and out.
TEST(FlurkaCudaEdges, StridedBNHDViews) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  uint32_t seed = 500;
  for (FlurkaMethod m : {FlurkaMethod::FlurkaFavor, FlurkaMethod::Linformer, FlurkaMethod::PerformerRelu}) {
    const Case c{2, 3, 150, 304, 64, 64, 64, DType::BF16, false};
    Problem p = make_problem(c, seed++);
    flurka_reference(m, p.in, p.ref_view);
    // Permute q, k, v into [B, N, H, D] buffers and view them with strides.
    auto bnhd = [&](const Buf& src, int64_t n) {
      Buf dst(c.dtype, src.size());
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t i = 0; i < n; ++i)
            for (int64_t d = 0; d < c.D; ++d)
              store_element(dst.data(), c.dtype, size_t(((b * n + i) * c.H + h) * c.D + d),
                            src.get(size_t(((b * c.H + h) * n + i) * c.D + d)));
      return dst;
    };
    auto view = [&](Buf& b, int64_t n) {
      TensorView v = contiguous_view(b.data(), c.dtype, c.B, c.H, n, c.D);
      v.stride[0] = n * c.H * c.D, v.stride[1] = c.D, v.stride[2] = c.H * c.D;
      return v;
    };
    Buf q = bnhd(p.q, c.Nq), k = bnhd(p.k, c.N), v = bnhd(p.v, c.N), out(c.dtype, p.out.size());
    out.poison();
    FlurkaInputs in = p.in;
    in.q = view(q, c.Nq), in.k = view(k, c.N), in.v = view(v, c.N);
    flurka_cuda_host(m, in, view(out, c.Nq));
    Buf back(c.dtype, out.size());  // out back to [B, H, N, D]
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < c.Nq; ++i)
          for (int64_t d = 0; d < c.D; ++d)
            store_element(back.data(), c.dtype, size_t(((b * c.H + h) * c.Nq + i) * c.D + d),
                          out.get(size_t(((b * c.Nq + i) * c.H + h) * c.D + d)));
    const double err = rel_err(back, p.ref), tol = 6 * storage_err(p.ref, DType::BF16) + 2e-3;
    EXPECT_LE(err, tol) << flurka_method_name(m) << " [B, N, H, D] views";
  }
}

TEST(FlurkaCudaErrors, UnsupportedSizesSayWhy) {
  FlurkaShape s;
  s.B = 1, s.H = 1, s.N = 100, s.Nq = 100, s.D = 48, s.k = 8, s.m = 8;
  std::string why;
  EXPECT_FALSE(flurka_cuda_supports(FlurkaMethod::FlurkaFavor, s, &why));
  EXPECT_NE(why.find("D"), std::string::npos) << why;
  s.D = 64, s.k = 600;
  EXPECT_FALSE(flurka_cuda_supports(FlurkaMethod::Linformer, s, &why));
  s.k = 8, s.m = 513;
  EXPECT_FALSE(flurka_cuda_supports(FlurkaMethod::PerformerFavor, s, &why));
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  Problem p = make_problem(Case{1, 1, 10, 20, 48, 4, 4}, 1);
  EXPECT_THROW(flurka_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view), splat::Error);
}

}  // namespace
