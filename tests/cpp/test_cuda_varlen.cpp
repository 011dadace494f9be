// CUDA packed varlen prefill against the float64 attention of the whole token axis with the block-diagonal mask
// (each sequence's pattern at its own length, position 0 at its first token): every suite family plus causal, sink
// and dilated, lengths 0, 1 and not multiples of 64 or 128 mixed, GQA, bf16 and f16, D 64 and 128, [total, H, D] and
// [H, total, D] memory, lse; the packed-plan cache; argument errors. Fresh random inputs, NaN-poisoned outputs,
// err(ours) <= 6 * err(naive same dtype) + atol. Skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "splat/cuda.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"
#include "splat/suite.hpp"
#include "test_cpu_util.hpp"
#include "test_cuda_util.hpp"
#include "test_varlen_util.hpp"

#ifndef SPLAT_WITH_CUDA
TEST(CudaVarlen, BuiltWithoutCuda) {
  GTEST_SKIP() << "splat was built without the CUDA backend (SPLAT_WITH_CUDA=OFF)";
}
#else

namespace {

using namespace splat;
using cputest::Tensor;

struct Case {
  std::string spec;
  std::vector<int32_t> lengths;
  int64_t H = 4, Hkv = 2, D = 64;
  DType dt = DType::BF16;
  bool token_major = true;  // [total, H, D] memory; false: [H, total, D]
};

std::string describe(const Case& c) {
  std::string s = c.spec + " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) + " D=" + std::to_string(c.D) +
                  " " + dtype_name(c.dt) + (c.token_major ? " [total,H,D]" : " [H,total,D]") + " lengths";
  for (int32_t n : c.lengths) s += " " + std::to_string(n);
  return s;
}

// A device copy of a host tensor (same strides), freed at scope end.
struct DeviceTensor {
  cudatest::DeviceBuffer buf;
  TensorView view;
  explicit DeviceTensor(const Tensor& t) : buf(t.bytes.size()) {
    EXPECT_EQ(cudaMemcpy(buf.p, t.bytes.data(), t.bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
    view = t.view;
    view.data = static_cast<char*>(buf.p) +
                (static_cast<const char*>(t.view.data) - reinterpret_cast<const char*>(t.bytes.data()));
    view.device = 0;
  }
  void read_back(Tensor& t) {
    EXPECT_EQ(cudaMemcpy(t.bytes.data(), buf.p, t.bytes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

void check(VarlenPlans& plans, const Case& c) {
  SCOPED_TRACE(describe(c));
  std::vector<int32_t> cu = {0};
  int64_t mx = 0;
  for (int32_t n : c.lengths) cu.push_back(cu.back() + n), mx = std::max<int64_t>(mx, n);
  const int64_t total = cu.back();
  std::mt19937 rng(uint32_t(std::hash<std::string>{}(describe(c))) ^ std::random_device{}());
  Tensor q(c.dt, 1, c.H, total, c.D, c.token_major), k(c.dt, 1, c.Hkv, total, c.D, c.token_major);
  Tensor v(c.dt, 1, c.Hkv, total, c.D, c.token_major), out(c.dt, 1, c.H, total, c.D, c.token_major);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  out.poison();
  std::vector<float> lse(size_t(c.H * total), NAN);
  DeviceTensor dq(q), dk(k), dv(v), dout(out);
  cudatest::DeviceBuffer dlse(lse.size() * 4);
  ASSERT_EQ(cudaMemcpy(dlse.p, lse.data(), lse.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  const Varlen batch{cu.data(), int64_t(c.lengths.size()), mx};
  attention_varlen_cuda(plans, dq.view, dk.view, dv.view, dout.view, batch, {}, nullptr, static_cast<float*>(dlse.p));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  dout.read_back(out);
  ASSERT_EQ(cudaMemcpy(lse.data(), dlse.p, lse.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);

  const std::vector<uint8_t> mask = splat_test::packed_dense_mask(plans.pattern(), cu);
  const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
  Tensor ref(DType::F32, 1, c.H, total, c.D, false);
  ref.poison();
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view);
  const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, c.dt);
  const double e_ours = cputest::max_abs_err(out, ref), e_naive = cputest::max_abs_err(naive, ref);
  EXPECT_LE(e_ours, 6.0 * e_naive + 2e-3) << "naive error " << e_naive;
  EXPECT_LE(cputest::lse_err(lse, mask.data(), q32, k32), 2e-3);  // as the other CUDA forward tests
}

const std::vector<int32_t> kMixed = {1, 300, 0, 129, 64, 517, 2, 77, 255, 0};

}  // namespace

// The sanitizer run uses this test: every suite family and the serving patterns over one mixed batch.
TEST(CudaVarlen, EveryFamilyMixedLengths) {
  REQUIRE_GPU();
  std::vector<std::string> specs = {"causal", "causal_window:w=100+sink:g=4&causal", "causal_dilated:w=64,d=4",
                                    "fixed:l=64,c=8"};
  for (const std::string& s : suite_specs(512)) specs.push_back(s);
  for (const std::string& spec : specs) {
    VarlenPlans plans(parse_pattern(spec));
    check(plans, {spec, kMixed});
  }
}

TEST(CudaVarlen, DtypesHeadDimsLayoutsAndGqa) {
  REQUIRE_GPU();
  const std::string spec = "causal_window:w=96+sink:g=4&causal";
  VarlenPlans plans(parse_pattern(spec));
  check(plans, {spec, kMixed, 8, 2, 128, DType::BF16, true});
  check(plans, {spec, kMixed, 4, 4, 64, DType::F16, false});
  check(plans, {spec, {1}, 2, 1, 64, DType::BF16, true});
  check(plans, {spec, {1, 1, 1, 0, 1}, 4, 1, 128, DType::F16, true});
  VarlenPlans strided(parse_pattern("strided:s=16"));  // a multi-pass plan: the lse doubles as the merge workspace
  check(strided, {"strided:s=16", {200, 0, 33, 129}, 4, 2, 128, DType::BF16, false});
}

TEST(CudaVarlen, PackedPlansAreCachedByComposition) {
  REQUIRE_GPU();
  VarlenPlans plans(parse_pattern("causal"), 64, 2);
  std::vector<int32_t> a = {0, 100, 300}, b = {0, 200, 300}, c = {0, 50, 300};
  auto plan = [&](const std::vector<int32_t>& cu, VarlenPlanTimes* t) {
    return varlen_cuda_plan(plans, Varlen{cu.data(), 2, 300}, DType::BF16, 64, 0, t);
  };
  VarlenPlanTimes t;
  const auto pa = plan(a, &t);
  EXPECT_FALSE(t.cached);
  EXPECT_GT(t.tiles, 0);
  EXPECT_EQ(plan(a, &t), pa);
  EXPECT_TRUE(t.cached);
  plan(b, &t), plan(c, &t);  // capacity 2: a is dropped
  EXPECT_NE(plan(a, &t), pa);
  EXPECT_FALSE(t.cached);
  EXPECT_NE(plan(a, &t), nullptr);
  EXPECT_TRUE(plan(a, &t) != nullptr && t.cached);
  EXPECT_NE(varlen_cuda_plan(plans, Varlen{a.data(), 2, 300}, DType::F16, 64, 0, &t), pa);  // dtype is in the key
}

TEST(CudaVarlen, ErrorsAreClear) {
  REQUIRE_GPU();
  VarlenPlans plans(parse_pattern("causal"));
  Tensor hq(DType::BF16, 1, 2, 10, 64, true), ho(DType::BF16, 1, 2, 10, 64, true);
  std::mt19937 rng(1);
  hq.randomise(rng, 1.0f);
  DeviceTensor q(hq), o(ho);
  auto fails = [&](std::vector<int32_t> cu, int64_t mx, const char* what, const char* why) {
    const Varlen b{cu.data(), int64_t(cu.size()) - 1, mx};
    try {
      attention_varlen_cuda(plans, q.view, q.view, q.view, o.view, b);
      ADD_FAILURE() << why << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << why << ": " << e.what();
    }
  };
  fails({0, 4, 9}, 5, "cu_seqlens[B] = 9 but the packed tensors hold 10 tokens", "cu_seqlens[B] != total");
  fails({1, 4, 10}, 6, "cu_seqlens[0] must be 0", "cu_seqlens[0] != 0");
  fails({0, 6, 4, 10}, 6, "non-decreasing", "decreasing");
  fails({0, 4, 10}, 5, "more than max_seqlen = 5", "longer than max_seqlen");
  std::vector<int32_t> cu = {0, 10};
  const Varlen one{cu.data(), 1, 10};
  EXPECT_THROW(attention_varlen_cuda(plans, q.view, q.view, q.view, q.view, one), Error) << "out = q";
  EXPECT_THROW(attention_varlen_cuda(plans, hq.view, hq.view, hq.view, ho.view, one), Error) << "host tensors";
  AttentionOptions padded;
  int32_t len = 3;
  padded.key_lengths = &len;
  EXPECT_THROW(attention_varlen_cuda(plans, q.view, q.view, q.view, o.view, one, padded), Error) << "key_lengths";
}

#endif
