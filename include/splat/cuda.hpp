// CUDA backend: kernels generated for a plan's geometry, compiled at run time with NVRTC and cached.
// plan/run split: plan_cuda() does analysis upload, scheduling and kernel lookup/compilation;
// CudaPlan::run launches only (no host allocation, no synchronisation; CUDA-graph capturable).
// Available only when built with SPLAT_WITH_CUDA; cuda_available() says whether a device can be used.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "splat/attention.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat {

// True if a CUDA driver and device are usable; otherwise *why (if given) says what is missing.
bool cuda_available(std::string* why = nullptr);

struct CudaPlanOptions {
  DType dtype = DType::BF16;
  int32_t head_dim = 64;
  int device = 0;
  std::string arch;       // "" = the device's own (e.g. "sm_90")
  bool backward = false;  // also prepare the backward kernels and the transposed plan (for training)
};

class CudaPlan;  // opaque; defined in src/backends/cuda
std::shared_ptr<CudaPlan> plan_cuda(const Acsr& acsr, const CudaPlanOptions& options);
// Launch on device tensors (views with device >= 0). stream: a cudaStream_t (nullptr = default stream).
// workspace: device memory of at least cuda_workspace_bytes(plan, B, H) bytes, 4-byte aligned, owned by the
// caller for the duration of the launch (e.g. from the framework's stream-ordered allocator); nullptr uses the
// plan's own buffer (see cuda_workspace_reserve), which two streams must not use at the same time.
// lse: optional device float32 [B, H, N] (see attention.hpp), written for backward (it then also serves as the
// passes' merge workspace). opt.key_lengths (device memory; values outside [0, N] act as clamped): the first call
// with key lengths loads the plan's key-padding kernels, which a stream capture cannot contain (an Error there):
// run once with key_lengths before capturing. Outputs sharing memory with an input are an Error. v must be finite
// in every row, attended or not: the kernels multiply whole tiles by P, so a NaN or Inf in a value row the pattern
// leaves out still reaches the rows that share its tile (0 * NaN; masked scores are overwritten, so keys do not
// matter). The CPU backend reads attended rows only.
void attention_cuda(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const AttentionOptions& opt = {}, void* stream = nullptr,
                    void* workspace = nullptr, float* lse = nullptr);
// Backward on device tensors (a plan made with CudaPlanOptions::backward). Deterministic by default (no atomics);
// opt.deterministic = false runs the faster non-deterministic mode where there is one (sm_90a: dQ added with fp32
// atomics inside the dK/dV pass; its kernels load on first use, outside a graph capture, like key padding's).
// workspace: at least cuda_backward_workspace_bytes(plan, B, H, opt.deterministic) bytes, 16-byte aligned,
// caller-owned: Delta and lse per row (2 * B*H*N floats), and in the non-deterministic mode the fp32 dQ accumulator
// (+ B*H*N*D floats).
size_t cuda_backward_workspace_bytes(const CudaPlan& plan, int64_t batch, int64_t heads, bool deterministic = true);
void attention_backward_cuda(const CudaPlan& plan, const BackwardTensors& t, const AttentionOptions& opt = {},
                             void* stream = nullptr, void* workspace = nullptr);
// Host convenience for the CLI and tests: copies host tensors to the device, runs `repeats` times after
// `warmup` runs, copies the output back. Returns the median kernel time in milliseconds (CUDA events).
double attention_cuda_host(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const AttentionOptions& opt = {}, int warmup = 0, int repeats = 1);
// Multi-pass plans (e.g. strided) merge their passes through a log-sum-exp workspace of B*H*N floats;
// single-pass plans need none (0 bytes).
size_t cuda_workspace_bytes(const CudaPlan& plan, int64_t batch, int64_t heads);
// Without a caller's workspace, attention_cuda uses one kept in the plan and grows it on first use at a larger
// B*H (that one call allocates and synchronises the device; if the launch stream is capturing it fails with an
// Error instead, but a capture on another stream or thread in global mode would be broken by the synchronisation).
// Reserve it first, or run once, before capturing anything. A no-op for single-pass plans.
void cuda_workspace_reserve(const CudaPlan& plan, int64_t batch, int64_t heads);
// Where plan_cuda spent its time, and where the kernels came from ("memory", "disk" or "compiled").
struct CudaPlanTimes {
  double plan_ms = 0;     // make_plan (scheduling) for the kernel's tile shape
  double kernels_ms = 0;  // kernel lookup: in-process map, disk cache or NVRTC, plus module load
  double upload_ms = 0;   // packing + copying the plan tables to the device
  double total_ms = 0;
  std::string kernels_from;
};
CudaPlanTimes cuda_plan_times(const CudaPlan& plan);
// Description of the plan's kernels (spec log lines), for `splat inspect`/`run` output.
std::vector<std::string> describe_cuda_plan(const CudaPlan& plan);

// --- code generation and the kernel cache (work without a GPU) ---
struct CodegenResult {
  std::string source;              // generated CUDA source (all kernels of the plan)
  std::vector<std::string> specs;  // one log line per kernel spec
  std::vector<char> cubin;         // filled when compiled
  std::string log;                 // NVRTC log
};
// Generates (and with compile=true compiles with NVRTC for arch, e.g. "sm_90") the plan's kernels.
CodegenResult codegen_cuda(const Acsr& acsr, const CudaPlanOptions& options, bool compile);

struct CacheInfo {
  std::string directory;
  int64_t entries = 0;
  int64_t bytes = 0;
};
CacheInfo kernel_cache_info();
void kernel_cache_clear();

}  // namespace splat
