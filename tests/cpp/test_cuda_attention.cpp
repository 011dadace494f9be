// CUDA attention against the float64 oracle (attention_reference on a dense mask): every suite pattern
// at small and odd N, more patterns and compositions, explicit masks (gather path) with empty rows,
// GQA/MQA, non-contiguous layouts, bf16/f16, D 64/128, CUDA-graph capture, argument errors.
// Inputs are fresh random values, outputs NaN-poisoned; err(ours) <= k * err(naive same dtype) + atol.
// Skipped with a message where no GPU is usable.
#include <gtest/gtest.h>
#ifndef SPLAT_WITH_CUDA
TEST(CudaAttention, BuiltWithoutCuda) {
  GTEST_SKIP() << "splat was built without the CUDA backend (SPLAT_WITH_CUDA=OFF)";
}
#else
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"
#include "test_cpu_util.hpp"
#include "test_cuda_util.hpp"

using namespace splat;
using cputest::Tensor;

namespace {

struct Case {
  std::string spec;
  int64_t B = 1, H = 2, Hkv = 1, N = 256, D = 64;
  DType dt = DType::BF16;
  bool bnhd = false;
};

std::string describe(const Case& c) {
  return c.spec + " B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
         " N=" + std::to_string(c.N) + " D=" + std::to_string(c.D) + " " + dtype_name(c.dt) + (c.bnhd ? " bnhd" : "");
}

// Runs plan_cuda + attention_cuda_host on fresh random inputs and compares with the oracle; lens (one per batch
// entry, if given): key padding (AttentionOptions::key_lengths).
void check_acsr(const Acsr& a, const std::vector<uint8_t>& mask, const Case& c, const std::vector<int32_t>& lens = {}) {
  SCOPED_TRACE(describe(c) + (lens.empty() ? "" : " key-padded"));
  std::mt19937 rng(uint32_t(std::hash<std::string>{}(describe(c))) ^ std::random_device{}());
  Tensor q(c.dt, c.B, c.H, c.N, c.D, c.bnhd), k(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd);
  Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd), out(c.dt, c.B, c.H, c.N, c.D, c.bnhd);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  out.poison();
  CudaPlanOptions o;
  o.dtype = c.dt, o.head_dim = int(c.D);
  const auto plan = plan_cuda(a, o);
  AttentionOptions dev, host;
  std::unique_ptr<cudatest::DeviceBuffer> dlens;
  if (!lens.empty()) {
    dlens = std::make_unique<cudatest::DeviceBuffer>(lens.size() * sizeof(int32_t));
    ASSERT_EQ(cudaMemcpy(dlens->p, lens.data(), dlens->bytes, cudaMemcpyHostToDevice), cudaSuccess);
    dev.key_lengths = static_cast<const int32_t*>(dlens->p);
    host.key_lengths = lens.data();
  }
  attention_cuda_host(*plan, q.view, k.view, v.view, out.view, dev);

  const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
  Tensor ref(DType::F32, c.B, c.H, c.N, c.D, false);
  ref.poison();
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view, host);
  const Tensor naive =
      cputest::naive_same_dtype(mask.data(), q32, k32, v32, c.dt, 0.0f, lens.empty() ? nullptr : lens.data());
  const double e_ours = cputest::max_abs_err(out, ref), e_naive = cputest::max_abs_err(naive, ref);
  // P is rounded to the input dtype for the tensor cores (as in FlashAttention) and multi-pass plans
  // round the first pass's output once more: a few naive errors.
  EXPECT_LE(e_ours, 6.0 * e_naive + 2e-3)
      << "naive error " << e_naive << "; plan: " << describe_cuda_plan(*plan).back();
}

void check_spec(const Case& c, const std::vector<int32_t>& lens = {}) {
  const Pattern p = parse_pattern(c.spec);
  check_acsr(analyse(p, c.N), dense_mask(p, c.N), c, lens);
}

}  // namespace

// The sanitizer run (compute-sanitizer memcheck / racecheck) uses this test: every suite pattern, small N.
TEST(CudaAttention, SuiteSmall) {
  REQUIRE_GPU();
  for (int64_t n : {256, 333})
    for (const SuiteEntry& e : suite(n)) check_spec({e.spec, 1, 2, 1, n, 64});
}

TEST(CudaAttention, SuiteDtypesAndHeadDims) {
  REQUIRE_GPU();
  for (DType t : {DType::BF16, DType::F16})
    for (int64_t d : {64, 128})
      for (const SuiteEntry& e : suite(300)) check_spec({e.spec, 1, 2, 2, 300, d, t});
}

