// The method choice behind `splat recommend` / splat.recommend: dense, the sparse candidates and the FLuRKA methods
// within the error budget, each priced by its cost model; see splat/recommend.hpp.
#include "splat/recommend.hpp"

#include <algorithm>

#include "splat/cost.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/plan.hpp"
#include "splat/suite.hpp"

namespace splat {
namespace {

// The quality table of docs/FLURKA.md ("Quality"), as recorded: relative Frobenius error vs exact softmax
// attention for random, low-rank and clustered inputs (N=1024, D=64, CPU float32, pooling E, F). k = 0: no
// projection; m = 0: no features.
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

constexpr int64_t kCausalChunk = 256, kCausalRows = 64;  // the causal CUDA path's chunk C and compressed rows r

bool has_causal_path(FlurkaMethod m) {
  return m == FlurkaMethod::FlurkaFavor || m == FlurkaMethod::FlurkaElu || m == FlurkaMethod::FlurkaRelu;
}

}  // namespace

Recommendation recommend(const RecommendQuery& q) {
  require(q.seq_len >= 1 && q.seq_len <= (int64_t(1) << 22), "recommend: seq_len must be in [1, 2^22]");
  require(q.head_dim >= 1 && q.head_dim <= 1024, "recommend: head_dim must be in [1, 1024]");
  require(q.batch >= 1 && q.heads >= 1, "recommend: batch and heads must be >= 1");
  require(q.error_budget > 0, "recommend: the error budget must be > 0");
  require(q.k_max >= 1, "recommend: k_max must be >= 1");
  require(q.device.bandwidth > 0 && q.device.gemm_flops > 0, "recommend: device ceilings must be > 0");
  const int64_t B = q.batch, H = q.heads, N = q.seq_len, D = q.head_dim;
  const DeviceCeilings& dev = q.device;
  const auto pick = [&](double fwd, double tr) { return q.train ? tr : fwd; };
  Recommendation r;
  const auto sparse = [&](const std::string& spec, const std::string& name, bool exact) {
    const SparseCost c =
        sparse_attention_cost(make_plan(analyse(parse_pattern(spec), N)), B, H, D, 2, dev.bandwidth, dev.gemm_flops);
    Candidate x;
    x.kind = exact ? Candidate::Kind::Dense : Candidate::Kind::Sparse;
    x.name = name;
    x.exact = exact;
    x.floor_s = c.floor_s;
    x.predicted_s = pick(c.predicted_s, c.train_predicted_s);
    r.candidates.push_back(x);
  };
  if (q.causal) {
    sparse("causal", "causal (exact, splat)", true);
  } else {
    const FlurkaCost d = dense_attention_cost(B, H, N, D, 2, dev);
    Candidate x;
    x.name = "dense (exact, cuDNN)";
    x.exact = true;
    x.floor_s = d.floor_s;
    x.predicted_s = pick(d.predicted_s, d.train_predicted_s);
    r.candidates.push_back(x);
    sparse("dense", "dense (exact, splat)", true);
  }
  // A causal model can only take a causal pattern: every candidate is intersected with causal (idempotent for
  // patterns that already are).
  for (const std::string& s : q.patterns.empty() ? suite_specs(N) : q.patterns) {
    const bool is_causal = s.rfind("causal", 0) == 0 || (s.size() > 7 && s.compare(s.size() - 7, 7, "&causal") == 0);
    const std::string spec = q.causal && !is_causal ? "(" + s + ")&causal" : s;
    sparse(spec, spec, false);
  }
  const int col = int(q.inputs);
  for (FlurkaMethod m : all_flurka_methods()) {
    const std::string name = flurka_method_name(m);
    if (q.causal && (!has_causal_path(m) || q.train)) {
      r.skipped.push_back(name + (q.train ? " (no causal backward measured)" : " (no causal CUDA path)"));
      continue;
    }
    const Quality* best = nullptr;
    for (const Quality& t : kQuality)
      if (name == t.method && t.err[col] <= q.error_budget && t.k <= std::min(N, q.k_max) &&
          (!best || t.k + t.m < best->k + best->m))
        best = &t;
    if (!best) {
      r.skipped.push_back(name + " (no recorded k, m within the budget)");
      continue;
    }
    const int64_t k = best->k ? best->k : 256, mf = best->m ? best->m : 256;
    const FlurkaCost c = q.causal ? flurka_causal_cost(m, B, H, N, D, kCausalChunk, kCausalRows, mf, 2, dev)
                                  : flurka_cost(m, B, H, N, D, k, mf, 2, false, dev);
    Candidate x;
    x.kind = Candidate::Kind::Flurka;
    x.name = name;
    x.k = q.causal ? kCausalRows : best->k;  // causal: the chunk's keys are compressed to r rows whatever k is
    x.m = best->m;
    x.error = best->err[col];
    x.floor_s = c.floor_s;
    x.predicted_s = pick(c.predicted_s, c.train_predicted_s);
    r.candidates.push_back(x);
  }
  for (size_t i = 1; i < r.candidates.size(); ++i)
    if (r.candidates[i].predicted_s < r.candidates[r.fastest].predicted_s) r.fastest = i;
  return r;
}

}  // namespace splat
