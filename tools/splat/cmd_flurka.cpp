// `splat flurka ...` runs one FLuRKA-family method (random or .npy inputs) on the CPU or CUDA backend and
// optionally checks it against the float64 reference; `splat flurka-plan ...` prints the cost model's
// predicted time of every method for a shape and recommends one.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "common/int_math.hpp"
#include "runner.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"
#include "splat/npy.hpp"

namespace splat::cli {
namespace {

const char* kUsage =
    "usage: splat flurka --method M --seq-len N --heads H --head-dim D [--k K] [--m M] [--batch B]\n"
    "                    [--dtype f32|f16|bf16] [--backend cpu|cuda|auto] [--check] [--causal C] [--shared]\n"
    "                    [--seed S] [--repeats R]\n"
    "       splat flurka --method M --q Q.npy --k-in K.npy --v V.npy [--e E.npy --f F.npy] [--w W.npy]\n"
    "                    [--out OUT.npy] [--backend ...] [--check] [--causal C]\n"
    "  M: flurka-favor | flurka-elu | flurka-relu | linformer | performer (= performer-favor) | performer-relu |\n"
    "     linear. Random inputs: Q, K, V ~ N(0,1), E, F ~ N(0, 1/N) ([H,k,N], or [k,N] with --shared),\n"
    "     W ~ N(0,1) [H,D,m]. .npy inputs: Q [B,H,Nq,D], K, V [B,H,N,D], E, F [k,N] or [H,k,N] ([r,C] with\n"
    "     --causal C), W [D,m] or [H,D,m]; float32 or float16. --check compares with the float64 reference.\n"
    "     --causal C: chunked causal FLuRKA (flurka-* only, CPU), E/F compress each chunk of C tokens to k rows.\n"
    "  With .npy inputs the shapes and dtype come from the files: --seq-len, --heads, --head-dim, --batch, --k,\n"
    "  --m, --dtype, --shared and --seed conflict with them (exit 2). --out is written only if --check (when\n"
    "  given) passed. Sizes are >= 1: an empty problem (N = 0 or B = 0, also in .npy inputs) is refused (exit 2).\n";

const char* kPlanUsage =
    "usage: splat flurka-plan --seq-len N --head-dim D [--k K] [--m M] [--batch B] [--heads H] [--dtype bf16]\n"
    "                         [--shared] [--bandwidth TB/s] [--gemm TFLOP/s]\n"
    "  Predicted CUDA time of every method (cost model: FLOPs and bytes per kernel against measured device\n"
    "  ceilings, defaults measured on an H100) next to dense attention, and a recommendation.\n";

struct Host {
  std::vector<uint8_t> bytes;
  void* data() { return bytes.data(); }
};

void fill(Host& h, DType t, size_t n, float sd, std::mt19937& g) {
  h.bytes.resize(n * dtype_size(t));
  std::normal_distribution<float> nd(0.0f, sd);
  for (size_t i = 0; i < n; ++i) store_element(h.data(), t, i, nd(g));
}

MatrixView matrix_from_npy(NpyArray& a, const std::string& name) {
  const DType t = tensor_dtype(a, name);
  require(a.shape.size() == 2 || a.shape.size() == 3,
          name + ": expected a 2-D [rows, cols] or 3-D [H, rows, cols] array");
  MatrixView m;
  m.data = a.data.data();
  m.dtype = t;
  m.heads = a.shape.size() == 3 ? a.shape[0] : 1;
  m.rows = a.shape[a.shape.size() - 2];
  m.cols = a.shape.back();
  return m;
}

double rel_err(const TensorView& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double x = load_element(a.data, a.dtype, i), y = ref[i];
    if (!std::isfinite(x)) return INFINITY;
    num += (x - y) * (x - y), den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int run_flurka(const std::vector<std::string>& argv) {
  Args args("flurka", argv, {{"method", true}, {"seq-len", true}, {"heads", true}, {"head-dim", true}, {"k", true},
                             {"m", true},      {"batch", true},   {"dtype", true}, {"backend", true},  {"check", false},
                             {"causal", true}, {"shared", false}, {"seed", true},  {"repeats", true},  {"q", true},
                             {"k-in", true},   {"v", true},       {"e", true},     {"f", true},        {"w", true},
                             {"out", true}},
            0);
  if (args.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const FlurkaMethod method = parse_flurka_method(args.get("method", "flurka-favor"));
  if (args.has("out")) check_output_target(args.get("out"));  // refused before the run, not after
  const int64_t causal = args.get_int("causal", 0, 1, int64_t(1) << 30);
  std::string backend = args.get("backend", "auto");
  require(backend == "cpu" || backend == "cuda" || backend == "auto", "--backend must be cpu, cuda or auto");
  const int repeats = int(args.get_int("repeats", 1, 1, 10000));
  FlurkaInputs in;
  Host q, k, v, e, f, w;
  NpyArray nq, nk, nv, ne, nf, nw;
  DType t = DType::F32;
  if (args.has("q")) {  // .npy inputs: their shapes are the sizes, so size options would be ignored
    for (const char* opt : {"seq-len", "heads", "head-dim", "batch", "k", "m", "dtype", "shared", "seed"})
      require(!args.has(opt), std::string("splat flurka: --") + opt +
                                  " conflicts with .npy inputs (--q ...): the inputs' shapes and dtype are used");
    nq = read_npy(args.get("q"));
    require(args.has("k-in") && args.has("v"), "--q needs --k-in and --v");
    nk = read_npy(args.get("k-in"));
    nv = read_npy(args.get("v"));
    in.q = npy_tensor_view(nq, "--q"), in.k = npy_tensor_view(nk, "--k-in"), in.v = npy_tensor_view(nv, "--v");
    t = in.q.dtype;
    if (uses_projection(method)) {
      require(args.has("e") && args.has("f"), std::string(flurka_method_name(method)) + " needs --e and --f");
      ne = read_npy(args.get("e")), nf = read_npy(args.get("f"));
      in.e = matrix_from_npy(ne, "--e"), in.f = matrix_from_npy(nf, "--f");
    }
    if (uses_random_features(method)) {
      require(args.has("w"), std::string(flurka_method_name(method)) + " needs --w");
      nw = read_npy(args.get("w"));
      in.w = matrix_from_npy(nw, "--w");
    }
  } else {
    const int64_t N = args.require_int("seq-len", 1, int64_t(1) << 30);
    const int64_t H = args.require_int("heads", 1, 1 << 16), D = args.require_int("head-dim", 1, 4096);
    const int64_t B = args.get_int("batch", 1, 1, 1 << 16);
    const int64_t kk = args.get_int("k", 256, 0, int64_t(1) << 30), m = args.get_int("m", 256, 0, 1 << 20);
    t = parse_dtype(args.get("dtype", "f32"));
    const int64_t He = args.has("shared") ? 1 : H, cols = causal > 0 ? causal : N;
    // Every size product checked (they overflow int64 long before memory runs out), then the memory:
    // q, k, v, out and the float32 reference of --check, E, F and W.
    const int64_t qkv = checked_product({B, H, N, D}, "splat flurka: B * H * N * D");
    const int64_t ef = checked_product({He, kk, cols}, "splat flurka: E, F ([H, k, N])");
    const int64_t wm = checked_product({He, D, m}, "splat flurka: W ([H, D, m])");
    const double elem = double(dtype_size(t));
    check_fits_in_memory(
        double(qkv) * (4 * elem + (args.has("check") ? 4.0 : 0.0)) + (double(ef) * 2 + double(wm)) * elem,
        "splat flurka: the inputs and output");
    std::mt19937 g(uint32_t(args.get_int("seed", 1, 0, 1ll << 31)));
    fill(q, t, size_t(qkv), 1.0f, g), fill(k, t, size_t(qkv), 1.0f, g);
    fill(v, t, size_t(qkv), 1.0f, g);
    fill(e, t, size_t(ef), 1.0f / std::sqrt(float(cols)), g);
    fill(f, t, size_t(ef), 1.0f / std::sqrt(float(cols)), g);
    fill(w, t, size_t(wm), 1.0f, g);
    in.q = contiguous_view(q.data(), t, B, H, N, D), in.k = contiguous_view(k.data(), t, B, H, N, D);
    in.v = contiguous_view(v.data(), t, B, H, N, D);
    in.e = MatrixView{e.data(), t, He, kk, cols, -1}, in.f = MatrixView{f.data(), t, He, kk, cols, -1};
    in.w = MatrixView{w.data(), t, He, D, m, -1};
  }
  const int64_t B = in.q.B(), H = in.q.H(), Nq = in.q.N(), D = in.q.D();
  const int64_t out_elems = checked_product({B, H, Nq, D}, "splat flurka: the output [B, H, Nq, D]");
  Host o;
  o.bytes.resize(size_t(out_elems) * dtype_size(t));
  TensorView out = contiguous_view(o.data(), t, B, H, Nq, D);
  const FlurkaShape s = check_flurka_args(method, in, out, causal);
  std::string why;
  if (backend == "auto") {  // CUDA when it can serve this call exactly as given, else the CPU
    const bool same_dtype = (!uses_projection(method) || (in.e.dtype == t && in.f.dtype == t)) &&
                            (!uses_random_features(method) || in.w.dtype == t);
    backend = causal == 0 && same_dtype && flurka_cuda_available() && flurka_cuda_supports(method, s) ? "cuda" : "cpu";
  }
  if (backend == "cuda") {
    require(causal == 0, "the causal variant runs on the CPU backend only (--backend cpu)");
    if (!flurka_cuda_available(&why)) fail(ErrorCode::Unsupported, "--backend cuda: " + why);
    if (!flurka_cuda_supports(method, s, &why)) fail(ErrorCode::Unsupported, "--backend cuda: " + why);
  }
  double ms = 0;
  if (backend == "cuda") {
    ms = flurka_cuda_host(method, in, out, repeats > 1 ? 2 : 0, repeats);
  } else {
    std::vector<double> ts;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      if (causal > 0)
        flurka_causal_cpu(method, in, out, causal);
      else
        flurka_cpu(method, in, out);
      ts.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ts.begin(), ts.end());
    ms = ts[ts.size() / 2];
  }
  std::printf("%s%s backend=%s dtype=%s B=%lld H=%lld Nq=%lld N=%lld D=%lld k=%lld m=%lld: %.3f ms\n",
              flurka_method_name(method), causal > 0 ? (" causal C=" + std::to_string(causal)).c_str() : "",
              backend.c_str(), dtype_name(t), (long long)B, (long long)H, (long long)Nq, (long long)s.N, (long long)D,
              (long long)s.k, (long long)s.m, ms);
  int rc = 0;
  if (args.has("check")) {
    std::vector<float> ref(static_cast<size_t>(out_elems));
    TensorView rv = contiguous_view(ref.data(), DType::F32, B, H, Nq, D);
    if (causal > 0)
      flurka_causal_reference(method, in, rv, causal);
    else
      flurka_reference(method, in, rv);
    std::vector<float> rounded(ref);
    double naive = 0, den = 0;  // error of storing the exact result in bf16 (cuda) or the storage dtype (cpu)
    const DType floor_t = backend == "cuda" ? DType::BF16 : t;
    for (size_t i = 0; i < ref.size(); ++i) {
      uint16_t tmp[2];
      store_element(tmp, floor_t, 0, ref[i]);
      const double r = load_element(tmp, floor_t, 0);
      naive += (r - ref[i]) * (r - ref[i]), den += double(ref[i]) * ref[i];
    }
    naive = std::sqrt(naive / std::max(den, 1e-300));
    const double err = rel_err(out, ref);
    const double tol = backend == "cuda" ? 4 * naive + 2e-3 : 2 * naive + 2e-5;
    std::printf("check vs float64 reference: rel err %.3e (tolerance %.3e) %s\n", err, tol, err <= tol ? "OK" : "FAIL");
    rc = err <= tol ? 0 : 1;
  }
  if (args.has("out") && rc != 0) {  // a wrong result is not written: an existing file stays as it was
    std::printf("%s not written (the check failed)\n", args.get("out").c_str());
  } else if (args.has("out")) {
    write_npy(args.get("out"), npy_from_tensor(out));
    std::printf("wrote %s\n", args.get("out").c_str());
  }
  return rc;
}

int run_flurka_plan(const std::vector<std::string>& argv) {
  Args args("flurka-plan", argv,
            {{"seq-len", true},
             {"head-dim", true},
             {"k", true},
             {"m", true},
             {"batch", true},
             {"heads", true},
             {"dtype", true},
             {"shared", false},
             {"bandwidth", true},
             {"gemm", true}},
            0);
  if (args.help()) {
    std::fputs(kPlanUsage, stdout);
    return 0;
  }
  const int64_t N = args.require_int("seq-len", 1, int64_t(1) << 31), D = args.require_int("head-dim", 1, 4096);
  // k rows project N keys: k <= N, also for the default (256).
  require(args.has("k") || N >= 256, "splat flurka-plan: --k defaults to 256, more than --seq-len " +
                                         std::to_string(N) + ": give --k in [1, " + std::to_string(N) + "]");
  const int64_t kk = args.get_int("k", 256, 1, N), m = args.get_int("m", 256, 1, 1 << 20);
  const int64_t B = args.get_int("batch", 1, 1, 1 << 16), H = args.get_int("heads", 16, 1, 1 << 16);
  const int elem = int(dtype_size(parse_dtype(args.get("dtype", "bf16"))));
  DeviceCeilings dev;
  if (args.has("bandwidth") || args.has("gemm")) dev.name = "given";
  dev.bandwidth = args.get_double("bandwidth", dev.bandwidth / 1e12, 1e-3, 1e3) * 1e12;
  dev.gemm_flops = args.get_double("gemm", dev.gemm_flops / 1e12, 1e-3, 1e5) * 1e12;
  std::printf("B=%lld H=%lld N=%lld D=%lld k=%lld m=%lld; device ceilings (%s): %.2f TB/s, %.0f TFLOP/s bf16\n",
              (long long)B, (long long)H, (long long)N, (long long)D, (long long)kk, (long long)m, dev.name.c_str(),
              dev.bandwidth / 1e12, dev.gemm_flops / 1e12);
  std::printf("%-16s %12s %12s %12s %14s\n", "method", "GFLOP", "MB moved", "floor ms", "predicted ms");
  FlurkaMethod best = FlurkaMethod::FlurkaFavor;
  double best_t = INFINITY;
  for (FlurkaMethod meth : all_flurka_methods()) {
    const FlurkaCost c = flurka_cost(meth, B, H, N, D, kk, m, elem, args.has("shared"), dev);
    std::printf("%-16s %12.3f %12.2f %12.4f %14.4f\n", flurka_method_name(meth), c.flops / 1e9, c.bytes / 1e6,
                c.floor_s * 1e3, c.predicted_s * 1e3);
    if (c.predicted_s < best_t) best_t = c.predicted_s, best = meth;
  }
  const FlurkaCost d = dense_attention_cost(B, H, N, D, elem, dev);
  std::printf("%-16s %12.3f %12.2f %12.4f %14.4f\n", "dense (exact)", d.flops / 1e9, d.bytes / 1e6, d.floor_s * 1e3,
              d.predicted_s * 1e3);
  if (d.predicted_s <= 1.5 * best_t) {
    std::printf("recommendation: dense attention (exact; within 1.5x of the fastest approximation, %s at %.4f ms)\n",
                flurka_method_name(best), best_t * 1e3);
  } else {
    std::printf(
        "recommendation: %s (predicted %.4f ms, %.1fx faster than dense); for accuracy prefer flurka-favor or "
        "linformer at the same k (docs/FLURKA.md quality table)\n",
        flurka_method_name(best), best_t * 1e3, d.predicted_s / best_t);
  }
  return 0;
}

// ---- `splat flurka-quality`: relative error of each method vs exact softmax attention ----

const char* kQualityUsage =
    "usage: splat flurka-quality [--seq-len N] [--head-dim D] [--heads H] [--seed S] [--sizes 16,32,64,128,256]\n"
    "                           [--proj pool|random]\n"
    "  Relative error ||out - softmax(QK^T/sqrt(D))V|| / ||softmax(...)V|| of every method (CPU fast path, float32)\n"
    "  as k (projected methods) and m (random features; flurka uses k = m) grow, on three inputs: random\n"
    "  (Q, K, V ~ N(0,1)), low-rank keys (rank 8 plus 5% noise) and clustered keys (8 centroids plus 10% noise).\n"
    "  E, F: pool (default) averages N/k consecutive tokens per row (an untrained Linformer projection that\n"
    "  keeps the scale of K, V); random draws N(0, 1/N) entries.\n";

void exact_attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, int64_t H,
                     int64_t N, int64_t D, std::vector<float>& out) {
  out.assign(q.size(), 0.0f);
  // Per-thread rows allocated here: an allocation failing inside the parallel region would terminate.
  const int threads = std::max(1, omp_get_max_threads());
  std::vector<double> scratch(size_t(threads) * size_t(N + D));
#pragma omp parallel for collapse(2) num_threads(threads)
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < N; ++i) {
      const float* qi = &q[size_t((h * N + i) * D)];
      double* sc = &scratch[size_t(omp_get_thread_num()) * size_t(N + D)];
      double* row = sc + N;
      std::fill(row, row + D, 0.0);
      double mx = -INFINITY, den = 0;
      for (int64_t j = 0; j < N; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(qi[d]) * k[size_t((h * N + j) * D + d)];
        sc[size_t(j)] = dot / std::sqrt(double(D));
        mx = std::max(mx, sc[size_t(j)]);
      }
      for (int64_t j = 0; j < N; ++j) {
        const double p = std::exp(sc[size_t(j)] - mx);
        den += p;
        for (int64_t d = 0; d < D; ++d) row[size_t(d)] += p * v[size_t((h * N + j) * D + d)];
      }
      for (int64_t d = 0; d < D; ++d) out[size_t((h * N + i) * D + d)] = float(row[size_t(d)] / den);
    }
}

int run_flurka_quality(const std::vector<std::string>& argv) {
  Args args("flurka-quality", argv,
            {{"seq-len", true}, {"head-dim", true}, {"heads", true}, {"seed", true}, {"sizes", true}, {"proj", true}},
            0);
  if (args.help()) {
    std::fputs(kQualityUsage, stdout);
    return 0;
  }
  const int64_t N = args.get_int("seq-len", 1024, 16, 1 << 16), D = args.get_int("head-dim", 64, 1, 1024);
  const int64_t H = args.get_int("heads", 4, 1, 256);
  std::vector<int64_t> sizes;
  {
    const std::string list = args.get("sizes", "16,32,64,128,256");
    size_t at = 0;
    while (at <= list.size()) {
      const size_t comma = std::min(list.find(',', at), list.size());
      sizes.push_back(parse_int("--sizes", list.substr(at, comma - at), 1, N));
      at = comma + 1;
    }
  }
  std::mt19937 g(uint32_t(args.get_int("seed", 7, 0, 1ll << 31)));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::string proj_kind = args.get("proj", "pool");
  require(proj_kind == "pool" || proj_kind == "random", "--proj must be pool or random");
  const bool pool = proj_kind == "pool";
  const size_t n = size_t(checked_product({H, N, D}, "splat flurka-quality: H * N * D"));
  // Three inputs of q, k, v, their exact outputs and one method's output, in float32; E, F and W.
  check_fits_in_memory(double(n) * 4.0 * 13 + 4.0 * (2.0 * double(N) * double(N) + double(D) * double(N)),
                       "splat flurka-quality: the inputs and outputs");
  auto randv = [&](size_t cnt, float sd) {
    std::vector<float> x(cnt);
    for (auto& e : x) e = sd * nd(g);
    return x;
  };
  struct Input {
    const char* name;
    std::vector<float> q, k, v;
  };
  std::vector<Input> inputs;
  inputs.push_back({"random", randv(n, 1), randv(n, 1), randv(n, 1)});
  {  // low-rank keys: K = A B (rank 8) scaled to unit variance, plus noise; queries likewise
    Input x{"low-rank", randv(n, 1), std::vector<float>(n), randv(n, 1)};
    const int64_t r = 8;
    const std::vector<float> A = randv(size_t(H * N * r), 1), Bm = randv(size_t(H * r * D), 1.0f / std::sqrt(8.0f));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) {
          float acc = 0;
          for (int64_t j = 0; j < r; ++j) acc += A[size_t((h * N + i) * r + j)] * Bm[size_t((h * r + j) * D + d)];
          x.k[size_t((h * N + i) * D + d)] = acc + 0.05f * nd(g);
        }
    inputs.push_back(std::move(x));
  }
  {  // clustered keys and values: 8 centroids per head, 10% noise; queries near the centroids too
    Input x{"clustered", std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
    const std::vector<float> ck = randv(size_t(H * 8 * D), 1), cv = randv(size_t(H * 8 * D), 1);
    std::uniform_int_distribution<int> pick(0, 7);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const int c = pick(g), cq = pick(g);
        for (int64_t d = 0; d < D; ++d) {
          const size_t o = size_t((h * N + i) * D + d);
          x.k[o] = ck[size_t((h * 8 + c) * D + d)] + 0.1f * nd(g);
          x.v[o] = cv[size_t((h * 8 + c) * D + d)] + 0.1f * nd(g);
          x.q[o] = ck[size_t((h * 8 + cq) * D + d)] + 0.3f * nd(g);
        }
      }
    inputs.push_back(std::move(x));
  }
  std::vector<std::vector<float>> exact(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) exact_attention(inputs[i].q, inputs[i].k, inputs[i].v, H, N, D, exact[i]);
  std::printf("relative error vs exact softmax attention, N=%lld D=%lld H=%lld (E, F: %s, W ~ N(0,1))\n", (long long)N,
              (long long)D, (long long)H, pool ? "mean-pooling of N/k tokens" : "N(0, 1/N)");
  std::printf("| method | k | m |");
  for (const Input& x : inputs) std::printf(" %s |", x.name);
  std::printf("\n|---|---|---|");
  for (size_t i = 0; i < inputs.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (FlurkaMethod meth : all_flurka_methods()) {
    const bool proj = uses_projection(meth), rf = uses_random_features(meth);
    const std::vector<int64_t> one{0};
    for (int64_t sz : (proj || rf) ? sizes : one) {
      const int64_t kk = proj ? sz : 0, m = rf ? sz : (feature_map_of(meth) == FeatureMap::Elu ? D : 0);
      std::vector<float> E = randv(size_t(std::max<int64_t>(kk, 1) * N), 1.0f / std::sqrt(float(N)));
      std::vector<float> F = randv(size_t(std::max<int64_t>(kk, 1) * N), 1.0f / std::sqrt(float(N)));
      if (pool) {
        std::fill(E.begin(), E.end(), 0.0f);
        for (int64_t r = 0; r < kk; ++r) {
          const int64_t j0 = r * N / kk, j1 = (r + 1) * N / kk;
          for (int64_t j = j0; j < j1; ++j) E[size_t(r * N + j)] = 1.0f / float(j1 - j0);
        }
        F = E;
      }
      const std::vector<float> W = randv(size_t(D * std::max<int64_t>(m, 1)), 1.0f);
      std::printf("| %s | %s | %s |", flurka_method_name(meth), proj ? std::to_string(kk).c_str() : "-",
                  m ? std::to_string(m).c_str() : "-");
      for (size_t i = 0; i < inputs.size(); ++i) {
        FlurkaInputs in;
        in.q = contiguous_view(inputs[i].q.data(), DType::F32, 1, H, N, D);
        in.k = contiguous_view(inputs[i].k.data(), DType::F32, 1, H, N, D);
        in.v = contiguous_view(inputs[i].v.data(), DType::F32, 1, H, N, D);
        in.e = MatrixView{E.data(), DType::F32, 1, kk, N, -1};
        in.f = MatrixView{F.data(), DType::F32, 1, kk, N, -1};
        in.w = MatrixView{W.data(), DType::F32, 1, D, m, -1};
        std::vector<float> o(n);
        flurka_cpu(meth, in, contiguous_view(o.data(), DType::F32, 1, H, N, D));
        TensorView ov = contiguous_view(o.data(), DType::F32, 1, H, N, D);
        std::printf(" %.3f |", rel_err(ov, exact[i]));
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}

const CommandRegistrar kFlurka({"flurka", "run a FLuRKA / Linformer / Performer method (random or .npy inputs)",
                                run_flurka});
const CommandRegistrar kFlurkaQuality({"flurka-quality",
                                       "relative error of each FLuRKA-family method vs exact attention as k, m grow",
                                       run_flurka_quality});
const CommandRegistrar kFlurkaPlan({"flurka-plan", "predicted time of each FLuRKA-family method for a shape",
                                    run_flurka_plan});

}  // namespace
}  // namespace splat::cli
