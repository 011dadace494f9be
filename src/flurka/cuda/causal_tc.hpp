// The tensor-core causal forward (causal_tc.cu), called by the causal entry point (causal_cuda.cu) for bf16 storage.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "splat/flurka.hpp"

namespace splat::fk {

// Workspace regions (device pointers) of one call; sizes in causal_cuda.cu's layout.
struct CausalTcBuffers {
  float *kp, *vp;  // [B, nS, H, r, D] chunk projections
  float* u32;      // [B, nS, H, m, D] per-chunk U = S / z
  float* slot;     // [B, nS, H, m] per-chunk log-weight (favor) or weight
  float* shift;    // [Hw, m] favor shifts (written by the state kernel)
  float* slotp;    // [B, nS, H, m] scanned slots
  void* wt;        // [Hw, m, D] bf16 feature keys
  void* ut;        // [B, nS, H, m, D] bf16 scanned U
};

// "" when the tensor-core path takes the call (bf16, D in {32, 64, 128}, r, m <= 512, grid limits).
std::string causal_tc_unsupported(const FlurkaInputs& in, const FlurkaShape& s, int64_t C);
void causal_tc_launch(FlurkaMethod m, const FlurkaShape& s, int64_t C, const FlurkaInputs& in, const TensorView& out,
                      const CausalTcBuffers& w, cudaStream_t st);

}  // namespace splat::fk
