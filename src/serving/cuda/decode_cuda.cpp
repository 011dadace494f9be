// Host side of the CUDA decode: checks what can be checked without reading device memory, picks the split count
// (from the shapes, the capacity and the device, never from the lengths), fills the launch parameters (the row
// program travels in them), launches. No allocation, no synchronisation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "serving/cuda/decode_launch.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

using namespace cudadecode;

constexpr int64_t kMinKeysPerSplit = 256;  // fewer keys per CTA do not pay for the merge

struct Launch {
  Args a{};
  Elem e = Elem::F32;
  bool split_kernel = false;  // the split-KV kernel (else the first one)
  int splits = 1;
};

bool aligned16(const TensorView& t) {
  const int64_t es = int64_t(dtype_size(t.dtype));
  if (reinterpret_cast<uintptr_t>(t.data) % 16) return false;
  for (int d = 0; d < 3; ++d)
    if ((t.stride[d] * es) % 16) return false;
  return true;
}

// Which kernel: SPLAT_DECODE_KERNEL=split or =simple, else kSplitByDefault; rows that are not 16-byte aligned
// always take the first (simple) one.
constexpr bool kSplitByDefault = true;  // GPU-tested (H200): tests/cpp/test_cuda_decode.cpp, tests/python
bool want_split() {
  const char* v = std::getenv("SPLAT_DECODE_KERNEL");
  if (v && std::strcmp(v, "split") == 0) return true;
  if (v && std::strcmp(v, "simple") == 0) return false;
  return kSplitByDefault;
}

// Keys of the longest row the cache can hold, as the row at the capacity has them (an estimate for the split count).
int64_t keys_bound(const DecodePlan& plan, int64_t capacity) {
  if (capacity <= 0) return 0;
  const int64_t n = std::min<int64_t>(capacity, (int64_t(1) << 31) - 1);
  std::vector<KeyRun> runs;
  decode_row_runs(plan, n - 1, n, runs);
  int64_t keys = 0;
  for (const KeyRun& r : runs) keys += dev::decode_run_count(r);
  return std::min(keys, n);
}

