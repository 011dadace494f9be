// CUDA backward (dQ, dK, dV) and the forward's lse and key padding, against the float64 oracles
// (attention_reference, attention_backward_reference on a dense mask) with fresh random inputs and NaN-poisoned
// outputs and gradients; tolerance err(cuda) <= k * err(naive same dtype) + atol. Every suite pattern, compositions,
// explicit masks with empty rows and columns, N not a multiple of any tile (1, 17, 200, 1000), GQA, [B, N, H, D]
// strides, key_lengths, D 64/128, bf16/f16; bitwise determinism; a CUDA-graph capture of forward + backward.
// Skipped with a message where no GPU is usable.
#include <gtest/gtest.h>
#ifndef SPLAT_WITH_CUDA
TEST(CudaBackward, BuiltWithoutCuda) {
  GTEST_SKIP() << "splat was built without the CUDA backend (SPLAT_WITH_CUDA=OFF)";
}
#else
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "jit/kernel_spec.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"
#include "test_cuda_grad_util.hpp"

using namespace splat;
using cputest::Tensor;
using cudatest::DevArray;
using cudatest::DevTensor;

namespace {

struct Case {
  std::string spec;
  int64_t B = 1, H = 2, Hkv = 1, N = 256, D = 64;
  DType dt = DType::BF16;
  bool bnhd = false;
  std::vector<int32_t> key_lengths;  // empty: none
  bool deterministic = true;         // false: the non-deterministic mode (dQ by atomics inside the dK/dV pass)
};

std::string describe(const Case& c) {
  std::string kl;
  for (int32_t l : c.key_lengths) kl += (kl.empty() ? " len=" : ",") + std::to_string(l);
  return c.spec + " B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
         " N=" + std::to_string(c.N) + " D=" + std::to_string(c.D) + " " + dtype_name(c.dt) + (c.bnhd ? " bnhd" : "") +
         kl + (c.deterministic ? "" : " non-deterministic");
}

// Everything a forward + backward run produced, on the host.
struct FwdBwd {
  Tensor out, dq, dk, dv;
  std::vector<float> lse;
};

FwdBwd run_cuda(const CudaPlan& plan, const Case& c, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& dout) {
  FwdBwd r{Tensor(c.dt, c.B, c.H, c.N, c.D, c.bnhd),
           Tensor(c.dt, c.B, c.H, c.N, c.D, c.bnhd),
           Tensor(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd),
           Tensor(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd),
           {}};
  for (Tensor* t : {&r.out, &r.dq, &r.dk, &r.dv}) t->poison();
  DevTensor dq_(q), dk_(k), dv_(v), ddo(dout), dout_(r.out), ddq(r.dq), ddk(r.dk), ddv(r.dv);
  const size_t rows = size_t(c.B * c.H * c.N);
  DevArray<float> lse(std::vector<float>(rows, std::nanf("")));
  DevArray<int32_t> lens(c.key_lengths);
  const size_t bwsb = cuda_backward_workspace_bytes(plan, c.B, c.H, c.deterministic);
  cudatest::DeviceBuffer fws(cuda_workspace_bytes(plan, c.B, c.H)), bws(bwsb);
  // The workspace poisoned too: the fast mode's accumulator must be zeroed by the kernels.
  EXPECT_EQ(cudaMemset(bws.p, 0xff, bwsb), cudaSuccess);
  AttentionOptions opt;
  if (!c.key_lengths.empty()) opt.key_lengths = lens.get();
  opt.deterministic = c.deterministic;
  attention_cuda(plan, dq_.view, dk_.view, dv_.view, dout_.view, opt, nullptr, fws.p, lse.get());
  BackwardTensors t{dq_.view, dk_.view, dv_.view, dout_.view, ddo.view, lse.get(), ddq.view, ddk.view, ddv.view};
  attention_backward_cuda(plan, t, opt, nullptr, bws.p);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  dout_.to_host(r.out), ddq.to_host(r.dq), ddk.to_host(r.dk), ddv.to_host(r.dv);
  r.lse = lse.to_host(rows);
  return r;
}

void check_acsr(const Acsr& a, const std::vector<uint8_t>& mask, const Case& c) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(uint32_t(std::hash<std::string>{}(describe(c))) ^ std::random_device{}());
  Tensor q(c.dt, c.B, c.H, c.N, c.D, c.bnhd), k(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd);
  Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd), dout(c.dt, c.B, c.H, c.N, c.D, c.bnhd);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f), dout.randomise(rng, 1.0f);
  CudaPlanOptions o;
  o.dtype = c.dt, o.head_dim = int(c.D), o.backward = true;
  const auto plan = plan_cuda(a, o);
  const FwdBwd r = run_cuda(*plan, c, q, k, v, dout);

  const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32(), do32 = dout.to_f32();
  AttentionOptions host;
  if (!c.key_lengths.empty()) host.key_lengths = c.key_lengths.data();
  Tensor ref(DType::F32, c.B, c.H, c.N, c.D, false);
  std::vector<float> ref_lse(size_t(c.B * c.H * c.N));
  ref.poison();
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view, host, ref_lse.data());
  EXPECT_LE(cudatest::lse_error(r.lse, ref_lse), 2e-3) << "lse";
  const Tensor naive_out = cputest::naive_same_dtype(mask.data(), q32, k32, v32, c.dt, 0.0f, host.key_lengths);
  EXPECT_LE(cputest::max_abs_err(r.out, ref), 6.0 * cputest::max_abs_err(naive_out, ref) + 2e-3) << "out";

  cudatest::Grads g{Tensor(DType::F32, c.B, c.H, c.N, c.D, false), Tensor(DType::F32, c.B, c.Hkv, c.N, c.D, false),
                    Tensor(DType::F32, c.B, c.Hkv, c.N, c.D, false)};
  for (Tensor* t : {&g.dq, &g.dk, &g.dv}) t->poison();
  BackwardTensors bt{q32.view, k32.view, v32.view, do32.view, do32.view, nullptr, g.dq.view, g.dk.view, g.dv.view};
  attention_backward_reference(mask.data(), bt, host);
  const cudatest::Grads naive = cudatest::naive_backward(mask.data(), q32, k32, v32, do32, c.dt, host.key_lengths);
  const char* names[3] = {"dq", "dk", "dv"};
  const Tensor* ours[3] = {&r.dq, &r.dk, &r.dv};
  const Tensor* refs[3] = {&g.dq, &g.dk, &g.dv};
  const Tensor* naives[3] = {&naive.dq, &naive.dk, &naive.dv};
  for (int i = 0; i < 3; ++i) {
    const double e = cputest::max_abs_err(*ours[i], *refs[i]), en = cputest::max_abs_err(*naives[i], *refs[i]);
    // P and dS are rounded to the input dtype for the tensor cores (as FlashAttention does): a few naive errors.
    EXPECT_LE(e, 8.0 * en + 4e-3) << names[i] << ": naive error " << en;
  }
}

