// decode_cuda when this build has no CUDA decode kernels (no nvcc, or SPLAT_WITH_CUDA=OFF).
#ifndef SPLAT_DECODE_CUDA
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {
size_t decode_cuda_workspace_bytes(const DecodePlan&, const TensorView&, const KvCache&) {
  return 0;
}
void decode_cuda(const DecodePlan&, const TensorView&, const KvCache&, const TensorView&, const AttentionOptions&,
                 void*, float*, const DecodeCudaWorkspace&) {
  fail(ErrorCode::Unsupported, "this splat build has no CUDA decode kernels (built without SPLAT_WITH_CUDA/nvcc)");
}
}  // namespace splat
#endif