TEST(CudaAttention, MorePatternsAndCompositions) {
  REQUIRE_GPU();
  for (const char* s :
       {"dense", "causal", "global:g=5", "sink:g=3", "fixed:l=32,c=4", "causal_dilated:w=20,d=3", "dilated:w=9,d=7",
        "strided:s=13", "blocked:b=50", "longformer:w=7,g=3", "causal_window:w=100+sink:g=4", "strided:s=16&causal",
        "window:w=40&blocked:b=64", "sink:g=8&blocked:b=16", "bigbird:b=32,w=1,g=1,r=2,seed=7"})
    check_spec({s, 1, 2, 1, 211, 64});
  check_spec({"window:w=3", 1, 1, 1, 1, 64});  // N = 1
  check_spec({"strided:s=9", 1, 1, 1, 65, 128, DType::F16});
}

// Two-segment spans (strided's residue class around the diagonal, merged by make_plan): several tasks per residue
// class (full + partial spans, the hole inside a step or at a step edge), odd N, both head dims, both dtypes.
TEST(CudaAttention, TwoSegmentSpans) {
  REQUIRE_GPU();
  for (const char* s : {"strided:s=16", "strided:s=24"}) {
    CudaPlanOptions o;
    const auto plan = plan_cuda(analyse(parse_pattern(s), 2048), o);
    bool two = false;
    for (const std::string& line : describe_cuda_plan(*plan)) two |= line.find("2 segments") != std::string::npos;
    EXPECT_TRUE(two) << s << ": expected a kernel with two-segment masks";
  }
  check_spec({"strided:s=16", 1, 2, 1, 2048, 64});
  check_spec({"strided:s=24", 1, 2, 1, 1000, 128, DType::F16});
  check_spec({"strided:s=7&window:w=60", 1, 2, 1, 500, 64});
  check_spec({"strided:s=13+dilated:w=8,d=13", 1, 2, 1, 777, 128});
}

// The producer kernel (SPLAT_CUDA_TMA=1, experimental: TMA loads, mbarrier ring, two consumer warpgroups taking
// turns): contiguous-span patterns at sizes with one and many tasks and steps, ragged ends, both head dims and
// dtypes, GQA and the BNHD layout; also without ping-pong and with the other key step. The plan must use it.
namespace {
struct EnvGuard {
  std::vector<std::pair<std::string, std::string>> saved;
  void set(const char* k, const char* v) {
    const char* o = std::getenv(k);
    saved.emplace_back(k, o ? std::string("=") + o : std::string());
    setenv(k, v, 1);
  }
  ~EnvGuard() {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it)
      if (it->second.empty())
        unsetenv(it->first.c_str());
      else
        setenv(it->first.c_str(), it->second.c_str() + 1, 1);
  }
};
bool plan_uses_tma(const std::string& spec, int64_t n, int64_t d) {
  CudaPlanOptions o;
  o.head_dim = int(d);
  for (const std::string& line : describe_cuda_plan(*plan_cuda(analyse(parse_pattern(spec), n), o)))
    if (line.find("producer=tma") != std::string::npos) return true;
  return false;
}
}  // namespace

TEST(CudaAttention, ProducerKernelTma) {
  REQUIRE_GPU();
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "the producer kernel is sm_90a only";
  EnvGuard env;
  env.set("SPLAT_CUDA_TMA", "1");
  for (const char* s : {"window:w=40", "causal_window:w=100", "blocked:b=64", "dense", "causal", "longformer:w=16,g=8",
                        "bigbird:b=32,w=1,g=1,r=2,seed=7", "causal_window:w=100+sink:g=4"})
    for (int64_t n : {200, 1000}) {
      EXPECT_TRUE(plan_uses_tma(s, n, 64)) << s;
      check_spec({s, 1, 2, 1, n, 64});
      check_spec({s, 1, 2, 2, n, 128, DType::F16});
    }
  check_spec({"window:w=3", 1, 1, 1, 1, 64});  // N = 1
  check_spec({"causal", 2, 4, 2, 333, 128, DType::BF16, true});  // GQA, BNHD
  check_spec({"window:w=64", 3, 4, 1, 517, 64, DType::F16, true});  // MQA, BNHD
  env.set("SPLAT_CUDA_PINGPONG", "0");
  check_spec({"causal_window:w=70", 1, 2, 1, 700, 64});
  check_spec({"dense", 1, 2, 1, 300, 128});
  env.set("SPLAT_CUDA_TMA_BN", "64");
  check_spec({"causal_window:w=70", 1, 2, 1, 700, 64});
  env.set("SPLAT_CUDA_PINGPONG", "1");
  check_spec({"blocked:b=100", 1, 2, 1, 999, 64, DType::F16});
  env.set("SPLAT_CUDA_TMA_BN", "128");
  check_spec({"causal", 1, 2, 1, 650, 128});
}