void check_spec(const Case& c) {
  const Pattern p = parse_pattern(c.spec);
  check_acsr(analyse(p, c.N), dense_mask(p, c.N), c);
}

}  // namespace

// The sanitizer run (compute-sanitizer memcheck / racecheck): every span kind, a multi-pass plan, GQA, key padding,
// D 64 and 128, at small N.
TEST(CudaBackward, SanitizerSet) {
  REQUIRE_GPU();
  check_spec({"window:w=8", 1, 2, 1, 130, 64});
  check_spec({"strided:s=9", 1, 2, 1, 130, 128});
  check_spec({"bigbird:b=32,w=1,g=1,r=2,seed=3", 2, 2, 1, 130, 64, DType::BF16, false, {130, 77}});
  check_spec({"longformer:w=8,g=3", 1, 4, 2, 130, 64, DType::F16, true});
}

// The same for the non-deterministic mode's kernels (sm_90a: the dK/dV kernel with atomic dQ, the cast).
TEST(CudaBackward, SanitizerSetNonDeterministic) {
  REQUIRE_GPU();
  check_spec({"window:w=8", 1, 2, 1, 130, 64, DType::BF16, false, {}, false});
  check_spec({"strided:s=9", 1, 2, 1, 130, 128, DType::BF16, false, {}, false});
  check_spec({"bigbird:b=32,w=1,g=1,r=2,seed=3", 2, 2, 1, 130, 64, DType::BF16, false, {130, 77}, false});
  check_spec({"longformer:w=8,g=3", 1, 4, 2, 130, 64, DType::F16, true, {}, false});
}

