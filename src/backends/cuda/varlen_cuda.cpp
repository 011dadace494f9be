// Packed variable-length prefill on CUDA without a kernel of its own: the batch is one sequence of `total` tokens whose
// pattern is block-diagonal (each sequence's ACSR shifted to its first token), planned once per batch composition and
// run by the forward kernels on the [1, H, total, D] views.
#include <chrono>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

std::shared_ptr<CudaPlan> varlen_cuda_plan(VarlenPlans& plans, const Varlen& batch, DType dtype, int32_t head_dim,
                                           int device, VarlenPlanTimes* times) {
  const auto t0 = std::chrono::steady_clock::now();
  VarlenPlanTimes t;
  VarlenPlans::PackedKey key{dtype, head_dim, device, {}};
  key.lengths.reserve(size_t(batch.batch));
  for (int64_t b = 0; b < batch.batch; ++b) key.lengths.push_back(batch.cu_seqlens[b + 1] - batch.cu_seqlens[b]);
  std::shared_ptr<CudaPlan> plan = plans.find_packed(key);
  t.cached = plan != nullptr;
  if (!plan) {
    std::vector<std::shared_ptr<const Acsr>> held;  // the per-length analyses, alive while they are concatenated
    std::vector<const Acsr*> parts;
    const Acsr empty;
    for (int32_t n : key.lengths) {
      if (n == 0) {
        parts.push_back(&empty);
        continue;
      }
      held.push_back(plans.acsr(n));
      parts.push_back(held.back().get());
    }
    const Acsr packed = block_diagonal(parts);
    t.acsr_ms = ms_since(t0);
    const auto t1 = std::chrono::steady_clock::now();
    CudaPlanOptions o;
    o.dtype = dtype, o.head_dim = head_dim, o.device = device;
    plan = plan_cuda(packed, o);
    t.plan_ms = ms_since(t1);
    plans.keep_packed(key, plan);
  }
  for (const Pass& p : plan->plan.passes) t.tiles += int64_t(p.tasks.size());
  t.total_ms = ms_since(t0);
  if (times) *times = t;
  return plan;
}

void varlen_offsets_to_host(const int32_t* device_offsets, int64_t count, int32_t* host, void* stream, int device) {
  require(count >= 0 && (count == 0 || (device_offsets && host)), "varlen_offsets_to_host: null buffers");
  if (count == 0) return;
  cuda::check(cudaSetDevice(device), "cudaSetDevice");
  auto s = static_cast<cudaStream_t>(stream);
  cuda::check(cudaMemcpyAsync(host, device_offsets, size_t(count) * sizeof(int32_t), cudaMemcpyDeviceToHost, s),
              "cudaMemcpyAsync (cu_seqlens to the host)");
  cuda::check(cudaStreamSynchronize(s), "cudaStreamSynchronize (cu_seqlens to the host)");
}

void attention_varlen_cuda(VarlenPlans& plans, const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const Varlen& batch, const AttentionOptions& opt, void* stream,
                           float* lse, void* workspace) {
  const std::string w = "attention_varlen_cuda";
  check_attention_args(q, k, v, out);
  require(q.B() == 1, w + ": packed tensors are one [1, H, total, D] view (e.g. [total, H, D] memory)");
  require(opt.key_lengths == nullptr, w + ": key_lengths does not apply (cu_seqlens gives the lengths)");
  varlen_check_batch(batch, q.N(), w);
  require(q.device >= 0, w + ": q, k, v and out must be CUDA device tensors (attention_varlen_cpu takes host ones)");
  if (q.N() == 0) return;  // every sequence empty: nothing to write
  const std::shared_ptr<CudaPlan> plan = varlen_cuda_plan(plans, batch, q.dtype, int32_t(q.D()), q.device);
  attention_cuda(*plan, q, k, v, out, opt, stream, workspace, lse);
}

}  // namespace splat
