// Packed variable-length batches against one dense attention over the whole token axis with a block-diagonal mask
// (sequence b's pattern at its own length, position 0 at its first token): lengths 0, 1 ... N mixed, non-causal and
// length-dependent patterns, GQA, [total, H, D] memory, lse. Tolerance: err(ours) <= 4 * err(naive) + atol.
#include <gtest/gtest.h>

#include <random>

#include "splat/acsr.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"
#include "test_cpu_util.hpp"
#include "test_varlen_util.hpp"

namespace {

using namespace splat;
using cputest::Tensor;

// [1, H, total, D] over [total, H, D] memory.
Tensor packed(DType dt, int64_t H, int64_t total, int64_t D) {
  return Tensor(dt, 1, H, total, D, true);
}

void check(const std::string& spec, DType dt, const std::vector<int32_t>& lengths, int64_t H = 4, int64_t Hkv = 2,
           int64_t D = 16) {
  std::vector<int32_t> cu = {0};
  int64_t mx = 0;
  for (int32_t n : lengths) cu.push_back(cu.back() + n), mx = std::max<int64_t>(mx, n);
  const int64_t total = cu.back();
  std::mt19937 rng(uint32_t(total) * 7 + 3);
  Tensor q = packed(dt, H, total, D), k = packed(dt, Hkv, total, D), v = packed(dt, Hkv, total, D);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  const Pattern p = parse_pattern(spec);
  const std::vector<uint8_t> mask = splat_test::packed_dense_mask(p, cu);
  const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
  Tensor want(DType::F32, 1, H, total, D, false);
  attention_reference(mask.data(), q32.view, k32.view, v32.view, want.view);
  const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, dt);
  Varlen batch{cu.data(), int64_t(lengths.size()), mx};
  VarlenPlans plans(p);
  Tensor out = packed(dt, H, total, D), ref = packed(dt, H, total, D);
  out.poison(), ref.poison();
  std::vector<float> lse(size_t(H * total), NAN), ref_lse = lse;
  AttentionOptions opt;
  opt.threads = 2;
  attention_varlen_cpu(plans, q.view, k.view, v.view, out.view, batch, opt, lse.data());
  attention_varlen_reference(p, q.view, k.view, v.view, ref.view, batch, opt, ref_lse.data());
  const double e_naive = cputest::max_abs_err(naive, want);
  const double atol = dt == DType::BF16 ? 1.6e-2 : 2e-6;
  EXPECT_LE(cputest::max_abs_err(out, want), 4 * e_naive + atol) << spec << " naive " << e_naive;
  EXPECT_LE(cputest::max_abs_err(ref, want), 4 * e_naive + atol) << spec << " reference";
  EXPECT_LE(cputest::lse_err(lse, mask.data(), q32, k32), 2e-6) << spec << " lse";
  EXPECT_LE(cputest::lse_err(ref_lse, mask.data(), q32, k32), 2e-7) << spec << " reference lse";
  // What the CUDA path runs: one forward over the whole token axis with the plan of the block-diagonal ACSR, here in
  // the CUDA kernels' tile shapes on the CPU backend.
  std::vector<std::shared_ptr<const Acsr>> held;
  std::vector<const Acsr*> parts;
  const Acsr empty;
  for (int32_t n : lengths) {
    if (n == 0) {
      parts.push_back(&empty);
      continue;
    }
    held.push_back(plans.acsr(n));
    parts.push_back(held.back().get());
  }
  for (int32_t tile : {64, 128}) {
    PlanOptions po;
    po.block_m = po.block_n = tile;
    const Plan whole = make_plan(block_diagonal(parts), po);
    Tensor one = packed(dt, H, total, D);
    one.poison();
    std::vector<float> one_lse(size_t(H * total), NAN);
    attention_cpu(whole, q.view, k.view, v.view, one.view, opt, one_lse.data());
    EXPECT_LE(cputest::max_abs_err(one, want), 4 * e_naive + atol) << spec << " packed plan, tile " << tile;
    EXPECT_LE(cputest::lse_err(one_lse, mask.data(), q32, k32), 2e-6) << spec << " packed plan lse";
  }
}

TEST(Varlen, MixedLengthsMatchTheBlockDiagonalAttention) {
  const std::vector<int32_t> lengths = {1, 7, 0, 33, 64, 2, 19};
  for (const char* spec : {"dense", "causal", "window:w=5", "strided:s=8", "causal_window:w=8+sink:g=4",
                           "bigbird:b=8,w=1,g=1,r=2", "fixed:l=16,c=4"})
    check(spec, DType::F32, lengths);
  check("causal_window:w=40+sink:g=4&causal", DType::F32, {130, 1, 0, 200, 63});
  check("causal_dilated:w=3,d=2", DType::BF16, lengths, 6, 3, 24);
  check("causal", DType::F32, {1});
  check("dense", DType::F32, {1, 1, 1, 1});
}

TEST(Varlen, ErrorsAreClear) {
  Tensor q = packed(DType::F32, 2, 10, 8), o = packed(DType::F32, 2, 10, 8);
  VarlenPlans plans(parse_pattern("causal"));
  auto fails = [&](std::vector<int32_t> cu, int64_t mx, const char* why) {
    Varlen b{cu.data(), int64_t(cu.size()) - 1, mx};
    EXPECT_THROW(attention_varlen_cpu(plans, q.view, q.view, q.view, o.view, b), Error) << why;
  };
  fails({0, 4, 9}, 5, "cu_seqlens[B] != total");
  fails({1, 4, 10}, 6, "cu_seqlens[0] != 0");
  fails({0, 6, 4, 10}, 6, "decreasing");
  fails({0, 4, 10}, 5, "longer than max_seqlen");
  Varlen ok{nullptr, 2, 10};
  EXPECT_THROW(attention_varlen_cpu(plans, q.view, q.view, q.view, o.view, ok), Error) << "null cu_seqlens";
  std::vector<int32_t> cu = {0, 10};
  Varlen one{cu.data(), 1, 10};
  EXPECT_THROW(attention_varlen_cpu(plans, q.view, q.view, q.view, q.view, one), Error) << "out = q";
  const std::vector<uint8_t> bits(16, 1);
  VarlenPlans masked(mask_pattern(bits.data(), 4));
  EXPECT_THROW(attention_varlen_cpu(masked, q.view, q.view, q.view, o.view, one), Error) << "4x4 mask at n=10";
  // Host tensors are not for the CUDA entry (and a build without CUDA says it has none): an Error either way.
  EXPECT_THROW(attention_varlen_cuda(plans, q.view, q.view, q.view, o.view, one), Error) << "host tensors to CUDA";
}

}  // namespace
