// Causal CUDA FLuRKA (experimental kernels) vs the float64 causal reference: N not a multiple of the chunk,
// chunks off the 64-row query tiles, a single partial chunk, D 32/64/128, shared and per-head E/F/W, every
// storage dtype; flurka_causal_cuda_host NaN-poisons the output and the workspace. The SIMT kernels' arithmetic
// is fp32 on the stored values, so the tolerance is the storage idiom: err <= 2 * err(storing the exact result) +
// 1e-4; bf16 storage takes the tensor-core kernels (bf16 operands, fp32 accumulation), so bf16 has the
// non-causal CUDA tests' GEMM idiom: 6 * err(storing in bf16) + 2e-3.
#include <gtest/gtest.h>

#include <cstring>
#include <utility>

#include "test_flurka_util.hpp"

using namespace flurka_test;

namespace {

const FlurkaMethod kCausal[] = {FlurkaMethod::FlurkaFavor, FlurkaMethod::FlurkaElu, FlurkaMethod::FlurkaRelu};

using Param = CudaParam;

class FlurkaCudaCausal : public ::testing::TestWithParam<Param> {};

double check_case(FlurkaMethod m, Case c, uint32_t seed, double* tol) {
  Problem p = make_problem(c, seed);
  flurka_causal_reference(m, p.in, p.ref_view, c.chunk);
  flurka_causal_cuda_host(m, p.in, p.out_view, c.chunk);
  *tol = c.dtype == DType::BF16 ? 6 * storage_err(p.ref, c.dtype) + 2e-3 : 2 * storage_err(p.ref, c.dtype) + 1e-4;
  return rel_err(p.out, p.ref);
}

TEST_P(FlurkaCudaCausal, MatchesReference) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const Param pr = GetParam();
  uint32_t seed = 1300 + uint32_t(pr.D);
  // (B, H, N, D, r, m, chunk): 300 = 4 x 64 + 44; 1000 = 7 x 128 + 104 with r = 64, m = 256; chunks of 100 cross
  // the 64-row query tiles; N = 50 < C is one partial chunk (no history at all); 700 = 2 x 256 + 188 has two
  // 128-row tensor-core query tiles per chunk.
  struct Shape {
    int64_t B, H, N, r, m, C;
  };
  for (const Shape sh : {Shape{2, 3, 300, 24, 40, 64}, Shape{1, 2, 1000, 64, 256, 128}, Shape{1, 2, 333, 16, 96, 100},
                         Shape{2, 1, 50, 8, 32, 64}, Shape{1, 2, 700, 64, 256, 256}}) {
    Case c{sh.B, sh.H, sh.N, sh.N, pr.D, sh.r, sh.m};
    c.chunk = sh.C, c.dtype = pr.t, c.shared = (seed % 2) == 1;
    double tol = 0;
    const double err = check_case(pr.m, c, seed++, &tol);
    EXPECT_LE(err, tol) << flurka_method_name(pr.m) << " " << dtype_name(pr.t) << " D=" << c.D << " N=" << c.N
                        << " C=" << c.chunk << " r=" << c.k << " m=" << c.m << (c.shared ? " shared" : " per-head");
  }
}

std::vector<Param> params() {
  std::vector<Param> v;
  for (FlurkaMethod m : kCausal)
    for (int64_t D : {32, 64, 128}) v.push_back({m, DType::BF16, D});
  for (FlurkaMethod m : kCausal) {
    v.push_back({m, DType::F16, 64});
    v.push_back({m, DType::F32, 64});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FlurkaCudaCausal, ::testing::ValuesIn(params()), [](const auto& info) {
  std::string n = std::string(flurka_method_name(info.param.m)) + "_" + dtype_name(info.param.t) + "_D" +
                  std::to_string(info.param.D);
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
});

// The larger ranks the kernels take (r = m = 512: chunk_state's 512-row shared tile, 8 x 512 query weights) and
// a chunk of one token (every row is its own chunk: history of all earlier tokens, one exact key).
TEST(FlurkaCudaCausalEdges, LargeRanksAndUnitChunks) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  uint32_t seed = 41;
  for (FlurkaMethod m : kCausal) {
    Case big{1, 2, 1300, 1300, 64, 512, 512};
    big.chunk = 512, big.dtype = DType::BF16;
    Case unit{1, 2, 70, 70, 32, 1, 24};
    unit.chunk = 1, unit.dtype = DType::F32, unit.shared = true;
    for (const Case& c : {big, unit}) {
      double tol = 0;
      const double err = check_case(m, c, seed++, &tol);
      EXPECT_LE(err, tol) << flurka_method_name(m) << " N=" << c.N << " C=" << c.chunk << " r=" << c.k;
    }
  }
}

