// attention_backward_cuda: the preprocess (Delta, lse * log2 e into the caller's workspace), the dQ passes over the
// forward plan, then the dK/dV passes over the transposed plan, all on the caller's stream: no allocation, no
// synchronisation (CUDA-graph capturable), no atomics (each gradient row is written by one CTA per pass, passes in
// order), so the gradients are bitwise identical run to run. With opt.deterministic = false (sm_90a) no dQ pass runs:
// the dK/dV passes add dQ into an fp32 accumulator in the workspace (atomics, so the low bits vary run to run) and
// a last kernel casts it into dq.
#include "backends/cuda/cuda_plan.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {
size_t align16(size_t x) {
  return (x + 15) / 16 * 16;
}
bool atomic_dq(const CudaPlan& plan, bool deterministic) {
  return !deterministic && jit::backward_atomic_dq(plan.base);
}
}  // namespace

size_t cuda_backward_workspace_bytes(const CudaPlan& plan, int64_t batch, int64_t heads, bool deterministic) {
  if (batch < 0 || heads < 0)
    fail(ErrorCode::InvalidArgument, "cuda_backward_workspace_bytes: negative batch or heads");
  const size_t rows = size_t(batch * heads * plan.plan.acsr.n);
  if (!atomic_dq(plan, deterministic)) return 2 * rows * sizeof(float);  // Delta and lse * log2 e per query row
  // + the fp32 dQ accumulator of the non-deterministic mode, 16-byte aligned
  return align16(2 * rows * sizeof(float)) + rows * size_t(plan.options.head_dim) * sizeof(float);
}

namespace {
void same_shape(const TensorView& a, const TensorView& like, const char* name, const char* like_name) {
  if (a.dtype != like.dtype)
    fail(ErrorCode::InvalidArgument, std::string(name) + " must have " + like_name + "'s dtype (" +
                                         dtype_name(like.dtype) + "), got " + dtype_name(a.dtype));
  for (int d = 0; d < 4; ++d)
    if (a.shape[d] != like.shape[d])
      fail(ErrorCode::InvalidArgument, std::string(name) + " must have " + like_name + "'s shape");
}
}  // namespace

void attention_backward_cuda(const CudaPlan& plan, const BackwardTensors& t, const AttentionOptions& opt, void* stream,
                             void* workspace) {
  if (!plan.plan.transposed)
    fail(ErrorCode::InvalidArgument,
         "attention_backward_cuda: the CUDA plan was made without CudaPlanOptions::backward = true");
  check_attention_args(t.q, t.k, t.v, t.out);
  same_shape(t.dout, t.out, "dout", "out");
  same_shape(t.dq, t.q, "dq", "q");
  same_shape(t.dk, t.k, "dk", "k");
  same_shape(t.dv, t.v, "dv", "v");
  const int dev = plan.options.device;
  dev::AttnParams p = cuda::base_params(plan, t.q, t.k, t.v, opt);
  cuda::check_device_view(t.out, "out", dev, false);  // read in 16-byte chunks by the preprocess
  cuda::check_device_view(t.dout, "dout", dev, false);
  cuda::check_device_view(t.dq, "dq", dev, true);
  cuda::check_device_view(t.dk, "dk", dev, true);
  cuda::check_device_view(t.dv, "dv", dev, true);
  if (!t.lse || reinterpret_cast<uintptr_t>(t.lse) % 4 != 0)
    fail(ErrorCode::InvalidArgument, "attention_backward_cuda: lse (the forward's, [B, H, N] float32) is required");
  const int64_t B = t.q.B(), H = t.q.H(), N = t.q.N(), rows = B * H * N;
  cuda::check_disjoint_outputs({{&t.dq, "dq"}, {&t.dk, "dk"}, {&t.dv, "dv"}},
                               {{&t.q, "q"}, {&t.k, "k"}, {&t.v, "v"}, {&t.out, "out"}, {&t.dout, "dout"}}, t.lse,
                               size_t(rows), false);
  if (!workspace || reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    fail(ErrorCode::InvalidArgument, "attention_backward_cuda: needs a 16-byte aligned workspace of " +
                                         std::to_string(cuda_backward_workspace_bytes(plan, B, H, opt.deterministic)) +
                                         " bytes (cuda_backward_workspace_bytes)");
  if (rows == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const bool pad = opt.key_lengths != nullptr;
  const cuda::Variant var = opt.deterministic ? (pad ? cuda::kBackwardPad : cuda::kBackward)
                                              : (pad ? cuda::kBackwardFastPad : cuda::kBackwardFast);
  const cuda::KernelSet& ks = cuda::kernel_set(plan, var, s);

  p.o = t.out.data, p.o_sb = t.out.stride[0], p.o_sh = t.out.stride[1], p.o_sn = t.out.stride[2];
  p.dout = t.dout.data, p.do_sb = t.dout.stride[0], p.do_sh = t.dout.stride[1], p.do_sn = t.dout.stride[2];
  p.dq = t.dq.data, p.dq_sb = t.dq.stride[0], p.dq_sh = t.dq.stride[1], p.dq_sn = t.dq.stride[2];
  p.dk = t.dk.data, p.dk_sb = t.dk.stride[0], p.dk_sh = t.dk.stride[1], p.dk_sn = t.dk.stride[2];
  p.dv = t.dv.data, p.dv_sb = t.dv.stride[0], p.dv_sh = t.dv.stride[1], p.dv_sn = t.dv.stride[2];
  p.lse = const_cast<float*>(t.lse);  // read only by the preprocess
  p.delta = static_cast<float*>(workspace);
  p.lse2 = p.delta + rows;

  if (atomic_dq(plan, opt.deterministic))
    p.dq_acc =
        static_cast<float*>(static_cast<void*>(static_cast<unsigned char*>(workspace) + align16(2 * size_t(rows) * 4)));

  // Per row (preprocess, dQ cast): one thread per 16-byte chunk.
  const int64_t chunks = t.q.D() / 8, row_threads = ks.specs[0].threads();
  const int64_t row_blocks = (rows * chunks + row_threads - 1) / row_threads;
  if (row_blocks > INT32_MAX) fail(ErrorCode::Unsupported, "CUDA backend: too many rows for one launch");
  void* args[] = {&p};
  size_t dq_pass = 0, dkdv_pass = 0;
  for (size_t i = 0; i < ks.specs.size(); ++i) {
    const jit::KernelSpec& spec = ks.specs[i];
    switch (spec.direction) {
      case jit::Direction::BackwardPre:
      case jit::Direction::BackwardDqCast:
        cuda::check(cudaLaunchKernel(reinterpret_cast<const void*>(ks.kernels[i]), dim3(unsigned(row_blocks)),
                                     dim3(unsigned(row_threads)), args, 0, s),
                    spec.direction == jit::Direction::BackwardPre ? "launching the backward preprocess kernel"
                                                                  : "launching the backward dQ cast kernel");
        break;
      case jit::Direction::BackwardDq:
        if (dq_pass == 0) cuda::set_tables(p, plan.fwd);
        cuda::launch_pass(p, plan.fwd, dq_pass++, B * H, ks.kernels[i], spec, s);
        break;
      case jit::Direction::BackwardDkDv:
        if (dkdv_pass == 0) cuda::set_tables(p, plan.bwd);
        cuda::launch_pass(p, plan.bwd, dkdv_pass++, B * t.k.H(), ks.kernels[i], spec, s);
        break;
      case jit::Direction::Forward:
      case jit::Direction::Decode:
      case jit::Direction::DecodeMerge: break;
    }
  }
}

}  // namespace splat
