// splat demo: the main job (./scripts/run). Analyses the suite at N = 4096, runs it on the best backend
// with small B/H (well under a minute on two CPU cores), checks every result against the dense
// float64 reference and prints the table. Exit 1 if any check fails.
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
    "usage: splat demo [--backend cpu|cuda|auto] [--seq-len N] [--batch B] [--heads H] [--head-dim D]\n"
    "                  [--dtype f32|f16|bf16] [--reps R] [--threads T] [--json FILE]\n"
    "  The built-in suite at N = 4096 (B=1, H=2, D=64) on the best backend available, every result checked\n"
    "  against the dense float64 reference.\n";

constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

int demo(const std::vector<std::string>& argv) {
  Args args("demo", argv,
            {{"backend", true},
             {"seq-len", true},
             {"batch", true},
             {"heads", true},
             {"head-dim", true},
             {"dtype", true},
             {"reps", true},
             {"threads", true},
             {"json", true}},
            0);
  if (args.help()) return std::fputs(kUsage, stdout), 0;
  if (args.has("json")) check_output_target(args.get("json"));  // refused before the suite runs
  const BackendChoice backend = choose_backend(args.get("backend", "auto"));
  CaseConfig base;
  base.n = args.get_int("seq-len", 4096, 1, 65536);
  base.batch = args.get_int("batch", 1, 1, kMaxDim);
  base.heads = base.kv_heads = args.get_int("heads", 2, 1, kMaxDim);
  base.head_dim = args.get_int("head-dim", 64, 1, kMaxDim);
  base.dtype = parse_dtype(args.get("dtype", backend.backend == Backend::Cuda ? "bf16" : "f32"));
  base.reps = int(args.get_int("reps", 3, 1, 1000));
  base.threads = int(args.get_int("threads", 0, 1, 4096));
  base.check = true;
  check_fits_in_memory(attention_bytes({base.batch, base.heads, base.kv_heads, base.n, base.head_dim, base.dtype,
                                        backend.backend, base.threads, base.check}),
                       "the demo's inputs, output and scratch");

  std::printf("splat demo: the built-in suite at N=%lld, B=%lld H=%lld D=%lld %s on the %s backend\n",
              (long long)base.n, (long long)base.batch, (long long)base.heads, (long long)base.head_dim,
              dtype_name(base.dtype), backend.name.c_str());
  if (!backend.note.empty()) std::printf("%s\n", backend.note.c_str());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<CaseResult> results;
  const auto entries = suite(base.n);
  for (size_t i = 0; i < entries.size(); ++i) {
    std::fprintf(stderr, "[%zu/%zu] %s: analyse, run, check ...\n", i + 1, entries.size(), entries[i].spec.c_str());
    CaseConfig c = base;
    c.spec = entries[i].spec;
    results.push_back(run_case(c, backend));
  }
  print_suite_table(stdout, results);
  int failed = 0;
  for (const auto& r : results) failed += r.ok ? 0 : 1;
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "%zu patterns, %d failed the reference check (%.1f s). ACSR/CSR: metadata bytes; waste: computed/useful.\n",
      results.size(), failed, total_s);
  if (args.has("json")) {
    std::string j = "{\"backend\": " + json_string(backend.name) + ", \"results\": [\n";
    for (size_t i = 0; i < results.size(); ++i)
      j += "  " + case_json(results[i]) + (i + 1 < results.size() ? ",\n" : "\n");
    j += "]}\n";
    write_file_atomic(args.get("json"), j.data(), j.size());
  }
  return failed ? 1 : 0;
}

CommandRegistrar reg({"demo", "the main job: analyse the suite at N=4096, run it, check against the reference", demo});

}  // namespace
}  // namespace splat::cli
