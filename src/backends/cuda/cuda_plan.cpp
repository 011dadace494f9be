#include "backends/cuda/cuda_plan.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>

#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compile.hpp"
#include "splat/error.hpp"

namespace splat {

namespace cuda {
namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::mutex g_mutex;
std::map<std::string, cudaLibrary_t>& loaded() {  // cache key + device -> module, kept for the process
  static std::map<std::string, cudaLibrary_t> m;
  return m;
}
}  // namespace

PlanKernels plan_kernels(const Acsr& acsr, DType dtype, int head_dim, const std::string& arch) {
  PlanKernels pk;
  jit::KernelSpec base = jit::base_spec(dtype, head_dim, arch);
  PlanOptions po;
  po.block_m = base.block_m;
  po.block_n = base.block_n;
  // Two-segment spans (strided's residue halves in one span); SPLAT_CUDA_MERGE=0 keeps them apart (A/B runs).
  if (const char* m = std::getenv("SPLAT_CUDA_MERGE"); m && std::string(m) == "0") po.merge_split_segments = false;
  pk.plan = make_plan(acsr, po);
  if (jit::two_warpgroups_pay(base, pk.plan)) {  // long even bands: 128-row tiles, one plan more (~0.1 ms)
    base = jit::two_warpgroup_spec(base);
    po.block_m = base.block_m;
    po.block_n = base.block_n;
    pk.plan = make_plan(acsr, po);
  }
  for (size_t p = 0; p < pk.plan.passes.size(); ++p) pk.specs.push_back(jit::pass_spec(base, pk.plan, p));
  pk.source = jit::generate_source(pk.specs);
  return pk;
}

void forget_loaded_kernels() {
  jit::clear_memory_cache();
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& [key, lib] : loaded()) cudaLibraryUnload(lib);
  loaded().clear();
}
}  // namespace cuda

std::shared_ptr<CudaPlan> plan_cuda(const Acsr& acsr, const CudaPlanOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  cuda::require_device(options.device);
  std::string arch = options.arch.empty() ? cuda::device_arch(options.device) : options.arch;
  if (options.arch.empty() && arch == "sm_90") arch = "sm_90a";  // Hopper: the wgmma kernels
  jit::check_arch(arch);
  auto cp = std::make_shared<CudaPlan>();
  cp->options = options;
  cp->options.arch = arch;
  cuda::PlanKernels pk = cuda::plan_kernels(acsr, options.dtype, options.head_dim, arch);
  cp->plan = std::move(pk.plan);
  cp->specs = std::move(pk.specs);
  cp->make_plan_ms = cuda::ms_since(t0);

  // Kernels: cubin from the cache (memory, disk or NVRTC), module loaded once per device.
  const auto t1 = std::chrono::steady_clock::now();
  std::string what = cp->specs.empty() ? "kernels" : cp->specs[0].describe();
  if (cp->specs.size() > 1) what += " (+" + std::to_string(cp->specs.size() - 1) + " continuation kernels)";
  const jit::CachedCubin cc = jit::cached_cubin(pk.source, arch, what);
  cp->jit_source = cc.source;
  cudaLibrary_t lib = nullptr;
  {
    std::lock_guard<std::mutex> lock(cuda::g_mutex);
    const std::string key = cc.key + "@" + std::to_string(options.device);
    auto it = cuda::loaded().find(key);
    if (it != cuda::loaded().end()) {
      lib = it->second;
    } else {
      cuda::check(cudaSetDevice(options.device), "cudaSetDevice");
      cuda::check(cudaLibraryLoadData(&lib, cc.cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
                  "cudaLibraryLoadData (loading the generated kernels)");
      cuda::loaded()[key] = lib;
    }
  }
  for (const jit::KernelSpec& s : cp->specs) {
    cudaKernel_t k = nullptr;
    cuda::check(cudaLibraryGetKernel(&k, lib, s.name().c_str()), "cudaLibraryGetKernel");
    cuda::check(cudaKernelSetAttributeForDevice(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(s.smem_bytes()),
                                                options.device),
                "cudaKernelSetAttributeForDevice (shared memory)");
    cp->kernels.push_back(k);
  }
  cp->jit_ms = cuda::ms_since(t1);

  const auto t2 = std::chrono::steady_clock::now();
  cp->packed = cuda::pack_plan(cp->plan);
  cuda::check(cudaSetDevice(options.device), "cudaSetDevice");
  cp->tasks.upload(cp->packed.tasks.data(), cp->packed.tasks.size() * sizeof(dev::DevTask));
  cp->spans.upload(cp->packed.spans.data(), cp->packed.spans.size() * sizeof(dev::DevSpan));
  cp->segments.upload(cp->packed.segments.data(), cp->packed.segments.size() * sizeof(dev::DevSegment));
  cp->gather_keys.upload(cp->packed.gather_keys.data(), cp->packed.gather_keys.size() * sizeof(int32_t));
  cp->gather_mask.upload(cp->packed.gather_mask.data(), cp->packed.gather_mask.size() * sizeof(uint64_t));
  cp->upload_ms = cuda::ms_since(t2);
  cp->total_ms = cuda::ms_since(t0);
  return cp;
}

size_t cuda_workspace_bytes(const CudaPlan& plan, int64_t batch, int64_t heads) {
  if (batch < 0 || heads < 0) fail(ErrorCode::InvalidArgument, "cuda_workspace_bytes: negative batch or heads");
  return plan.plan.passes.size() < 2 ? 0 : size_t(batch * heads * plan.plan.acsr.n) * sizeof(float);
}

void cuda_workspace_reserve(const CudaPlan& plan, int64_t batch, int64_t heads) {
  const size_t need = cuda_workspace_bytes(plan, batch, heads);
  if (plan.lse.bytes >= need) return;
  cuda::check(cudaSetDevice(plan.options.device), "cudaSetDevice");
  cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before growing the lse workspace)");
  plan.lse.allocate(need);
}