TEST(CudaBackward, SuiteSmall) {
  REQUIRE_GPU();
  for (int64_t n : {256, 333})
    for (const SuiteEntry& e : suite(n)) check_spec({e.spec, 1, 2, 1, n, 64});
}

TEST(CudaBackward, SuiteDtypesAndHeadDims) {
  REQUIRE_GPU();
  for (DType t : {DType::BF16, DType::F16})
    for (int64_t d : {64, 128})
      for (const SuiteEntry& e : suite(300)) check_spec({e.spec, 1, 2, 2, 300, d, t});
}

TEST(CudaBackward, MorePatternsAndCompositions) {
  REQUIRE_GPU();
  for (const char* s : {"dense", "causal", "global:g=5", "sink:g=3", "fixed:l=32,c=4", "causal_dilated:w=20,d=3",
                        "dilated:w=9,d=7", "strided:s=13", "blocked:b=50", "longformer:w=7,g=3",
                        "causal_window:w=100+sink:g=4", "strided:s=16&causal", "window:w=40&blocked:b=64",
                        "sink:g=8&blocked:b=16", "bigbird:b=32,w=1,g=1,r=2,seed=7", "strided:s=13+dilated:w=8,d=13"})
    check_spec({s, 1, 2, 1, 211, 64});
}

TEST(CudaBackward, OddSequenceLengths) {
  REQUIRE_GPU();
  for (int64_t n : {1, 17, 200})
    for (const char* s : {"window:w=3", "causal", "strided:s=5", "longformer:w=4,g=2"}) check_spec({s, 1, 2, 1, n, 64});
  check_spec({"causal_window:w=100", 1, 1, 1, 1000, 128});
  check_spec({"strided:s=24", 1, 1, 1, 1000, 64, DType::F16});
}

TEST(CudaBackward, GqaAndStridedLayouts) {
  REQUIRE_GPU();
  check_spec({"longformer:w=16,g=8", 2, 4, 2, 200, 64, DType::BF16, true});
  check_spec({"strided:s=15", 2, 4, 1, 230, 128, DType::F16, true});
  check_spec({"bigbird:b=64,w=1,g=2,r=3,seed=1", 3, 6, 3, 320, 64, DType::BF16, false});
  check_spec({"dilated:w=16,d=4", 2, 8, 1, 257, 128, DType::BF16, true});
}