Launch prepare(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
               const AttentionOptions& opt, float* lse) {
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
  require(B >= 1 && T >= 1 && T <= 64 && Hkv >= 1 && H % Hkv == 0 && B * H * T < (int64_t(1) << 31),
          "decode_cuda: q must be [B, H, T, D] with T in [1, 64] and H a multiple of the cache's H_kv");
  for (int d = 0; d < 4; ++d)
    require(out.shape[d] == q.shape[d] && k.shape[d] == v.shape[d], "decode_cuda: out like q, k_cache like v_cache");
  for (const TensorView* x : {&q, &out, &k, &v}) {
    require(x->stride[3] == 1, "decode_cuda: D must be contiguous");
    for (int d = 0; d < 3; ++d) require(x->stride[d] >= 0, "decode_cuda: negative strides are not supported");
  }
  require(k.D() == q.D() && cache.seqlens, "decode_cuda: the cache's head dim differs from q's, or no seqlens");
  require(opt.key_lengths == nullptr,
          "decode_cuda: key_lengths does not apply (the cache lengths are the key lengths)");
  require(std::isfinite(opt.scale), "scale must be finite");
  Launch l;
  Args& a = l.a;
  a.q = q.data, a.k = k.data, a.v = v.data, a.o = out.data, a.lse = lse;
  a.q_sb = q.stride[0], a.q_sh = q.stride[1], a.q_st = q.stride[2];
  a.o_sb = out.stride[0], a.o_sh = out.stride[1], a.o_st = out.stride[2];
  a.k_sb = k.stride[0], a.k_sh = k.stride[1], a.k_sn = k.stride[2];
  a.v_sb = v.stride[0], a.v_sh = v.stride[1], a.v_sn = v.stride[2];
  a.seqlens = cache.seqlens, a.table = cache.block_table, a.starts = cache.starts;
  a.pool = k.B();
  if (cache.block_table) {
    require(cache.max_pages >= 1 && k.N() >= 1, "decode_cuda: max_pages and the page size must be positive");
    require(cache.max_pages <= (int64_t(1) << 31) / k.N(), "decode_cuda: max_pages * page size must be below 2^31");
    a.max_pages = cache.max_pages, a.page = k.N(), a.capacity = cache.max_pages * k.N();
  } else {
    require(k.B() == B, "decode_cuda: the contiguous cache's batch differs from q's");
    a.capacity = k.N();
  }
  a.B = int(B), a.H = int(H), a.Hkv = int(Hkv), a.T = int(T), a.G = int(H / Hkv), a.n_instr = int(plan.program.size());
  a.q_scale = float((opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(q.D()))) * 1.4426950408889634);
  for (size_t i = 0; i < plan.program.size(); ++i) a.prog[i] = plan.program[i];
  l.e = q.dtype == DType::BF16 ? Elem::BF16 : q.dtype == DType::F16 ? Elem::F16 : Elem::F32;
  l.split_kernel = want_split() && aligned16(q) && aligned16(out) && aligned16(k) && aligned16(v);
  if (!l.split_kernel) return l;
  const int g = std::min(a.G, kMaxGroup);
  a.GP = g == 1 ? 1 : g == 2 ? 2 : g <= 4 ? 4 : 8;
  a.NG = (a.G + a.GP - 1) / a.GP;
  // SPLAT_DECODE_DPL=8: 8 dims per lane (three CTAs per SM). Measured on the H200 (docs/BENCHMARKS-serving.md): 1.4x
  // faster at B = 8 (likely the wave count: its 320 CTAs fit in one wave at three per SM, not at two), 1.2x slower at
  // B = 1 and 1.4x slower at B = 64, so 16 stays the default.
  const char* dpl = std::getenv("SPLAT_DECODE_DPL");
  a.dpl = dpl && std::strcmp(dpl, "8") == 0 ? 8 : 16;
  // Splits: enough CTAs for two per multiprocessor, each with at least kMinKeysPerSplit keys of the longest row.
  const int64_t ctas = B * Hkv * a.NG * T, target = 2 * int64_t(device_sms(q.device));
  const int64_t by_keys = std::max<int64_t>(1, keys_bound(plan, a.capacity) / kMinKeysPerSplit);
  l.splits = int(std::clamp<int64_t>((target + ctas - 1) / ctas, 1, std::min<int64_t>(kMaxSplits, by_keys)));
  return l;
}

size_t workspace_for(const Launch& l, int64_t D) {
  if (!l.split_kernel || l.splits <= 1) return 0;
  const size_t rows = size_t(l.a.B) * size_t(l.a.H) * size_t(l.a.T) * size_t(l.splits);
  return rows * size_t(D) * 4 + rows * 8;  // acc [rows, D], then (max, sum) [rows, 2]
}

}  // namespace

size_t decode_cuda_workspace_bytes(const DecodePlan& plan, const TensorView& q, const KvCache& cache) {
  const Launch l = prepare(plan, q, cache, q, {}, nullptr);
  return workspace_for(l, q.D());
}

void decode_cuda(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                 const AttentionOptions& opt, void* stream, float* lse, const DecodeCudaWorkspace& ws) {
  Launch l = prepare(plan, q, cache, out, opt, lse);
  l.a.status = ws.status;
  const size_t need = workspace_for(l, q.D());
  if (l.split_kernel) {
    l.a.S = 1;
    if (need > 0 && ws.data && ws.bytes >= need) {
      require(reinterpret_cast<uintptr_t>(ws.data) % 16 == 0, "decode_cuda: the workspace must be 16-byte aligned");
      l.a.S = l.splits;
      l.a.ws_acc = static_cast<float*>(ws.data);
      l.a.ws_ml = l.a.ws_acc + size_t(l.a.B) * l.a.H * l.a.T * l.a.S * size_t(q.D());
    }
  }
  launch_jit(l.a, l.e, int(q.D()), l.split_kernel, cache.block_table != nullptr, q.device, stream);
}

}  // namespace splat
