#include "backends/cuda/cuda_plan.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "jit/kernel_cache.hpp"
#include "backends/cuda/tma_maps.hpp"
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

PlanKernels plan_kernels(const Acsr& acsr, DType dtype, int head_dim, const std::string& arch, bool backward) {
  PlanKernels pk;
  jit::KernelSpec base = jit::base_spec(dtype, head_dim, arch);
  if (backward) jit::check_backward_supported(head_dim);
  PlanOptions po;
  po.block_m = base.block_m;
  po.block_n = base.block_n;
  // Two-segment spans (strided's residue halves in one span); SPLAT_CUDA_MERGE=0 keeps them apart (A/B runs).
  if (const char* m = std::getenv("SPLAT_CUDA_MERGE"); m && std::string(m) == "0") po.merge_split_segments = false;
  pk.plan = make_plan(acsr, po);
  // Contiguous key spans: the producer kernel where it measured faster. Not yet for training plans (their
  // backward was not measured with the 128-row forward tiles it brings at N=4096), unless SPLAT_CUDA_TMA=1.
  const char* tma_env = std::getenv("SPLAT_CUDA_TMA");
  if (jit::tma_fits(base, pk.plan) && (!backward || (tma_env && std::string(tma_env) == "1"))) {
    base = jit::tma_spec(base);
    po.block_m = base.block_m;
    po.block_n = base.block_n;
    pk.plan = make_plan(acsr, po);
  } else if (jit::two_warpgroups_pay(base, pk.plan)) {  // long even bands: 128-row tiles, one plan more (~0.1 ms)
    base = jit::two_warpgroup_spec(base);
    po.block_m = base.block_m;
    po.block_n = base.block_n;
    pk.plan = make_plan(acsr, po);
  }
  if (backward) {  // the transposed plan, in the dK/dV kernel's tile shape
    PlanOptions pt = jit::backward_plan_options(base);
    pt.merge_split_segments = po.merge_split_segments;
    pk.plan.transposed = std::make_shared<const Plan>(make_plan(transpose(acsr), pt));
  }
  pk.base = base;
  pk.specs = variant_specs(base, pk.plan, kForward).specs;
  pk.source = jit::generate_source(pk.specs);
  if (backward) {
    std::vector<jit::KernelSpec> all = pk.specs;
    for (Variant v : {kForwardLse, kBackward, kBackwardFast})
      for (const jit::KernelSpec& s : variant_specs(base, pk.plan, v).specs) all.push_back(s);
    pk.source = jit::generate_source(all);
  }
  return pk;
}

KernelSet variant_specs(const jit::KernelSpec& base, const Plan& plan, Variant v) {
  KernelSet ks;
  const bool pad = v == kForwardPad || v == kForwardLsePad || v == kBackwardPad || v == kBackwardFastPad;
  if ((v == kBackwardFast || v == kBackwardFastPad) && jit::backward_atomic_dq(base)) {
    if (!plan.transposed) fail(ErrorCode::InvalidArgument, "the CUDA plan was made without CudaPlanOptions::backward");
    ks.specs.push_back(jit::backward_pre_spec(base, true));
    for (size_t p = 0; p < plan.transposed->passes.size(); ++p)
      ks.specs.push_back(jit::backward_dkdv_spec(base, *plan.transposed, p, pad, true));
    ks.specs.push_back(jit::backward_dq_cast_spec(base));
    return ks;
  }
  if (v == kBackward || v == kBackwardPad || v == kBackwardFast || v == kBackwardFastPad) {
    if (!plan.transposed) fail(ErrorCode::InvalidArgument, "the CUDA plan was made without CudaPlanOptions::backward");
    ks.specs.push_back(jit::backward_pre_spec(base));
    for (size_t p = 0; p < plan.passes.size(); ++p) ks.specs.push_back(jit::backward_dq_spec(base, plan, p, pad));
    ks.dq_count = plan.passes.size();
    for (size_t p = 0; p < plan.transposed->passes.size(); ++p)
      ks.specs.push_back(jit::backward_dkdv_spec(base, *plan.transposed, p, pad));
    return ks;
  }
  const bool lse = v == kForwardLse || v == kForwardLsePad;
  for (size_t p = 0; p < plan.passes.size(); ++p) ks.specs.push_back(jit::forward_spec(base, plan, p, lse, pad));
  return ks;
}

