// splat_cuda_bench: times splat's CUDA attention on the suite (bench/bench_cuda.py runs it and adds
// FlexAttention / SDPA). Per (pattern, N, D): median kernel time (CUDA events, warm-up, many reps),
// effective TFLOP/s on nnz, plan time (analysis + scheduling, kernel in memory), cold JIT and warm
// disk-cache load times, and a spot check of a few rows against a float64 reference.
// Prints one JSON object per line.
// A/B in one process: --variants "SPLAT_CUDA_TMA=1,SPLAT_CUDA_TMA=1;SPLAT_CUDA_PINGPONG=0" plans each pattern once per
// variant (environment set while planning; "" = the defaults, always first) and times them in --rounds interleaved
// rounds; each row names its variant. --specs name=spec,... replaces the suite; --batch B overrides B.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "jit/nvrtc_compile.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"

using namespace splat;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

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

// Float64 attention of query row i of (b=0, h) over pattern keys, bf16 inputs.
std::vector<double> ref_row(const Pattern& p, int64_t n, int64_t D, const std::vector<uint16_t>& q,
                            const std::vector<uint16_t>& k, const std::vector<uint16_t>& v, int64_t h, int64_t i) {
  const size_t base = size_t(h) * size_t(n * D);
  std::vector<double> s, acc(size_t(D), 0.0);
  std::vector<int64_t> keys;
  double mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    if (!pattern_contains(p, n, i, j)) continue;
    double dot = 0;
    for (int64_t d = 0; d < D; ++d)
      dot += double(bf16_to_float(q[base + size_t(i * D + d)])) * bf16_to_float(k[base + size_t(j * D + d)]);
    dot /= std::sqrt(double(D));
    s.push_back(dot), keys.push_back(j), mx = std::max(mx, dot);
  }
  double l = 0;
  for (size_t t = 0; t < keys.size(); ++t) {
    const double e = std::exp(s[t] - mx);
    l += e;
    for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += e * bf16_to_float(v[base + size_t(keys[t] * D + d)]);
  }
  for (auto& x : acc) x = l > 0 ? x / l : 0.0;
  return acc;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  size_t p = 0;
  while (p < s.size()) {
    const size_t e = s.find(sep, p);
    v.push_back(s.substr(p, e == std::string::npos ? std::string::npos : e - p));
    p = e == std::string::npos ? s.size() : e + 1;
  }
  return v;
}

