// splat_backward_bench: times splat's CUDA backward on the suite through the C++ API. Per (pattern, N, D), bf16:
// median (CUDA events, warm-up, many reps) of the forward with lse, the backward alone and forward + backward;
// effective TFLOP/s of the backward on 2.5 x the forward's 4 * nnz * D FLOPs; the workspace bytes; a spot check
// that the gradients are finite. Prints one JSON object per line.
//   splat_backward_bench [--sizes 4096,16384] [--dims 64,128] [--reps 30] [--only window,dilated]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"

using namespace splat;

namespace {

void ck(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(ErrorCode::Cuda, std::string(what) + ": " + cudaGetErrorString(rc));
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  size_t p = 0;
  while (p < s.size()) {
    const size_t e = s.find(',', p);
    v.push_back(std::stoll(s.substr(p, e == std::string::npos ? std::string::npos : e - p)));
    p = e == std::string::npos ? s.size() : e + 1;
  }
  return v;
}

template <class F>
double median_ms(cudaStream_t s, int warmup, int reps, F f) {
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (int r = 0; r < warmup; ++r) f();
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    ck(cudaEventRecord(e0, s), "record");
    f();
    ck(cudaEventRecord(e1, s), "record");
    ck(cudaEventSynchronize(e1), "sync");
    float t = 0;
    ck(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {4096, 16384}, dims = {64, 128};
  int reps = 30, warmup = 5;
  std::string only;
  for (int a = 1; a + 1 < argc; a += 2) {
    const std::string f = argv[a], val = argv[a + 1];
    if (f == "--sizes") sizes = parse_list(val);
    if (f == "--dims") dims = parse_list(val);
    if (f == "--reps") reps = std::stoi(val);
    if (f == "--only") only = val;
  }
  std::string why;
  if (!cuda_available(&why)) {
    std::fprintf(stderr, "no GPU: %s\n", why.c_str());
    return 1;
  }
  try {
    cudaStream_t s;
    ck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
    for (int64_t n : sizes) {
      const int64_t B = n <= 4096 ? 4 : 1, H = 16;
      for (int64_t D : dims) {
        const size_t elems = size_t(B * H * n * D), rows = size_t(B * H * n);
        std::vector<uint16_t> host(elems);
        std::mt19937_64 rng(uint64_t(n * 131 + D));
        std::normal_distribution<float> nd(0.f, 1.f);
        void* d[8];  // q k v dout out dq dk dv
        for (auto& p : d) ck(cudaMalloc(&p, elems * 2), "cudaMalloc");
        for (int i = 0; i < 4; ++i) {
          for (auto& x : host) x = float_to_bf16(nd(rng));
          ck(cudaMemcpy(d[i], host.data(), elems * 2, cudaMemcpyHostToDevice), "copy");
        }
        float* lse = nullptr;
        ck(cudaMalloc(reinterpret_cast<void**>(&lse), rows * 4), "cudaMalloc");
        TensorView tv[8];
        for (int i = 0; i < 8; ++i) tv[i] = contiguous_view(d[i], DType::BF16, B, H, n, D, 0);
        for (const SuiteEntry& e : suite(n)) {
          if (!only.empty() && ("," + only + ",").find("," + e.name + ",") == std::string::npos) continue;
          CudaPlanOptions o;
          o.head_dim = int(D), o.backward = true;
          const auto plan = plan_cuda(analyse(parse_pattern(e.spec), n), o);
          const size_t wsb = cuda_backward_workspace_bytes(*plan, B, H);
          void* ws = nullptr;
          ck(cudaMalloc(&ws, wsb), "cudaMalloc");
          cuda_workspace_reserve(*plan, B, H);
          const BackwardTensors t{tv[0], tv[1], tv[2], tv[4], tv[3], lse, tv[5], tv[6], tv[7]};
          auto fwd = [&] { attention_cuda(*plan, tv[0], tv[1], tv[2], tv[4], {}, s, nullptr, lse); };
          auto bwd = [&] { attention_backward_cuda(*plan, t, {}, s, ws); };
          const double f_ms = median_ms(s, warmup, reps, fwd);
          const double b_ms = median_ms(s, warmup, reps, bwd);
          const double fb_ms = median_ms(s, warmup, reps, [&] { fwd(), bwd(); });
          std::vector<uint16_t> g(size_t(n * D));
          bool finite = true;
          for (int i = 5; i < 8; ++i) {
            ck(cudaMemcpy(g.data(), d[i], g.size() * 2, cudaMemcpyDeviceToHost), "copy back");
            for (uint16_t x : g) finite = finite && std::isfinite(bf16_to_float(x));
          }
          const double nnz = double(plan->plan.useful), fl = 4.0 * nnz * double(D) * double(B * H);
          std::printf(
              "{\"pattern\":\"%s\",\"spec\":\"%s\",\"n\":%lld,\"B\":%lld,\"H\":%lld,\"D\":%lld,\"nnz\":%.0f,"
              "\"fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"fwd_bwd_ms\":%.4f,\"fwd_tflops\":%.1f,\"bwd_tflops\":%.1f,"
              "\"passes\":%zu,\"transposed_passes\":%zu,\"workspace_bytes\":%zu,\"finite\":%s}\n",
              e.name.c_str(), e.spec.c_str(), (long long)n, (long long)B, (long long)H, (long long)D, nnz, f_ms, b_ms,
              fb_ms, fl / (f_ms * 1e-3) / 1e12, 2.5 * fl / (b_ms * 1e-3) / 1e12, plan->plan.passes.size(),
              plan->plan.transposed->passes.size(), wsb, finite ? "true" : "false");
          std::fflush(stdout);
          cudaFree(ws);
        }
        for (auto p : d) cudaFree(p);
        cudaFree(lse);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