// Compiles (or finds) and loads a variant's kernels. Caller holds plan.mutex.
void load_set_now(const CudaPlan& plan, Variant v) {
  KernelSet& ks = plan.sets[v];
  const auto t0 = std::chrono::steady_clock::now();
  KernelSet made = variant_specs(plan.base, plan.plan, v);
  ks.specs = std::move(made.specs);
  ks.dq_count = made.dq_count;
  std::string what = ks.specs.empty() ? "kernels" : ks.specs[0].describe();
  if (ks.specs.size() > 1) what += " (+" + std::to_string(ks.specs.size() - 1) + " more kernels)";
  const jit::CachedCubin cc = jit::cached_cubin(jit::generate_source(ks.specs), plan.options.arch, what);
  ks.from = cc.source;
  cudaLibrary_t lib = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    const std::string key = cc.key + "@" + std::to_string(plan.options.device);
    auto it = loaded().find(key);
    if (it != loaded().end()) {
      lib = it->second;
    } else {
      check(cudaSetDevice(plan.options.device), "cudaSetDevice");
      check(cudaLibraryLoadData(&lib, cc.cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
            "cudaLibraryLoadData (loading the generated kernels)");
      loaded()[key] = lib;
    }
  }
  ks.kernels.clear();
  for (const jit::KernelSpec& s : ks.specs) {
    cudaKernel_t k = nullptr;
    check(cudaLibraryGetKernel(&k, lib, s.name().c_str()), "cudaLibraryGetKernel");
    if (s.smem_bytes() > 0)
      check(cudaKernelSetAttributeForDevice(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(s.smem_bytes()),
                                            plan.options.device),
            "cudaKernelSetAttributeForDevice (shared memory)");
    ks.kernels.push_back(k);
  }
  ks.ms = ms_since(t0);
  ks.ready = true;
}

const KernelSet& kernel_set(const CudaPlan& plan, Variant v, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(plan.mutex);
  if (plan.sets[v].ready) return plan.sets[v];
  // A variant not prepared by plan_cuda (key padding) loads on first use: never inside a capture.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone)
    fail(ErrorCode::InvalidArgument,
         "the CUDA plan's key-padding kernels (and the non-deterministic backward's) load on their first use, which "
         "a CUDA graph capture cannot contain: run once with the same options (key_lengths, deterministic) before "
         "capturing");
  load_set_now(plan, v);
  return plan.sets[v];
}

void DevicePlan::upload(const Plan& plan) {
  packed = pack_plan(plan);
  tasks.upload(packed.tasks.data(), packed.tasks.size() * sizeof(dev::DevTask));
  spans.upload(packed.spans.data(), packed.spans.size() * sizeof(dev::DevSpan));
  segments.upload(packed.segments.data(), packed.segments.size() * sizeof(dev::DevSegment));
  gather_keys.upload(packed.gather_keys.data(), packed.gather_keys.size() * sizeof(int32_t));
  gather_mask.upload(packed.gather_mask.data(), packed.gather_mask.size() * sizeof(uint64_t));
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
  cuda::PlanKernels pk = cuda::plan_kernels(acsr, options.dtype, options.head_dim, arch, options.backward);
  cp->plan = std::move(pk.plan);
  cp->base = pk.base;
  cp->specs = std::move(pk.specs);
  cp->make_plan_ms = cuda::ms_since(t0);

  // Kernels: cubins from the cache (memory, disk or NVRTC), modules loaded once per device. Training plans also
  // load the lse-writing forward and the backward now; key-padding variants load on first use.
  const auto t1 = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(cp->mutex);
    cuda::load_set_now(*cp, cuda::kForward);
    if (options.backward) {
      cuda::load_set_now(*cp, cuda::kForwardLse);
      cuda::load_set_now(*cp, cuda::kBackward);
    }
  }
  cp->jit_source = cp->sets[cuda::kForward].from;
  cp->jit_ms = cuda::ms_since(t1);

  const auto t2 = std::chrono::steady_clock::now();
  cuda::check(cudaSetDevice(options.device), "cudaSetDevice");
  cp->fwd.upload(cp->plan);
  if (cp->plan.transposed) cp->bwd.upload(*cp->plan.transposed);
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

