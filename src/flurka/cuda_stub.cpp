// CUDA entry points when this build has no CUDA kernels (no toolkit or SPLAT_WITH_CUDA=OFF).
#ifndef SPLAT_FLURKA_CUDA
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
namespace {
[[noreturn]] void no_cuda() {
  fail(ErrorCode::Unsupported, "this splat build has no CUDA FLuRKA kernels (built without SPLAT_WITH_CUDA/nvcc)");
}
}  // namespace
bool flurka_cuda_available(std::string* why) {
  if (why) *why = "built without CUDA FLuRKA kernels";
  return false;
}
bool flurka_cuda_supports(FlurkaMethod, const FlurkaShape&, std::string* why) {
  if (why) *why = "built without CUDA FLuRKA kernels";
  return false;
}
size_t flurka_cuda_workspace_bytes(FlurkaMethod, const FlurkaShape&) {
  return 0;
}
void flurka_cuda(FlurkaMethod, const FlurkaInputs&, const TensorView&, void*, void*) {
  no_cuda();
}
double flurka_cuda_host(FlurkaMethod, const FlurkaInputs&, const TensorView&, int, int) {
  no_cuda();
}
size_t flurka_causal_cuda_workspace_bytes(FlurkaMethod, const FlurkaShape&, int64_t) {
  return 0;
}
void flurka_causal_cuda(FlurkaMethod, const FlurkaInputs&, const TensorView&, int64_t, void*, void*) {
  no_cuda();
}
double flurka_causal_cuda_host(FlurkaMethod, const FlurkaInputs&, const TensorView&, int64_t, int, int) {
  no_cuda();
}
FlurkaCudaDecodeState flurka_decode_cuda_init(FlurkaMethod, int64_t, int64_t, int64_t, int64_t, const MatrixView&,
                                              const MatrixView&, const MatrixView&, void*) {
  no_cuda();
}
void flurka_decode_cuda_step(FlurkaCudaDecodeState&, const TensorView&, const TensorView&, const TensorView&,
                             const TensorView&, void*) {
  no_cuda();
}
void flurka_decode_cuda_free(FlurkaCudaDecodeState&) {}
size_t flurka_decode_cuda_state_bytes(FlurkaMethod, int64_t, int64_t, int64_t, int64_t, const MatrixView&,
                                      const MatrixView&, const MatrixView&) {
  no_cuda();
}
FlurkaCudaDecodeState flurka_decode_cuda_attach(FlurkaMethod, int64_t, int64_t, int64_t, int64_t, const MatrixView&,
                                                const MatrixView&, const MatrixView&, void*) {
  no_cuda();
}
void flurka_decode_cuda_reset(FlurkaCudaDecodeState&, void*) {
  no_cuda();
}
void flurka_decode_cuda_host(FlurkaMethod, const FlurkaInputs&, const TensorView&, int64_t) {
  no_cuda();
}
void flurka_backward_cuda(FlurkaMethod, const FlurkaInputs&, const FlurkaGrads&, void*) {
  no_cuda();
}
void flurka_backward_cuda_host(FlurkaMethod, const FlurkaInputs&, const FlurkaGrads&) {
  no_cuda();
}
}  // namespace splat
#endif
