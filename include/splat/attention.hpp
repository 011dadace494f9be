// Sparse attention entry points (CPU) and the dense reference oracle.
// out[b,h,i,:] = sum_{j in S(i)} softmax_j(scale * q_i . k_j) v_j; rows with no keys give zeros.
#pragma once
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat {

struct AttentionOptions {
  float scale = 0.0f;  // 0: 1/sqrt(D)
  int threads = 0;     // CPU: 0 = all hardware threads
};

// Dense masked reference in float64 accumulation (the oracle). Mask: n x n row-major 0/1.
void attention_reference(const uint8_t* mask, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const AttentionOptions& opt = {});

// Fast CPU attention over a plan: multithreaded, vectorised, visits only the plan's spans.
void attention_cpu(const Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const AttentionOptions& opt = {});

}  // namespace splat
