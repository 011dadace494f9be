// CUDA decode against the rows of the full attention (the same scenarios as the CPU tests: poisoned unused cache
// rows, paged caches with shuffled pages, per-sequence starts, GQA, T > 1, empty rows). Skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "splat/error.hpp"
#include "test_decode_util.hpp"

namespace {

using namespace splat;
using cputest::Tensor;
using decodetest::Case;
using decodetest::Scenario;

// A device, and decode kernels in this build (without nvcc the entry point is a stub that says so).
bool have_device() {
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

void check(const Case& c) {
  Scenario sc(c);
  DecodeOptions o;
  o.dtype = c.dt, o.head_dim = int32_t(c.D);
  const DecodePlan plan = make_decode_plan(parse_pattern(c.pattern), o);
  Tensor want(DType::F64, 1, 1, 1, 1, false), naive(DType::F32, 1, 1, 1, 1, false);
  std::vector<float> want_lse;
  sc.oracle(want, naive, want_lse);
  Tensor out(c.dt, sc.B, c.H, c.T, c.D, false);
  out.poison();
  DeviceBuffer dq(sc.q.bytes.data(), sc.q.bytes.size()), dk(sc.kc.bytes.data(), sc.kc.bytes.size()),
      dv(sc.vc.bytes.data(), sc.vc.bytes.size()), dout(out.bytes.data(), out.bytes.size()),
      dlen(c.lengths.data(), c.lengths.size() * 4), dtab(sc.table.data(), sc.table.size() * 4),
      dstart(sc.starts.data(), sc.starts.size() * 4), dlse(nullptr, want_lse.size() * 4);
  KvCache cache = sc.cache;
  cache.k = on_device(sc.kc, dk), cache.v = on_device(sc.vc, dv);
  cache.seqlens = static_cast<const int32_t*>(dlen.p);
  if (cache.block_table) cache.block_table = static_cast<const int32_t*>(dtab.p);
  if (cache.starts) cache.starts = static_cast<const int32_t*>(dstart.p);
  decode_cuda(plan, on_device(sc.q, dq), cache, on_device(out, dout), {}, nullptr, static_cast<float*>(dlse.p));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(out.bytes.data(), dout.p, out.bytes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> lse(want_lse.size());
  ASSERT_EQ(cudaMemcpy(lse.data(), dlse.p, lse.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  const std::string what = c.pattern + " " + dtype_name(c.dt) + " D=" + std::to_string(c.D) +
                           " T=" + std::to_string(c.T) + (c.page ? " paged" : " contiguous");
  const double e_naive = cputest::max_abs_err(naive, want);
  EXPECT_LE(cputest::max_abs_err(out, want), 4.0 * e_naive + decodetest::atol(c.dt)) << what << " naive " << e_naive;
  EXPECT_LE(decodetest::lse_error(lse, want_lse), 2e-5) << what << " lse";
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
      check(c);
      c.page = 16, c.starts = false, c.bnhd = true, c.D = 128, c.T = 1;
      c.lengths = {1, 15, 16, 17, 130};
      check(c);
    }
  }
}

TEST(CudaDecode, LargeGroupsAndLongRows) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Case c;  // 10 query heads per kv head: two head groups in the kernel
  c.pattern = "causal", c.dt = DType::BF16, c.D = 128, c.H = 20, c.Hkv = 2, c.T = 2, c.lengths = {1500, 3};
  c.page = 64;
  check(c);
}

TEST(CudaDecode, ErrorsAreClear) {
  const DecodePlan plan = make_decode_plan(parse_pattern("causal"), {DType::BF16, 96});
  Tensor q(DType::BF16, 1, 2, 1, 96, false);
  KvCache c;
  c.k = c.v = q.view;
  EXPECT_THROW(decode_cuda(plan, q.view, c, q.view), Error);  // host tensors; head dim 96
}

}  // namespace
