// splat run PATTERN ...: one attention problem, random (seeded) or from .npy files; timing and check.
#include <cmath>
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "runner.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"

namespace splat::cli {
namespace {

constexpr const char* kUsage =
    "usage: splat run PATTERN --seq-len N --heads H --head-dim D [--batch B] [--kv-heads H_kv]\n"
    "                 [--backend cpu|cuda|auto] [--dtype f32|f16|bf16] [--check] [--tol T]\n"
    "                 [--seed S] [--reps R] [--threads T]\n"
    "       splat run PATTERN --q Q.npy --k K.npy --v V.npy [--out O.npy] [--backend ...] [--check]\n"
    "  Runs attention over PATTERN and prints the median time of R runs (default 5) and the effective\n"
    "  GFLOP/s = 4 * nnz * D * B * H / time. Inputs are random (seed S) or .npy files of shape\n"
    "  [B, H, N, D] (k, v: [B, H_kv, N, D]), float32, float16 or float64 (f64: CPU only,\n"
    "  computed in float64); --out is written in the inputs' dtype.\n"
    "  --check compares with the dense float64 reference and fails (exit 1) if the max relative error\n"
    "  exceeds the tolerance (default 1e-4 f32, 5e-3 f16, 3e-2 bf16); --out is written only after the\n"
    "  check passed. Sizes are >= 1: an empty problem (N = 0 or B = 0, also in .npy inputs) has nothing to\n"
    "  time or check and is refused (exit 2). Sizes whose memory (tensors, the CPU backend's per-thread\n"
    "  scratch, the check's dense mask) exceeds the machine's or the process's limit are refused (exit 2).\n";

constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

struct NpyInput {
  NpyArray array;
  TensorView view;
};

NpyInput load_tensor(const Args& args, const char* flag) {
  require(args.has(flag), std::string("splat run: --q, --k and --v go together: --") + flag + " is missing");
  NpyInput in;
  const std::string path = args.get(flag);
  in.array = read_npy(path);
  in.view = npy_tensor_view(in.array, path);
  return in;
}

// A size given on the command line must agree with the inputs' shape.
void agree(const Args& args, const char* flag, int64_t actual, const char* what) {
  if (!args.has(flag)) return;
  const int64_t given = args.get_int(flag, 0, 1, kMaxDim);
  require(given == actual, std::string("splat run: --") + flag + " " + std::to_string(given) + " disagrees with the " +
                               what + " " + std::to_string(actual) + " of the input tensors");
}

int run(const std::vector<std::string>& argv) {
  Args args("run", argv,
            {{"seq-len", true},
             {"heads", true},
             {"head-dim", true},
             {"batch", true},
             {"kv-heads", true},
             {"backend", true},
             {"dtype", true},
             {"check", false},
             {"tol", true},
             {"seed", true},
             {"reps", true},
             {"threads", true},
             {"q", true},
             {"k", true},
             {"v", true},
             {"out", true}},
            1);
  if (args.help()) return std::fputs(kUsage, stdout), 0;
  const std::string& spec = args.require_positional("PATTERN");
  const BackendChoice backend = choose_backend(args.get("backend", "cpu"));
  const int reps = int(args.get_int("reps", 5, 1, 1000));
  const int threads = int(args.get_int("threads", 0, 1, 4096));
  const uint64_t seed = uint64_t(args.get_int("seed", 1, 0, INT64_MAX));
  const bool files = args.has("q") || args.has("k") || args.has("v");
  require(files || !args.has("out"), "splat run: --out needs input files --q, --k and --v");
  if (args.has("out")) check_output_target(args.get("out"));  // refused before the run, not after

  NpyInput qf, kf, vf;
  HostTensor qr, kr, vr;
  TensorView q, k, v;
  if (files) {
    qf = load_tensor(args, "q"), kf = load_tensor(args, "k"), vf = load_tensor(args, "v");
    q = qf.view, k = kf.view, v = vf.view;
    require(!args.has("dtype") || parse_dtype(args.get("dtype")) == q.dtype,
            std::string("splat run: --dtype disagrees with the inputs' dtype ") + dtype_name(q.dtype));
    agree(args, "seq-len", q.N(), "sequence length");
    agree(args, "heads", q.H(), "head count");
    agree(args, "head-dim", q.D(), "head dim");
    agree(args, "batch", q.B(), "batch");
    agree(args, "kv-heads", k.H(), "key/value head count");
  } else {
    const int64_t n = args.require_int("seq-len", 1, kMaxDim);
    const int64_t heads = args.require_int("heads", 1, kMaxDim);
    const int64_t head_dim = args.require_int("head-dim", 1, kMaxDim);
    const int64_t batch = args.get_int("batch", 1, 1, kMaxDim);
    const int64_t kv_heads = args.get_int("kv-heads", heads, 1, kMaxDim);
    require(heads % kv_heads == 0, "splat run: --heads " + std::to_string(heads) +
                                       " must be a multiple of --kv-heads " + std::to_string(kv_heads));
    const DType dtype = parse_dtype(args.get("dtype", backend.backend == Backend::Cuda ? "bf16" : "f32"));
    check_fits_in_memory(
        attention_bytes({batch, heads, kv_heads, n, head_dim, dtype, backend.backend, threads, args.has("check")}),
        "the inputs, output and scratch");
    qr = random_tensor(dtype, batch, heads, n, head_dim, seed);
    kr = random_tensor(dtype, batch, kv_heads, n, head_dim, seed + 1);
    vr = random_tensor(dtype, batch, kv_heads, n, head_dim, seed + 2);
    q = qr.view, k = kr.view, v = vr.view;
  }
  if (files)  // the inputs are loaded: what the run adds to them
    check_fits_in_memory(
        attention_bytes({q.B(), q.H(), k.H(), q.N(), q.D(), q.dtype, backend.backend, threads, args.has("check")}),
        "the inputs, output and scratch");
  HostTensor out = nan_tensor(q.dtype, q.B(), q.H(), q.N(), q.D());
  check_attention_args(q, k, v, out.view);
  const double tol = args.get_double("tol", default_tolerance(q.dtype), 0.0, 1.0);

  const Analysis a = analyse_spec(spec, q.N());
  if (!backend.note.empty()) std::fprintf(stderr, "%s\n", backend.note.c_str());
  const Timing t = time_attention(a, backend, q, k, v, out.view, threads, 1, reps);
  std::printf("pattern   %s\n", a.canonical.c_str());
  std::printf("problem   B=%lld H=%lld H_kv=%lld N=%lld D=%lld %s, backend %s\n", (long long)q.B(), (long long)q.H(),
              (long long)k.H(), (long long)q.N(), (long long)q.D(), dtype_name(q.dtype), backend.name.c_str());
  std::printf("nnz       %lld (density %.4f%%), plan waste %.3f\n", (long long)a.nnz,
              100.0 * double(a.nnz) / (double(a.n) * double(a.n)), a.plan.waste());
  for (const auto& line : t.kernels) std::printf("kernel    %s\n", line.c_str());
  std::printf("time      %.3f ms (median of %d)\n", t.median_ms, t.reps);
  std::printf("GFLOP/s   %.2f (4*nnz*D*B*H / time)\n", gflops(a.nnz, q.B(), q.H(), q.D(), t.median_ms));
  if (args.has("check")) {
    const double err = check_against_reference(a, q, k, v, out.view);
    const bool ok = err <= tol;  // false for NaN
    std::printf("check     max relative error %.3e vs the dense reference (tolerance %.1e): %s\n", err, tol,
                ok ? "ok" : "FAILED");
    if (!ok) {  // a wrong result is not written: an existing --out stays as it was
      if (args.has("out")) std::printf("output    %s not written (the check failed)\n", args.get("out").c_str());
      return 1;
    }
  }
  if (args.has("out")) {
    write_npy(args.get("out"), npy_from_tensor(out.view));
    std::printf("output    %s\n", args.get("out").c_str());
  }
  return 0;
}

CommandRegistrar reg({"run", "run attention over a pattern (random or .npy inputs): time, GFLOP/s, --check", run});

}  // namespace
}  // namespace splat::cli
