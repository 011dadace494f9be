// Which attention to run for one shape on the GPU: the cost models' predicted time of dense attention, of sparse
// patterns (from their plans: splat/cost.hpp) and of every FLuRKA-family method whose recorded quality-table error
// is within a budget (splat/flurka.hpp); the fastest candidate. `splat recommend` and splat.recommend print it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "splat/flurka.hpp"

namespace splat {

enum class QualityInputs { Random, LowRank, Clustered };  // the quality table's three input kinds (docs/FLURKA.md)

struct RecommendQuery {
  int64_t batch = 1, heads = 16, seq_len = 0, head_dim = 0;
  double error_budget = 0.8;  // relative Frobenius error vs exact softmax attention, as the quality table records it
  QualityInputs inputs = QualityInputs::Clustered;
  bool causal = false;               // causal FLuRKA (chunk 256, r 64) against the causal pattern as the exact baseline
  bool train = false;                // forward + backward
  int64_t k_max = int64_t(1) << 20;  // largest projection k considered
  std::vector<std::string> patterns;  // sparse candidates; empty: the benchmark suite at seq_len
  DeviceCeilings device;
};

struct Candidate {
  enum class Kind { Dense, Sparse, Flurka } kind = Kind::Dense;
  std::string name;      // "dense (exact, cuDNN)", a pattern spec, a FLuRKA method name
  int64_t k = 0, m = 0;  // FLuRKA: projection rows (causal: the chunk's r) and features; 0: none
  bool exact = false;    // dense or causal: no approximation
  double error = 0;      // FLuRKA: the quality table's error; sparse: not known (exact on its own mask)
  double floor_s = 0, predicted_s = 0;
};

struct Recommendation {
  std::vector<Candidate> candidates;  // candidates[0] is the exact baseline
  std::vector<std::string> skipped;   // methods not considered, with the reason
  size_t fastest = 0;                 // index into candidates
};

// Throws Error(InvalidArgument) for sizes out of range, a non-positive budget or a bad pattern spec.
Recommendation recommend(const RecommendQuery& query);

}  // namespace splat
