// splat bench: the built-in suite on one backend; a table, optional JSON, progress on stderr.
#include <chrono>
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "report.hpp"
#include "runner.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/suite.hpp"
#include "suite_table.hpp"

namespace splat::cli {
namespace {

constexpr const char* kUsage =
    "usage: splat bench [--seq-len N] [--batch B] [--heads H] [--kv-heads H_kv] [--head-dim D]\n"
    "                   [--backend cpu|cuda|auto] [--dtype f32|f16|bf16] [--reps R] [--check]\n"
    "                   [--json FILE] [--seed S] [--threads T]\n"
    "  Runs the built-in suite (window, causal_window, dilated, strided, blocked, longformer, bigbird)\n"
    "  at N = 4096 and 16384 (or only --seq-len N) with random inputs, B=1 H=8 D=64 by default,\n"
    "  and prints a table (median of R runs, default 3). --json FILE writes the results as JSON.\n"
    "  --check also compares each result with the dense reference (slow at large N).\n"
    "  Sizes are >= 1: an empty problem (N = 0 or B = 0) has nothing to time and is refused (exit 2).\n";

constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

int bench(const std::vector<std::string>& argv) {
  Args args("bench", argv,
            {{"seq-len", true},
             {"batch", true},
             {"heads", true},
             {"kv-heads", true},
             {"head-dim", true},
             {"backend", true},
             {"dtype", true},
             {"reps", true},
             {"check", false},
             {"json", true},
             {"seed", true},
             {"threads", true}},
            0);
  if (args.help()) return std::fputs(kUsage, stdout), 0;
  if (args.has("json")) check_output_target(args.get("json"));  // refused before the suite runs
  const BackendChoice backend = choose_backend(args.get("backend", "auto"));
  CaseConfig base;
  base.batch = args.get_int("batch", 1, 1, kMaxDim);
  base.heads = args.get_int("heads", 8, 1, kMaxDim);
  base.kv_heads = args.get_int("kv-heads", base.heads, 1, kMaxDim);
  require(base.heads % base.kv_heads == 0, "splat bench: --heads " + std::to_string(base.heads) +
                                               " must be a multiple of --kv-heads " + std::to_string(base.kv_heads));
  base.head_dim = args.get_int("head-dim", 64, 1, kMaxDim);
  base.dtype = parse_dtype(args.get("dtype", backend.backend == Backend::Cuda ? "bf16" : "f32"));
  base.reps = int(args.get_int("reps", 3, 1, 1000));
  base.threads = int(args.get_int("threads", 0, 1, 4096));
  base.seed = uint64_t(args.get_int("seed", 1, 0, INT64_MAX));
  base.check = args.has("check");
  std::vector<int64_t> sizes = suite_sizes();
  if (args.has("seq-len")) sizes = {args.get_int("seq-len", 0, 1, kMaxDim)};
  for (int64_t n : sizes)  // up front, so a too large size fails before the smaller ones ran
    check_fits_in_memory(attention_bytes({base.batch, base.heads, base.kv_heads, n, base.head_dim, base.dtype,
                                          backend.backend, base.threads, base.check}),
                         "the inputs, output and scratch");

  if (!backend.note.empty()) std::fprintf(stderr, "%s\n", backend.note.c_str());
  std::vector<CaseConfig> cases;
  for (int64_t n : sizes)
    for (const auto& e : suite(n)) {
      CaseConfig c = base;
      c.spec = e.spec, c.n = n;
      cases.push_back(c);
    }
  std::vector<CaseResult> results;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < cases.size(); ++i) {
    std::fprintf(stderr, "[%zu/%zu] %s N=%lld on %s ...\n", i + 1, cases.size(), cases[i].spec.c_str(),
                 (long long)cases[i].n, backend.name.c_str());
    results.push_back(run_case(cases[i], backend));
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("splat bench: backend %s, B=%lld H=%lld H_kv=%lld D=%lld %s, median of %d\n", backend.name.c_str(),
              (long long)base.batch, (long long)base.heads, (long long)base.kv_heads, (long long)base.head_dim,
              dtype_name(base.dtype), base.reps);
  print_suite_table(stdout, results);
  std::printf("total %.1f s\n", total_s);

  bool ok = true;
  for (const auto& r : results) ok = ok && r.ok;
  if (args.has("json")) {
    std::string j =
        "{\"backend\": " + json_string(backend.name) + ", \"dtype\": " + json_string(dtype_name(base.dtype));
    j += ", \"batch\": " + std::to_string(base.batch) + ", \"heads\": " + std::to_string(base.heads) +
         ", \"kv_heads\": " + std::to_string(base.kv_heads) + ", \"head_dim\": " + std::to_string(base.head_dim) +
         ", \"reps\": " + std::to_string(base.reps) + ", \"results\": [\n";
    for (size_t i = 0; i < results.size(); ++i)
      j += "  " + case_json(results[i]) + (i + 1 < results.size() ? ",\n" : "\n");
    j += "]}\n";
    write_file_atomic(args.get("json"), j.data(), j.size());
    std::printf("results written to %s\n", args.get("json").c_str());
  }
  return ok ? 0 : 1;
}

CommandRegistrar reg({"bench", "time the built-in pattern suite (N = 4096, 16384) on a backend; table and --json",
                      bench});

}  // namespace
}  // namespace splat::cli
