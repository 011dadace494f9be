// Internal: per-head slots (the query-side form of every method) and the float kernels that build them.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "splat/flurka.hpp"

namespace splat::flurka_detail {

struct HeadSlots {
  FeatureMap map = FeatureMap::None;
  int64_t L = 0;              // slots: k (linformer) or m (kernel maps)
  float a = 1;                // scale of q . key
  std::vector<float> keys;    // linformer: Kp [L, D]; favor/relu: W [D, L]; elu: unused
  std::vector<float> U;       // values [L, D]
  std::vector<float> bias;    // softmax slots: added to the score
  std::vector<float> zw;      // weighted slots: z_l (favor: relative to e^{c_l})
  std::vector<float> c;       // kernel maps: per-feature offsets (favor: max log phi; else 0)
  std::vector<float> Kp, Vp;  // the keys and values the slots were built from (E K, F V, or K, V): [L', D]
};

// max that propagates NaN (std::max drops a NaN in its second argument): a NaN score or state must reach
// the output as IEEE arithmetic (and the float64 reference) would carry it, never turn into a zero weight.
inline float nan_max(float a, float b) {
  return (b > a || b != b) ? b : a;
}

void project_rows(const float* P, int64_t rows, int64_t n, const float* X, int64_t D, float* out);
// phi of one key row without the 1/sqrt(m) (it cancels); favor gives log phi instead.
void key_features(FeatureMap fm, const float* x, int64_t D, const float* W, int64_t m, float* phi);
// S += phi^T y, z += phi; favor keeps S_l, z_l relative to e^{c_l}, c_l the running max of log phi_l.
void add_state(FeatureMap fm, const float* phi, const float* y, int64_t m, int64_t D, float* S, float* z, float* c);
void slot_weights(const HeadSlots& hs, const float* q, int64_t D, float* w);
bool softmax_slots(FeatureMap fm);
// The chunked causal variant's compressed history seen from query q as one virtual key: w gets the slot weights
// (favor: relative to their max mx), kv (zeroed by the caller) their mean value sum_l w_l U_l / wsum, and la its
// log-weight (-inf when wsum = 0; a NaN carries through). The forward and the backward's recompute share it.
struct HistoryKey {
  float la = -INFINITY, wsum = 0, mx = -INFINITY;
};
HistoryKey history_key(const HeadSlots& hs, const float* q, int64_t D, float sfeat, float relu_div, float* w,
                       std::vector<float>& kv);
// Slots of head (b, h) as the non-causal fast path uses them (projection, key features, state).
void build_head_slots(FlurkaMethod method, const FlurkaInputs& in, const FlurkaShape& s, int64_t b, int64_t h,
                      HeadSlots& hs);
// Backward of one key row x = K'_j, y = V'_j of a kernel map through the head's slots (backward_cpu.cpp).
// Gt [m, D], gt [m]: G_l / z_l and g_l / z_l. phi, u: scratch of m. Writes dx, dy.
void key_row_backward(const HeadSlots& hs, const float* x, const float* y, int64_t D, const float* Gt, const float* gt,
                      float* phi, float* u, float* dx, float* dy);
void finalize_kernel_state(HeadSlots& hs, std::vector<float>& S, std::vector<float>& z, const std::vector<float>& c,
                           int64_t D);

}  // namespace splat::flurka_detail