TEST(CudaBackward, ExplicitMaskWithEmptyRowsAndColumns) {
  REQUIRE_GPU();
  const int64_t n = 190;
  std::mt19937 rng(42);
  std::vector<uint8_t> mask(size_t(n * n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const bool band = std::abs(i - j) <= 5;
      mask[size_t(i * n + j)] = (i % 17 == 3 || j % 13 == 5) ? 0 : (band || rng() % 9 == 0);
    }
  for (int64_t d : {64, 128})
    check_acsr(analyse_mask(mask.data(), n), mask, {"mask(random, empty rows and columns)", 2, 2, 1, n, d});
}

// Key padding: right-padded batches (full, partial, a length inside a tile, zero), every span kind.
TEST(CudaBackward, KeyLengths) {
  REQUIRE_GPU();
  for (const char* s : {"window:w=16", "causal", "strided:s=9", "bigbird:b=32,w=1,g=1,r=2,seed=3", "dense"})
    check_spec({s, 4, 2, 1, 200, 64, DType::BF16, false, {200, 131, 64, 0}});
  check_spec({"longformer:w=8,g=3", 2, 4, 2, 150, 128, DType::F16, true, {77, 150}});
}

// The non-deterministic mode (AttentionOptions::deterministic = false; sm_90a: dQ added with fp32 atomics inside
// the dK/dV pass, elsewhere the deterministic kernels run): the same tolerance against the float64 oracle on the
// suite, both dtypes and head dims, odd N (1 included), GQA with strided layouts, key padding, empty rows/columns.
TEST(CudaBackwardNonDeterministic, Suite) {
  REQUIRE_GPU();
  for (int64_t n : {256, 333})
    for (const SuiteEntry& e : suite(n)) check_spec({e.spec, 1, 2, 1, n, 64, DType::BF16, false, {}, false});
  for (DType t : {DType::BF16, DType::F16})
    for (const SuiteEntry& e : suite(300)) check_spec({e.spec, 1, 2, 2, 300, 128, t, false, {}, false});
}

TEST(CudaBackwardNonDeterministic, OddLengthsGqaPaddingAndEmptyRows) {
  REQUIRE_GPU();
  for (int64_t n : {1, 17, 200})
    for (const char* s : {"window:w=3", "causal", "strided:s=5", "longformer:w=4,g=2"})
      check_spec({s, 1, 2, 1, n, 64, DType::BF16, false, {}, false});
  check_spec({"causal_window:w=100", 1, 1, 1, 1000, 128, DType::BF16, false, {}, false});
  check_spec({"longformer:w=16,g=8", 2, 4, 2, 200, 64, DType::BF16, true, {}, false});
  check_spec({"strided:s=15", 2, 4, 1, 230, 128, DType::F16, true, {}, false});
  check_spec({"bigbird:b=64,w=1,g=2,r=3,seed=1", 3, 6, 3, 320, 64, DType::BF16, false, {}, false});
  check_spec({"dilated:w=16,d=4", 2, 8, 1, 257, 128, DType::BF16, true, {}, false});
  for (const char* s : {"window:w=16", "causal", "strided:s=9", "bigbird:b=32,w=1,g=1,r=2,seed=3", "dense"})
    check_spec({s, 4, 2, 1, 200, 64, DType::BF16, false, {200, 131, 64, 0}, false});
  check_spec({"longformer:w=8,g=3", 2, 4, 2, 150, 128, DType::F16, true, {77, 150}, false});
  for (const char* s : {"causal_window:w=100+sink:g=4", "strided:s=16&causal", "strided:s=13+dilated:w=8,d=13"})
    check_spec({s, 1, 2, 1, 211, 64, DType::BF16, false, {}, false});
  const int64_t n = 190;
  std::mt19937 rng(43);
  std::vector<uint8_t> mask(size_t(n * n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      mask[size_t(i * n + j)] = (i % 17 == 3 || j % 13 == 5) ? 0 : (std::abs(i - j) <= 5 || rng() % 9 == 0);
  for (int64_t d : {64, 128})
    check_acsr(analyse_mask(mask.data(), n), mask,
               {"mask(random, empty rows and columns)", 2, 2, 1, n, d, DType::BF16, false, {}, false});
}

namespace {
// |a - b| within a few units of the dtype's last place at a's largest magnitude (unordered fp32 sums round apart).
void expect_close(const Tensor& a, const Tensor& b, const char* what) {
  const Tensor zero(DType::F32, a.view.B(), a.view.H(), a.view.N(), a.view.D(), false);
  EXPECT_LE(cputest::max_abs_err(a, b), 4.0 / 256 * (cputest::max_abs_err(a, zero) + 1e-3)) << what;
}
bool hopper_wgmma() {
  cudaDeviceProp prop{};
  const char* wg = std::getenv("SPLAT_CUDA_WGMMA");
  return cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major == 9 && !(wg && std::string(wg) == "0");
}
}  // namespace

// Only dQ's additions are unordered: dK and dV stay bitwise identical run to run, dQ within rounding. The workspace
// holds the fp32 accumulator (sm_90a) and the default mode needs none of it.
TEST(CudaBackwardNonDeterministic, DkDvBitwiseDqCloseAndWorkspace) {
  REQUIRE_GPU();
  for (const char* s : {"strided:s=17", "longformer:w=16,g=4", "window:w=64"}) {
    Case c{s, 2, 4, 1, 500, 64};
    c.deterministic = false;
    std::mt19937 rng(6);
    Tensor q(c.dt, c.B, c.H, c.N, c.D, false), k(c.dt, c.B, c.Hkv, c.N, c.D, false);
    Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, false), dout(c.dt, c.B, c.H, c.N, c.D, false);
    q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f), dout.randomise(rng, 1.0f);
    CudaPlanOptions o;
    o.backward = true;
    const auto plan = plan_cuda(analyse(parse_pattern(s), c.N), o);
    const FwdBwd a = run_cuda(*plan, c, q, k, v, dout), b = run_cuda(*plan, c, q, k, v, dout);
    EXPECT_EQ(a.dk.bytes, b.dk.bytes) << s;
    EXPECT_EQ(a.dv.bytes, b.dv.bytes) << s;
    expect_close(a.dq, b.dq, s);
    const size_t det = cuda_backward_workspace_bytes(*plan, c.B, c.H);
    const size_t fast = cuda_backward_workspace_bytes(*plan, c.B, c.H, false);
    EXPECT_EQ(det, size_t(2 * c.B * c.H * c.N * 4));
    if (hopper_wgmma())
      EXPECT_EQ(fast, (det + 15) / 16 * 16 + size_t(c.B * c.H * c.N * c.D * 4)) << s;
    else
      EXPECT_EQ(fast, det) << s;
  }
}

// No GPU needed: the non-deterministic mode is a flag of the same KernelSpec (in the kernel's name, so in the
// generated source and the cache key, and in the log line), generated by the same generator; where warpgroup MMAs
// are unavailable (sm_80) its variant is the deterministic kernels.
TEST(CudaBackwardNonDeterministic, AFlagOfTheSameSpecAndGenerator) {
  const Acsr a = analyse(parse_pattern("strided:s=64"), 4096);
  const cuda::PlanKernels pk = cuda::plan_kernels(a, DType::BF16, 128, "sm_90a", true);
  const cuda::KernelSet det = cuda::variant_specs(pk.base, pk.plan, cuda::kBackward);
  const cuda::KernelSet fast = cuda::variant_specs(pk.base, pk.plan, cuda::kBackwardFastPad);
  ASSERT_EQ(fast.dq_count, 0u);  // no dQ pass
  ASSERT_EQ(fast.specs.size(), 2 + pk.plan.transposed->passes.size());
  EXPECT_EQ(fast.specs.front().direction, jit::Direction::BackwardPre);
  EXPECT_EQ(fast.specs.back().direction, jit::Direction::BackwardDqCast);
  std::set<std::string> det_names;
  for (const jit::KernelSpec& s : det.specs) det_names.insert(s.name());
  for (size_t i = 1; i + 1 < fast.specs.size(); ++i) {
    const jit::KernelSpec& s = fast.specs[i];
    EXPECT_EQ(s.direction, jit::Direction::BackwardDkDv);
    EXPECT_TRUE(s.atomic_dq && s.key_padding);
    EXPECT_NE(s.name().find("_adq"), std::string::npos) << s.name();
    EXPECT_NE(s.describe().find("dq=atomic(non-deterministic)"), std::string::npos) << s.describe();
    EXPECT_EQ(det_names.count(s.name()), 0u);
  }
  EXPECT_NE(jit::generate_source(det.specs), jit::generate_source(fast.specs));
  EXPECT_NE(pk.source.find("attn_bwd_dq_cast"), std::string::npos);  // codegen's source has both modes
  const cuda::PlanKernels pk80 = cuda::plan_kernels(a, DType::F16, 64, "sm_80", true);
  const cuda::KernelSet d80 = cuda::variant_specs(pk80.base, pk80.plan, cuda::kBackward);
  const cuda::KernelSet f80 = cuda::variant_specs(pk80.base, pk80.plan, cuda::kBackwardFast);
  EXPECT_EQ(jit::generate_source(d80.specs), jit::generate_source(f80.specs));
}

// A capture of the non-deterministic backward works once its kernels are loaded (an eager call first); before, it is
// an Error (they load on first use), never a broken graph.
TEST(CudaBackwardNonDeterministic, GraphCapture) {
  REQUIRE_GPU();
  Case c{"strided:s=17", 2, 4, 2, 300, 64};
  c.deterministic = false;
  std::mt19937 rng(10);
  Tensor q(c.dt, c.B, c.H, c.N, c.D, false), k(c.dt, c.B, c.Hkv, c.N, c.D, false);
  Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, false), dout(c.dt, c.B, c.H, c.N, c.D, false);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f), dout.randomise(rng, 1.0f);
  CudaPlanOptions o;
  o.backward = true;
  const auto plan = plan_cuda(analyse(parse_pattern(c.spec), c.N), o);
  Tensor out(c.dt, c.B, c.H, c.N, c.D, false), dq(c.dt, c.B, c.H, c.N, c.D, false);
  Tensor dk(c.dt, c.B, c.Hkv, c.N, c.D, false), dv(c.dt, c.B, c.Hkv, c.N, c.D, false);
  for (Tensor* t : {&out, &dq, &dk, &dv}) t->poison();
  DevTensor q_(q), k_(k), v_(v), do_(dout), out_(out), dq_(dq), dk_(dk), dv_(dv);
  DevArray<float> lse(std::vector<float>(size_t(c.B * c.H * c.N), std::nanf("")));
  cudatest::DeviceBuffer bws(cuda_backward_workspace_bytes(*plan, c.B, c.H, false));
  AttentionOptions opt;
  opt.deterministic = false;
  const BackwardTensors t{q_.view, k_.view, v_.view, out_.view, do_.view, lse.get(), dq_.view, dk_.view, dv_.view};
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  attention_cuda(*plan, q_.view, k_.view, v_.view, out_.view, opt, s, nullptr, lse.get());
  cudaGraph_t graph;
  if (hopper_wgmma()) {  // the fast kernels are not loaded yet
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    EXPECT_THROW(attention_backward_cuda(*plan, t, opt, s, bws.p), Error);
    cudaStreamEndCapture(s, &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  const FwdBwd eager = run_cuda(*plan, c, q, k, v, dout);  // loads them
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  attention_cuda(*plan, q_.view, k_.view, v_.view, out_.view, opt, s, nullptr, lse.get());
  attention_backward_cuda(*plan, t, opt, s, bws.p);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  out_.to_host(out), dq_.to_host(dq), dk_.to_host(dk), dv_.to_host(dv);
  EXPECT_EQ(out.bytes, eager.out.bytes);
  EXPECT_EQ(dk.bytes, eager.dk.bytes);
  EXPECT_EQ(dv.bytes, eager.dv.bytes);
  expect_close(dq, eager.dq, "dq");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

// Two runs give bitwise-identical gradients (no atomics), also with GQA and a multi-pass plan.
TEST(CudaBackward, Deterministic) {
  REQUIRE_GPU();
  for (const char* s : {"strided:s=17", "longformer:w=16,g=4", "bigbird:b=32,w=1,g=1,r=2,seed=2"}) {
    const Case c{s, 2, 4, 1, 500, 64};
    std::mt19937 rng(5);
    Tensor q(c.dt, c.B, c.H, c.N, c.D, false), k(c.dt, c.B, c.Hkv, c.N, c.D, false);
    Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, false), dout(c.dt, c.B, c.H, c.N, c.D, false);
    q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f), dout.randomise(rng, 1.0f);
    CudaPlanOptions o;
    o.backward = true;
    const auto plan = plan_cuda(analyse(parse_pattern(s), c.N), o);
    const FwdBwd a = run_cuda(*plan, c, q, k, v, dout), b = run_cuda(*plan, c, q, k, v, dout);
    EXPECT_EQ(a.dq.bytes, b.dq.bytes) << s;
    EXPECT_EQ(a.dk.bytes, b.dk.bytes) << s;
    EXPECT_EQ(a.dv.bytes, b.dv.bytes) << s;
  }
}

