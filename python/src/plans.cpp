#include "plans.hpp"

#include <vector>

#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace splat::py {

std::shared_ptr<PlanHandle> build_plan(const std::string& spec, int64_t seq_len, int32_t head_dim, DType dtype,
                                       int device) {
  require(seq_len > 0, "seq_len must be positive, got " + std::to_string(seq_len));
  const Pattern p = parse_pattern(spec);
  validate_pattern(p, seq_len);
  return build_plan_from(analyse(p, seq_len), to_string(p), seq_len, head_dim, dtype, device);
}

std::shared_ptr<PlanHandle> build_plan_from(Acsr acsr, std::string spec, int64_t seq_len, int32_t head_dim, DType dtype,
                                            int device) {
  require(seq_len > 0, "seq_len must be positive, got " + std::to_string(seq_len));
  require(head_dim > 0, "head_dim must be positive, got " + std::to_string(head_dim));
  require(device >= -1, "device must be -1 (CPU) or a CUDA ordinal, got " + std::to_string(device));
  auto h = std::make_shared<PlanHandle>();
  h->spec = std::move(spec);
  h->seq_len = seq_len;
  h->head_dim = head_dim;
  h->dtype = dtype;
  h->device = device;
  h->acsr = std::move(acsr);
  if (device < 0) {
    h->cpu = std::make_shared<const Plan>(make_plan(h->acsr));
  } else {
#if SPLAT_WITH_CUDA
    CudaPlanOptions o;
    o.dtype = dtype;
    o.head_dim = head_dim;
    o.device = device;
    h->cuda = plan_cuda(h->acsr, o);
    h->cuda_device = device;
#else
    fail(ErrorCode::Unsupported, "splat was built without CUDA (SPLAT_WITH_CUDA=OFF): no plan for a CUDA device");
#endif
  }
  return h;
}

namespace {
void check_against_plan(const PlanHandle& plan, const TensorView& q) {
  require(q.N() == plan.seq_len, "sequence length N=" + std::to_string(q.N()) +
                                     " differs from the plan's seq_len=" + std::to_string(plan.seq_len));
  require(q.D() == plan.head_dim,
          "head dim D=" + std::to_string(q.D()) + " differs from the plan's head_dim=" + std::to_string(plan.head_dim));
}
}  // namespace

#if SPLAT_WITH_CUDA
namespace {
// The plan's CUDA plan for `device`, compiled there once if the plan was made for another device. backward: a plan
// that also holds the backward kernels (a superset: it replaces the forward-only one, whose forward it shares).
std::shared_ptr<CudaPlan> cuda_plan_for(PlanHandle& plan, int device, bool backward = false) {
  std::lock_guard<std::mutex> lock(plan.mu);
  if (!plan.cuda || plan.cuda_device != device || (backward && !plan.cuda_backward)) {
    CudaPlanOptions o;
    o.dtype = plan.dtype;
    o.head_dim = plan.head_dim;
    o.device = device;
    o.backward = backward || (plan.cuda_backward && plan.cuda_device == device);
    plan.cuda = plan_cuda(plan.acsr, o);
    plan.cuda_device = device;
    plan.cuda_backward = o.backward;
  }
  return plan.cuda;
}
}  // namespace
#endif

size_t attention_workspace_bytes(PlanHandle& plan, int64_t batch, int64_t heads, int device) {
  if (device < 0) return 0;
#if SPLAT_WITH_CUDA
  return cuda_workspace_bytes(*cuda_plan_for(plan, device), batch, heads);
#else
  (void)plan, (void)batch, (void)heads;
  fail(ErrorCode::Unsupported, "splat was built without CUDA (SPLAT_WITH_CUDA=OFF): no CUDA workspace");
#endif
}

void run_plan(PlanHandle& plan, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
              const AttentionOptions& opt, void* stream, void* workspace, size_t workspace_size, float* lse) {
  check_attention_args(q, k, v, out);
  check_against_plan(plan, q);
  if (q.device < 0) {
    std::shared_ptr<const Plan> p;
    {
      std::lock_guard<std::mutex> lock(plan.mu);
      if (!plan.cpu) plan.cpu = std::make_shared<const Plan>(make_plan(plan.acsr));  // CUDA plan used on CPU data
      p = plan.cpu;
    }
    attention_cpu(*p, q, k, v, out, opt, lse);
    return;
  }
#if SPLAT_WITH_CUDA
  require(q.dtype == plan.dtype, std::string("the plan was compiled for ") + dtype_name(plan.dtype) +
                                     " but the tensors are " + dtype_name(q.dtype));
  const std::shared_ptr<CudaPlan> cp = cuda_plan_for(plan, q.device);
  if (workspace) {  // a caller's raw pointer: its declared size must be enough; single-pass plans need none
    const size_t need = cuda_workspace_bytes(*cp, q.B(), q.H());
    require(workspace_size >= need, "workspace of " + std::to_string(workspace_size) +
                                        " bytes is too small: the plan needs " + std::to_string(need));
    if (need == 0) workspace = nullptr;
  }
  attention_cuda(*cp, q, k, v, out, opt, stream, workspace, lse);
#else
  (void)stream, (void)workspace, (void)workspace_size, (void)lse;
  fail(ErrorCode::Unsupported, "splat was built without CUDA (SPLAT_WITH_CUDA=OFF): cannot run on a CUDA device");
#endif
}

