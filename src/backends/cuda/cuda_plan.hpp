// The CudaPlan: a plan's device-side tables, its loaded kernels (one per pass) and the lse workspace.
#pragma once
#include <string>
#include <vector>

#include "backends/cuda/cuda_util.hpp"
#include "backends/cuda/plan_pack.hpp"
#include "jit/kernel_spec.hpp"
#include "splat/cuda.hpp"

namespace splat {

class CudaPlan {
 public:
  Plan plan;
  CudaPlanOptions options;
  std::vector<jit::KernelSpec> specs;  // one per pass
  std::vector<cudaKernel_t> kernels;   // one per pass
  cuda::PackedPlan packed;
  cuda::DeviceBuffer tasks, spans, segments, gather_keys, gather_mask;
  mutable cuda::DeviceBuffer lse;  // [B*H][N] floats for multi-pass plans (grown outside the launch path)
  std::string jit_source;          // memory / disk / compiled
  double make_plan_ms = 0, jit_ms = 0, upload_ms = 0, total_ms = 0;
};

namespace cuda {
// The plan's specs and generated source (no GPU needed).
struct PlanKernels {
  Plan plan;
  std::vector<jit::KernelSpec> specs;
  std::string source;
};
PlanKernels plan_kernels(const Acsr& acsr, DType dtype, int head_dim, const std::string& arch);
// Drops loaded modules and the in-process cubin map (next plan loads from disk): for warm-load timing.
void forget_loaded_kernels();
}  // namespace cuda

}  // namespace splat
