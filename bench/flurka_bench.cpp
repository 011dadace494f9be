// C++ timing harness of the CUDA FLuRKA kernels (bench/bench_flurka.py drives it until the Python package can
// call them from torch). Random bf16 inputs on the device, E, F, W per head; median of --repeats timed calls
// (CUDA events) after warm-up; NaN-poisoned output checked for non-finite values. One JSON object per line.
//   flurka_bench --B 4 --H 16 --N 4096 --D 64 --k 256 --m 256 [--methods all|a,b] [--repeats 50] [--shared]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "splat/error.hpp"
#include "splat/flurka.hpp"

using namespace splat;

namespace {
void ck(cudaError_t e, const char* w) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s: %s\n", w, cudaGetErrorString(e));
    std::exit(1);
  }
}
void* dev_random(size_t n, float sd, std::mt19937& g) {
  std::vector<uint16_t> h(n);
  std::normal_distribution<float> nd(0.0f, sd);
  for (auto& x : h) x = float_to_bf16(nd(g));
  void* p = nullptr;
  ck(cudaMalloc(&p, n * 2), "malloc");
  ck(cudaMemcpy(p, h.data(), n * 2, cudaMemcpyHostToDevice), "copy");
  return p;
}
}  // namespace

int main(int argc, char** argv) {
  int64_t B = 4, H = 16, N = 4096, D = 64, k = 256, m = 256;
  int repeats = 50;
  bool shared = false;
  std::string methods = "all";
  for (int i = 1; i + 1 < argc || (i < argc && std::string(argv[i]) == "--shared"); ++i) {
    const std::string a = argv[i];
    if (a == "--shared") {
      shared = true;
      continue;
    }
    const std::string v = argv[++i];
    if (a == "--B")
      B = std::stoll(v);
    else if (a == "--H")
      H = std::stoll(v);
    else if (a == "--N")
      N = std::stoll(v);
    else if (a == "--D")
      D = std::stoll(v);
    else if (a == "--k")
      k = std::stoll(v);
    else if (a == "--m")
      m = std::stoll(v);
    else if (a == "--repeats")
      repeats = std::stoi(v);
    else if (a == "--methods")
      methods = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::string why;
  if (!flurka_cuda_available(&why)) {
    std::fprintf(stderr, "no GPU: %s\n", why.c_str());
    return 3;
  }
  std::vector<FlurkaMethod> ms;
  if (methods == "all") {
    ms = all_flurka_methods();
  } else {
    std::stringstream ss(methods);
    for (std::string t; std::getline(ss, t, ',');) ms.push_back(parse_flurka_method(t));
  }
  std::mt19937 g(42);
  const int64_t He = shared ? 1 : H;
  FlurkaInputs in;
  in.q = contiguous_view(dev_random(size_t(B * H * N * D), 1.0f, g), DType::BF16, B, H, N, D, 0);
  in.k = contiguous_view(dev_random(size_t(B * H * N * D), 1.0f, g), DType::BF16, B, H, N, D, 0);
  in.v = contiguous_view(dev_random(size_t(B * H * N * D), 1.0f, g), DType::BF16, B, H, N, D, 0);
  in.e = MatrixView{dev_random(size_t(He * k * N), 1.0f / std::sqrt(float(N)), g), DType::BF16, He, k, N, 0};
  in.f = MatrixView{dev_random(size_t(He * k * N), 1.0f / std::sqrt(float(N)), g), DType::BF16, He, k, N, 0};
  in.w = MatrixView{dev_random(size_t(He * D * m), 1.0f, g), DType::BF16, He, D, m, 0};
  void* outp = nullptr;
  ck(cudaMalloc(&outp, size_t(B * H * N * D) * 2), "malloc");
  TensorView out = contiguous_view(outp, DType::BF16, B, H, N, D, 0);
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (FlurkaMethod meth : ms) {
    const FlurkaShape s = check_flurka_args(meth, in, out);
    void* ws = nullptr;
    ck(cudaMalloc(&ws, std::max<size_t>(16, flurka_cuda_workspace_bytes(meth, s))), "malloc ws");
    ck(cudaMemset(outp, 0xff, size_t(B * H * N * D) * 2), "poison");
    for (int i = 0; i < 5; ++i) flurka_cuda(meth, in, out, ws, nullptr);
    ck(cudaDeviceSynchronize(), "warmup");
    std::vector<float> t;
    for (int i = 0; i < repeats; ++i) {
      ck(cudaEventRecord(e0), "rec");
      flurka_cuda(meth, in, out, ws, nullptr);
      ck(cudaEventRecord(e1), "rec");
      ck(cudaEventSynchronize(e1), "sync");
      float ms_ = 0;
      cudaEventElapsedTime(&ms_, e0, e1);
      t.push_back(ms_);
    }
    std::sort(t.begin(), t.end());
    std::vector<uint16_t> host(size_t(B * H * N * D));
    ck(cudaMemcpy(host.data(), outp, host.size() * 2, cudaMemcpyDeviceToHost), "copy back");
    int64_t bad = 0;
    for (uint16_t x : host) bad += !std::isfinite(bf16_to_float(x));
    const FlurkaCost c = flurka_cost(meth, B, H, N, D, k, m, 2, shared);
    std::printf(
        "{\"method\": \"%s\", \"B\": %lld, \"H\": %lld, \"N\": %lld, \"D\": %lld, \"k\": %lld, \"m\": %lld, "
        "\"ms\": %.4f, \"min_ms\": %.4f, \"flops\": %.4g, \"bytes\": %.4g, \"predicted_ms\": %.4f, \"nonfinite\": "
        "%lld}\n",
        flurka_method_name(meth), (long long)B, (long long)H, (long long)N, (long long)D, (long long)k, (long long)m,
        t[t.size() / 2], t[0], c.flops, c.bytes, c.predicted_s * 1e3, (long long)bad);
    std::fflush(stdout);
    cudaFree(ws);
  }
  return 0;
}