// Forward (with lse) + backward captured in one CUDA graph, replayed twice: the eager results, bit for bit.
TEST(CudaBackward, GraphCaptureOfForwardAndBackward) {
  REQUIRE_GPU();
  const Case c{"strided:s=17", 2, 4, 2, 300, 64, DType::BF16, false, {300, 211}};
  std::mt19937 rng(9);
  Tensor q(c.dt, c.B, c.H, c.N, c.D, false), k(c.dt, c.B, c.Hkv, c.N, c.D, false);
  Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, false), dout(c.dt, c.B, c.H, c.N, c.D, false);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f), dout.randomise(rng, 1.0f);
  CudaPlanOptions o;
  o.backward = true;
  const auto plan = plan_cuda(analyse(parse_pattern(c.spec), c.N), o);
  const FwdBwd eager = run_cuda(*plan, c, q, k, v, dout);  // also loads the key-padding kernels

  // (Tensor copies would keep the original's view: each tensor is made fresh.)
  Tensor out(c.dt, c.B, c.H, c.N, c.D, false), dq(c.dt, c.B, c.H, c.N, c.D, false);
  Tensor dk(c.dt, c.B, c.Hkv, c.N, c.D, false), dv(c.dt, c.B, c.Hkv, c.N, c.D, false);
  for (Tensor* t : {&out, &dq, &dk, &dv}) t->poison();
  DevTensor q_(q), k_(k), v_(v), do_(dout), out_(out), dq_(dq), dk_(dk), dv_(dv);
  DevArray<float> lse(std::vector<float>(size_t(c.B * c.H * c.N), std::nanf("")));
  DevArray<int32_t> lens(c.key_lengths);
  cudatest::DeviceBuffer bws(cuda_backward_workspace_bytes(*plan, c.B, c.H));
  AttentionOptions opt;
  opt.key_lengths = lens.get();
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  attention_cuda(*plan, q_.view, k_.view, v_.view, out_.view, opt, s, nullptr, lse.get());
  attention_backward_cuda(
      *plan, {q_.view, k_.view, v_.view, out_.view, do_.view, lse.get(), dq_.view, dk_.view, dv_.view}, opt, s, bws.p);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  out_.to_host(out), dq_.to_host(dq), dk_.to_host(dk), dv_.to_host(dv);
  EXPECT_EQ(out.bytes, eager.out.bytes);
  EXPECT_EQ(dq.bytes, eager.dq.bytes);
  EXPECT_EQ(dk.bytes, eager.dk.bytes);
  EXPECT_EQ(dv.bytes, eager.dv.bytes);
  EXPECT_EQ(lse.to_host(eager.lse.size()), eager.lse);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

