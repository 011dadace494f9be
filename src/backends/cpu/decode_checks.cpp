#include <omp.h>

#include <cmath>
#include <string>

#include "checks.hpp"
#include "common/int_math.hpp"
#include "decode_common.hpp"
#include "splat/error.hpp"

namespace splat::cpu {

DecodeShape check_decode(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                         const AttentionOptions& opt, const float* lse, const char* what) {
  const std::string w(what);
  require(!plan.program.empty(), w + ": empty decode plan (use make_decode_plan)");
  require(q.device < 0 && out.device < 0 && cache.k.device < 0 && cache.v.device < 0,
          w + " needs host tensors (device = -1)");
  const TensorView &k = cache.k, &v = cache.v;
  for (const TensorView* t : {&q, &out, &k, &v}) {
    require(t->data != nullptr, w + ": null tensor data");
    require(t->stride[3] == 1, w + ": the head dimension must be contiguous (stride 1)");
    for (int a = 0; a < 3; ++a) require(t->stride[a] >= 0, w + ": negative strides are not supported");
  }
  require(q.dtype == k.dtype && q.dtype == v.dtype && q.dtype == out.dtype,
          w + ": q, the cache and out must share one dtype");
  require(q.dtype == plan.options.dtype, w + ": the plan was made for " + dtype_name(plan.options.dtype) +
                                             " but the tensors are " + dtype_name(q.dtype));
  DecodeShape s;
  s.B = q.B(), s.H = q.H(), s.T = q.N(), s.D = q.D(), s.Hkv = k.H();
  require(s.B >= 1 && s.H >= 1 && s.D >= 1, w + ": q must be [B, H, T, D] with positive sizes");
  require(s.T >= 1 && s.T <= 64, w + ": T (queries per sequence) must be in [1, 64], got " + std::to_string(s.T));
  require(s.D == plan.options.head_dim, w + ": the plan was made for head_dim " +
                                            std::to_string(plan.options.head_dim) + ", q has " + std::to_string(s.D));
  for (int a = 0; a < 4; ++a) require(out.shape[a] == q.shape[a], w + ": out must have q's shape [B, H, T, D]");
  for (int a = 0; a < 4; ++a) require(k.shape[a] == v.shape[a], w + ": k and v caches must have one shape");
  require(s.Hkv >= 1 && s.H % s.Hkv == 0,
          w + ": H = " + std::to_string(s.H) + " is not a multiple of the cache's H_kv = " + std::to_string(s.Hkv));
  require(k.D() == s.D, w + ": the cache's head dim differs from q's");
  require(opt.key_lengths == nullptr, w + ": key_lengths does not apply (the cache lengths are the key lengths)");
  require(opt.threads >= 0 && opt.threads <= 4096,
          "threads must be 0 (all hardware threads) or 1 ... 4096, got " + std::to_string(opt.threads));
  require(std::isfinite(opt.scale), "scale must be finite");
  require(cache.seqlens != nullptr, w + ": seqlens is null");
  s.group = s.H / s.Hkv;
  if (cache.block_table) {
    s.page = k.N();
  } else {
    require(k.B() == s.B,
            w + ": the contiguous cache has " + std::to_string(k.B()) + " sequences but q has " + std::to_string(s.B));
  }
  decode_check_cache(cache, s.B);  // lengths, starts, the block-table entries the sequences use
  const Memory mq = memory_of(q, "q"), mk = memory_of(k, "k_cache"), mv = memory_of(v, "v_cache");
  check_disjoint(memory_of(out, "out"), {mq, mk, mv});
  check_disjoint(memory_of(lse, s.B * s.H * s.T, "lse"), {mq, mk, mv, memory_of(out, "out")});
  s.scale = opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(s.D));
  s.threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  return s;
}

}  // namespace splat::cpu