namespace cuda {
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

namespace {
struct Bytes {
  uintptr_t lo = 0, hi = 0;  // [lo, hi): first to last element (conservative for interleaved strided views)
  const char* name;
};
Bytes bytes_of(const TensorView& t, const char* name) {
  size_t last = 0;
  for (int a = 0; a < 4; ++a) {
    if (t.shape[a] <= 0) return {0, 0, name};
    last += size_t(t.shape[a] - 1) * size_t(t.stride[a]);
  }
  const auto lo = reinterpret_cast<uintptr_t>(t.data);
  return {lo, lo + (last + 1) * dtype_size(t.dtype), name};
}
}  // namespace

// An output sharing memory with an input (out = k, dq over dout, lse inside q, ...) is a wrong answer: refused.
void check_disjoint_outputs(std::initializer_list<std::pair<const TensorView*, const char*>> outs,
                            std::initializer_list<std::pair<const TensorView*, const char*>> ins, const float* lse,
                            size_t lse_count, bool lse_is_output) {
  std::vector<Bytes> o, i;
  for (const auto& [t, n] : outs) o.push_back(bytes_of(*t, n));
  for (const auto& [t, n] : ins) i.push_back(bytes_of(*t, n));
  if (lse) {
    const auto lo = reinterpret_cast<uintptr_t>(lse);
    (lse_is_output ? o : i).push_back({lo, lo + lse_count * sizeof(float), "lse"});
  }
  for (size_t a = 0; a < o.size(); ++a) {
    std::vector<Bytes> others = i;
    for (size_t b = 0; b < o.size(); ++b)
      if (b != a) others.push_back(o[b]);
    for (const Bytes& x : others)
      if (o[a].lo < o[a].hi && x.lo < x.hi && o[a].lo < x.hi && x.lo < o[a].hi)
        fail(ErrorCode::InvalidArgument, std::string(o[a].name) + " overlaps " + x.name +
                                             " in memory: outputs need their own buffers (an output written over "
                                             "an input or another output gives a wrong answer)");
  }
}

dev::AttnParams base_params(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                            const AttentionOptions& opt) {
  const int dev = plan.options.device;
  check_device_view(q, "q", dev, false);
  check_device_view(k, "k", dev, false);
  check_device_view(v, "v", dev, false);
  if (q.dtype != plan.options.dtype)
    fail(ErrorCode::InvalidArgument, std::string("tensors are ") + dtype_name(q.dtype) + " but the CUDA plan is for " +
                                         dtype_name(plan.options.dtype));
  if (q.D() != plan.options.head_dim)
    fail(ErrorCode::InvalidArgument, "head dim " + std::to_string(q.D()) + " differs from the CUDA plan's " +
                                         std::to_string(plan.options.head_dim));
  if (q.N() != plan.plan.acsr.n)
    fail(ErrorCode::InvalidArgument,
         "sequence length " + std::to_string(q.N()) + " differs from the plan's " + std::to_string(plan.plan.acsr.n));
  if (opt.key_lengths && reinterpret_cast<uintptr_t>(opt.key_lengths) % 4 != 0)
    fail(ErrorCode::InvalidArgument, "key_lengths must be 4-byte aligned device memory");
  dev::AttnParams p{};
  p.q = q.data, p.k = k.data, p.v = v.data;
  p.q_sb = q.stride[0], p.q_sh = q.stride[1], p.q_sn = q.stride[2];
  p.k_sb = k.stride[0], p.k_sh = k.stride[1], p.k_sn = k.stride[2];
  p.v_sb = v.stride[0], p.v_sh = v.stride[1], p.v_sn = v.stride[2];
  p.B = int(q.B()), p.H = int(q.H()), p.Hkv = int(k.H()), p.N = int(q.N());
  // The kernels track the running max of raw scores and scale afterwards: the scale must be positive.
  if (!(opt.scale >= 0.0f) || std::isinf(opt.scale))
    fail(ErrorCode::InvalidArgument, "CUDA backend: softmax scale must be positive and finite (0 = 1/sqrt(D))");
  p.scale = opt.scale != 0.0f ? opt.scale : 1.0f / std::sqrt(float(q.D()));
  p.scale_log2 = p.scale * 1.4426950408889634f;
  p.key_lengths = opt.key_lengths;
  int current = -1;
  check(cudaGetDevice(&current), "cudaGetDevice");
  if (current != dev) check(cudaSetDevice(dev), "cudaSetDevice");
  return p;
}

void set_tables(dev::AttnParams& p, const DevicePlan& t) {
  p.spans = static_cast<const dev::DevSpan*>(t.spans.ptr);
  p.segments = static_cast<const dev::DevSegment*>(t.segments.ptr);
  p.num_segments = int(t.packed.segments.size());
  p.gather_keys = static_cast<const int*>(t.gather_keys.ptr);
  p.gather_mask = static_cast<const dev::u64*>(t.gather_mask.ptr);
}

void launch_pass(dev::AttnParams& p, const DevicePlan& t, size_t pass, int64_t heads, cudaKernel_t kernel,
                 const jit::KernelSpec& spec, cudaStream_t s, const dev::TmaMap* maps) {
  const int ntasks = t.packed.pass_task_count[pass];
  if (ntasks == 0) return;
  p.tasks = static_cast<const dev::DevTask*>(t.tasks.ptr) + t.packed.pass_task_offset[pass];
  p.num_tasks = ntasks;
  const int64_t blocks = int64_t(ntasks) * heads;
  if (blocks > INT32_MAX) fail(ErrorCode::Unsupported, "CUDA backend: too many tiles x heads for one launch");
  if (spec.tma && !maps) fail(ErrorCode::Internal, "launch_pass: the TMA kernel needs its tensor maps");
  dev::TmaMap mk = spec.tma ? maps[0] : dev::TmaMap{}, mv = spec.tma ? maps[1] : dev::TmaMap{};
  void* args[] = {&p, &mk, &mv};
  check(cudaLaunchKernel(reinterpret_cast<const void*>(kernel), dim3(unsigned(blocks)), dim3(unsigned(spec.threads())),
                         args, spec.smem_bytes(), s),
        "launching the attention kernel");
}
}  // namespace cuda

