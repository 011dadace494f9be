// splat._core.recommend: splat::recommend (the cost models' choice of dense, a sparse pattern or a FLuRKA method)
// as plain Python data; splat.recommend wraps it.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "splat/error.hpp"
#include "splat/recommend.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

const char* kind_name(Candidate::Kind k) {
  return k == Candidate::Kind::Dense ? "dense" : k == Candidate::Kind::Sparse ? "sparse" : "flurka";
}

nb::dict run(int64_t seq_len, int64_t head_dim, int64_t batch, int64_t heads, double error, const std::string& inputs,
             bool causal, bool train, int64_t k_max, const std::vector<std::string>& patterns, double bandwidth,
             double gemm_flops) {
  RecommendQuery q;
  q.seq_len = seq_len;
  q.head_dim = head_dim;
  q.batch = batch;
  q.heads = heads;
  q.error_budget = error;
  require(inputs == "random" || inputs == "low-rank" || inputs == "clustered",
          "recommend: inputs must be 'random', 'low-rank' or 'clustered', got '" + inputs + "'");
  q.inputs = inputs == "random"     ? QualityInputs::Random
             : inputs == "low-rank" ? QualityInputs::LowRank
                                    : QualityInputs::Clustered;
  q.causal = causal;
  q.train = train;
  q.k_max = k_max;
  q.patterns = patterns;
  if (bandwidth > 0 || gemm_flops > 0) q.device.name = "given";
  if (bandwidth > 0) q.device.bandwidth = bandwidth;
  if (gemm_flops > 0) q.device.gemm_flops = gemm_flops;
  Recommendation r;
  {
    nb::gil_scoped_release release;
    r = recommend(q);
  }
  nb::list cands;
  for (const Candidate& c : r.candidates) {
    nb::dict d;
    d["name"] = c.name;
    d["kind"] = kind_name(c.kind);
    d["exact"] = c.exact;
    d["k"] = c.k;
    d["m"] = c.m;
    d["error"] = c.kind == Candidate::Kind::Flurka ? nb::object(nb::float_(c.error)) : nb::none();
    d["floor_ms"] = c.floor_s * 1e3;
    d["predicted_ms"] = c.predicted_s * 1e3;
    cands.append(d);
  }
  nb::dict out;
  out["candidates"] = cands;
  out["skipped"] = r.skipped;
  out["fastest"] = r.fastest;
  out["device"] = q.device.name;
  return out;
}

}  // namespace

void bind_recommend(nb::module_& m) {
  m.def("recommend", &run, "seq_len"_a, "head_dim"_a, "batch"_a, "heads"_a, "error"_a, "inputs"_a, "causal"_a,
        "train"_a, "k_max"_a, "patterns"_a, "bandwidth"_a, "gemm_flops"_a,
        "The cost models' candidates (dense, sparse patterns, FLuRKA methods within the error budget) and the fastest");
}

}  // namespace splat::py
