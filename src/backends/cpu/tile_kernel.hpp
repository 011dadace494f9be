// One subtile (up to 64 query rows of a task) of the CPU backend: Q tile in registers' layout,
// S^T = K Q^T and O^T += V^T P^T as small register-blocked GEMMs with query rows in SIMD lanes,
// online softmax in base 2 between them.
#pragma once
#include <cstdint>
#include <vector>

#include "span_masks.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat::cpu {

constexpr int kKeyChunk = 64;  // keys per S^T block

// What a subtile needs to know about the call, fixed for one (batch, head).
struct HeadView {
  const TensorView* q;
  const TensorView* out;
  int64_t b, h;
  // K/V rows of this (batch, kv head): key j at element j * ldk of k. F32 rows are used in place;
  // F16/BF16 rows are converted per key chunk into the scratch (no per-call copy of K/V).
  const void* k;
  const void* v;
  DType kv_dtype;
  int64_t ldk, ldv;
  const uint8_t* v_bad;  // F32 only: per key, V row holds NaN/Inf
  float q_scale;         // softmax scale * log2(e)
  // Multi-pass state: normalised rows (row i at o32 + i * ld_o32; `out` itself when it is f32) and
  // log2-sum-exp per row. nullptr: single pass, write `out`.
  float* o32;
  int64_t ld_o32;
  float* lse2;
  float* lse;         // single pass: natural-log lse per row (row i at lse[i]), or nullptr
  int64_t key_limit;  // keys j >= key_limit are padding (key_lengths): not visited
};

// Keys of span with index c < visible_keys(...) are below key_limit (span keys increase with c; check_plan says so).
int64_t visible_keys(const Plan& plan, const KeySpan& span, int64_t key_limit);

// Per-thread buffers, 32-byte aligned.
struct Scratch {
  explicit Scratch(int64_t d);
  int64_t D, Dp;  // head dim, and rounded up to 8 (transposes work in 8 x 8 blocks)
  std::vector<float> storage;
  float *qt, *ot, *st, *m, *l;  // Q^T [Dp][64], O^T [Dp][64], S^T/P^T [64][64], max, sum
  float* rows;                  // row-major staging [64][Dp] for Q in and O out
  float *kbuf, *vbuf;           // converted K/V rows of a chunk [kKeyChunk][Dp] (F16/BF16)
  const float* kp[kKeyChunk];
  const float* vp[kKeyChunk];
};

// Runs subtile `sub` of `task` (pass `pass_index`), all of its spans, and writes its rows.
void run_subtile(const Plan& plan, const SpanMasks& masks, int pass_index, const TileTask& task, int sub,
                 bool first_pass, const HeadView& hv, Scratch& s);

}  // namespace splat::cpu
