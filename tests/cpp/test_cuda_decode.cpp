// CUDA decode against the rows of the full attention (the same scenarios as the CPU tests: poisoned unused cache
// rows, paged caches with shuffled pages, per-sequence starts, GQA, T > 1, empty rows), in each of its launch modes
// (split-KV with a workspace, split kernel without one, the first kernel); bad device-resident indices give NaN rows
// and the status bits; determinism; replay of a captured graph with new lengths. Skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "splat/error.hpp"
#include "test_decode_util.hpp"

namespace {

using namespace splat;
using cputest::Tensor;
using decodetest::Case;
using decodetest::Scenario;

const bool kSplitKernel = setenv("SPLAT_DECODE_KERNEL", "split", 1) == 0;  // see KernelEnv

// A device, and decode kernels in this build (without nvcc the entry point is a stub that says so).
bool have_device() {
  EXPECT_TRUE(kSplitKernel);
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return false;
  try {
    decode_cuda(DecodePlan{}, TensorView{}, KvCache{}, TensorView{});
  } catch (const Error& e) {
    return e.code() != ErrorCode::Unsupported;
  }
  return true;
}

// A device copy of a host buffer, freed at scope end.
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  DeviceBuffer(const void* src, size_t n) : bytes(n) {
    EXPECT_EQ(cudaMalloc(&p, n ? n : 1), cudaSuccess);
    if (src && n) EXPECT_EQ(cudaMemcpy(p, src, n, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(p); }
};

TensorView on_device(const Tensor& t, DeviceBuffer& d) {
  TensorView v = t.view;
  v.data =
      static_cast<char*>(d.p) + (static_cast<const char*>(t.view.data) - reinterpret_cast<const char*>(t.bytes.data()));
  v.device = 0;
  return v;
}

enum class Mode { Split, NoWorkspace, Simple };
const char* mode_name(Mode m) {
  return m == Mode::Split ? "split" : m == Mode::NoWorkspace ? "no workspace" : "first kernel";
}

// The tests name the kernel they run: the split-KV one (SPLAT_DECODE_KERNEL=split, set for the whole binary), or
// the first one for one scope.
struct KernelEnv {
  explicit KernelEnv(bool simple) { setenv("SPLAT_DECODE_KERNEL", simple ? "simple" : "split", 1); }
  ~KernelEnv() { setenv("SPLAT_DECODE_KERNEL", "split", 1); }
};

// The device side of a scenario: its tensors, lengths, tables and a workspace, and the outputs read back.
struct DeviceCase {
  Scenario& sc;
  Tensor out;
  DeviceBuffer dq, dk, dv, dout, dlen, dtab, dstart, dlse, dstatus;
  std::unique_ptr<DeviceBuffer> dws;
  KvCache cache;
  DecodeCudaWorkspace ws;
  std::vector<float> lse;
  DeviceCase(Scenario& s, size_t lse_count)
      : sc(s),
        out(s.c.dt, s.B, s.c.H, s.c.T, s.c.D, false),
        dq(s.q.bytes.data(), s.q.bytes.size()),
        dk(s.kc.bytes.data(), s.kc.bytes.size()),
        dv(s.vc.bytes.data(), s.vc.bytes.size()),
        dout(nullptr, out.bytes.size()),
        dlen(s.c.lengths.data(), s.c.lengths.size() * 4),
        dtab(s.table.data(), s.table.size() * 4),
        dstart(s.starts.data(), s.starts.size() * 4),
        dlse(nullptr, lse_count * 4),
        dstatus(nullptr, 4),
        lse(lse_count) {
    out.poison();
    EXPECT_EQ(cudaMemcpy(dout.p, out.bytes.data(), out.bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemset(dstatus.p, 0, 4), cudaSuccess);
    cache = sc.cache;
    cache.k = on_device(sc.kc, dk), cache.v = on_device(sc.vc, dv);
    cache.seqlens = static_cast<const int32_t*>(dlen.p);
    if (cache.block_table) cache.block_table = static_cast<const int32_t*>(dtab.p);
    if (cache.starts) cache.starts = static_cast<const int32_t*>(dstart.p);
    ws.status = static_cast<int32_t*>(dstatus.p);
  }
  TensorView q() { return on_device(sc.q, dq); }
  TensorView o() { return on_device(out, dout); }
  void with_workspace(const DecodePlan& plan) {
    const size_t bytes = decode_cuda_workspace_bytes(plan, q(), cache);
    dws = std::make_unique<DeviceBuffer>(nullptr, bytes);
    ws.data = dws->p, ws.bytes = bytes;
  }
  void run(const DecodePlan& plan, cudaStream_t stream = nullptr) {
    decode_cuda(plan, q(), cache, o(), {}, stream, static_cast<float*>(dlse.p), ws);
  }
  int32_t read_back() {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.bytes.data(), dout.p, out.bytes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(lse.data(), dlse.p, lse.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    int32_t status = -1;
    EXPECT_EQ(cudaMemcpy(&status, dstatus.p, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    return status;
  }
};

DecodePlan plan_of(const Case& c) {
  DecodeOptions o;
  o.dtype = c.dt, o.head_dim = int32_t(c.D);
  return make_decode_plan(parse_pattern(c.pattern), o);
}

std::string describe(const Case& c, Mode m) {
  return c.pattern + " " + dtype_name(c.dt) + " D=" + std::to_string(c.D) + " T=" + std::to_string(c.T) +
         (c.page ? " paged" : " contiguous") + " " + mode_name(m);
}

void check(const Case& c, Mode mode = Mode::Split) {
  Scenario sc(c);
  const DecodePlan plan = plan_of(c);
  Tensor want(DType::F64, 1, 1, 1, 1, false), naive(DType::F32, 1, 1, 1, 1, false);
  std::vector<float> want_lse;
  sc.oracle(want, naive, want_lse);
  DeviceCase dc(sc, want_lse.size());
  if (mode == Mode::Split) dc.with_workspace(plan);
  {
    KernelEnv env(mode == Mode::Simple);
    dc.run(plan);
  }
  ASSERT_EQ(dc.read_back(), kDecodeOk);
  const std::string what = describe(c, mode);
  const double e_naive = cputest::max_abs_err(naive, want);
  EXPECT_LE(cputest::max_abs_err(dc.out, want), 4.0 * e_naive + decodetest::atol(c.dt)) << what << " naive " << e_naive;
  EXPECT_LE(decodetest::lse_error(dc.lse, want_lse), 2e-5) << what << " lse";
}

void check_modes(const Case& c) {
  for (Mode m : {Mode::Split, Mode::NoWorkspace, Mode::Simple}) check(c, m);
}

TEST(CudaDecode, MatchesRowsOfFullAttention) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  for (const char* spec :
       {"causal", "causal_window:w=20+sink:g=4", "strided:s=8", "fixed:l=16,c=4", "causal_dilated:w=6,d=3+sink:g=2",
        "bigbird:b=8,w=1,g=1,r=2", "sink:g=2&causal_window:w=3"}) {
    for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
      Case c;
      c.pattern = spec, c.dt = dt, c.D = 64, c.H = 8, c.Hkv = 2, c.T = 3;
      c.lengths = {1, 2, 70, 200, 0};
      c.starts = true;
      check_modes(c);
      c.page = 16, c.starts = false, c.bnhd = true, c.D = 128, c.T = 1;
      c.lengths = {1, 15, 16, 17, 130};
      check_modes(c);
    }
  }
}

TEST(CudaDecode, LargeGroupsAndLongRows) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Case c;  // 10 query heads per kv head: two head groups in the kernel
  c.pattern = "causal", c.dt = DType::BF16, c.D = 128, c.H = 20, c.Hkv = 2, c.T = 2, c.lengths = {1500, 3};
  c.page = 64;
  check_modes(c);
  c.pattern = "causal_window:w=700+sink:g=4", c.H = 6, c.lengths = {2900, 1}, c.page = 48, c.T = 1;  // 3 heads a group
  check_modes(c);
}

TEST(CudaDecode, OneLongSequenceSplitsAcrossCtas) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  for (const char* spec : {"causal", "causal_dilated:w=900,d=4", "causal_window:w=2000+sink:g=4"}) {
    Case c;  // one sequence: the split-KV launch spreads its keys over many CTAs
    c.pattern = spec, c.dt = DType::BF16, c.D = 128, c.H = 8, c.Hkv = 2, c.T = 1, c.lengths = {5000};
    check(c);
    c.page = 256, c.T = 4, c.lengths = {4097}, c.dt = DType::F16, c.D = 64;
    check(c);
  }
}

TEST(CudaDecode, GroupsOfOneTwoFourEight) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  for (const char* dpl : {"16", "8"}) {  // dims per lane of groups of 2 and 4 (SPLAT_DECODE_DPL)
    setenv("SPLAT_DECODE_DPL", dpl, 1);
    for (int64_t g : {1, 2, 3, 4, 5, 8}) {
      Case c;
      c.pattern = "causal_window:w=40+sink:g=3", c.dt = DType::BF16, c.D = 64, c.Hkv = 2, c.H = 2 * g, c.T = 2;
      c.lengths = {90, 7, 600};
      c.page = 32;
      check(c);
      c.dt = DType::F16, c.D = 128, c.pattern = "causal_dilated:w=100,d=3", c.page = 0, c.lengths = {700, 2};
      check(c, Mode::NoWorkspace);
    }
  }
  unsetenv("SPLAT_DECODE_DPL");
}

TEST(CudaDecode, UnalignedRowsTakeTheFirstKernel) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Case c;
  c.pattern = "causal_window:w=20+sink:g=4", c.dt = DType::BF16, c.D = 64, c.H = 4, c.Hkv = 2, c.lengths = {50, 9};
  Scenario sc(c);
  const DecodePlan plan = plan_of(c);
  Tensor want(DType::F64, 1, 1, 1, 1, false), naive(DType::F32, 1, 1, 1, 1, false);
  std::vector<float> want_lse;
  sc.oracle(want, naive, want_lse);
  DeviceCase dc(sc, want_lse.size());
  // q shifted by one element in a larger buffer: not 16-byte aligned
  DeviceBuffer shifted(nullptr, sc.q.bytes.size() + 16);
  ASSERT_EQ(cudaMemcpy(static_cast<char*>(shifted.p) + 2, sc.q.bytes.data(), sc.q.bytes.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  TensorView q = sc.q.view;
  q.data = static_cast<char*>(shifted.p) + 2 +
           (static_cast<const char*>(sc.q.view.data) - reinterpret_cast<const char*>(sc.q.bytes.data()));
  q.device = 0;
  dc.with_workspace(plan);
  decode_cuda(plan, q, dc.cache, dc.o(), {}, nullptr, static_cast<float*>(dc.dlse.p), dc.ws);
  ASSERT_EQ(dc.read_back(), kDecodeOk);
  EXPECT_LE(cputest::max_abs_err(dc.out, want), 4.0 * cputest::max_abs_err(naive, want) + decodetest::atol(c.dt));
}

TEST(CudaDecode, DeterministicAcrossRuns) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Case c;
  c.pattern = "causal", c.dt = DType::BF16, c.D = 128, c.H = 8, c.Hkv = 2, c.lengths = {3000, 100};
  Scenario sc(c);
  const DecodePlan plan = plan_of(c);
  DeviceCase dc(sc, size_t(sc.B * c.H * c.T));
  dc.with_workspace(plan);
  ASSERT_GT(dc.ws.bytes, 0u);
  dc.run(plan);
  dc.read_back();
  const std::vector<unsigned char> first = dc.out.bytes;
  const std::vector<float> first_lse = dc.lse;
  for (int r = 0; r < 3; ++r) {
    dc.run(plan);
    dc.read_back();
    EXPECT_EQ(std::memcmp(first.data(), dc.out.bytes.data(), first.size()), 0) << "run " << r;
    EXPECT_EQ(std::memcmp(first_lse.data(), dc.lse.data(), first_lse.size() * 4), 0) << "run " << r;
  }
}

// Device-resident lengths and tables cannot be checked before the launch: the kernel must not give a plausible
// answer. A length past the capacity (or a negative one) makes its sequence NaN, a page outside the pool the rows
// that read it; the status word says which. The other sequences are exact.
TEST(CudaDecode, BadDeviceIndicesGiveNanAndStatus) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  for (Mode mode : {Mode::Split, Mode::NoWorkspace, Mode::Simple}) {
    for (int which = 0; which < 3; ++which) {  // 0: length past the capacity, 1: negative length, 2: bad page
      Case c;
      c.pattern = "causal", c.dt = DType::F32, c.D = 64, c.H = 4, c.Hkv = 2, c.lengths = {40, 700, 33};
      c.page = which == 2 ? 16 : 0;
      Scenario sc(c);
      const DecodePlan plan = plan_of(c);
      Tensor want(DType::F64, 1, 1, 1, 1, false), naive(DType::F32, 1, 1, 1, 1, false);
      std::vector<float> want_lse;
      sc.oracle(want, naive, want_lse);
      DeviceCase dc(sc, want_lse.size());
      if (mode == Mode::Split) dc.with_workspace(plan);
      std::vector<int32_t> lengths = c.lengths;
      if (which == 0) lengths[1] = int32_t(sc.kc.view.N()) + 1;
      if (which == 1) lengths[1] = -3;
      if (which == 2) {
        std::vector<int32_t> table = sc.table;
        table[size_t(1 * sc.max_pages + 20)] = int32_t(sc.kc.view.B());  // a page of sequence 1 outside the pool
        ASSERT_EQ(cudaMemcpy(dc.dtab.p, table.data(), table.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      }
      ASSERT_EQ(cudaMemcpy(dc.dlen.p, lengths.data(), lengths.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      {
        KernelEnv env(mode == Mode::Simple);
        dc.run(plan);
      }
      const int32_t status = dc.read_back();
      const std::string what = std::string(mode_name(mode)) + " case " + std::to_string(which);
      EXPECT_EQ(status, which == 2 ? kDecodeBadPage : kDecodeBadLength) << what;
      EXPECT_THROW(decode_check_status(status), Error) << what;
      for (int64_t b = 0; b < sc.B; ++b)
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t d = 0; d < c.D; ++d) {
            const double got = dc.out.get64(b, h, 0, d);
            if (b == 1)
              ASSERT_TRUE(std::isnan(got)) << what << " h " << h << " d " << d;
            else
              ASSERT_NEAR(got, want.get64(b, h, 0, d), 1e-4) << what;
          }
      for (int64_t h = 0; h < c.H; ++h) EXPECT_TRUE(std::isnan(dc.lse[size_t(1 * c.H + h)])) << what;
    }
  }
}

// A captured graph reads the lengths at replay: captured with stale lengths, replayed after new ones were copied in.
TEST(CudaDecode, GraphReplaySeesNewLengths) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Case c;
  c.pattern = "causal_window:w=300+sink:g=4", c.dt = DType::BF16, c.D = 128, c.H = 8, c.Hkv = 2, c.T = 1;
  c.lengths = {1200, 77, 513};
  c.page = 64;
  Scenario sc(c);
  const DecodePlan plan = plan_of(c);
  Tensor want(DType::F64, 1, 1, 1, 1, false), naive(DType::F32, 1, 1, 1, 1, false);
  std::vector<float> want_lse;
  sc.oracle(want, naive, want_lse);
  DeviceCase dc(sc, want_lse.size());
  dc.with_workspace(plan);
  const std::vector<int32_t> stale = {5, 1, 300};
  ASSERT_EQ(cudaMemcpy(dc.dlen.p, stale.data(), 12, cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  dc.run(plan, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dc.dlen.p, c.lengths.data(), 12, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(dc.read_back(), kDecodeOk);
  EXPECT_LE(cputest::max_abs_err(dc.out, want), 4.0 * cputest::max_abs_err(naive, want) + decodetest::atol(c.dt));
  EXPECT_LE(decodetest::lse_error(dc.lse, want_lse), 2e-5);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(CudaDecode, ErrorsAreClear) {
  const DecodePlan plan = make_decode_plan(parse_pattern("causal"), {DType::BF16, 96});
  Tensor q(DType::BF16, 1, 2, 1, 96, false);
  KvCache c;
  c.k = c.v = q.view;
  EXPECT_THROW(decode_cuda(plan, q.view, c, q.view), Error);  // host tensors; head dim 96
  EXPECT_NO_THROW(decode_check_status(kDecodeOk));
  EXPECT_THROW(decode_check_status(kDecodeBadPage), Error);
}

}  // namespace
