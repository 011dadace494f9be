// C++ timing harness of the CUDA FLuRKA kernels (bench/bench_flurka.py drives it until the Python package can
// call them from torch). Random bf16 inputs on the device, E, F, W per head; median of --repeats timed calls
// (CUDA events) after warm-up; NaN-poisoned output checked for non-finite values. One JSON object per line.
//   flurka_bench --B 4 --H 16 --N 4096 --D 64 --k 256 --m 256 [--methods all|a,b] [--repeats 50] [--shared]
//                [--backward] [--causal C] [--decode C]
// --backward also times flurka_backward_cuda (median, same way) and checks its gradients: finite, bitwise equal
// over two calls, and their relative error against the fp32 SIMT kernels (SPLAT_FLURKA_BWD=simt).
// --causal C times the causal chunked forward (flurka_causal_cuda, experimental) of the flurka-* methods instead,
// with E, F [k, C] chunk projections; output checked for non-finite values and bitwise equal over the calls.
// --decode C times the CUDA decode step (B x H sequences, E, F [k, C]) eagerly and in a CUDA graph.
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
std::vector<uint16_t> to_host(const void* p, size_t n) {
  std::vector<uint16_t> h(n);
  ck(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost), "copy back");
  return h;
}

// Times the backward and checks it (see the header); returns the JSON fields to append.
std::string time_backward(FlurkaMethod meth, const FlurkaInputs& in, int64_t B, int64_t H, int64_t N, int64_t D,
                          int64_t k, int64_t He, int repeats, std::mt19937& g) {
  const size_t n = size_t(B * H * N * D), ne = uses_projection(meth) ? size_t(He * k * N) : 0;
  FlurkaGrads gr;
  gr.dout = contiguous_view(dev_random(n, 1.0f, g), DType::BF16, B, H, N, D, 0);
  std::vector<void*> bufs;
  for (size_t sz : {n, n, n, std::max<size_t>(ne, 1), std::max<size_t>(ne, 1)}) {
    void* p = nullptr;
    ck(cudaMalloc(&p, sz * 2), "malloc grad");
    ck(cudaMemset(p, 0xff, sz * 2), "poison");
    bufs.push_back(p);
  }
  gr.dq = contiguous_view(bufs[0], DType::BF16, B, H, N, D, 0);
  gr.dk = contiguous_view(bufs[1], DType::BF16, B, H, N, D, 0);
  gr.dv = contiguous_view(bufs[2], DType::BF16, B, H, N, D, 0);
  gr.de = bufs[3], gr.df = bufs[4];
  const size_t sizes[5] = {n, n, n, ne, ne};
  auto snapshot = [&] {
    std::vector<std::vector<uint16_t>> r;
    r.reserve(5);
    for (int i = 0; i < 5; ++i) r.push_back(to_host(bufs[i], sizes[i]));
    return r;
  };
  flurka_backward_cuda(meth, in, gr, nullptr);
  ck(cudaDeviceSynchronize(), "backward");
  const auto first = snapshot();
  int64_t bad = 0;
  for (const auto& v : first)
    for (uint16_t x : v) bad += !std::isfinite(bf16_to_float(x));
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (int i = 0; i < 3; ++i) flurka_backward_cuda(meth, in, gr, nullptr);
  std::vector<float> t;
  for (int i = 0; i < repeats; ++i) {
    ck(cudaEventRecord(e0), "rec");
    flurka_backward_cuda(meth, in, gr, nullptr);
    ck(cudaEventRecord(e1), "rec");
    ck(cudaEventSynchronize(e1), "sync");
    float ms_ = 0;
    cudaEventElapsedTime(&ms_, e0, e1);
    t.push_back(ms_);
  }
  std::sort(t.begin(), t.end());
  const auto again = snapshot();
  const bool same = again == first;
  setenv("SPLAT_FLURKA_BWD", "simt", 1);
  flurka_backward_cuda(meth, in, gr, nullptr);
  ck(cudaDeviceSynchronize(), "backward simt");
  unsetenv("SPLAT_FLURKA_BWD");
  const auto ref = snapshot();
  std::ostringstream os;
  os << ", \"bwd_ms\": " << t[t.size() / 2] << ", \"bwd_nonfinite\": " << bad
     << ", \"bwd_deterministic\": " << (same ? "true" : "false") << ", \"bwd_rel_vs_simt\": {";
  const char* names[5] = {"dq", "dk", "dv", "dE", "dF"};
  for (int i = 0; i < 5; ++i) {
    double num = 0, den = 0;
    for (size_t j = 0; j < sizes[i]; ++j) {
      const double a = bf16_to_float(first[i][j]), b = bf16_to_float(ref[i][j]);
      num += (a - b) * (a - b), den += b * b;
    }
    os << (i ? ", " : "") << "\"" << names[i] << "\": " << (sizes[i] ? std::sqrt(num / std::max(den, 1e-30)) : 0.0);
  }
  os << "}";
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  for (void* p : bufs) cudaFree(p);
  cudaFree(const_cast<void*>(gr.dout.data));
  return os.str();
}

