// Plans as the Python package sees them: a pattern analysed for one (N, D, dtype, device), with the
// backend plan built once (CPU tiling, or CUDA kernels compiled with NVRTC) and reused by every call.
// A registry gives plans small integer ids so XLA FFI handlers (which only receive attributes) find them.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "splat/acsr.hpp"
#include "splat/attention.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"
#if SPLAT_WITH_CUDA
#include "splat/cuda.hpp"
#endif

namespace splat::py {

struct PlanHandle {
  std::string spec;  // canonical pattern string
  int64_t seq_len = 0;
  int32_t head_dim = 0;
  DType dtype = DType::F32;
  int device = -1;  // -1: CPU; >= 0: CUDA ordinal
  int64_t id = -1;  // registry id once registered for XLA FFI
  Acsr acsr;        // kept so a plan can serve another device lazily

  std::mutex mu;  // guards the lazily built backend plans below
  std::shared_ptr<const Plan> cpu;
#if SPLAT_WITH_CUDA
  std::shared_ptr<CudaPlan> cuda;
  int cuda_device = -1;
  bool cuda_backward = false;  // `cuda` also holds the backward kernels (built on the first backward)
#endif
};

// Parses, analyses and builds the backend plan for `device` (NVRTC compilation happens here).
std::shared_ptr<PlanHandle> build_plan(const std::string& spec, int64_t seq_len, int32_t head_dim, DType dtype,
                                       int device);
// The same from an analysed pattern (e.g. an in-memory mask); spec names it in reprs and messages.
std::shared_ptr<PlanHandle> build_plan_from(Acsr acsr, std::string spec, int64_t seq_len, int32_t head_dim, DType dtype,
                                            int device);

// Checks q/k/v/out against the plan and launches on the backend of q's device. CUDA launches go on
// `stream` (a cudaStream_t, nullptr = default stream) and do not synchronise. workspace: device memory of
// workspace_size >= attention_workspace_bytes(plan, B, H, device) bytes owned by the caller (checked; nullptr =
// the plan's own buffer, see cuda.hpp).
// lse: optional float32 [B, H, N] row log-sum-exp output on q's device (what backward needs).
void run_plan(PlanHandle& plan, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
              const AttentionOptions& opt, void* stream, void* workspace = nullptr, size_t workspace_size = 0,
              float* lse = nullptr);
// Backward of run_plan (see BackwardTensors in attention.hpp); the first call builds the transposed plan (and on
// CUDA the backward kernels). workspace: backward_workspace_bytes(...) bytes of device memory (CUDA).
void run_backward(PlanHandle& plan, const BackwardTensors& t, const AttentionOptions& opt, void* stream,
                  void* workspace = nullptr, size_t workspace_size = 0);
size_t backward_workspace_bytes(PlanHandle& plan, int64_t batch, int64_t heads, int device, bool deterministic = true);
// Workspace a CUDA launch of this plan on `device` needs (0 for CPU and single-pass plans).
size_t attention_workspace_bytes(PlanHandle& plan, int64_t batch, int64_t heads, int device);

// Registry for XLA FFI: plans registered here live until the process exits.
int64_t register_plan(const std::shared_ptr<PlanHandle>& plan);
PlanHandle* find_plan(int64_t id);  // nullptr if unknown

// Builds a [B,H,N,D] view from an array of rank >= 3 with the given element strides. layout 0: [..., H, N, D]
// (leading dims fold into B), layout 1: [..., N, H, D]. Leading dims must fold (be jointly strided).
TensorView make_view(void* data, DType dtype, int ndim, const int64_t* shape, const int64_t* strides, int layout,
                     int device, const char* name);

}  // namespace splat::py
