// Cost model of the CUDA sparse-attention kernels: a plan's computed tile entries, split by span kind, turned
// into a predicted forward (and forward + backward) time on a device with given ceilings. Fitted to H200
// measurements (src/plan/cost.cpp says which rows and how well). FLuRKA's model: splat/flurka.hpp.
#pragma once
#include <cstdint>

#include "splat/plan.hpp"

namespace splat {

// What the model reads from a plan (per head; every head and batch shares the plan).
struct PlanWork {
  int64_t nnz = 0;       // attended entries
  int64_t computed = 0;  // entries of every span's rows x keys box (nnz x waste)
  int64_t gathered = 0;  // of computed: in Gather spans (not priced apart: no measured row has any)
  int64_t tiles = 0;     // tile tasks over all passes
};
PlanWork plan_work(const Plan& plan);

struct SparseCost {
  PlanWork work;
  double flops = 0, bytes = 0;   // useful tensor-core FLOPs (4 nnz D B H) and compulsory bytes (Q, K, V, O)
  double floor_s = 0;            // max(bytes / bandwidth, flops / gemm_flops)
  double predicted_s = 0;        // forward
  double train_predicted_s = 0;  // forward + backward
};

// elem: bytes per element (2 for bf16). bandwidth: device copy bytes/s; gemm_flops: bf16 GEMM FLOP/s (H200
// defaults, as measured by bench/bench_flurka.py).
SparseCost sparse_attention_cost(const Plan& plan, int64_t B, int64_t H, int64_t D, int elem = 2,
                                 double bandwidth = 4.17e12, double gemm_flops = 7.90e14);

}  // namespace splat
