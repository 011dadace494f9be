// Caller-provided workspaces for multi-pass CUDA plans: the same plan on two streams at once, each with its
// own workspace, equals the float64 oracle; capturing a plan that would have to grow its own workspace fails
// with an Error (not a broken capture); workspace sizes and argument errors. Skipped where no GPU is usable.
#include <gtest/gtest.h>
#ifndef SPLAT_WITH_CUDA
TEST(CudaWorkspace, BuiltWithoutCuda) {
  GTEST_SKIP() << "splat was built without the CUDA backend (SPLAT_WITH_CUDA=OFF)";
}
#else
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "test_cpu_util.hpp"
#include "test_cuda_util.hpp"

using namespace splat;
using cputest::Tensor;

namespace {

using DeviceTensor = cudatest::DeviceBuffer;

struct Problem {
  int64_t B = 2, H = 3, N = 333, D = 64;
  Tensor q{DType::BF16, B, H, N, D, false}, k{DType::BF16, B, H, N, D, false}, v{DType::BF16, B, H, N, D, false};
  explicit Problem(uint32_t seed) {
    std::mt19937 rng(seed ^ std::random_device{}());
    q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  }
  size_t bytes() const { return size_t(B * H * N * D) * 2; }
  TensorView device_view(void* p) const { return contiguous_view(p, DType::BF16, B, H, N, D, 0); }
};

void expect_matches_oracle(const Problem& pr, const Pattern& pat, const void* device_out) {
  Tensor out(DType::BF16, pr.B, pr.H, pr.N, pr.D, false);
  ASSERT_EQ(cudaMemcpy(out.view.data, device_out, pr.bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  const std::vector<uint8_t> mask = dense_mask(pat, pr.N);
  const Tensor q32 = pr.q.to_f32(), k32 = pr.k.to_f32(), v32 = pr.v.to_f32();
  Tensor ref(DType::F32, pr.B, pr.H, pr.N, pr.D, false);
  ref.poison();
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view);
  const Tensor naive = cputest::naive_same_dtype(mask.data(), q32, k32, v32, DType::BF16);
  EXPECT_LE(cputest::max_abs_err(out, ref), 6.0 * cputest::max_abs_err(naive, ref) + 2e-3);
}

TEST(CudaWorkspace, SizesFollowThePasses) {
  REQUIRE_GPU();
  const auto multi = plan_cuda(analyse(parse_pattern("strided:s=17"), 300), {});
  const auto single = plan_cuda(analyse(parse_pattern("window:w=16"), 300), {});
  EXPECT_EQ(cuda_workspace_bytes(*multi, 2, 3), size_t(2 * 3 * 300) * sizeof(float));
  EXPECT_EQ(cuda_workspace_bytes(*single, 2, 3), 0u);
  EXPECT_THROW(cuda_workspace_bytes(*multi, -1, 3), Error);
}

// Two streams run the same two-pass plan concurrently, each with its own workspace (with the plan's own
// buffer they would race on it); both results must equal the oracle.
TEST(CudaWorkspace, SamePlanOnTwoStreamsWithOwnWorkspaces) {
  REQUIRE_GPU();
  const Pattern pat = parse_pattern("strided:s=17");
  const Problem a(1), b(2);
  const auto plan = plan_cuda(analyse(pat, a.N), {});
  ASSERT_GT(cuda_workspace_bytes(*plan, a.B, a.H), 0u) << "expected a multi-pass plan";
  const Problem* probs[2] = {&a, &b};
  std::vector<DeviceTensor*> bufs;
  cudaStream_t streams[2];
  TensorView views[2][4];
  void* ws[2];
  for (int s = 0; s < 2; ++s) {
    ASSERT_EQ(cudaStreamCreateWithFlags(&streams[s], cudaStreamNonBlocking), cudaSuccess);
    const Tensor* host[3] = {&probs[s]->q, &probs[s]->k, &probs[s]->v};
    for (int i = 0; i < 4; ++i) {
      bufs.push_back(new DeviceTensor(probs[s]->bytes()));
      if (i < 3) cudaMemcpy(bufs.back()->p, host[i]->view.data, probs[s]->bytes(), cudaMemcpyHostToDevice);
      views[s][i] = probs[s]->device_view(bufs.back()->p);
    }
    ASSERT_EQ(cudaMemset(views[s][3].data, 0xff, probs[s]->bytes()), cudaSuccess);  // NaN poison
    bufs.push_back(new DeviceTensor(cuda_workspace_bytes(*plan, a.B, a.H)));
    ws[s] = bufs.back()->p;
  }
  for (int rep = 0; rep < 20; ++rep)
    for (int s = 0; s < 2; ++s)
      attention_cuda(*plan, views[s][0], views[s][1], views[s][2], views[s][3], {}, streams[s], ws[s]);
  for (auto& st : streams) ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  expect_matches_oracle(a, pat, views[0][3].data);
  expect_matches_oracle(b, pat, views[1][3].data);
  // The calls above never touched the plan's own buffer: a capture without a workspace still has to refuse.
  cudaGraph_t unused = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(streams[0], cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_THROW(attention_cuda(*plan, views[0][0], views[0][1], views[0][2], views[0][3], {}, streams[0]), Error);
  ASSERT_EQ(cudaStreamEndCapture(streams[0], &unused), cudaSuccess);
  if (unused) cudaGraphDestroy(unused);
  EXPECT_THROW(attention_cuda(*plan, views[0][0], views[0][1], views[0][2], views[0][3], {}, streams[0],
                              static_cast<char*>(ws[0]) + 2),
               Error);  // misaligned workspace
  for (auto& st : streams) cudaStreamDestroy(st);
  for (DeviceTensor* t : bufs) delete t;
}

// A fresh multi-pass plan captured without a workspace would have to allocate and synchronise inside the
// capture: it must refuse with an Error and leave the capture intact; with a workspace it captures and runs.
TEST(CudaWorkspace, CaptureWithoutReservedWorkspaceIsAnError) {
  REQUIRE_GPU();
  const Pattern pat = parse_pattern("strided:s=17");
  const Problem pr(3);
  const auto plan = plan_cuda(analyse(pat, pr.N), {});
  DeviceTensor q(pr.bytes()), k(pr.bytes()), v(pr.bytes()), o(pr.bytes());
  DeviceTensor ws(cuda_workspace_bytes(*plan, pr.B, pr.H));
  cudaMemcpy(q.p, pr.q.view.data, pr.bytes(), cudaMemcpyHostToDevice);
  cudaMemcpy(k.p, pr.k.view.data, pr.bytes(), cudaMemcpyHostToDevice);
  cudaMemcpy(v.p, pr.v.view.data, pr.bytes(), cudaMemcpyHostToDevice);
  cudaMemset(o.p, 0xff, pr.bytes());
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_THROW(
      attention_cuda(*plan, pr.device_view(q.p), pr.device_view(k.p), pr.device_view(v.p), pr.device_view(o.p), {}, s),
      Error);
  attention_cuda(*plan, pr.device_view(q.p), pr.device_view(k.p), pr.device_view(v.p), pr.device_view(o.p), {}, s,
                 ws.p);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  expect_matches_oracle(pr, pat, o.p);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

}  // namespace
#endif  // SPLAT_WITH_CUDA
