// CPU benchmark: effective GFLOP/s of attention_cpu (4 * nnz * D per head: the useful work only)
// on the ~12%-density suite, next to OpenBLAS sgemm on the two GEMM shapes of dense attention
// (Q K^T: N x N x D, P V: N x D x N), same process, same thread count.
//
// Repetitions are interleaved (each round times every pattern and both sgemm shapes) and the
// median per item is reported, so a change in machine load hits both sides alike. Both thread
// pools are told not to spin when idle (OPENBLAS_THREAD_TIMEOUT=4, OMP_WAIT_POLICY=passive, set by
// re-executing once unless already set or --keep-env): otherwise each library's idle workers
// spin while the other one runs and the comparison measures that instead.
//
//   splat_cpu_bench [--n 4096] [--d 64] [--b 1] [--h 4] [--kv-heads H] [--threads T] [--reps 9]
//                   [--dtype f32|f16|bf16] [--block-m 64] [--block-n 64] [--pattern SPEC]... [--no-sgemm]
//                   [--backward]
//
// --backward also times attention_backward_cpu per pattern (effective GFLOP/s at 2.5x the forward's useful FLOPs)
// and prints backward / forward time.
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/attention.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/plan.hpp"

using namespace splat;

namespace {

struct Item {
  std::string name;
  double flops = 0;  // per run (useful flops for attention)
  std::function<void()> run;
  std::vector<double> seconds;
  double median() {
    std::sort(seconds.begin(), seconds.end());
    return seconds[seconds.size() / 2];
  }
};

double seconds_of(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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

void quiet_thread_pools(char** argv) {
  if (std::getenv("SPLAT_BENCH_REEXEC")) return;
  setenv("SPLAT_BENCH_REEXEC", "1", 1);
  setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);  // 0: keep a value the user set
  setenv("OMP_WAIT_POLICY", "passive", 0);
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace

int main(int argc, char** argv) try {
  int64_t n = 4096, d = 64, b = 1, h = 4, hkv = 0, threads = 0, reps = 9;
  DType dt = DType::F32;
  PlanOptions po;
  bool with_sgemm = true, keep_env = false, backward = false;
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
    else if (a == "--backward")
      backward = true;
    else if (a == "--keep-env")
      keep_env = true;
    else if (a == "--dtype" && i + 1 < argc)
      dt = parse_dtype(argv[++i]);
    else if (a == "--pattern" && i + 1 < argc)
      patterns.push_back(argv[++i]);
    else
      fail(ErrorCode::InvalidArgument, "unknown argument '" + a + "'");
  }
  if (!keep_env) quiet_thread_pools(argv);
  require(n > 0 && d > 0 && b > 0 && h > 0 && reps > 0 && threads >= 0, "sizes must be positive");
  if (hkv == 0) hkv = h;
  if (patterns.empty()) patterns = default_suite();
  if (threads == 0) threads = omp_get_max_threads();
  openblas_set_num_threads(int(threads));

  auto env = [](const char* k) { return std::getenv(k) ? std::getenv(k) : "(unset)"; };
  std::printf(
      "splat_cpu_bench: N=%lld D=%lld B=%lld H=%lld H_kv=%lld dtype=%s threads=%lld reps=%lld "
      "block_m=%d block_n=%d\n",
      (long long)n, (long long)d, (long long)b, (long long)h, (long long)hkv, dtype_name(dt), (long long)threads,
      (long long)reps, po.block_m, po.block_n);
  std::printf("OpenBLAS: %s (core %s); OMP_WAIT_POLICY=%s OPENBLAS_THREAD_TIMEOUT=%s\n", openblas_get_config(),
              openblas_get_corename(), env("OMP_WAIT_POLICY"), env("OPENBLAS_THREAD_TIMEOUT"));

  std::fflush(stdout);
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto make = [&](std::vector<uint16_t>& store, int64_t heads) {
    store.resize(size_t(b * heads * n * d) * dtype_size(dt) / 2);
    TensorView t = contiguous_view(store.data(), dt, b, heads, n, d);
    for (size_t e = 0; e < size_t(b * heads * n * d); ++e) store_element(store.data(), dt, e, nd(rng));
    return t;
  };
  std::vector<uint16_t> qs, ks, vs, os;
  const TensorView q = make(qs, h), k = make(ks, hkv), v = make(vs, hkv), o = make(os, h);
  AttentionOptions opt;
  opt.threads = int(threads);

  std::vector<Plan> plans;
  for (const std::string& spec : patterns) plans.push_back(make_plan(analyse(parse_pattern(spec), n), po));
  std::vector<Item> items;
  for (size_t p = 0; p < plans.size(); ++p)
    items.push_back({patterns[p],
                     4.0 * double(plans[p].useful) * double(d) * double(b * h),
                     [&, p] { attention_cpu(plans[p], q, k, v, o, opt); },
                     {}});

  // sgemm operands: A m x k, B k x n (or n x k transposed), C m x n.
  std::vector<float> ga(size_t(n * std::max(n, d))), gb(size_t(n * std::max(n, d))), gc(size_t(n * n));
  for (float& x : ga) x = nd(rng);
  for (float& x : gb) x = nd(rng);
  const size_t first_gemm = items.size();
  size_t end_gemm = first_gemm;
  if (with_sgemm) {
    items.push_back({"sgemm QK^T " + std::to_string(n) + "x" + std::to_string(n) + "x" + std::to_string(d),
                     2.0 * double(n) * double(n) * double(d),
                     [&] {
                       cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(n), int(d), 1.0f, ga.data(),
                                   int(d), gb.data(), int(d), 0.0f, gc.data(), int(n));
                     },
                     {}});
    items.push_back({"sgemm PV " + std::to_string(n) + "x" + std::to_string(d) + "x" + std::to_string(n),
                     2.0 * double(n) * double(d) * double(n),
                     [&] {
                       cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(d), int(n), 1.0f, ga.data(),
                                   int(n), gb.data(), int(d), 0.0f, gc.data(), int(d));
                     },
                     {}});
  }

  end_gemm = items.size();

  // Backward: the forward's out and lse once per pattern, then dq, dk, dv from them.
  std::vector<uint16_t> dos, dqs, dks, dvs;
  std::vector<std::vector<float>> lses(plans.size());
  TensorView dout, dq, dk, dv;
  if (backward) {
    dout = make(dos, h), dq = make(dqs, h), dk = make(dks, hkv), dv = make(dvs, hkv);
    for (size_t p = 0; p < plans.size(); ++p) {
      add_transpose(plans[p]);
      lses[p].resize(size_t(b * h * n));
      items.push_back({"backward " + patterns[p],
                       2.5 * items[p].flops,
                       [&, p] {
                         attention_cpu(plans[p], q, k, v, o, opt, lses[p].data());  // out and lse of this pattern
                         attention_backward_cpu(plans[p], {q, k, v, o, dout, lses[p].data(), dq, dk, dv}, opt);
                       },
                       {}});
    }
  }

  for (Item& it : items) it.run();  // warm-up: page faults, caches, thread pools
  for (int64_t r = 0; r < reps; ++r) {
    for (Item& it : items) it.seconds.push_back(seconds_of(it.run));
    std::fprintf(stderr, "\rround %lld/%lld", (long long)r + 1, (long long)reps);
  }
  std::fprintf(stderr, "\n");

  double g = 0;
  for (size_t i = first_gemm; i < end_gemm; ++i) g = std::max(g, items[i].flops / items[i].median() / 1e9);
  std::printf("\n%-34s %8s %7s %6s %10s %10s %10s %8s\n", "pattern", "density", "waste", "tiles", "time ms", "eff GF/s",
              "calc GF/s", "/sgemm");
  std::vector<double> ratios;
  for (size_t p = 0; p < plans.size(); ++p) {
    const double s = items[p].median(), eff = items[p].flops / s / 1e9;
    const double calc = 4.0 * double(plans[p].computed) * double(d) * double(b * h) / s / 1e9;
    ratios.push_back(g > 0 ? eff / g : 0.0);
    std::printf("%-34s %7.2f%% %7.3f %6lld %10.3f %10.1f %10.1f %7.2fx\n", patterns[p].c_str(),
                100.0 * double(plans[p].useful) / (double(n) * double(n)), plans[p].waste(),
                (long long)plans[p].tile_count(), s * 1e3, eff, calc, ratios.back());
  }
  if (backward) {
    std::printf("\n%-34s %10s %10s %10s %10s\n", "backward (forward + backward timed)", "fwd ms", "bwd ms", "bwd/fwd",
                "bwd GF/s");
    for (size_t p = 0; p < plans.size(); ++p) {
      const double f = items[p].median(), fb = items[end_gemm + p].median(), bw = fb - f;
      std::printf("%-34s %10.3f %10.3f %10.2f %10.1f\n", patterns[p].c_str(), f * 1e3, bw * 1e3, bw / f,
                  2.5 * items[p].flops / bw / 1e9);
    }
  }
  if (!with_sgemm) return 0;
  std::printf("\n");
  for (size_t i = first_gemm; i < end_gemm; ++i)
    std::printf("OpenBLAS %-32s %10.3f ms %8.1f GFLOP/s\n", items[i].name.c_str(), items[i].median() * 1e3,
                items[i].flops / items[i].median() / 1e9);
  std::sort(ratios.begin(), ratios.end());
  std::printf(
      "ratio ours/sgemm (vs the faster sgemm, %.1f GFLOP/s): min %.2fx, median %.2fx, max %.2fx "
      "(target >= 0.5x)\n",
      g, ratios.front(), ratios[ratios.size() / 2], ratios.back());
  return 0;
} catch (const splat::Error& e) {
  std::fprintf(stderr, "splat_cpu_bench: %s\n", e.what());
  return 2;
}
