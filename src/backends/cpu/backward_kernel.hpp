// Subtiles of the fast CPU backward (float32), on the forward's building blocks (tile_ops.hpp):
//   dQ:    64 query rows of a forward-plan task in lanes; per key chunk S^T = K Q^T, dP^T = V dO^T,
//          dS = P (dP - Delta), dQ^T += K^T dS^T.
//   dK/dV: 64 keys of a transposed-plan task in lanes (its rows are keys, its spans queries); per query chunk and
//          query head of the group S = Q K^T, dP = dO V^T, dV^T += dO^T P, dK^T += Q^T dS.
// P = exp2(S2 - L2) from the forward's lse (scores in base 2), so no softmax is recomputed.
#pragma once
#include <cstdint>
#include <vector>

#include "span_masks.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat::cpu {

// What a subtile needs to know about the call.
struct BackwardView {
  const TensorView *q, *k, *v, *dout;
  int64_t b;
  int64_t h;  // dQ: the query head; dK/dV: the kv head (query heads h*group .. (h+1)*group - 1)
  int64_t H, group;
  const float* L2;     // [B*H*N] lse * log2(e); +inf for rows without keys (P = 0)
  const float* delta;  // [B*H*N] rowsum(dO * O)
  float q_scale;       // softmax scale * log2(e)
  float scale;         // softmax scale
  int64_t key_limit;   // keys j >= key_limit are padding (key_lengths)
  bool guard;          // some input is NaN/Inf: masked entries are computed entry by entry, never as 0 * x
  // Accumulation across passes: pass p > 0 adds to what earlier passes stored (row i at acc + i * ld).
  // dQ: acc1 = dq rows; dK/dV: acc1 = dk, acc2 = dv. F32 outputs are their own accumulators.
  float *acc1, *acc2;
  int64_t ld1, ld2;
  // Final stores when the accumulators are not the outputs (nullptr: acc is the output).
  const TensorView *out1, *out2;
};

// Per-thread buffers, 32-byte aligned. floats() is the size formula (for memory accounting).
struct BackwardScratch {
  explicit BackwardScratch(int64_t d);
  static int64_t floats(int64_t d);
  int64_t D, Dp;
  std::vector<float> storage;
  float *t1, *t2;      // Q^T, dO^T (dQ) or K^T, V^T (dK/dV): [Dp][64]
  float *a1, *a2;      // dQ^T, or dK^T and dV^T: [Dp][64]
  float *st, *dp;      // S/P and dP/dS: [64][64]
  float *lvec, *dvec;  // per chunk row (dK/dV): L2, Delta
  float* rows;         // row-major staging [64][Dp]
  float *buf1, *buf2;  // converted rows of a chunk [64][Dp] (F16/BF16)
  const float* p1[64];
  const float* p2[64];
};

void backward_dq_subtile(const Plan& plan, const SpanMasks& masks, int pass_index, const TileTask& task, int sub,
                         bool first_pass, const BackwardView& bv, BackwardScratch& s);
void backward_dkdv_subtile(const Plan& tplan, const SpanMasks& masks, int pass_index, const TileTask& task, int sub,
                           bool first_pass, const BackwardView& bv, BackwardScratch& s);

}  // namespace splat::cpu