// A forward-only plan writes lse and applies key padding too (each variant loads on first use).
TEST(CudaLse, ForwardOnlyPlanWritesLseWithPadding) {
  REQUIRE_GPU();
  for (const char* spec : {"window:w=32", "strided:s=11", "bigbird:b=32,w=1,g=1,r=2,seed=4"})
    for (bool pad : {false, true}) {
      const Case c{
          spec, 3, 2, 1, 190, 64, DType::F16, true, pad ? std::vector<int32_t>{190, 100, 0} : std::vector<int32_t>{}};
      SCOPED_TRACE(describe(c));
      std::mt19937 rng(11);
      Tensor q(c.dt, c.B, c.H, c.N, c.D, c.bnhd), k(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd);
      Tensor v(c.dt, c.B, c.Hkv, c.N, c.D, c.bnhd);
      Tensor out(c.dt, c.B, c.H, c.N, c.D, c.bnhd);
      q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
      out.poison();
      CudaPlanOptions o;
      o.dtype = c.dt;
      const Pattern pat = parse_pattern(spec);
      const auto plan = plan_cuda(analyse(pat, c.N), o);
      DevTensor q_(q), k_(k), v_(v), out_(out);
      DevArray<float> lse(std::vector<float>(size_t(c.B * c.H * c.N), std::nanf("")));
      DevArray<int32_t> lens(c.key_lengths);
      cudatest::DeviceBuffer ws(cuda_workspace_bytes(*plan, c.B, c.H));
      AttentionOptions opt, host;
      if (pad) opt.key_lengths = lens.get(), host.key_lengths = c.key_lengths.data();
      attention_cuda(*plan, q_.view, k_.view, v_.view, out_.view, opt, nullptr, ws.p, lse.get());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      out_.to_host(out);
      const std::vector<uint8_t> mask = dense_mask(pat, c.N);
      const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
      Tensor ref(DType::F32, c.B, c.H, c.N, c.D, false);
      std::vector<float> ref_lse(size_t(c.B * c.H * c.N));
      attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view, host, ref_lse.data());
      EXPECT_LE(cudatest::lse_error(lse.to_host(ref_lse.size()), ref_lse), 2e-3);
      const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, c.dt, 0.0f, host.key_lengths);
      EXPECT_LE(cputest::max_abs_err(out, ref), 6.0 * cputest::max_abs_err(naive, ref) + 2e-3);
    }
}