void attention_cuda(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const AttentionOptions& opt, void* stream, void* workspace, float* lse_out) {
  check_attention_args(q, k, v, out);
  dev::AttnParams p = cuda::base_params(plan, q, k, v, opt);
  cuda::check_device_view(out, "out", plan.options.device, true);
  cuda::check_disjoint_outputs({{&out, "out"}}, {{&q, "q"}, {&k, "k"}, {&v, "v"}}, lse_out,
                               size_t(q.B() * q.H() * q.N()), true);
  auto s = static_cast<cudaStream_t>(stream);
  const bool pad = opt.key_lengths != nullptr;
  const cuda::Variant var =
      lse_out ? (pad ? cuda::kForwardLsePad : cuda::kForwardLse) : (pad ? cuda::kForwardPad : cuda::kForward);
  const cuda::KernelSet& ks = cuda::kernel_set(plan, var, s);
  // The caller's lse doubles as the passes' merge workspace: same layout, and its last write is the final lse.
  float* lse = lse_out ? lse_out : static_cast<float*>(workspace);
  if (lse && reinterpret_cast<uintptr_t>(lse) % 4 != 0)
    fail(ErrorCode::InvalidArgument, "attention_cuda: workspace and lse must be 4-byte aligned");
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
  p.o = out.data;
  p.o_sb = out.stride[0], p.o_sh = out.stride[1], p.o_sn = out.stride[2];
  p.lse = lse;
  cuda::set_tables(p, plan.fwd);
  dev::TmaMap maps[2];
  bool tma = false;
  for (const jit::KernelSpec& sp : ks.specs) tma = tma || sp.tma;
  if (tma) cuda::encode_kv_maps(p, q.dtype, int(q.D()), plan.base.block_n, maps);
  for (size_t pass = 0; pass < ks.kernels.size(); ++pass)
    cuda::launch_pass(p, plan.fwd, pass, q.B() * q.H(), ks.kernels[pass], ks.specs[pass], s, tma ? maps : nullptr);
}

std::vector<std::string> describe_cuda_plan(const CudaPlan& plan) {
  std::vector<std::string> out;
  for (size_t p = 0; p < plan.specs.size(); ++p)
    out.push_back("pass " + std::to_string(p) + " (" + plan.plan.passes[p].describe + ", " +
                  std::to_string(plan.plan.passes[p].tasks.size()) + " tiles): " + plan.specs[p].describe());
  if (plan.plan.transposed) {
    const cuda::KernelSet ks = cuda::variant_specs(plan.base, plan.plan, cuda::kBackward);
    for (size_t i = 0; i < ks.specs.size(); ++i) {
      const bool dq = i >= 1 && i < 1 + ks.dq_count;
      const size_t pass = i == 0 ? 0 : dq ? i - 1 : i - 1 - ks.dq_count;
      const Plan& pl = dq || i == 0 ? plan.plan : *plan.plan.transposed;
      out.push_back("backward " +
                    std::string(i == 0 ? "preprocess"
                                : dq   ? "dQ pass "
                                       : "dK/dV pass ") +
                    (i == 0 ? std::string()
                            : std::to_string(pass) + " (" + std::to_string(pl.passes[pass].tasks.size()) + " tiles)") +
                    ": " + ks.specs[i].describe());
    }
  }
  out.push_back("plan " + std::to_string(plan.make_plan_ms) + " ms, kernels " + std::to_string(plan.jit_ms) + " ms (" +
                plan.jit_source + "), upload " + std::to_string(plan.upload_ms) + " ms; waste " +
                std::to_string(plan.plan.waste()));
  return out;
}

CodegenResult codegen_cuda(const Acsr& acsr, const CudaPlanOptions& options, bool compile) {
  std::string arch = options.arch;
  if (arch.empty()) arch = cuda_available() ? cuda::device_arch(options.device) : "sm_90";
  jit::check_arch(arch);
  cuda::PlanKernels pk = cuda::plan_kernels(acsr, options.dtype, options.head_dim, arch, options.backward);
  CodegenResult r;
  r.source = pk.source;
  for (const auto& s : pk.specs) r.specs.push_back(s.name() + ": " + s.describe());
  if (options.backward)
    for (cuda::Variant v : {cuda::kForwardLse, cuda::kBackward})
      for (const auto& s : cuda::variant_specs(pk.base, pk.plan, v).specs)
        r.specs.push_back(s.name() + ": " + s.describe());
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
