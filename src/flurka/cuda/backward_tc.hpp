// The tensor-core FLuRKA backward (backward_tc.cuh): when it applies, and its launch sequence.
#pragma once
#include <cuda_runtime.h>

#include "splat/flurka.hpp"

namespace splat::fk {

// bf16 storage, D in {32, 64, 128}, k, m <= 256, E and F with the same heads (every method);
// SPLAT_FLURKA_BWD=simt turns it off.
bool tc_backward_applies(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in);
// Launches the whole backward on st (scratch from cudaMallocAsync on st, freed stream-ordered).
void tc_backward(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in, const FlurkaGrads& g, cudaStream_t st);

constexpr int kTcSlotMax = 256;  // = tc::kSlotMax (backward_tc.cuh)
namespace tcrun {
template <int D>  // D in {32, 64, 128}: backward_tc_d<D>.cu
void run(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in, const FlurkaGrads& g, cudaStream_t st);
}  // namespace tcrun

}  // namespace splat::fk