TEST(CudaBackward, ArgumentErrors) {
  REQUIRE_GPU();
  const Case c{"window:w=8", 1, 2, 1, 64, 64};
  Tensor q(c.dt, 1, 2, 64, 64, false), k(c.dt, 1, 1, 64, 64, false);
  DevTensor q_(q), k_(k);
  DevArray<float> lse(std::vector<float>(128, 0.f));
  cudatest::DeviceBuffer ws(1 << 16);
  const BackwardTensors t{q_.view, k_.view, k_.view, q_.view, q_.view, lse.get(), q_.view, k_.view, k_.view};
  const Acsr a = analyse(parse_pattern(c.spec), 64);
  const auto fwd_only = plan_cuda(a, CudaPlanOptions{});
  EXPECT_THROW(attention_backward_cuda(*fwd_only, t, {}, nullptr, ws.p), Error);  // no backward kernels
  CudaPlanOptions o;
  o.backward = true;
  const auto plan = plan_cuda(a, o);
  EXPECT_THROW(attention_backward_cuda(*plan, t, {}, nullptr, nullptr), Error);  // no workspace
  BackwardTensors no_lse = t;
  no_lse.lse = nullptr;
  EXPECT_THROW(attention_backward_cuda(*plan, no_lse, {}, nullptr, ws.p), Error);
  BackwardTensors bad = t;
  bad.dk = q_.view;  // dk shaped like q: wrong head count
  EXPECT_THROW(attention_backward_cuda(*plan, bad, {}, nullptr, ws.p), Error);
  EXPECT_EQ(cuda_backward_workspace_bytes(*plan, 3, 5), size_t(2 * 3 * 5 * 64 * 4));
}

