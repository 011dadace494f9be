// The CudaPlan: a plan's device-side tables (and, for backward, those of its transpose), its loaded kernels in
// variants (forward with / without lse and key padding, backward), and the lse workspace.
#pragma once
#include <initializer_list>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backends/cuda/cuda_util.hpp"
#include "backends/cuda/plan_pack.hpp"
#include "jit/kernel_spec.hpp"
#include "splat/cuda.hpp"

namespace splat {

namespace cuda {
// A plan's tables on the device.
struct DevicePlan {
  PackedPlan packed;
  DeviceBuffer tasks, spans, segments, gather_keys, gather_mask;
  void upload(const Plan& plan);
};

// The kernels a plan may launch, one set per variant (each its own generated source and cache entry).
// kBackwardFast*: AttentionOptions::deterministic = false (dQ by atomics inside the dK/dV pass where
// jit::backward_atomic_dq, else the deterministic kernels).
enum Variant {
  kForward,
  kForwardLse,
  kForwardPad,
  kForwardLsePad,
  kBackward,
  kBackwardPad,
  kBackwardFast,
  kBackwardFastPad,
  kVariantCount
};
struct KernelSet {
  // forward: one per pass; backward: preprocess, dQ per pass, dK/dV per pass (the fast mode: preprocess, dK/dV per
  // pass, the dQ cast)
  std::vector<jit::KernelSpec> specs;
  std::vector<cudaKernel_t> kernels;
  size_t dq_count = 0;  // backward: specs[1 .. 1+dq_count) are dQ, the rest dK/dV
  std::string from;     // memory / disk / compiled
  double ms = 0;
  bool ready = false;
};
}  // namespace cuda

class CudaPlan {
 public:
  Plan plan;  // plan.transposed: the transposed plan (with options.backward)
  CudaPlanOptions options;
  jit::KernelSpec base;                // the forward kernel's tile shape
  std::vector<jit::KernelSpec> specs;  // forward, one per pass (= sets[kForward].specs)
  cuda::DevicePlan fwd, bwd;           // tables of plan and of plan.transposed
  mutable std::mutex mutex;            // guards sets (variants load on first use)
  mutable cuda::KernelSet sets[cuda::kVariantCount];
  mutable cuda::DeviceBuffer lse;  // [B*H][N] floats for multi-pass plans (grown outside the launch path)
  std::string jit_source;          // memory / disk / compiled
  double make_plan_ms = 0, jit_ms = 0, upload_ms = 0, total_ms = 0;
};

namespace cuda {
// The plan's specs and generated source (no GPU needed).
struct PlanKernels {
  Plan plan;  // with plan.transposed when backward
  jit::KernelSpec base;
  std::vector<jit::KernelSpec> specs;  // the forward's (kForward)
  std::string source;                  // kForward's, plus kForwardLse's and kBackward's when backward
};
PlanKernels plan_kernels(const Acsr& acsr, DType dtype, int head_dim, const std::string& arch, bool backward = false);
// The specs of a variant of a plan made by plan_kernels.
KernelSet variant_specs(const jit::KernelSpec& base, const Plan& plan, Variant v);
// The loaded kernels of a variant: compiled or loaded on first use (outside a stream capture; `stream` is checked).
const KernelSet& kernel_set(const CudaPlan& plan, Variant v, cudaStream_t stream);
void load_set_now(const CudaPlan& plan, Variant v);  // caller holds plan.mutex
// Launch helpers shared by the forward and the backward: argument checks, the common kernel parameters (device
// set current), a plan's tables, one pass's launch (grid = tasks x heads).
void check_device_view(const TensorView& t, const char* name, int device, bool out);
dev::AttnParams base_params(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                            const AttentionOptions& opt);
void set_tables(dev::AttnParams& p, const DevicePlan& t);
// Outputs (and lse when lse_is_output) must share no bytes with inputs or with each other: else Error.
void check_disjoint_outputs(std::initializer_list<std::pair<const TensorView*, const char*>> outs,
                            std::initializer_list<std::pair<const TensorView*, const char*>> ins, const float* lse,
                            size_t lse_count, bool lse_is_output);
void launch_pass(dev::AttnParams& p, const DevicePlan& t, size_t pass, int64_t heads, cudaKernel_t kernel,
                 const jit::KernelSpec& spec, cudaStream_t s, const dev::TmaMap* maps = nullptr);
// Drops loaded modules and the in-process cubin map (next plan loads from disk): for warm-load timing.
void forget_loaded_kernels();
}  // namespace cuda

}  // namespace splat
