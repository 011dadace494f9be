// Sparse attention entry points (CPU) and the dense reference oracle.
// out[b,h,i,:] = sum_{j in S(i)} softmax_j(scale * q_i . k_j) v_j; rows with no keys give zeros.
#pragma once
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat {

struct AttentionOptions {
  float scale = 0.0f;  // 0: 1/sqrt(D)
  int threads = 0;     // CPU: 0 = all hardware threads
  // Key padding (right-padded batches): batch row b attends only keys j < key_lengths[b] (0 <= len <= N), on top of
  // the pattern; rows left without keys give zeros (lse -inf). B int32 values, host memory for the CPU backend and
  // device memory for CUDA (read by the kernels, so a captured graph sees new lengths). nullptr: all N keys.
  const int32_t* key_lengths = nullptr;
  // Backward: true gives bitwise-identical gradients run to run. false allows a non-deterministic CUDA backward
  // (sm_90a: dQ accumulated with fp32 atomics, no dQ pass, its last bits vary from run to run; see cuda.hpp). Whether
  // it is faster depends on the shape (on an H200 it is slower at D = 128). The CPU backward and the forward ignore
  // it.
  bool deterministic = true;
};

// Row log-sum-exp, the one tensor backward needs beyond O: lse[b, h, i] = log sum_{j in S(i)} exp(scale * q_i . k_j)
// (natural log, float32, contiguous [B, H, N]); -inf for rows without keys. Optional output of every forward.

// Dense masked reference in float64 accumulation (the oracle). Mask: n x n row-major 0/1.
void attention_reference(const uint8_t* mask, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const AttentionOptions& opt = {}, float* lse = nullptr);

// Fast CPU attention over a plan: multithreaded, vectorised, visits only the plan's spans.
// F64 tensors are computed in float64 (row by row over the ACSR).
void attention_cpu(const Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const AttentionOptions& opt = {}, float* lse = nullptr);

// Backward (FlashAttention-2 recurrence): from q, k, v, the forward's out and lse, and dout, computes dq (like q), dk
// and dv (like k and v; with GQA summed over each group's query heads). Rows without keys give zero gradients.
// Deterministic: the same inputs give bitwise-identical gradients on every run and thread count.
struct BackwardTensors {
  TensorView q, k, v, out, dout;
  const float* lse = nullptr;  // [B, H, N] from the forward
  TensorView dq, dk, dv;       // written (not accumulated)
};
// Dense float64 oracle: recomputes the softmax from the mask (ignores out and lse).
void attention_backward_reference(const uint8_t* mask, const BackwardTensors& t, const AttentionOptions& opt = {});
// Fast CPU backward over the plan (dq from its rows; dk, dv from the rows of plan.transposed, see add_transpose).
// With DType::F64 it recomputes each row's lse in float64 from the row's own keys (a float32 lse would cap the
// gradients at float32 accuracy), so there lse must be the one the forward wrote for the same keys.
void attention_backward_cpu(const Plan& plan, const BackwardTensors& t, const AttentionOptions& opt = {});

}  // namespace splat