// An output over an input (or another output) is refused, never computed into a wrong answer.
TEST(CudaBackward, OutputsOverlappingInputsAreErrors) {
  REQUIRE_GPU();
  Tensor q(DType::BF16, 1, 2, 64, 64, false), k(DType::BF16, 1, 1, 64, 64, false), v(DType::BF16, 1, 1, 64, 64, false);
  Tensor o(DType::BF16, 1, 2, 64, 64, false), d(DType::BF16, 1, 2, 64, 64, false), dq(DType::BF16, 1, 2, 64, 64, false);
  Tensor dk(DType::BF16, 1, 1, 64, 64, false), dv(DType::BF16, 1, 1, 64, 64, false);
  DevTensor q_(q), k_(k), v_(v), o_(o), d_(d), dq_(dq), dk_(dk), dv_(dv);
  DevArray<float> lse(std::vector<float>(128, 0.f));
  cudatest::DeviceBuffer ws(1 << 16);
  CudaPlanOptions opt;
  opt.backward = true;
  const auto plan = plan_cuda(analyse(parse_pattern("window:w=8"), 64), opt);
  EXPECT_THROW(attention_cuda(*plan, q_.view, k_.view, v_.view, q_.view), Error);  // out = q
  EXPECT_THROW(attention_cuda(*plan, q_.view, k_.view, v_.view, o_.view, {}, nullptr, nullptr,
                              static_cast<float*>(q_.view.data)),
               Error);  // lse inside q
  const BackwardTensors good{q_.view, k_.view, v_.view, o_.view, d_.view, lse.get(), dq_.view, dk_.view, dv_.view};
  for (int which = 0; which < 4; ++which) {
    BackwardTensors t = good;
    if (which == 0) t.dq = d_.view;  // dq over dout
    if (which == 1) t.dk = v_.view;  // dk over v
    if (which == 2) t.dv = t.dk;     // dv over dk
    if (which == 3) t.dq = o_.view;  // dq over out
    EXPECT_THROW(attention_backward_cuda(*plan, t, {}, nullptr, ws.p), Error) << which;
  }
  attention_backward_cuda(*plan, good, {}, nullptr, ws.p);  // distinct buffers are fine
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}
#endif  // SPLAT_WITH_CUDA
