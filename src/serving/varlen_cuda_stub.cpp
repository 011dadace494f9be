// attention_varlen_cuda and varlen_cuda_plan when this build has no CUDA backend (SPLAT_WITH_CUDA=OFF).
#ifndef SPLAT_VARLEN_CUDA
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {
void attention_varlen_cuda(VarlenPlans&, const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                           const Varlen&, const AttentionOptions&, void*, float*, void*) {
  fail(ErrorCode::Unsupported, "this splat build has no CUDA backend (built without SPLAT_WITH_CUDA)");
}
std::shared_ptr<CudaPlan> varlen_cuda_plan(VarlenPlans&, const Varlen&, DType, int32_t, int, VarlenPlanTimes*) {
  fail(ErrorCode::Unsupported, "this splat build has no CUDA backend (built without SPLAT_WITH_CUDA)");
}
void varlen_offsets_to_host(const int32_t*, int64_t, int32_t*, void*, int) {
  fail(ErrorCode::Unsupported, "this splat build has no CUDA backend (built without SPLAT_WITH_CUDA)");
}
}  // namespace splat
#endif