namespace {
void check_device_view(const TensorView& t, const char* name, int device, bool out) {
  if (t.device != device)
    fail(ErrorCode::InvalidArgument, std::string(name) + " must be on CUDA device " + std::to_string(device) +
                                         " (got " + (t.device < 0 ? "host" : "device " + std::to_string(t.device)) +
                                         ")");
  const size_t align = out ? 4 : 16;
  const int64_t mult = out ? 2 : 8;
  if (reinterpret_cast<uintptr_t>(t.data) % align != 0)
    fail(ErrorCode::InvalidArgument, std::string(name) + ": data must be " + std::to_string(align) + "-byte aligned");
  for (int a = 0; a < 3; ++a)
    if (t.stride[a] % mult != 0)
      fail(ErrorCode::InvalidArgument, std::string(name) + ": strides over B, H, N must be multiples of " +
                                           std::to_string(mult) + " elements (got stride " +
                                           std::to_string(t.stride[a]) + " on dim " + std::to_string(a) + ")");
}
}  // namespace

void attention_cuda(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const AttentionOptions& opt, void* stream, void* workspace, float* lse_out) {
  check_attention_args(q, k, v, out);
  if (lse_out || opt.key_lengths) fail(ErrorCode::Unsupported, "attention_cuda: lse and key_lengths are not implemented yet");
  const int dev = plan.options.device;
  check_device_view(q, "q", dev, false);
  check_device_view(k, "k", dev, false);
  check_device_view(v, "v", dev, false);
  check_device_view(out, "out", dev, true);
  if (q.dtype != plan.options.dtype)
    fail(ErrorCode::InvalidArgument, std::string("tensors are ") + dtype_name(q.dtype) + " but the CUDA plan is for " +
                                         dtype_name(plan.options.dtype));
  if (q.D() != plan.options.head_dim)
    fail(ErrorCode::InvalidArgument, "head dim " + std::to_string(q.D()) + " differs from the CUDA plan's " +
                                         std::to_string(plan.options.head_dim));
  if (q.N() != plan.plan.acsr.n)
    fail(ErrorCode::InvalidArgument,
         "sequence length " + std::to_string(q.N()) + " differs from the plan's " + std::to_string(plan.plan.acsr.n));
  const int64_t bh = q.B() * q.H();
  auto s = static_cast<cudaStream_t>(stream);
  float* lse = static_cast<float*>(workspace);
  if (lse && reinterpret_cast<uintptr_t>(lse) % 4 != 0)
    fail(ErrorCode::InvalidArgument, "attention_cuda: workspace must be 4-byte aligned");
  if (!lse && plan.lse.bytes < cuda_workspace_bytes(plan, q.B(), q.H())) {
    // First call at this size only (see cuda.hpp). Growing synchronises, which a capture cannot contain.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cuda::check(cudaStreamIsCapturing(s, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      fail(ErrorCode::InvalidArgument,
           "attention_cuda: this multi-pass plan needs a workspace of " +
               std::to_string(cuda_workspace_bytes(plan, q.B(), q.H())) +
               " bytes; pass one, or call cuda_workspace_reserve(plan, B, H) before capturing a CUDA graph");
    cuda_workspace_reserve(plan, q.B(), q.H());
  }
  if (!lse) lse = static_cast<float*>(plan.lse.ptr);

  dev::AttnParams p{};
  p.q = q.data, p.k = k.data, p.v = v.data, p.o = out.data;
  p.lse = lse;
  p.q_sb = q.stride[0], p.q_sh = q.stride[1], p.q_sn = q.stride[2];
  p.k_sb = k.stride[0], p.k_sh = k.stride[1], p.k_sn = k.stride[2];
  p.v_sb = v.stride[0], p.v_sh = v.stride[1], p.v_sn = v.stride[2];
  p.o_sb = out.stride[0], p.o_sh = out.stride[1], p.o_sn = out.stride[2];
  p.B = int(q.B()), p.H = int(q.H()), p.Hkv = int(k.H()), p.N = int(q.N());
  // The kernels track the running max of raw scores and scale afterwards: the scale must be positive.
  if (!(opt.scale >= 0.0f) || std::isinf(opt.scale))
    fail(ErrorCode::InvalidArgument, "CUDA backend: softmax scale must be positive and finite (0 = 1/sqrt(D))");
  const float scale = opt.scale != 0.0f ? opt.scale : 1.0f / std::sqrt(float(q.D()));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.spans = static_cast<const dev::DevSpan*>(plan.spans.ptr);
  p.segments = static_cast<const dev::DevSegment*>(plan.segments.ptr);
  p.num_segments = int(plan.packed.segments.size());
  p.gather_keys = static_cast<const int*>(plan.gather_keys.ptr);
  p.gather_mask = static_cast<const dev::u64*>(plan.gather_mask.ptr);
  int current = -1;
  cuda::check(cudaGetDevice(&current), "cudaGetDevice");
  if (current != dev) cuda::check(cudaSetDevice(dev), "cudaSetDevice");
  for (size_t pass = 0; pass < plan.kernels.size(); ++pass) {
    const int ntasks = plan.packed.pass_task_count[pass];
    if (ntasks == 0) continue;
    p.tasks = static_cast<const dev::DevTask*>(plan.tasks.ptr) + plan.packed.pass_task_offset[pass];
    p.num_tasks = ntasks;
    const int64_t blocks = int64_t(ntasks) * bh;
    if (blocks > INT32_MAX) fail(ErrorCode::Unsupported, "CUDA backend: too many tiles x heads for one launch");
    void* args[] = {&p};
    cuda::check(cudaLaunchKernel(reinterpret_cast<const void*>(plan.kernels[pass]), dim3(unsigned(blocks)),
                                 dim3(unsigned(plan.specs[pass].threads())), args, plan.specs[pass].smem_bytes(), s),
                "launching the attention kernel");
  }
}

