// The float64 path of the CPU backend (DType::F64): row by row over the ACSR in double, for gradcheck and NumPy's
// default dtype. Straightforward rather than fast: the SIMD tile kernels are float32.
#pragma once
#include <cstdint>

#include "splat/acsr.hpp"
#include "splat/attention.hpp"

namespace splat::cpu {

// Forward: out (and lse when non-null) for every row of a; arguments already validated.
void attention_f64(const Acsr& a, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   double scale, const int32_t* key_lengths, int threads, float* lse);

// Backward: dq over the rows of a, dk and dv over the rows of at = transpose(a). The row lse is recomputed in float64
// (the forward's float32 lse would limit the gradients to float32 accuracy); t.lse is not read.
void attention_backward_f64(const Acsr& a, const Acsr& at, const BackwardTensors& t, double scale,
                            const int32_t* key_lengths, int threads);

}  // namespace splat::cpu
