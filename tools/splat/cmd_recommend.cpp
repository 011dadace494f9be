// `splat recommend ...`: the cost models' predicted time of dense attention, of sparse patterns (from their
// plans) and of every FLuRKA-family method whose recorded quality-table error is within a budget, for one
// shape on the GPU; names the fastest. Models: src/flurka/cost.cpp, src/plan/cost.cpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "splat/cost.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"

namespace splat::cli {
namespace {

const char* kUsage =
    "usage: splat recommend --seq-len N --head-dim D [--batch B] [--heads H] [--error E]\n"
    "                       [--pattern 'SPEC;SPEC;...'] [--inputs random|low-rank|clustered] [--causal]\n"
    "                       [--train] [--k-max K] [--bandwidth TB/s] [--gemm TFLOP/s]\n"
    "Predicted GPU time (bf16) of dense attention, each sparse pattern (default: the benchmark suite at N)\n"
    "and each FLuRKA-family method at the smallest recorded (k, m) whose error vs exact attention in the\n"
    "quality table (docs/FLURKA.md: N=1024, D=64, CPU float32, pooling E, F) is <= E (default 0.8) on the\n"
    "chosen inputs (default clustered). --causal: causal FLuRKA (chunk 256, r 64) and the causal pattern as\n"
    "the exact baseline; --train: forward + backward. Sparse patterns are exact on their own mask; their error\n"
    "against dense attention depends on the model and is not in the table.\n";

// The quality table of docs/FLURKA.md ("Quality"), as recorded: relative Frobenius error vs exact softmax
// attention for random, low-rank and clustered inputs. k = 0: no projection; m = 0: no features.
struct Quality {
  const char* method;
  int k, m;
  double err[3];
};
const Quality kQuality[] = {
    {"flurka-favor", 16, 16, {0.806, 0.845, 0.931}},    {"flurka-favor", 32, 32, {0.815, 0.845, 0.924}},
    {"flurka-favor", 64, 64, {0.824, 0.854, 0.908}},    {"flurka-favor", 128, 128, {0.852, 0.888, 0.849}},
    {"flurka-favor", 256, 256, {0.974, 0.944, 0.774}},  {"flurka-elu", 16, 64, {0.797, 0.834, 0.935}},
    {"flurka-elu", 32, 64, {0.797, 0.833, 0.934}},      {"flurka-elu", 64, 64, {0.796, 0.833, 0.932}},
    {"flurka-elu", 128, 64, {0.794, 0.831, 0.929}},     {"flurka-elu", 256, 64, {0.791, 0.828, 0.922}},
    {"flurka-relu", 16, 16, {0.889, 1.007, 0.931}},     {"flurka-relu", 32, 32, {0.835, 0.864, 0.925}},
    {"flurka-relu", 64, 64, {0.810, 0.854, 0.917}},     {"flurka-relu", 128, 128, {0.788, 0.834, 0.891}},
    {"flurka-relu", 256, 256, {0.767, 0.816, 0.865}},   {"linformer", 16, 0, {0.793, 0.832, 0.924}},
    {"linformer", 32, 0, {0.790, 0.827, 0.910}},        {"linformer", 64, 0, {0.781, 0.820, 0.876}},
    {"linformer", 128, 0, {0.765, 0.808, 0.789}},       {"linformer", 256, 0, {0.731, 0.778, 0.587}},
    {"performer-favor", 0, 16, {5.102, 1.817, 0.792}},  {"performer-favor", 0, 32, {3.426, 2.538, 0.758}},
    {"performer-favor", 0, 64, {4.090, 1.920, 0.575}},  {"performer-favor", 0, 128, {6.360, 1.671, 0.405}},
    {"performer-favor", 0, 256, {3.595, 1.794, 0.428}}, {"performer-relu", 0, 16, {0.815, 0.830, 0.772}},
    {"performer-relu", 0, 32, {0.770, 0.796, 0.739}},   {"performer-relu", 0, 64, {0.739, 0.776, 0.755}},
    {"performer-relu", 0, 128, {0.720, 0.761, 0.742}},  {"performer-relu", 0, 256, {0.714, 0.755, 0.751}},
    {"linear", 0, 64, {0.776, 0.811, 0.887}},
};

std::vector<std::string> split_specs(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    const size_t b = std::min(s.find(';', a), s.size());
    if (b > a) out.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  require(!out.empty(), "splat recommend: --pattern needs at least one pattern spec (';' separates them)");
  return out;
}

struct Row {
  std::string name, kk = "-", mm = "-", error;
  double floor_s = 0, predicted_s = 0;
};

int run_recommend(const std::vector<std::string>& argv) {
  Args args("recommend", argv,
            {{"seq-len", true},
             {"head-dim", true},
             {"batch", true},
             {"heads", true},
             {"error", true},
             {"pattern", true},
             {"inputs", true},
             {"causal", false},
             {"train", false},
             {"k-max", true},
             {"bandwidth", true},
             {"gemm", true}},
            0);
  if (args.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const int64_t N = args.require_int("seq-len", 1, int64_t(1) << 22), D = args.require_int("head-dim", 1, 1024);
  const int64_t B = args.get_int("batch", 1, 1, 1 << 16), H = args.get_int("heads", 16, 1, 1 << 16);
  const double E = args.get_double("error", 0.8, 1e-6, 1e6);
  const int64_t kmax = args.get_int("k-max", 1 << 20, 1, 1 << 20);
  const std::string inputs = args.get("inputs", "clustered");
  const int col = inputs == "random" ? 0 : inputs == "low-rank" ? 1 : inputs == "clustered" ? 2 : -1;
  require(col >= 0, "splat recommend: --inputs must be random, low-rank or clustered, got '" + inputs + "'");
  const bool causal = args.has("causal"), train = args.has("train");
  DeviceCeilings dev;
  if (args.has("bandwidth") || args.has("gemm")) dev.name = "given";
  dev.bandwidth = args.get_double("bandwidth", dev.bandwidth / 1e12, 1e-3, 1e3) * 1e12;
  dev.gemm_flops = args.get_double("gemm", dev.gemm_flops / 1e12, 1e-3, 1e5) * 1e12;
  std::vector<std::string> specs;
  if (args.has("pattern")) {
    specs = split_specs(args.get("pattern"));
  } else {
    specs = suite_specs(N);
  }
  const auto pick = [&](double fwd, double tr) { return train ? tr : fwd; };
  std::vector<Row> rows;
  const auto sparse_row = [&](const std::string& spec, const std::string& label, const std::string& error) {
    const SparseCost c =
        sparse_attention_cost(make_plan(analyse(parse_pattern(spec), N)), B, H, D, 2, dev.bandwidth, dev.gemm_flops);
    rows.push_back({label, "-", "-", error, c.floor_s, pick(c.predicted_s, c.train_predicted_s)});
  };
  if (causal) {
    sparse_row("causal", "causal (exact, splat)", "0");
  } else {
    const FlurkaCost d = dense_attention_cost(B, H, N, D, 2, dev);
    rows.push_back({"dense (exact, cuDNN)", "-", "-", "0", d.floor_s, pick(d.predicted_s, d.train_predicted_s)});
    sparse_row("dense", "dense (exact, splat)", "0");
  }
  for (const std::string& s : specs) sparse_row(s, s, "own mask");
  std::vector<std::string> skipped;
  for (FlurkaMethod m : all_flurka_methods()) {
    const std::string name = flurka_method_name(m);
    const bool has_causal =
        m == FlurkaMethod::FlurkaFavor || m == FlurkaMethod::FlurkaElu || m == FlurkaMethod::FlurkaRelu;
    if (causal && (!has_causal || train)) {
      skipped.push_back(name + (train ? " (no causal backward measured)" : " (no causal CUDA path)"));
      continue;
    }
    const Quality* best = nullptr;
    for (const Quality& q : kQuality)
      if (name == q.method && q.err[col] <= E && q.k <= std::min<int64_t>(N, kmax) &&
          (!best || q.k + q.m < best->k + best->m))
        best = &q;
    if (!best) {
      skipped.push_back(name + " (no recorded k, m within the budget)");
      continue;
    }
    const int64_t k = best->k ? best->k : 256, mf = best->m ? best->m : 256;
    const FlurkaCost c = causal ? flurka_causal_cost(m, B, H, N, D, 256, 64, mf, 2, dev)
                                : flurka_cost(m, B, H, N, D, k, mf, 2, false, dev);
    char err[32];
    std::snprintf(err, sizeof err, "%.3f", best->err[col]);
    // causal: the chunk's keys are compressed to r = 64 rows whatever k the (non-causal) table row has
    const std::string kcol = causal ? "r=64" : best->k ? std::to_string(best->k) : "-";
    rows.push_back({name, kcol, best->m ? std::to_string(best->m) : "-", err, c.floor_s,
                    pick(c.predicted_s, c.train_predicted_s)});
  }
  std::printf("B=%lld H=%lld N=%lld D=%lld bf16, %s%s; device ceilings (%s): %.2f TB/s, %.0f TFLOP/s\n", (long long)B,
              (long long)H, (long long)N, (long long)D, causal ? "causal " : "",
              train ? "forward + backward" : "forward", dev.name.c_str(), dev.bandwidth / 1e12, dev.gemm_flops / 1e12);
  std::printf("error budget %g on %s inputs (quality table of docs/FLURKA.md: N=1024, D=64, CPU float32)\n", E,
              inputs.c_str());
  std::printf("%-34s %5s %5s %9s %10s %13s\n", "candidate", "k", "m", "error", "floor ms", "predicted ms");
  size_t fastest = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::printf("%-34s %5s %5s %9s %10.4f %13.4f\n", r.name.c_str(), r.kk.c_str(), r.mm.c_str(), r.error.c_str(),
                r.floor_s * 1e3, r.predicted_s * 1e3);
    if (r.predicted_s < rows[fastest].predicted_s) fastest = i;
  }
  for (const std::string& s : skipped) std::printf("not considered: %s\n", s.c_str());
  if (fastest == 0) {
    std::printf("fastest: %s (predicted %.4f ms, the exact baseline)\n", rows[0].name.c_str(),
                rows[0].predicted_s * 1e3);
  } else {
    std::printf("fastest: %s (predicted %.4f ms, %.2fx faster than %s at %.4f ms)\n", rows[fastest].name.c_str(),
                rows[fastest].predicted_s * 1e3, rows[0].predicted_s / rows[fastest].predicted_s, rows[0].name.c_str(),
                rows[0].predicted_s * 1e3);
  }
  return 0;
}

const CommandRegistrar kRecommend({"recommend",
                                   "predicted GPU time of dense, sparse patterns and FLuRKA methods; the fastest",
                                   run_recommend});

}  // namespace
}  // namespace splat::cli