std::vector<std::string> describe_cuda_plan(const CudaPlan& plan) {
  std::vector<std::string> out;
  for (size_t p = 0; p < plan.specs.size(); ++p)
    out.push_back("pass " + std::to_string(p) + " (" + plan.plan.passes[p].describe + ", " +
                  std::to_string(plan.plan.passes[p].tasks.size()) + " tiles): " + plan.specs[p].describe());
  out.push_back("plan " + std::to_string(plan.make_plan_ms) + " ms, kernels " + std::to_string(plan.jit_ms) + " ms (" +
                plan.jit_source + "), upload " + std::to_string(plan.upload_ms) + " ms; waste " +
                std::to_string(plan.plan.waste()));
  return out;
}

CodegenResult codegen_cuda(const Acsr& acsr, const CudaPlanOptions& options, bool compile) {
  std::string arch = options.arch;
  if (arch.empty()) arch = cuda_available() ? cuda::device_arch(options.device) : "sm_90";
  jit::check_arch(arch);
  cuda::PlanKernels pk = cuda::plan_kernels(acsr, options.dtype, options.head_dim, arch);
  CodegenResult r;
  r.source = pk.source;
  for (const auto& s : pk.specs) r.specs.push_back(s.name() + ": " + s.describe());
  if (compile) {
    jit::CachedCubin cc = jit::cached_cubin(pk.source, arch, "codegen " + std::to_string(pk.specs.size()) + " kernels");
    r.cubin = std::move(cc.cubin);
    r.log = cc.source == "compiled" ? "compiled with NVRTC " + jit::nvrtc_version()
                                    : "from the kernel cache (" + cc.source + ")";
  }
  return r;
}

}  // namespace splat

namespace splat {
CudaPlanTimes cuda_plan_times(const CudaPlan& plan) {
  CudaPlanTimes t;
  t.plan_ms = plan.make_plan_ms, t.kernels_ms = plan.jit_ms, t.upload_ms = plan.upload_ms, t.total_ms = plan.total_ms;
  t.kernels_from = plan.jit_source;
  return t;
}
}  // namespace splat