size_t backward_workspace_bytes(PlanHandle& plan, int64_t batch, int64_t heads, int device, bool deterministic) {
  if (device < 0) return 0;
#if SPLAT_WITH_CUDA
  return cuda_backward_workspace_bytes(*cuda_plan_for(plan, device, true), batch, heads, deterministic);
#else
  (void)plan, (void)batch, (void)heads, (void)deterministic;
  fail(ErrorCode::Unsupported, "splat was built without CUDA (SPLAT_WITH_CUDA=OFF): no CUDA workspace");
#endif
}

void run_backward(PlanHandle& plan, const BackwardTensors& t, const AttentionOptions& opt, void* stream,
                  void* workspace, size_t workspace_size) {
  check_attention_args(t.q, t.k, t.v, t.out);
  check_attention_args(t.q, t.k, t.v, t.dout);
  check_attention_args(t.dq, t.dk, t.dv, t.out);
  check_against_plan(plan, t.q);
  require(t.lse != nullptr, "backward needs the forward's lse");
  if (t.q.device < 0) {
    std::shared_ptr<const Plan> p;
    {
      std::lock_guard<std::mutex> lock(plan.mu);
      if (!plan.cpu || !plan.cpu->transposed) {  // the transposed plan is built once, on the first backward
        Plan full = plan.cpu ? *plan.cpu : make_plan(plan.acsr);
        add_transpose(full);
        plan.cpu = std::make_shared<const Plan>(std::move(full));
      }
      p = plan.cpu;
    }
    attention_backward_cpu(*p, t, opt);
    return;
  }
#if SPLAT_WITH_CUDA
  require(t.q.dtype == plan.dtype, std::string("the plan was compiled for ") + dtype_name(plan.dtype) +
                                       " but the tensors are " + dtype_name(t.q.dtype));
  const std::shared_ptr<CudaPlan> cp = cuda_plan_for(plan, t.q.device, true);
  const size_t need = cuda_backward_workspace_bytes(*cp, t.q.B(), t.q.H(), opt.deterministic);
  require(!need || (workspace && workspace_size >= need), "backward workspace of " + std::to_string(workspace_size) +
                                                              " bytes is too small: the plan needs " +
                                                              std::to_string(need));
  attention_backward_cuda(*cp, t, opt, stream, need ? workspace : nullptr);
#else
  (void)stream, (void)workspace, (void)workspace_size;
  fail(ErrorCode::Unsupported, "splat was built without CUDA (SPLAT_WITH_CUDA=OFF): cannot run on a CUDA device");
#endif
}

namespace {
std::mutex registry_mu;
std::vector<std::shared_ptr<PlanHandle>>& registry() {
  static std::vector<std::shared_ptr<PlanHandle>> r;
  return r;
}
}  // namespace

int64_t register_plan(const std::shared_ptr<PlanHandle>& plan) {
  std::lock_guard<std::mutex> lock(registry_mu);
  if (plan->id >= 0) return plan->id;
  plan->id = int64_t(registry().size());
  registry().push_back(plan);
  return plan->id;
}

PlanHandle* find_plan(int64_t id) {
  std::lock_guard<std::mutex> lock(registry_mu);
  if (id < 0 || id >= int64_t(registry().size())) return nullptr;
  return registry()[size_t(id)].get();
}

TensorView make_view(void* data, DType dtype, int ndim, const int64_t* shape, const int64_t* strides, int layout,
                     int device, const char* name) {
  const std::string who(name);
  require(ndim >= 3,
          who + ": expected an array of rank >= 3 ([B, H, N, D] or [H, N, D]), got rank " + std::to_string(ndim));
  require(layout == 0 || layout == 1, "layout must be 'bhnd' or 'bnhd'");
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  const int a = ndim - 3;  // first of the three trailing dims
  // Trailing dims: layout 0 = (H, N, D), layout 1 = (N, H, D).
  const int ih = layout == 0 ? a : a + 1, in = layout == 0 ? a + 1 : a;
  t.shape[1] = shape[ih], t.stride[1] = strides[ih];
  t.shape[2] = shape[in], t.stride[2] = strides[in];
  t.shape[3] = shape[a + 2], t.stride[3] = strides[a + 2];
  if (t.shape[3] == 1) t.stride[3] = 1;  // a size-1 dim's stride is meaningless
  // Leading dims fold into B when they are jointly strided (true for contiguous and vmapped arrays).
  int64_t b = 1, bstride = 0;
  for (int i = a - 1; i >= 0; --i) {
    if (shape[i] == 1) continue;
    if (b == 1) {
      bstride = strides[i];
    } else {
      require(strides[i] == bstride * b, who + ": leading (batch) dimensions cannot be folded into one");
    }
    b *= shape[i];
  }
  t.shape[0] = b;
  t.stride[0] = b == 1 ? 0 : bstride;
  return t;
}

}  // namespace splat::py
