// Host side of the CUDA decode: checks what can be checked without reading device memory, fills the launch
// parameters (the row program travels in them), launches. No allocation, no synchronisation.
#include <cmath>
#include <string>

#include "serving/cuda/decode_launch.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {

void decode_cuda(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                 const AttentionOptions& opt, void* stream, float* lse) {
  using namespace cudadecode;
  const TensorView &k = cache.k, &v = cache.v;
  for (const TensorView* x : {&q, &out, &k, &v})
    require(x->device >= 0 && x->device == q.device && x->data, "decode_cuda needs device tensors, all on one device");
  require(q.dtype == k.dtype && q.dtype == v.dtype && q.dtype == out.dtype && q.dtype == plan.options.dtype,
          "decode_cuda: q, the cache, out and the plan must share one dtype");
  require(q.dtype != DType::F64, "decode_cuda: float64 runs on the CPU only");
  require(q.D() == plan.options.head_dim, "decode_cuda: the plan's head dim differs from q's");
  if (q.D() != 64 && q.D() != 128) fail(ErrorCode::Unsupported, "decode_cuda: head dims 64 and 128 only (for now)");
  if (plan.program.empty() || int(plan.program.size()) > kMaxInstr || plan.max_runs > kMaxRuns)
    fail(ErrorCode::Unsupported, "decode_cuda: pattern '" + plan.pattern + "' is too complex for this kernel (" +
                                     std::to_string(plan.program.size()) + " instructions, " +
                                     std::to_string(plan.max_runs) + " runs per row)");
  const int64_t B = q.B(), H = q.H(), T = q.N(), Hkv = k.H();
  require(B >= 1 && T >= 1 && T <= 64 && Hkv >= 1 && H % Hkv == 0 && B * Hkv < (int64_t(1) << 31),
          "decode_cuda: q must be [B, H, T, D] with T in [1, 64] and H a multiple of the cache's H_kv");
  for (int d = 0; d < 4; ++d)
    require(out.shape[d] == q.shape[d] && k.shape[d] == v.shape[d], "decode_cuda: out like q, k_cache like v_cache");
  for (const TensorView* x : {&q, &out, &k, &v}) require(x->stride[3] == 1, "decode_cuda: D must be contiguous");
  require(k.D() == q.D() && cache.seqlens, "decode_cuda: the cache's head dim differs from q's, or no seqlens");
  require(opt.key_lengths == nullptr,
          "decode_cuda: key_lengths does not apply (the cache lengths are the key lengths)");
  require(std::isfinite(opt.scale), "scale must be finite");
  Args a{};
  a.q = q.data, a.k = k.data, a.v = v.data, a.o = out.data, a.lse = lse;
  a.q_sb = q.stride[0], a.q_sh = q.stride[1], a.q_st = q.stride[2];
  a.o_sb = out.stride[0], a.o_sh = out.stride[1], a.o_st = out.stride[2];
  a.k_sb = k.stride[0], a.k_sh = k.stride[1], a.k_sn = k.stride[2];
  a.v_sb = v.stride[0], a.v_sh = v.stride[1], a.v_sn = v.stride[2];
  a.seqlens = cache.seqlens, a.table = cache.block_table, a.starts = cache.starts;
  a.pool = k.B();
  if (cache.block_table) {
    require(cache.max_pages >= 1 && k.N() >= 1, "decode_cuda: max_pages and the page size must be positive");
    a.max_pages = cache.max_pages, a.page = k.N(), a.capacity = cache.max_pages * k.N();
  } else {
    require(k.B() == B, "decode_cuda: the contiguous cache's batch differs from q's");
    a.capacity = k.N();
  }
  a.B = int(B), a.H = int(H), a.Hkv = int(Hkv), a.T = int(T), a.G = int(H / Hkv), a.n_instr = int(plan.program.size());
  a.q_scale = float((opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(q.D()))) * 1.4426950408889634);
  for (size_t i = 0; i < plan.program.size(); ++i) a.prog[i] = plan.program[i];
  const Elem e = q.dtype == DType::BF16 ? Elem::BF16 : q.dtype == DType::F16 ? Elem::F16 : Elem::F32;
  if (const char* err = launch(a, e, int(q.D()), stream))
    fail(ErrorCode::Cuda, std::string("CUDA error in the decode kernel launch: ") + err);
}

}  // namespace splat