// Sets (on) or unsets (off) the KEY=VAL;KEY=VAL settings of a variant.
void with_env(const std::string& var, bool on) {
  for (const std::string& kv : split(var, ';')) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    if (on)
      setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
    else
      unsetenv(kv.substr(0, eq).c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {4096, 16384}, dims = {64, 128};
  int reps = 50, warmup = 10;
  std::string only, mask_dir, variants_arg, specs_arg;
  int rounds = 1;
  bool cold_jit = true;  // --cold 0: skip the cold-JIT and cache-load timings (device time)
  int64_t batch = 0;
  for (int a = 1; a + 1 < argc; a += 2) {
    const std::string f = argv[a], val = argv[a + 1];
    if (f == "--sizes")
      sizes = parse_list(val);
    else if (f == "--dims")
      dims = parse_list(val);
    else if (f == "--reps")
      reps = std::stoi(val);
    else if (f == "--only")
      only = val;
    else if (f == "--mask-dir")
      mask_dir = val;
    else if (f == "--variants")
      variants_arg = val;
    else if (f == "--rounds")
      rounds = std::max(1, std::stoi(val));
    else if (f == "--specs")
      specs_arg = val;
    else if (f == "--batch")
      batch = std::stoll(val);
    else if (f == "--cold")
      cold_jit = val != "0";
  }
  std::vector<std::string> variants = {""};
  for (const std::string& v : split(variants_arg, ',')) variants.push_back(v);
  std::string why;
  if (!cuda_available(&why)) {
    std::fprintf(stderr, "no GPU: %s\n", why.c_str());
    return 1;
  }
  try {
    cudaStream_t stream;
    ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    cudaEvent_t e0, e1;
    ck(cudaEventCreate(&e0), "event");
    ck(cudaEventCreate(&e1), "event");
    for (int64_t n : sizes) {
      const int64_t B = batch > 0 ? batch : n <= 4096 ? 4 : 1, H = 16;
      for (int64_t D : dims) {
        const size_t elems = size_t(B * H * n * D);
        std::vector<uint16_t> hq(elems), hk(elems), hv(elems);
        std::mt19937_64 rng(uint64_t(n * 131 + D));
        std::normal_distribution<float> nd(0.f, 1.f);
        for (auto* t : {&hq, &hk, &hv})
          for (auto& x : *t) x = float_to_bf16(nd(rng));
        void* d[4];
        for (auto& p : d) ck(cudaMalloc(&p, elems * 2), "cudaMalloc");
        ck(cudaMemcpy(d[0], hq.data(), elems * 2, cudaMemcpyHostToDevice), "copy");
        ck(cudaMemcpy(d[1], hk.data(), elems * 2, cudaMemcpyHostToDevice), "copy");
        ck(cudaMemcpy(d[2], hv.data(), elems * 2, cudaMemcpyHostToDevice), "copy");
        TensorView tv[4];
        for (int i = 0; i < 4; ++i) tv[i] = contiguous_view(d[i], DType::BF16, B, H, n, D, 0);
        std::vector<SuiteEntry> entries = suite(n);
        if (!specs_arg.empty()) {
          entries.clear();
          for (const std::string& item : split(specs_arg, ',')) {
            const size_t eq = item.find('=');
            entries.push_back({item.substr(0, eq), eq == std::string::npos ? item : item.substr(eq + 1)});
          }
        }
        for (const SuiteEntry& e : entries) {
          if (!only.empty() && ("," + only + ",").find("," + e.name + ",") == std::string::npos) continue;
          const Pattern pat = parse_pattern(e.spec);
          CudaPlanOptions o;
          o.dtype = DType::BF16, o.head_dim = int(D);
          // Cold JIT: NVRTC on the plan's source made unique by a comment (NVRTC may keep results of
          // identical sources within a machine); then splat's own caches: empty, disk only, memory.
          const cuda::PlanKernels pk = cuda::plan_kernels(analyse(pat, n), o.dtype, o.head_dim, "sm_90a");
          double cold = 0, first_plan = 0, warm_load = 0;
          if (cold_jit) {
            const double tc = now_ms();
            // A unique symbol, not a comment: something below NVRTC reuses results of identical preprocessed code.
            jit::nvrtc_compile(pk.source + "\nextern \"C\" __global__ void splat_cold_" +
                                   std::to_string(static_cast<long long>(tc * 1000)) + "() {}\n",
                               "sm_90a");
            cold = now_ms() - tc;
            kernel_cache_clear();
            cuda::forget_loaded_kernels();
            first_plan = cuda_plan_times(*plan_cuda(analyse(pat, n), o)).kernels_ms;
            cuda::forget_loaded_kernels();
            warm_load = cuda_plan_times(*plan_cuda(analyse(pat, n), o)).kernels_ms;
          }
          double analyse_ms = 1e30, plan_ms = 1e30;
          std::vector<std::shared_ptr<CudaPlan>> plans;
          for (const std::string& var : variants) {
            with_env(var, true);
            std::shared_ptr<CudaPlan> vp;
            for (int r = 0; r < (plans.empty() ? 5 : 1); ++r) {
              const double t0 = now_ms();
              Acsr a = analyse(pat, n);
              const double t1 = now_ms();
              vp = plan_cuda(a, o);
              const double t2 = now_ms();
              if (plans.empty()) analyse_ms = std::min(analyse_ms, t1 - t0), plan_ms = std::min(plan_ms, t2 - t0);
            }
            with_env(var, false);
            cuda_workspace_reserve(*vp, B, H);
            plans.push_back(vp);
          }
          std::vector<std::vector<float>> ms(plans.size());
          std::vector<std::vector<double>> round_med(plans.size());
          std::vector<double> max_errs(plans.size());
          for (int round = 0; round < rounds; ++round)
            for (size_t vi = 0; vi < plans.size(); ++vi) {
              const CudaPlan& vp = *plans[vi];
              ck(cudaMemsetAsync(d[3], 0xff, elems * 2, stream), "poison");
              for (int r = 0; r < warmup; ++r) attention_cuda(vp, tv[0], tv[1], tv[2], tv[3], {}, stream);
              std::vector<float> rm;
              for (int r = 0; r < reps; ++r) {
                ck(cudaEventRecord(e0, stream), "record");
                attention_cuda(vp, tv[0], tv[1], tv[2], tv[3], {}, stream);
                ck(cudaEventRecord(e1, stream), "record");
                ck(cudaEventSynchronize(e1), "sync");
                float t = 0;
                ck(cudaEventElapsedTime(&t, e0, e1), "elapsed");
                rm.push_back(t);
                ms[vi].push_back(t);
              }
              std::sort(rm.begin(), rm.end());
              round_med[vi].push_back(rm[rm.size() / 2]);
              if (round > 0) continue;
              // Spot check: rows of (b=0, h=3) in the first, middle and last tiles.
              std::vector<uint16_t> out(size_t(n * D));
              ck(cudaMemcpy(out.data(), static_cast<uint16_t*>(d[3]) + size_t(3 * n * D), out.size() * 2,
                            cudaMemcpyDeviceToHost),
                 "copy out");
              double max_err = 0;
              for (int64_t i : {int64_t(0), int64_t(1), int64_t(33), n / 2, n / 2 + 7, n - 65, n - 2, n - 1}) {
                const auto ref = ref_row(pat, n, D, hq, hk, hv, 3, i);
                for (int64_t c = 0; c < D; ++c) {
                  const double x = bf16_to_float(out[size_t(i * D + c)]);
                  max_err = std::max(max_err, std::isnan(x) ? INFINITY : std::fabs(x - ref[size_t(c)]));
                }
              }
              max_errs[vi] = max_err;
            }
          for (size_t vi = 0; vi < plans.size(); ++vi) {
            const std::shared_ptr<CudaPlan>& plan = plans[vi];
            const CudaPlanTimes pt = cuda_plan_times(*plan);
            std::sort(ms[vi].begin(), ms[vi].end());
            const double med = ms[vi][ms[vi].size() / 2];
            const double max_err = max_errs[vi];
            std::string rounds_json;
            for (double x : round_med[vi]) rounds_json += (rounds_json.empty() ? "" : ",") + std::to_string(x);
            const double nnz = double(plan->plan.useful);
            const double tflops = 4.0 * nnz * double(D) * double(B * H) / (med * 1e-3) / 1e12;
            std::printf(
                "{\"pattern\":\"%s\",\"spec\":\"%s\",\"n\":%lld,\"B\":%lld,\"H\":%lld,\"D\":%lld,\"nnz\":%.0f,"
                "\"density\":%.5f,\"waste\":%.4f,\"passes\":%zu,\"tiles\":%lld,\"splat_ms\":%.5f,\"splat_min_ms\":%.5f,"
                "\"tflops\":%.1f,\"analyse_ms\":%.4f,\"plan_total_ms\":%.4f,\"make_plan_ms\":%.4f,\"upload_ms\":%.4f,"
                "\"cold_jit_ms\":%.1f,\"first_plan_kernels_ms\":%.1f,\"warm_load_ms\":%.3f,\"max_err\":%.5f,"
                "\"variant\":\"%s\",\"kernel\":\"%s\",\"round_ms\":[%s]}\n",
                e.name.c_str(), e.spec.c_str(), (long long)n, (long long)B, (long long)H, (long long)D, nnz,
                nnz / double(n) / double(n), plan->plan.waste(), plan->plan.passes.size(),
                (long long)plan->plan.tile_count(), med, ms[vi].front(), tflops, analyse_ms, plan_ms, pt.plan_ms,
                pt.upload_ms, cold, first_plan, warm_load, max_err, variants[vi].c_str(), plan->specs[0].name().c_str(),
                rounds_json.c_str());
            std::fflush(stdout);
          }
          if (!mask_dir.empty() && e.name == "bigbird" && D == dims.front()) {
            const std::vector<uint8_t> m = dense_mask(pat, n);
            std::ofstream f(mask_dir + "/mask_" + std::to_string(n) + "_" + e.name + ".u8", std::ios::binary);
            f.write(reinterpret_cast<const char*>(m.data()), std::streamsize(m.size()));
          }
        }
        for (auto p : d) cudaFree(p);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