// --causal C: the causal forward of each flurka-* method in ms (one JSON line each).
int time_causal(const std::vector<FlurkaMethod>& ms, FlurkaInputs in, const TensorView& out, int64_t C, int64_t He,
                int repeats, std::mt19937& g) {
  const int64_t k = in.e.rows, N = out.N();
  in.e = MatrixView{dev_random(size_t(He * k * C), 1.0f / std::sqrt(float(C)), g), DType::BF16, He, k, C, 0};
  in.f = MatrixView{dev_random(size_t(He * k * C), 1.0f / std::sqrt(float(C)), g), DType::BF16, He, k, C, 0};
  const size_t n = size_t(out.B() * out.H() * N * out.D());
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (FlurkaMethod meth : ms) {
    if (!uses_projection(meth) || meth == FlurkaMethod::Linformer) continue;  // causal: flurka-* only
    const FlurkaShape s = check_flurka_args(meth, in, out, C);
    void* ws = nullptr;
    ck(cudaMalloc(&ws, flurka_causal_cuda_workspace_bytes(meth, s, C)), "malloc ws");
    ck(cudaMemset(out.data, 0xff, n * 2), "poison");
    flurka_causal_cuda(meth, in, out, C, ws, nullptr);
    const std::vector<uint16_t> first = to_host(out.data, n);
    for (int i = 0; i < 3; ++i) flurka_causal_cuda(meth, in, out, C, ws, nullptr);
    std::vector<float> t;
    for (int i = 0; i < repeats; ++i) {
      ck(cudaEventRecord(e0), "rec");
      flurka_causal_cuda(meth, in, out, C, ws, nullptr);
      ck(cudaEventRecord(e1), "rec");
      ck(cudaEventSynchronize(e1), "sync");
      float ms_ = 0;
      cudaEventElapsedTime(&ms_, e0, e1);
      t.push_back(ms_);
    }
    std::sort(t.begin(), t.end());
    int64_t bad = 0;
    for (uint16_t x : first) bad += !std::isfinite(bf16_to_float(x));
    const bool same = to_host(out.data, n) == first;
    std::printf(
        "{\"method\": \"%s\", \"causal_chunk\": %lld, \"B\": %lld, \"H\": %lld, \"N\": %lld, \"D\": %lld, "
        "\"k\": %lld, \"m\": %lld, \"ms\": %.4f, \"min_ms\": %.4f, \"nonfinite\": %lld, \"deterministic\": %s}\n",
        flurka_method_name(meth), (long long)C, (long long)s.B, (long long)s.H, (long long)N, (long long)s.D,
        (long long)k, (long long)s.m, t[t.size() / 2], t[0], (long long)bad, same ? "true" : "false");
    std::fflush(stdout);
    cudaFree(ws);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 0;
}

// --decode C: the CUDA decode step (flurka_decode_cuda_step) of each flurka-* method for B x H sequences, E, F
// [k, C]: ms per step averaged over C steps (one chunk flush among them), launched eagerly and as one CUDA graph of
// C steps; state_bytes is what a step must at least read (S, z and on average half a chunk of keys and values).
int time_decode(const std::vector<FlurkaMethod>& ms, int64_t B, int64_t H, int64_t D, int64_t C, int64_t k, int64_t m,
                int64_t He, int repeats, std::mt19937& g) {
  const size_t n = size_t(B * H * D);
  std::vector<void*> bufs;
  auto dev = [&](size_t count, float sd) { return bufs.emplace_back(dev_random(count, sd, g)); };
  TensorView q = contiguous_view(dev(n, 1.0f), DType::BF16, B, H, 1, D, 0);
  TensorView kk = contiguous_view(dev(n, 1.0f), DType::BF16, B, H, 1, D, 0);
  TensorView v = contiguous_view(dev(n, 1.0f), DType::BF16, B, H, 1, D, 0);
  TensorView out = contiguous_view(dev(n, 1.0f), DType::BF16, B, H, 1, D, 0);
  const MatrixView e{dev(size_t(He * k * C), 1.0f / std::sqrt(float(C))), DType::BF16, He, k, C, 0};
  const MatrixView f{dev(size_t(He * k * C), 1.0f / std::sqrt(float(C))), DType::BF16, He, k, C, 0};
  const MatrixView w{dev(size_t(He * D * m), 1.0f), DType::BF16, He, D, m, 0};
  cudaStream_t st;
  ck(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (FlurkaMethod meth : ms) {
    if (!uses_projection(meth) || meth == FlurkaMethod::Linformer) continue;  // decode: flurka-* only
    FlurkaCudaDecodeState s = flurka_decode_cuda_init(meth, B, H, D, C, e, f, w, st);
    auto steps = [&] {
      for (int64_t i = 0; i < C; ++i) flurka_decode_cuda_step(s, q, kk, v, out, st);
    };
    auto time_of = [&](auto&& run) {
      run();
      std::vector<float> t;
      for (int r = 0; r < std::max(3, repeats / 10); ++r) {
        ck(cudaEventRecord(e0, st), "rec");
        run();
        ck(cudaEventRecord(e1, st), "rec");
        ck(cudaEventSynchronize(e1), "sync");
        float x = 0;
        cudaEventElapsedTime(&x, e0, e1);
        t.push_back(x / float(C));
      }
      std::sort(t.begin(), t.end());
      return t[t.size() / 2];
    };
    const float eager = time_of(steps);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ck(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "capture");
    steps();
    ck(cudaStreamEndCapture(st, &graph), "capture");
    ck(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    const float graphed = time_of([&] { ck(cudaGraphLaunch(exec, st), "graph launch"); });
    std::vector<uint16_t> host(n);
    ck(cudaMemcpy(host.data(), out.data, n * 2, cudaMemcpyDeviceToHost), "copy back");
    int64_t bad = 0;
    for (uint16_t x : host) bad += !std::isfinite(bf16_to_float(x));
    const double bytes = double(B * H) * (double(m) * D * 4 + m * 4 + double(C) / 2 * D * 4 * 2);
    std::printf(
        "{\"method\": \"%s\", \"decode_chunk\": %lld, \"B\": %lld, \"H\": %lld, \"D\": %lld, \"k\": %lld, "
        "\"m\": %lld, \"step_ms\": %.5f, \"graph_step_ms\": %.5f, \"state_bytes\": %.4g, \"nonfinite\": %lld}\n",
        flurka_method_name(meth), (long long)C, (long long)B, (long long)H, (long long)D, (long long)k, (long long)m,
        eager, graphed, bytes, (long long)bad);
    std::fflush(stdout);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    flurka_decode_cuda_free(s);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(st);
  for (void* p : bufs) cudaFree(p);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  int64_t B = 4, H = 16, N = 4096, D = 64, k = 256, m = 256;
  int repeats = 50;
  int64_t causal = 0, decode = 0;
  bool shared = false, backward = false;
  std::string methods = "all";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shared" || a == "--backward") {
      (a == "--shared" ? shared : backward) = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "option %s needs a value\n", a.c_str());
      return 2;
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
    else if (a == "--causal")
      causal = std::stoll(v);
    else if (a == "--decode")
      decode = std::stoll(v);
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
  if (decode > 0) return time_decode(ms, B, H, D, decode, k, m, He, repeats, g);
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
  if (causal > 0) return time_causal(ms, in, out, causal, He, repeats, g);
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
    std::string bw;
    if (backward) bw = time_backward(meth, in, B, H, N, D, k, He, repeats, g);
    std::printf(
        "{\"method\": \"%s\", \"B\": %lld, \"H\": %lld, \"N\": %lld, \"D\": %lld, \"k\": %lld, \"m\": %lld, "
        "\"ms\": %.4f, \"min_ms\": %.4f, \"flops\": %.4g, \"bytes\": %.4g, \"predicted_ms\": %.4f, \"nonfinite\": "
        "%lld%s}\n",
        flurka_method_name(meth), (long long)B, (long long)H, (long long)N, (long long)D, (long long)k, (long long)m,
        t[t.size() / 2], t[0], c.flops, c.bytes, c.predicted_s * 1e3, (long long)bad, bw.c_str());
    std::fflush(stdout);
    cudaFree(ws);
  }
  return 0;
}