// The benchmark's configuration (C = 256, r = 64, m = 256, D = 64, bf16) at N = 4096: 15 chunk states, two 128-row
// query tiles per chunk, per-head E, F, W.
TEST(FlurkaCudaCausalEdges, BenchmarkShape) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  uint32_t seed = 77;
  for (FlurkaMethod m : kCausal) {
    Case c{1, 2, 4096, 4096, 64, 64, 256};
    c.chunk = 256, c.dtype = DType::BF16;
    double tol = 0;
    const double err = check_case(m, c, seed++, &tol);
    EXPECT_LE(err, tol) << flurka_method_name(m);
  }
}

TEST(FlurkaCudaCausalEdges, BitwiseReproducible) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  Case c{2, 2, 700, 700, 64, 32, 128};
  c.chunk = 96, c.dtype = DType::BF16;
  Problem p = make_problem(c, 9);
  flurka_causal_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view, c.chunk);
  const std::vector<uint8_t> first = p.out.bytes;
  p.out.poison();
  flurka_causal_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view, c.chunk, 1, 3);
  EXPECT_EQ(0, std::memcmp(first.data(), p.out.bytes.data(), first.size()));
}

// The device decode step fed a whole sequence token by token equals the causal forward row by row (the last row
// of each prefix is the decode step's output): flushes at every C tokens, a partial last chunk, shared and
// per-head E/F/W; the output buffer is NaN-poisoned.
TEST(FlurkaCudaDecode, StepsEqualCausalReference) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  uint32_t seed = 600;
  for (FlurkaMethod m : kCausal)
    for (const auto& [D, t] : {std::pair<int64_t, DType>{32, DType::F32}, {64, DType::BF16}, {128, DType::F16}}) {
      Case c{2, 3, 150, 150, D, 12, 40};
      c.chunk = 32, c.dtype = t, c.shared = (seed % 2) == 0;
      Problem p = make_problem(c, seed++);
      flurka_causal_reference(m, p.in, p.ref_view, c.chunk);
      flurka_decode_cuda_host(m, p.in, p.out_view, c.chunk);
      const double err = rel_err(p.out, p.ref), tol = 2 * storage_err(p.ref, t) + 1e-4;
      EXPECT_LE(err, tol) << flurka_method_name(m) << " " << dtype_name(t) << " D=" << D
                          << (c.shared ? " shared" : " per-head");
    }
}

// Bad calls give one clear splat::Error, with or without a GPU (the argument checks come first).
TEST(FlurkaCudaCausalErrors, RefusedCalls) {
  Case c{1, 2, 40, 40, 48, 4, 8};
  c.chunk = 8;
  Problem p = make_problem(c, 3);
  EXPECT_THROW(flurka_causal_cuda_host(FlurkaMethod::Linformer, p.in, p.out_view, 8), splat::Error);
  EXPECT_THROW(flurka_causal_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 0), splat::Error);
  EXPECT_THROW(flurka_causal_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 9), splat::Error);  // E: [r, 8]
  EXPECT_THROW(flurka_causal_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 8), splat::Error);  // D = 48
  EXPECT_THROW(flurka_causal_cuda(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 8), splat::Error);       // host views
  // the decode state wants device matrices; a host E is refused before anything is allocated
  EXPECT_THROW(flurka_decode_cuda_init(FlurkaMethod::FlurkaFavor, 1, 2, 64, 8, p.in.e, p.in.f, p.in.w), splat::Error);
  EXPECT_THROW(flurka_decode_cuda_host(FlurkaMethod::FlurkaFavor, p.in, p.out_view, 8), splat::Error);  // D = 48
}

}  // namespace