// Small cases of the producer kernel for compute-sanitizer (memcheck, racecheck, synccheck).
TEST(CudaAttention, ProducerKernelTmaSmall) {
  REQUIRE_GPU();
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "the producer kernel is sm_90a only";
  EnvGuard env;
  env.set("SPLAT_CUDA_TMA", "1");
  check_spec({"causal_window:w=100", 1, 2, 1, 333, 64});
  check_spec({"causal", 1, 2, 1, 300, 128});
}

// Key padding on a plan of the producer kernel runs the cp.async kernel of the same 128-row tiles (the producer
// kernel does not clamp spans to the valid keys): both head dims, rows of one batch entry padded.
TEST(CudaAttention, KeyPaddingOnProducerPlans) {
  REQUIRE_GPU();
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "the producer kernel is sm_90a only";
  EnvGuard env;
  env.set("SPLAT_CUDA_TMA", "1");
  for (int64_t d : {64, 128})
    for (const char* spec : {"dense", "causal_window:w=90"}) {
      const int64_t B = 2, H = 2, N = 300;
      SCOPED_TRACE(std::string(spec) + " D=" + std::to_string(d));
      ASSERT_TRUE(plan_uses_tma(spec, N, d));
      const std::vector<int32_t> lens = {int32_t(N), 181};
      cudatest::DeviceBuffer dlens(lens.size() * sizeof(int32_t));
      ASSERT_EQ(cudaMemcpy(dlens.p, lens.data(), dlens.bytes, cudaMemcpyHostToDevice), cudaSuccess);
      std::mt19937 rng(uint32_t(d) ^ std::random_device{}());
      Tensor q(DType::BF16, B, H, N, d, false), k(DType::BF16, B, 1, N, d, false), v(DType::BF16, B, 1, N, d, false);
      Tensor out(DType::BF16, B, H, N, d, false);
      q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
      out.poison();
      CudaPlanOptions o;
      o.head_dim = int(d);
      const Pattern pat = parse_pattern(spec);
      const auto plan = plan_cuda(analyse(pat, N), o);
      AttentionOptions opt;
      opt.key_lengths = static_cast<const int32_t*>(dlens.p);
      attention_cuda_host(*plan, q.view, k.view, v.view, out.view, opt);
      const std::vector<uint8_t> mask = dense_mask(pat, N);
      AttentionOptions host;
      host.key_lengths = lens.data();
      const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
      Tensor ref(DType::F32, B, H, N, d, false);
      ref.poison();
      attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view, host);
      const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, DType::BF16, 0.0f, lens.data());
      const double e_ours = cputest::max_abs_err(out, ref), e_naive = cputest::max_abs_err(naive, ref);
      EXPECT_LE(e_ours, 6.0 * e_naive + 2e-3) << "naive error " << e_naive;
    }
}

