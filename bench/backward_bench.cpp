// splat_backward_bench: times splat's CUDA backward on the suite through the C++ API. Per (pattern, N, D), bf16:
// median (CUDA events, warm-up, many reps) of the forward with lse, the backward alone and forward + backward, in
// the default deterministic mode and the non-deterministic one (AttentionOptions::deterministic = false, "fast");
// effective TFLOP/s of the backward on 2.5 x the forward's 4 * nnz * D FLOPs; the workspace bytes; a spot check
// that the gradients are finite and that the two modes' dQ agree (largest difference / largest |dQ|). Prints one
// JSON object per line.
//   splat_backward_bench [--sizes 4096,16384] [--dims 64,128] [--configs 16384:128,4096:64] [--reps 30]
//                        [--only window,dilated]
// --configs: (N, D) pairs instead of the sizes x dims grid. B = 4 at N <= 4096, else 1; H = 16.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
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
  std::vector<std::pair<int64_t, int64_t>> configs;
  for (int a = 1; a + 1 < argc; a += 2) {
    const std::string f = argv[a], val = argv[a + 1];
    if (f == "--sizes") sizes = parse_list(val);
    if (f == "--dims") dims = parse_list(val);
    if (f == "--configs") {
      std::string list = val;
      for (char& c : list) c = c == ':' ? ',' : c;
      const std::vector<int64_t> v = parse_list(list);
      for (size_t i = 0; i + 1 < v.size(); i += 2) configs.push_back({v[i], v[i + 1]});
    }
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
    if (configs.empty())
      for (int64_t n : sizes)
        for (int64_t D : dims) configs.push_back({n, D});
    for (const auto& [n, D] : configs) {
      const int64_t B = n <= 4096 ? 4 : 1, H = 16;
      {
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
          const size_t wsf = cuda_backward_workspace_bytes(*plan, B, H, false);
          void* ws = nullptr;
          ck(cudaMalloc(&ws, wsf), "cudaMalloc");
          AttentionOptions fast;
          fast.deterministic = false;
          cuda_workspace_reserve(*plan, B, H);
          const BackwardTensors t{tv[0], tv[1], tv[2], tv[4], tv[3], lse, tv[5], tv[6], tv[7]};
          auto fwd = [&] { attention_cuda(*plan, tv[0], tv[1], tv[2], tv[4], {}, s, nullptr, lse); };
          auto bwd = [&] { attention_backward_cuda(*plan, t, {}, s, ws); };
          auto bwd_fast = [&] { attention_backward_cuda(*plan, t, fast, s, ws); };
          const double f_ms = median_ms(s, warmup, reps, fwd);
          const double b_ms = median_ms(s, warmup, reps, bwd);
          const double fb_ms = median_ms(s, warmup, reps, [&] { fwd(), bwd(); });
          std::vector<uint16_t> g(size_t(n * D)), dq_det(g.size());
          bool finite = true;
          for (int i = 5; i < 8; ++i) {
            ck(cudaMemcpy(g.data(), d[i], g.size() * 2, cudaMemcpyDeviceToHost), "copy back");
            for (uint16_t x : g) finite = finite && std::isfinite(bf16_to_float(x));
            if (i == 5) dq_det = g;
          }
          const double bf_ms = median_ms(s, warmup, reps, bwd_fast);
          const double fbf_ms = median_ms(s, warmup, reps, [&] { fwd(), bwd_fast(); });
          bool fast_finite = true;
          double dq_diff = 0, dq_max = 0;
          for (int i = 5; i < 8; ++i) {
            ck(cudaMemcpy(g.data(), d[i], g.size() * 2, cudaMemcpyDeviceToHost), "copy back");
            for (size_t j = 0; j < g.size(); ++j) {
              fast_finite = fast_finite && std::isfinite(bf16_to_float(g[j]));
              if (i != 5) continue;
              dq_diff = std::max(dq_diff, double(std::fabs(bf16_to_float(g[j]) - bf16_to_float(dq_det[j]))));
              dq_max = std::max(dq_max, double(std::fabs(bf16_to_float(dq_det[j]))));
            }
          }
          const double nnz = double(plan->plan.useful), fl = 4.0 * nnz * double(D) * double(B * H);
          std::printf(
              "{\"pattern\":\"%s\",\"spec\":\"%s\",\"n\":%lld,\"B\":%lld,\"H\":%lld,\"D\":%lld,\"nnz\":%.0f,"
              "\"fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"fwd_bwd_ms\":%.4f,\"fwd_tflops\":%.1f,\"bwd_tflops\":%.1f,"
              "\"bwd_fast_ms\":%.4f,\"fwd_bwd_fast_ms\":%.4f,\"bwd_fast_tflops\":%.1f,\"det_over_fast\":%.3f,"
              "\"passes\":%zu,\"transposed_passes\":%zu,\"workspace_bytes\":%zu,\"workspace_fast_bytes\":%zu,"
              "\"finite\":%s,\"fast_finite\":%s,\"dq_fast_vs_det\":%.2e}\n",
              e.name.c_str(), e.spec.c_str(), (long long)n, (long long)B, (long long)H, (long long)D, nnz, f_ms, b_ms,
              fb_ms, fl / (f_ms * 1e-3) / 1e12, 2.5 * fl / (b_ms * 1e-3) / 1e12, bf_ms, fbf_ms,
              2.5 * fl / (bf_ms * 1e-3) / 1e12, b_ms / bf_ms, plan->plan.passes.size(),
              plan->plan.transposed->passes.size(), wsb, wsf, finite ? "true" : "false", fast_finite ? "true" : "false",
              dq_max > 0 ? dq_diff / dq_max : 0.0);
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
