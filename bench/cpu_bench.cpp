// CPU benchmark: effective GFLOP/s of attention_cpu (4 * nnz * D per head, the useful work only)
// on the ~12%-density suite, next to OpenBLAS sgemm on the two GEMM shapes of dense attention
// (Q K^T: N x N x D, P V: N x D x N), same process, same thread count. Median of --reps runs.
//
//   splat_cpu_bench [--n 4096] [--d 64] [--b 1] [--h 4] [--kv-heads H] [--threads T] [--reps 7]
//                   [--dtype f32|f16|bf16] [--block-m 64] [--block-n 64] [--pattern SPEC]...
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/attention.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/plan.hpp"

using namespace splat;

namespace {

template <class F>
double median_seconds(int reps, F f) {
  f();  // warm-up: page faults, caches, thread pools
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double sgemm_gflops(int64_t m, int64_t n, int64_t k, bool trans_b, int reps) {
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), c(size_t(m * n));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& x : a) x = u(rng);
  for (float& x : b) x = u(rng);
  const double s = median_seconds(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), 1.0f,
                a.data(), int(k), b.data(), trans_b ? int(k) : int(n), 0.0f, c.data(), int(n));
  });
  return 2.0 * double(m) * double(n) * double(k) / s / 1e9;
}

std::vector<std::string> default_suite() {
  return {"window:w=256",       "dilated:w=256,d=4",     "strided:s=64",
          "blocked:b=512",      "longformer:w=256,g=32", "bigbird:b=64,w=1,g=2,r=3,seed=1",
          "causal_window:w=512"};
}

int64_t arg_int(int& i, int argc, char** argv) {
  require(i + 1 < argc, std::string("missing value after ") + argv[i]);
  return std::atoll(argv[++i]);
}

}  // namespace

int main(int argc, char** argv) try {
  int64_t n = 4096, d = 64, b = 1, h = 4, hkv = 0, threads = 0, reps = 7;
  DType dt = DType::F32;
  PlanOptions po;
  bool with_sgemm = true;
  std::vector<std::string> patterns;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--n")
      n = arg_int(i, argc, argv);
    else if (a == "--d")
      d = arg_int(i, argc, argv);
    else if (a == "--b")
      b = arg_int(i, argc, argv);
    else if (a == "--h")
      h = arg_int(i, argc, argv);
    else if (a == "--kv-heads")
      hkv = arg_int(i, argc, argv);
    else if (a == "--threads")
      threads = arg_int(i, argc, argv);
    else if (a == "--reps")
      reps = arg_int(i, argc, argv);
    else if (a == "--block-m")
      po.block_m = int32_t(arg_int(i, argc, argv));
    else if (a == "--block-n")
      po.block_n = int32_t(arg_int(i, argc, argv));
    else if (a == "--no-sgemm")
      with_sgemm = false;
    else if (a == "--dtype" && i + 1 < argc)
      dt = parse_dtype(argv[++i]);
    else if (a == "--pattern" && i + 1 < argc)
      patterns.push_back(argv[++i]);
    else
      fail(ErrorCode::InvalidArgument, "unknown argument '" + a + "'");
  }
  require(n > 0 && d > 0 && b > 0 && h > 0 && reps > 0 && threads >= 0, "sizes must be positive");
  if (hkv == 0) hkv = h;
  if (patterns.empty()) patterns = default_suite();
  if (threads == 0) threads = omp_get_max_threads();
  openblas_set_num_threads(int(threads));

  std::printf(
      "splat_cpu_bench: N=%lld D=%lld B=%lld H=%lld H_kv=%lld dtype=%s threads=%lld reps=%lld "
      "block_m=%d block_n=%d\n",
      (long long)n, (long long)d, (long long)b, (long long)h, (long long)hkv, dtype_name(dt), (long long)threads,
      (long long)reps, po.block_m, po.block_n);
  std::printf("OpenBLAS: %s (core %s)\n", openblas_get_config(), openblas_get_corename());

  // Baseline before and after the attention runs; the better figure of each shape is the one kept,
  // so a noisy neighbour can only make our ratio look worse, never better.
  double g_qk = 0.0, g_pv = 0.0;
  if (with_sgemm) g_qk = sgemm_gflops(n, n, d, true, int(reps)), g_pv = sgemm_gflops(n, d, n, false, int(reps));
  // OpenBLAS's idle workers keep spinning for a while after a call; let them park before timing ours
  // (and ours park before sgemm again below), so neither side pays for the other's threads.
  std::this_thread::sleep_for(std::chrono::seconds(2));

  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto make = [&](int64_t heads) {
    std::vector<uint16_t> store(size_t(b * heads * n * d) * 2);
    TensorView t = contiguous_view(store.data(), dt, b, heads, n, d);
    for (size_t e = 0; e < size_t(b * heads * n * d); ++e) store_element(store.data(), dt, e, nd(rng));
    return std::make_pair(std::move(store), t);
  };
  auto [qs, q] = make(h);
  auto [ks, k] = make(hkv);
  auto [vs, v] = make(hkv);
  auto [os, o] = make(h);
  q.data = qs.data(), k.data = ks.data(), v.data = vs.data(), o.data = os.data();
  AttentionOptions opt;
  opt.threads = int(threads);

  std::printf("\n%-34s %8s %7s %6s %10s %10s %10s\n", "pattern", "density", "waste", "tiles", "time ms", "eff GF/s",
              "calc GF/s");
  std::vector<double> effs;
  for (const std::string& spec : patterns) {
    const Plan plan = make_plan(analyse(parse_pattern(spec), n), po);
    const double s = median_seconds(int(reps), [&] { attention_cpu(plan, q, k, v, o, opt); });
    const double heads = double(b * h);
    const double eff = 4.0 * double(plan.useful) * double(d) * heads / s / 1e9;
    const double calc = 4.0 * double(plan.computed) * double(d) * heads / s / 1e9;
    effs.push_back(eff);
    std::printf("%-34s %7.2f%% %7.3f %6lld %10.3f %10.1f %10.1f\n", spec.c_str(),
                100.0 * double(plan.useful) / (double(n) * double(n)), plan.waste(), (long long)plan.tile_count(),
                s * 1e3, eff, calc);
    std::fflush(stdout);
  }

  if (!with_sgemm) return 0;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  g_qk = std::max(g_qk, sgemm_gflops(n, n, d, true, int(reps)));
  g_pv = std::max(g_pv, sgemm_gflops(n, d, n, false, int(reps)));
  const double g = std::max(g_qk, g_pv);
  std::vector<double> sorted = effs;
  std::sort(sorted.begin(), sorted.end());
  std::printf("\nOpenBLAS sgemm %lldx%lldx%lld (Q K^T shape): %.1f GFLOP/s\n", (long long)n, (long long)n, (long long)d,
              g_qk);
  std::printf("OpenBLAS sgemm %lldx%lldx%lld (P V shape):   %.1f GFLOP/s\n", (long long)n, (long long)d, (long long)n,
              g_pv);
  std::printf("ratio ours/sgemm (vs the faster sgemm %.1f): min %.2fx, median %.2fx, max %.2fx (target >= 0.5x)\n", g,
              sorted.front() / g, sorted[sorted.size() / 2] / g, sorted.back() / g);
  return 0;
} catch (const splat::Error& e) {
  std::fprintf(stderr, "splat_cpu_bench: %s\n", e.what());
  return 2;
}