// K and V expanded over batch and heads (stride 0, as torch's expand gives): the producer kernel's tensor maps take
// extent 1 there. The reference runs on the materialised copies.
TEST(CudaAttention, ProducerKernelExpandedKv) {
  REQUIRE_GPU();
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "the producer kernel is sm_90a only";
  EnvGuard env;
  env.set("SPLAT_CUDA_TMA", "1");
  const int64_t B = 2, H = 4, Hkv = 2, N = 320, D = 128;
  const char* spec = "causal_window:w=100";
  ASSERT_TRUE(plan_uses_tma(spec, N, D));
  std::mt19937 rng(7u ^ std::random_device{}());
  Tensor q(DType::BF16, B, H, N, D, false), k1(DType::BF16, 1, 1, N, D, false), v1(DType::BF16, 1, 1, N, D, false);
  Tensor out(DType::BF16, B, H, N, D, false);
  Tensor kf(DType::BF16, B, Hkv, N, D, false), vf(DType::BF16, B, Hkv, N, D, false);
  q.randomise(rng, 1.0f), k1.randomise(rng, 1.0f), v1.randomise(rng, 1.0f);
  const size_t head = size_t(N * D) * 2;
  for (int64_t i = 0; i < B * Hkv; ++i) {
    std::memcpy(kf.bytes.data() + size_t(i) * head, k1.bytes.data(), head);
    std::memcpy(vf.bytes.data() + size_t(i) * head, v1.bytes.data(), head);
  }
  TensorView ke = k1.view, ve = v1.view;  // [B, Hkv, N, D] views of one head
  for (TensorView* t : {&ke, &ve}) {
    t->shape[0] = B, t->shape[1] = Hkv;
    t->stride[0] = 0, t->stride[1] = 0;
  }
  out.poison();
  CudaPlanOptions o;
  o.head_dim = int(D);
  const Pattern pat = parse_pattern(spec);
  const auto plan = plan_cuda(analyse(pat, N), o);
  attention_cuda_host(*plan, q.view, ke, ve, out.view);
  const std::vector<uint8_t> mask = dense_mask(pat, N);
  const Tensor q32 = q.to_f32(), k32 = kf.to_f32(), v32 = vf.to_f32();
  Tensor ref(DType::F32, B, H, N, D, false);
  ref.poison();
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view);
  const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, DType::BF16);
  const double e_ours = cputest::max_abs_err(out, ref), e_naive = cputest::max_abs_err(naive, ref);
  EXPECT_LE(e_ours, 6.0 * e_naive + 2e-3) << "naive error " << e_naive;
}

TEST(CudaAttention, GqaMqaAndStridedLayouts) {
  REQUIRE_GPU();
  check_spec({"longformer:w=16,g=8", 2, 4, 2, 200, 64, DType::BF16, true});
  check_spec({"strided:s=15", 2, 4, 1, 230, 128, DType::F16, true});
  check_spec({"bigbird:b=64,w=1,g=2,r=3,seed=1", 3, 6, 3, 320, 64, DType::BF16, false});
  check_spec({"dilated:w=16,d=4", 2, 8, 1, 257, 128, DType::BF16, true});
}

TEST(CudaAttention, ExplicitMaskWithEmptyRows) {
  REQUIRE_GPU();
  const int64_t n = 190;
  std::mt19937 rng(42);
  std::vector<uint8_t> mask(size_t(n * n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const bool band = std::abs(i - j) <= 5;
      mask[size_t(i * n + j)] = (i % 17 == 3) ? 0 : (band || rng() % 9 == 0);  // rows 3, 20, ... empty
    }
  for (int64_t d : {64, 128})
    check_acsr(analyse_mask(mask.data(), n), mask, {"mask(random, empty rows)", 2, 2, 1, n, d});
}

TEST(CudaAttention, GraphCaptureAndDeviceErrors) {
  REQUIRE_GPU();
  const int64_t B = 2, H = 4, N = 300, D = 64;
  const Pattern pat = parse_pattern("strided:s=17");  // two passes: exercises the lse workspace
  CudaPlanOptions o;
  const auto plan = plan_cuda(analyse(pat, N), o);
  std::mt19937 rng(7);
  Tensor q(DType::BF16, B, H, N, D, false), k(DType::BF16, B, H, N, D, false), v(DType::BF16, B, H, N, D, false);
  Tensor out(DType::BF16, B, H, N, D, false);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  const size_t bytes = size_t(B * H * N * D) * 2;
  void* d[4] = {};
  for (auto& p : d) ASSERT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
  cudaMemcpy(d[0], q.view.data, bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(d[1], k.view.data, bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(d[2], v.view.data, bytes, cudaMemcpyHostToDevice);
  TensorView dv[4];
  for (int i = 0; i < 4; ++i) dv[i] = contiguous_view(d[i], DType::BF16, B, H, N, D, 0);
  cuda_workspace_reserve(*plan, B, H);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(d[3], 0xff, bytes, s), cudaSuccess);  // NaN poison
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  attention_cuda(*plan, dv[0], dv[1], dv[2], dv[3], {}, s);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  cudaMemcpy(out.view.data, d[3], bytes, cudaMemcpyDeviceToHost);
  const std::vector<uint8_t> mask = dense_mask(pat, N);
  const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
  Tensor ref(DType::F32, B, H, N, D, false);
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view);
  const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, DType::BF16);
  EXPECT_LE(cputest::max_abs_err(out, ref), 6.0 * cputest::max_abs_err(naive, ref) + 2e-3);

  // Errors: host tensors, wrong dtype, wrong head dim, misaligned strides.
  EXPECT_THROW(attention_cuda(*plan, q.view, k.view, v.view, out.view), Error);
  TensorView bad = dv[0];
  bad.dtype = DType::F16;
  EXPECT_THROW(attention_cuda(*plan, bad, bad, bad, bad), Error);
  bad = dv[0];
  bad.stride[2] = D + 1;
  bad.shape[2] = N - 10;
  EXPECT_THROW(attention_cuda(*plan, bad, dv[1], dv[2], dv[3]), Error);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  for (auto p : d) cudaFree(p);
}
// Head dims 32, 96 and 256 (forward only), per head dim and dtype: every
// suite pattern at an odd N (window, causal_window, dilated, strided, bigbird, longformer, blocked, ...), dense,
// causal, GQA in the BNHD layout, key padding on a contiguous and a gathered pattern, and on sm_90a the kernels of
// the other tiles: 128-row tiles of two warpgroups (long even bands, cp.async) and, at D=96, the producer kernel.
namespace {
class ExtraHeadDims : public ::testing::TestWithParam<std::tuple<int, DType>> {};
bool plan_says(const std::string& spec, int64_t n, int64_t d, const std::string& what) {
  CudaPlanOptions o;
  o.head_dim = int(d);
  for (const std::string& line : describe_cuda_plan(*plan_cuda(analyse(parse_pattern(spec), n), o)))
    if (line.find(what) != std::string::npos) return true;
  return false;
}
bool is_sm90() {
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  return major == 9;
}
}  // namespace

