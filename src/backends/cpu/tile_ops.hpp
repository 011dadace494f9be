// Register-blocked building blocks shared by the forward and backward tile kernels: query (or key)
// rows sit in the 64 SIMD lanes of a subtile, matrices are [rows of the other side][64 lanes].
#pragma once
#include <cstdint>

#include "span_masks.hpp"

namespace splat::cpu {

// st[c][lanes] = sum_d kp[c][d] * qt[d][lanes] for c < nc, 16 lanes starting at qt / st (aligned).
void qk_block(const float* const* kp, int nc, const float* qt, int64_t D, float* st);
// ot[d][lanes] += sum_c vp[c][d] * pt[c][lanes] for c < nc, d < D, 16 lanes.
void pv_block(const float* const* vp, int nc, const float* pt, int64_t D, float* ot);
uint64_t lane_bits(int lo, int hi);  // bits [lo, hi) of a 64-bit word
// Entries (c, lane) of st not attended become -inf (exactly 0 after exp2): words[c] (or `fixed` for every c) has the
// attended lanes of row c; 8-lane vectors [v_lo, v_hi), rows [lo[g], hi[g]) of each vector's 16-lane group g.
void apply_mask(float* st, const uint64_t* words, uint64_t fixed, const int* lo, const int* hi, int v_lo, int v_hi);
bool row_finite(const float* r, int64_t n);
// rows [RP][Dp] (row-major) <-> T [Dp][kLanes], RP and Dp multiples of 8; rows_to_t multiplies by scale.
void rows_to_t(const float* rows, int64_t Dp, int RP, float* t, float scale);
void t_to_rows(const float* t, int64_t Dp, int RP, float* rows);

}  // namespace splat::cpu
