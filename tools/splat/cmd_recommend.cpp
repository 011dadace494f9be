// `splat recommend ...`: prints splat::recommend (splat/recommend.hpp) for one shape: the predicted GPU time of
// dense attention, sparse patterns and the FLuRKA methods within an error budget, and the fastest.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "splat/error.hpp"
#include "splat/recommend.hpp"

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
  RecommendQuery query;
  query.batch = B;
  query.heads = H;
  query.seq_len = N;
  query.head_dim = D;
  query.error_budget = E;
  query.inputs = QualityInputs(col);
  query.causal = args.has("causal");
  query.train = args.has("train");
  query.k_max = kmax;
  DeviceCeilings& dev = query.device;
  if (args.has("bandwidth") || args.has("gemm")) dev.name = "given";
  dev.bandwidth = args.get_double("bandwidth", dev.bandwidth / 1e12, 1e-3, 1e3) * 1e12;
  dev.gemm_flops = args.get_double("gemm", dev.gemm_flops / 1e12, 1e-3, 1e5) * 1e12;
  if (args.has("pattern")) query.patterns = split_specs(args.get("pattern"));
  const bool causal = query.causal, train = query.train;
  const Recommendation rec = recommend(query);
  std::printf("B=%lld H=%lld N=%lld D=%lld bf16, %s%s; device ceilings (%s): %.2f TB/s, %.0f TFLOP/s\n", (long long)B,
              (long long)H, (long long)N, (long long)D, causal ? "causal " : "",
              train ? "forward + backward" : "forward", dev.name.c_str(), dev.bandwidth / 1e12, dev.gemm_flops / 1e12);
  std::printf("error budget %g on %s inputs (quality table of docs/FLURKA.md: N=1024, D=64, CPU float32)\n", E,
              inputs.c_str());
  std::printf("%-34s %5s %5s %9s %10s %13s\n", "candidate", "k", "m", "error", "floor ms", "predicted ms");
  for (const Candidate& c : rec.candidates) {
    char err[32];
    if (c.exact)
      std::snprintf(err, sizeof err, "0");
    else if (c.kind == Candidate::Kind::Sparse)
      std::snprintf(err, sizeof err, "own mask");
    else
      std::snprintf(err, sizeof err, "%.3f", c.error);
    char k[32] = "-";
    if (c.kind == Candidate::Kind::Flurka && (causal || c.k))
      std::snprintf(k, sizeof k, causal ? "r=%lld" : "%lld", (long long)c.k);
    const std::string m = c.m ? std::to_string(c.m) : "-";
    std::printf("%-34s %5s %5s %9s %10.4f %13.4f\n", c.name.c_str(), k, m.c_str(), err, c.floor_s * 1e3,
                c.predicted_s * 1e3);
  }
  for (const std::string& s : rec.skipped) std::printf("not considered: %s\n", s.c_str());
  const Candidate &best = rec.candidates[rec.fastest], &base = rec.candidates[0];
  if (rec.fastest == 0) {
    std::printf("fastest: %s (predicted %.4f ms, the exact baseline)\n", base.name.c_str(), base.predicted_s * 1e3);
  } else {
    std::printf("fastest: %s (predicted %.4f ms, %.2fx faster than %s at %.4f ms)\n", best.name.c_str(),
                best.predicted_s * 1e3, base.predicted_s / best.predicted_s, base.name.c_str(), base.predicted_s * 1e3);
  }
  return 0;
}

const CommandRegistrar kRecommend({"recommend",
                                   "predicted GPU time of dense, sparse patterns and FLuRKA methods; the fastest",
                                   run_recommend});

}  // namespace
}  // namespace splat::cli