TEST_P(ExtraHeadDims, SuitePaddingAndTiles) {
  REQUIRE_GPU();
  const auto [d, t] = GetParam();
  EnvGuard env;
  for (const SuiteEntry& e : suite(333)) check_spec({e.spec, 1, 2, 1, 333, d, t});
  check_spec({"dense", 1, 2, 1, 200, d, t});
  check_spec({"causal", 2, 4, 2, 301, d, t, true});  // GQA, BNHD
  check_spec({"window:w=3", 1, 1, 1, 1, d, t});      // N = 1
  check_spec({"causal_window:w=50", 2, 2, 1, 260, d, t}, {260, 97});
  check_spec({"dilated:w=16,d=3", 2, 2, 1, 250, d, t}, {131, 250});
  if (!is_sm90()) return;
  {
    env.set("SPLAT_CUDA_TMA", "0");  // long even bands: 128-row tiles (not at D=256)
    const bool two = plan_says("window:w=768", 2048, d, "warps=8");
    EXPECT_EQ(two, d != 256);
    check_spec({"window:w=768", 1, 1, 1, 2048, d, t});
  }
  if (d == 96) {
    env.set("SPLAT_CUDA_TMA", "1");
    for (const char* s : {"causal_window:w=100", "blocked:b=64", "dense", "bigbird:b=32,w=1,g=1,r=2,seed=7"}) {
      EXPECT_TRUE(plan_says(s, 517, d, "producer=tma")) << s;
      check_spec({s, 1, 2, 1, 517, d, t});
    }
    check_spec({"causal", 2, 4, 2, 333, d, t, true});  // GQA, BNHD
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDims, ExtraHeadDims,
                         ::testing::Combine(::testing::Values(32, 96, 256), ::testing::Values(DType::BF16, DType::F16)),
                         [](const ::testing::TestParamInfo<std::tuple<int, DType>>& i) {
                           return "D" + std::to_string(std::get<0>(i.param)) + "_" + dtype_name(std::get<1>(i.param));
                         });

// Small cases of the extra head dims for compute-sanitizer: the cp.async kernels (contiguous, gathered, strided
// two-pass) and, on sm_90a, the producer kernel at D=96.
TEST(CudaAttention, ExtraHeadDimsSmall) {
  REQUIRE_GPU();
  EnvGuard env;
  check_spec({"causal_window:w=40", 1, 2, 1, 150, 32});
  check_spec({"dilated:w=9,d=7", 1, 2, 1, 150, 96, DType::F16});
  check_spec({"strided:s=13", 1, 2, 1, 150, 256});
  if (!is_sm90()) return;
  env.set("SPLAT_CUDA_TMA", "1");
  check_spec({"causal_window:w=70", 1, 2, 1, 200, 96});
}

// Training plans refuse the extra head dims (the backward takes 64 and 128).
TEST(CudaAttention, ExtraHeadDimsRefusedForTheBackward) {
  REQUIRE_GPU();
  CudaPlanOptions o;
  o.head_dim = 96, o.backward = true;
  EXPECT_THROW(plan_cuda(analyse(parse_pattern("causal"), 128), o), Error);
}
#endif  // SPLAT_WITH_CUDA
