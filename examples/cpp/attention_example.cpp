// How a C++ inference engine uses splat (docs/CPP.md walks through it): a pattern is analysed once per sequence
// length, planned once per backend, and then every call only launches. On the CPU: attention_cpu on a Plan. On a
// GPU: plan_cuda (NVRTC, cached), then attention_cuda on the engine's stream with the engine's workspace, also
// inside a CUDA graph. Both results are checked against the float64 oracle; exit status 0 iff they match.
//   splat_attention_example [PATTERN] [N]      (default: strided:s=32, N=512; strided runs two passes)
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/attention.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"
#if SPLAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "splat/cuda.hpp"
#endif

namespace {

struct Host {  // a [B, H, N, D] tensor in host memory
  std::vector<uint16_t> bits16;
  std::vector<float> bits32;
  splat::TensorView view;
  Host(splat::DType t, int64_t B, int64_t H, int64_t N, int64_t D) {
    const size_t n = size_t(B * H * N * D);
    void* p = t == splat::DType::F32 ? static_cast<void*>((bits32 = std::vector<float>(n)).data())
                                     : static_cast<void*>((bits16 = std::vector<uint16_t>(n)).data());
    view = splat::contiguous_view(p, t, B, H, N, D);
  }
  size_t count() const { return size_t(view.B() * view.H() * view.N() * view.D()); }
  size_t bytes() const { return count() * splat::dtype_size(view.dtype); }
  float at(size_t i) const { return splat::load_element(view.data, view.dtype, i); }
};

double max_error(const Host& got, const Host& want) {
  double e = 0;
  for (size_t i = 0; i < got.count(); ++i) e = std::fmax(e, std::fabs(double(got.at(i)) - want.at(i)));
  return std::isnan(e) ? INFINITY : e;
}

#if SPLAT_WITH_CUDA
void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) splat::fail(splat::ErrorCode::Cuda, std::string(what) + ": " + cudaGetErrorString(e));
}

// The engine's side of a GPU call: its buffers, its stream, its workspace; splat only launches.
double run_on_gpu(const splat::Acsr& acsr, const Host& q, const Host& k, const Host& v, Host& out) {
  splat::CudaPlanOptions o;
  o.dtype = splat::DType::BF16, o.head_dim = int32_t(q.view.D());
  const auto plan = splat::plan_cuda(acsr, o);  // kernels compiled by NVRTC, or loaded from the disk cache
  const int64_t B = q.view.B(), H = q.view.H();
  void *dq, *dk, *dv, *dout, *ws = nullptr;
  for (void** p : {&dq, &dk, &dv, &dout}) cuda_ok(cudaMalloc(p, q.bytes()), "cudaMalloc");
  const size_t ws_bytes = splat::cuda_workspace_bytes(*plan, B, H);  // 0 for single-pass plans
  if (ws_bytes) cuda_ok(cudaMalloc(&ws, ws_bytes), "cudaMalloc (workspace)");
  cuda_ok(cudaMemcpy(dq, q.view.data, q.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_ok(cudaMemcpy(dk, k.view.data, k.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_ok(cudaMemcpy(dv, v.view.data, v.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
  const int64_t N = q.view.N(), D = q.view.D();
  const auto dview = [&](void* p) { return splat::contiguous_view(p, splat::DType::BF16, B, H, N, D, 0); };
  cudaStream_t stream;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  // Capture the launch once and replay it: no allocation, no synchronisation inside attention_cuda.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  splat::attention_cuda(*plan, dview(dq), dview(dk), dview(dv), dview(dout), {}, stream, ws);
  cuda_ok(cudaStreamEndCapture(stream, &graph), "capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  cuda_ok(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
  cuda_ok(cudaStreamSynchronize(stream), "running the graph");
  cuda_ok(cudaMemcpy(out.view.data, dout, out.bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  for (void* p : {dq, dk, dv, dout, ws}) cudaFree(p);
  const auto times = splat::cuda_plan_times(*plan);
  return times.total_ms;
}
#endif

}  // namespace

int main(int argc, char** argv) try {
  const std::string spec = argc > 1 ? argv[1] : "strided:s=32";
  const int64_t N = argc > 2 ? std::stoll(argv[2]) : 512, B = 1, H = 2, D = 64;
  // Once per (pattern, N): the affine geometry (ACSR) and, per backend, its plan.
  const splat::Pattern pattern = splat::parse_pattern(spec);
  const splat::Acsr acsr = splat::analyse(pattern, N);
  const splat::Plan plan = splat::make_plan(acsr);
  std::printf("%s, N=%lld: %lld keys attended, %zu pass(es), waste %.2f\n", spec.c_str(), (long long)N,
              (long long)splat::nnz(acsr), plan.passes.size(), plan.waste());

  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Host q(splat::DType::F32, B, H, N, D), k(splat::DType::F32, B, H, N, D), v(splat::DType::F32, B, H, N, D);
  Host q16(splat::DType::BF16, B, H, N, D), k16(splat::DType::BF16, B, H, N, D), v16(splat::DType::BF16, B, H, N, D);
  for (size_t i = 0; i < q.count(); ++i)  // bf16 inputs, and the same values in f32 for the oracle and the CPU
    for (auto [f32, b16] : {std::pair{&q, &q16}, std::pair{&k, &k16}, std::pair{&v, &v16}}) {
      splat::store_element(b16->view.data, splat::DType::BF16, i, normal(rng));
      splat::store_element(f32->view.data, splat::DType::F32, i, b16->at(i));
    }
  Host want(splat::DType::F32, B, H, N, D), cpu(splat::DType::F32, B, H, N, D);
  splat::attention_reference(splat::dense_mask(pattern, N).data(), q.view, k.view, v.view, want.view);
  splat::attention_cpu(plan, q.view, k.view, v.view, cpu.view);  // every call: launches only
  const double cpu_err = max_error(cpu, want);
  std::printf("cpu:  max |out - float64 reference| = %.2e\n", cpu_err);
  bool ok = cpu_err < 1e-4;
#if SPLAT_WITH_CUDA
  std::string why;
  if (splat::cuda_available(&why)) {
    Host gpu(splat::DType::BF16, B, H, N, D);
    const double plan_ms = run_on_gpu(acsr, q16, k16, v16, gpu);
    const double gpu_err = max_error(gpu, want);
    std::printf("cuda: max |out - float64 reference| = %.2e (bf16; plan_cuda took %.1f ms)\n", gpu_err, plan_ms);
    ok = ok && gpu_err < 3e-2;
  } else {
    std::printf("cuda: skipped (%s)\n", why.c_str());
  }
#endif
  std::printf("%s\n", ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
} catch (const splat::Error& e) {
  std::fprintf(stderr, "splat_attention_example: %s\n", e.what());
  return 2;
}
