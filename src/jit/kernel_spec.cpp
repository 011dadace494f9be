#include "jit/kernel_spec.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>
#include <utility>

#include "jit/decode_spec.hpp"
#include "splat/error.hpp"

namespace splat::jit {

void check_supported(DType dtype, int head_dim) {
  if (dtype != DType::BF16 && dtype != DType::F16)
    fail(ErrorCode::Unsupported,
         std::string("CUDA backend: dtype ") + dtype_name(dtype) + " is not supported (use bf16 or f16)");
  if (head_dim != 32 && head_dim != 64 && head_dim != 96 && head_dim != 128 && head_dim != 256)
    fail(ErrorCode::Unsupported,
         "CUDA backend: head dim " + std::to_string(head_dim) + " is not supported (use 32, 64, 96, 128 or 256)");
}

void check_backward_supported(int head_dim) {
  if (head_dim != 64 && head_dim != 128)
    fail(ErrorCode::Unsupported,
         "CUDA backward: head dim " + std::to_string(head_dim) +
             " is not supported (the backward takes 64 or 128; the forward also 32, 96 and 256)");
}

namespace {
// Overlap, register cap and ring depth of a wgmma spec, from its head dim, warps and key step (measured on H100,
// bench/NOTES-cuda.md v5, v6); SPLAT_CUDA_OVERLAP=0|1 and SPLAT_CUDA_MINBLOCKS override.
void apply_wgmma_rules(KernelSpec& s) {
  s.block_m = 16 * s.mt * s.warps;
  const char* mb = std::getenv("SPLAT_CUDA_MINBLOCKS");
  if (mb && *mb) s.min_blocks = std::atoi(mb);
  if (!s.wgmma) return;
  // The next step's S on the tensor cores during the softmax: 4-10% faster, except for 64-row tiles at D=64,
  // where its 3-buffer ring allows 3 CTAs per SM instead of 4 (strided +25%, longformer +3%). D=32 follows D=64.
  // D=256: off (ptxas on CUDA 13.0: 252-255 registers with it, and 1.5 KB of spills in strided's two-segment
  // continuation; without it 236 and 16 bytes).
  s.overlap = !(s.head_dim <= 64 && s.warps == 4) && s.head_dim != 256;
  if (const char* o = std::getenv("SPLAT_CUDA_OVERLAP"); o && *o) s.overlap = std::string(o) != "0";
  if (s.overlap) s.stages = std::max(s.stages, 3);
  // D=64 with 64-key steps: 128 registers per thread (16 warps per SM) measured 7-10% faster than fewer CTAs.
  // 128-key steps hold 64 score + 32 P registers: uncapped.
  s.min_blocks = mb && *mb ? std::atoi(mb) : s.head_dim <= 64 && s.block_n == 64 ? 16 / s.warps : 0;
}
}  // namespace

KernelSpec base_spec(DType dtype, int head_dim, const std::string& arch) {
  check_supported(dtype, head_dim);
  KernelSpec s;
  s.dtype = dtype;
  s.head_dim = head_dim;
  s.arch = arch.empty() ? "sm_90" : arch;
  s.warps = 4;
  // Measured on H100 (bench/NOTES-cuda.md, v3): 64x64 tiles, 2 stages; at D=64 capping registers for
  // 3 CTAs per SM helps a little.
  s.mt = 1;
  s.block_n = 64;
  s.stages = 2;
  s.min_blocks = head_dim <= 64 ? 3 : 0;
  // D=32 and D=96 take the tiles of the padded width (64, 128; attention_parts.cuh padded_dim). D=256: a 64x256
  // fp32 accumulator is 128 registers per thread; mma.sync takes 32-key steps (16 score registers, 97 KB of shared
  // memory: fits sm_80 .. sm_89), wgmma 64-key steps (its S is 32 registers; 2 stages, no overlap: 161 KB).
  if (head_dim == 256 && s.arch != "sm_90a") s.block_n = 32;
  // Tuning override for benchmarks: SPLAT_CUDA_TILE=BMxBN with BM in {64, 128}, BN in {32, 64, 128}.
  if (const char* t = std::getenv("SPLAT_CUDA_TILE"); t && *t) {
    int bm = 0, bn = 0;
    if (std::sscanf(t, "%dx%d", &bm, &bn) != 2 || (bm != 64 && bm != 128) || (bn != 32 && bn != 64 && bn != 128))
      fail(ErrorCode::InvalidArgument,
           std::string("SPLAT_CUDA_TILE must be BMxBN (BM 64|128, BN 32|64|128), got ") + t);
    s.mt = bm / 64;
    s.block_n = bn;
  }
  // Hopper: wgmma when compiling for sm_90a (plan_cuda picks sm_90a on sm_90 devices); SPLAT_CUDA_WGMMA=0 opts out.
  const char* wg = std::getenv("SPLAT_CUDA_WGMMA");
  s.wgmma = s.arch == "sm_90a" && s.block_n >= 64 && !(wg && std::string(wg) == "0");
  // wgmma: a 128-row tile is two warpgroups of 64 rows sharing each K/V tile (half the K/V fills per row).
  if (s.wgmma && s.mt == 2) s.mt = 1, s.warps = 8;
  if (const char* m = std::getenv("SPLAT_CUDA_STAGES"); m && *m) s.stages = std::max(2, std::min(4, std::atoi(m)));
  apply_wgmma_rules(s);
  return s;
}

namespace {
// Mean and longest task of a plan's first pass, in base.block_n-key steps.
std::pair<int64_t, int64_t> task_steps(const KernelSpec& base, const Pass& pass) {
  int64_t total = 0, most = 0;
  for (const TileTask& t : pass.tasks) {
    int64_t steps = 0;
    for (int32_t i = t.span_begin; i < t.span_end; ++i)
      steps += (pass.spans[size_t(i)].key_count + base.block_n - 1) / base.block_n;
    total += steps;
    most = std::max(most, steps);
  }
  return {pass.tasks.empty() ? 0 : total / int64_t(pass.tasks.size()), most};
}
bool contiguous_spans(const Plan& plan) {
  for (const Pass& pass : plan.passes)
    for (const KeySpan& sp : pass.spans)
      if (sp.kind == SpanKind::Gather || (sp.kind == SpanKind::Affine && sp.key_stride != 1)) return false;
  return true;
}
}  // namespace

bool two_warpgroups_pay(const KernelSpec& base, const Plan& plan) {
  if (!base.wgmma || base.warps != 4 || std::getenv("SPLAT_CUDA_TILE")) return false;
  if (base.head_dim == 256) return false;  // not measured; 128 rows and 2 K/V stages would take 193 KB
  if (plan.passes.size() != 1 || plan.passes[0].tasks.empty()) return false;
  for (const KeySpan& sp : plan.passes[0].spans)
    if (sp.kind == SpanKind::Gather) return false;
  const auto [mean, most] = task_steps(base, plan.passes[0]);
  return mean >= 16 && most <= 2 * mean;
}

KernelSpec two_warpgroup_spec(const KernelSpec& base) {
  KernelSpec s = base;
  s.warps = 8;
  // D=128: 128-key steps (one CTA per SM either way; half the barriers and rescales per key): window 0.836 ->
  // 0.768 ms at N=16384 (v6). D=64 keeps 64 keys: 128 would need 216 registers, one CTA per SM (0.545 ms).
  if (s.head_dim == 128 || s.head_dim == 96) s.block_n = 128;
  apply_wgmma_rules(s);
  return s;
}


bool tma_fits(const KernelSpec& base, const Plan& plan) {
  if (!base.wgmma || base.direction != Direction::Forward || !contiguous_spans(plan)) return false;
  // D=32: a 64-column TMA box is wider than the tensor; D=256: the consumers' 128 accumulator + 32 score registers
  // exceed the 168 ptxas keeps them to (see tma_spec). Both take the cp.async kernels.
  if (base.head_dim == 32 || base.head_dim == 256) return false;
  const char* e = std::getenv("SPLAT_CUDA_TMA");
  if (e && *e) return std::string(e) == "1";
  // Default: only where measured faster (H200, bench/NOTES-cuda.md v8): one pass of even tasks (none over twice
  // the mean), at D=128 from 4 steps of 64 keys per task (window, causal_window, blocked at N=4096 and 16384,
  // dense and causal at 8192: 6-22% faster), at D=64 from 16 (the same bands at N=16384: 4-9%; at N=4096 the
  // 64-row kernels with 4 CTAs per SM are 4-22% faster). Longformer and bigbird (uneven) were not measured.
  if (std::getenv("SPLAT_CUDA_TILE") || plan.passes.size() != 1 || plan.passes[0].tasks.empty()) return false;
  const auto [mean, most] = task_steps(base, plan.passes[0]);
  return mean >= (base.head_dim >= 96 ? 4 : 16) && most <= 2 * mean;
}

KernelSpec tma_spec(const KernelSpec& base) {
  KernelSpec s = base;
  s.warps = 8, s.mt = 1, s.block_m = 128;
  // 128-key steps at D=64; 64 at D=128, where ptxas (CUDA 13.0) keeps the consumers within the entry register count
  // (168 for 384 threads) despite setmaxnreg, and 128-key steps spill ~470 bytes there. SPLAT_CUDA_TMA_BN=64|128.
  s.block_n = s.head_dim <= 64 ? 128 : 64;
  if (const char* e = std::getenv("SPLAT_CUDA_TMA_BN"); e && *e) s.block_n = std::string(e) == "64" ? 64 : 128;
  s.tma = true, s.overlap = true, s.min_blocks = 0;
  const char* pp = std::getenv("SPLAT_CUDA_PINGPONG");
  s.pingpong = !(pp && std::string(pp) == "0");
  // Ring depth: as many K/V buffers as fit next to Q in 227 KB (D=128, 128 keys: 3; D=64: 4).
  const size_t dp = size_t(padded_dim(s.head_dim)), tile = size_t(s.block_n) * dp * 2;
  s.stages = int(std::min<size_t>(4, (227 * 1024 - 128 * dp * 2 - 2048) / (2 * tile)));
  if (const char* m = std::getenv("SPLAT_CUDA_STAGES"); m && *m)
    s.stages = std::max(2, std::min(s.stages, std::atoi(m)));
  return s;
}

KernelSpec pass_spec(const KernelSpec& base, const Plan& plan, size_t pass_index) {
  KernelSpec s = base;
  const Pass& pass = plan.passes.at(pass_index);
  for (const KeySpan& sp : pass.spans) {
    if (sp.kind == SpanKind::Affine && !sp.full) s.mask_affine = true;
    if (sp.kind == SpanKind::Affine && !sp.full && sp.segment2 >= 0) s.two_segments = true;
    if (sp.kind == SpanKind::Block) s.has_block = true;
    if (sp.kind == SpanKind::Gather) s.has_gather = true;
  }
  s.continuation = pass_index > 0;
  s.write_lse = pass_index + 1 < plan.passes.size();
  return s;
}

KernelSpec forward_spec(const KernelSpec& base, const Plan& plan, size_t pass_index, bool lse, bool key_padding) {
  KernelSpec s = pass_spec(base, plan, pass_index);
  s.write_lse = s.write_lse || lse;
  s.key_padding = key_padding;
  if (key_padding && s.tma) {  // the producer kernel does not clamp spans to the keys < len: the cp.async kernel
    s.tma = s.pingpong = false;  // of the same tiles, with the ring of the two-warpgroup kernels
    s.stages = 3;
  }
  return s;
}

namespace {
// The backward's tiles: 16 rows per warp, a 2-buffer cp.async ring, 64-key (query) steps. mma.sync at D=128 takes
// 32-key steps: two D-wide fp32 accumulators (dK and dV) and 64-wide S and dP tiles spill there (255 registers +
// 350 bytes). sm_90a: warpgroup MMAs (SPLAT_CUDA_WGMMA=0 opts out, as for the forward).
KernelSpec backward_common(const KernelSpec& base, Direction d) {
  KernelSpec s = base;
  s.direction = d;
  s.overlap = false;
  s.tma = s.pingpong = false;
  s.mt = 1;
  s.block_n = s.head_dim == 128 && !s.wgmma ? 32 : 64;
  s.stages = 2;
  // Tuning overrides for benchmarks: SPLAT_CUDA_BWD_BN (key/query step), SPLAT_CUDA_BWD_STAGES.
  if (const char* e = std::getenv("SPLAT_CUDA_BWD_BN"); e && *e) s.block_n = std::atoi(e);
  if (const char* e = std::getenv("SPLAT_CUDA_BWD_STAGES"); e && *e) s.stages = std::max(2, std::min(4, std::atoi(e)));
  if (s.block_n != 32 && s.block_n != 64 && s.block_n != 128)
    fail(ErrorCode::InvalidArgument, "SPLAT_CUDA_BWD_BN: 32, 64 or 128");
  if (s.wgmma && s.block_n == 32) s.wgmma = false;
  s.min_blocks = 0;
  s.write_lse = s.continuation = false;
  s.mask_affine = s.has_block = s.has_gather = s.two_segments = false;
  return s;
}
void pass_masks(KernelSpec& s, const Plan& plan, size_t pass_index) {
  const KernelSpec m = pass_spec(s, plan, pass_index);
  s.mask_affine = m.mask_affine, s.has_block = m.has_block, s.has_gather = m.has_gather;
  s.two_segments = m.two_segments, s.continuation = m.continuation;
}
}  // namespace

KernelSpec backward_pre_spec(const KernelSpec& base, bool atomic_dq) {
  KernelSpec s = backward_common(base, Direction::BackwardPre);
  s.block_m = 0, s.block_n = 0, s.warps = 8, s.stages = 0;
  s.atomic_dq = atomic_dq;
  return s;
}

KernelSpec backward_dq_cast_spec(const KernelSpec& base) {
  KernelSpec s = backward_pre_spec(base, true);
  s.direction = Direction::BackwardDqCast;
  return s;
}

bool backward_atomic_dq(const KernelSpec& base) {
  return backward_common(base, Direction::BackwardDkDv).wgmma;
}

KernelSpec backward_dq_spec(const KernelSpec& base, const Plan& plan, size_t pass_index, bool key_padding) {
  KernelSpec s = backward_common(base, Direction::BackwardDq);
  s.block_m = plan.options.block_m;  // the forward plan's tasks
  s.warps = s.block_m / 16;
  pass_masks(s, plan, pass_index);
  s.key_padding = key_padding;
  return s;
}

PlanOptions backward_plan_options(const KernelSpec& base) {
  PlanOptions po;
  po.block_m = 64;  // key rows per dK/dV CTA; SPLAT_CUDA_BWD_BM=128 (two warpgroups sharing each Q/dO tile)
  if (const char* e = std::getenv("SPLAT_CUDA_BWD_BM"); e && *e) po.block_m = std::atoi(e) == 128 ? 128 : 64;
  po.block_n = 64;
  (void)base;
  return po;
}

KernelSpec backward_dkdv_spec(const KernelSpec& base, const Plan& transposed, size_t pass_index, bool key_padding,
                              bool atomic_dq) {
  KernelSpec s = backward_common(base, Direction::BackwardDkDv);
  s.block_m = transposed.options.block_m;
  s.warps = s.block_m / 16;
  pass_masks(s, transposed, pass_index);
  s.key_padding = key_padding;
  s.atomic_dq = atomic_dq && s.wgmma;
  return s;
}

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::Forward: return "fwd";
    case Direction::BackwardPre: return "bwd_pre";
    case Direction::BackwardDq: return "bwd_dq";
    case Direction::BackwardDkDv: return "bwd_dkdv";
    case Direction::BackwardDqCast: return "bwd_dqcast";
    case Direction::Decode: return "decode";
    case Direction::DecodeMerge: return "decode_merge";
  }
  return "?";
}

std::string KernelSpec::name() const {
  if (is_decode(direction)) return decode_kernel_name(*this);
  std::ostringstream o;
  o << "splat_attn_" << direction_name(direction) << "_" << dtype_name(dtype) << "_d" << head_dim;
  if (direction == Direction::BackwardPre || direction == Direction::BackwardDqCast)
    return o.str() + (atomic_dq && direction == Direction::BackwardPre ? "_adq" : "");
  o << "_m" << block_m << "n" << block_n << "w" << warps << (mask_affine ? "_ma" : "") << (two_segments ? "_2seg" : "")
    << (has_block ? "_bl" : "") << (has_gather ? "_ga" : "") << (write_lse ? "_lse" : "")
    << (continuation ? "_cont" : "") << (key_padding ? "_kp" : "") << (atomic_dq ? "_adq" : "");
  o << "_s" << stages << (wgmma ? "_wg" : "") << (overlap ? "_ov" : "") << (tma ? "_tma" : "")
    << (pingpong ? "_pp" : "");
  if (min_blocks > 0) o << "_mb" << min_blocks;
  return o.str();
}

std::string KernelSpec::describe() const {
  if (is_decode(direction)) return decode_describe(*this);
  std::ostringstream o;
  if (direction == Direction::BackwardPre)
    return std::string("attention_bwd_pre dtype=") + dtype_name(dtype) + " D=" + std::to_string(head_dim) +
           " arch=" + arch + " (Delta = rowsum(dO * O), lse * log2 e" +
           (atomic_dq ? "; zeroes the fp32 dQ accumulator)" : ")");
  if (direction == Direction::BackwardDqCast)
    return std::string("attention_bwd_dqcast dtype=") + dtype_name(dtype) + " D=" + std::to_string(head_dim) +
           " arch=" + arch + " (dQ = the fp32 accumulator in the gradient's dtype)";
  o << "attention_" << direction_name(direction) << " dtype=" << dtype_name(dtype) << " D=" << head_dim
    << " tile=" << block_m << "x" << block_n << " warps=" << warps << " stages=" << stages
    << (wgmma ? " mma=wgmma" : " mma=mma.sync") << (overlap ? " overlap" : "")
    << (tma ? " producer=tma" : "") << (pingpong ? " pingpong" : "") << " arch=" << arch << " spans=affine"
    << (has_block ? "+block" : "") << (has_gather ? "+gather" : "") << " masks=" << (mask_affine ? "affine" : "none")
    << (two_segments ? "(2 segments)" : "") << (continuation ? " continues-pass" : "")
    << (write_lse ? " writes-lse" : "") << (key_padding ? " key-padding" : "")
    << (atomic_dq ? " dq=atomic(non-deterministic)" : "") << " smem=" << smem_bytes();
  return o.str();
}

size_t KernelSpec::smem_bytes() const {
  // + 1 KB so the kernel can align its tiles to 1024 bytes (the 128-byte swizzle atoms).
  const size_t e = dtype_size(dtype), d = size_t(padded_dim(head_dim));
  switch (direction) {
    case Direction::BackwardPre:
    case Direction::BackwardDqCast:
    case Direction::Decode:  // static shared memory only
    case Direction::DecodeMerge: return 0;
    case Direction::BackwardDq: return size_t(2 * block_m + 2 * stages * block_n) * d * e + 1024;
    case Direction::BackwardDkDv:  // + the steps' lse and Delta (atomic_dq: + dS^T [BM][BN] and the query rows)
      return size_t(2 * block_m + 2 * stages * block_n) * d * e + size_t(2 * stages * block_n) * 4 +
             (atomic_dq ? size_t(block_m * block_n) * e + size_t(stages * block_n) * 4 : 0) + 1024;
    case Direction::Forward: break;
  }
  // TMA: + the full and empty mbarriers of the ring.
  return size_t(block_m + 2 * stages * block_n) * d * e + 1024 + (tma ? 16 * size_t(stages) : 0);
}

std::string generate_source(const std::vector<KernelSpec>& specs) {
  if (!specs.empty() && is_decode(specs[0].direction)) return generate_decode_source(specs);
  std::ostringstream o;
  o << "// Generated by splat (src/jit/kernel_spec.cpp). One instantiation per kernel spec.\n"
    << "#include \"splat/device/attention_fwd.cuh\"\n";
  bool backward = false;
  for (const KernelSpec& s : specs) backward = backward || s.direction != Direction::Forward;
  if (backward) o << "#include \"splat/device/attention_bwd.cuh\"\n";
  std::set<std::string> done;
  for (const KernelSpec& s : specs) {
    const std::string n = s.name();
    if (!done.insert(n).second) continue;
    if (s.direction == Direction::BackwardPre || s.direction == Direction::BackwardDqCast) {
      o << "\n// " << s.describe() << "\n"
        << "struct " << n << "_cfg {\n  static constexpr int D = " << s.head_dim
        << ";\n  static constexpr bool BF16 = " << (s.dtype == DType::BF16 ? "true" : "false")
        << ", ATOMIC_DQ = " << (s.atomic_dq ? "true" : "false") << ";\n};\n"
        << "extern \"C\" __global__ void __launch_bounds__(" << s.threads() << ") " << n
        << "(const splat::dev::AttnParams p) {\n  splat::dev::"
        << (s.direction == Direction::BackwardPre ? "attn_bwd_pre" : "attn_bwd_dq_cast") << "<" << n
        << "_cfg>(p);\n}\n";
      continue;
    }
    const char* fn = s.direction == Direction::BackwardDq     ? "attn_bwd_dq"
                     : s.direction == Direction::BackwardDkDv ? "attn_bwd_dkdv"
                                                              : "attn_fwd";
    o << "\n// " << s.describe() << "\n"
      << "struct " << n << "_cfg {\n"
      << "  static constexpr int D = " << s.head_dim << ", BM = " << s.block_m << ", BN = " << s.block_n
      << ", MT = " << s.mt << ", WARPS = " << s.warps << ", STAGES = " << s.stages << ";\n"
      << "  static constexpr bool WGMMA = " << (s.wgmma ? "true" : "false")
      << ", OVERLAP = " << (s.overlap ? "true" : "false") << ";\n"
      << "  static constexpr bool BF16 = " << (s.dtype == DType::BF16 ? "true" : "false")
      << ", WRITE_LSE = " << (s.write_lse ? "true" : "false") << ", CONTINUE = " << (s.continuation ? "true" : "false")
      << ";\n"
      << "  static constexpr bool HAS_AFFINE_MASK = " << (s.mask_affine ? "true" : "false")
      << ", HAS_BLOCK = " << (s.has_block ? "true" : "false") << ", HAS_GATHER = " << (s.has_gather ? "true" : "false")
      << ", HAS_SEGMENT2 = " << (s.two_segments ? "true" : "false") << ";\n"
      << "  static constexpr bool KEY_PAD = " << (s.key_padding ? "true" : "false")
      << ", DKDV = " << (s.direction == Direction::BackwardDkDv ? "true" : "false")
      << ", ATOMIC_DQ = " << (s.atomic_dq ? "true" : "false") << ";\n"
      << "  static constexpr bool TMA = " << (s.tma ? "true" : "false")
      << ", PINGPONG = " << (s.pingpong ? "true" : "false") << ";\n};\n";
    if (s.tma) {  // the producer kernel: one CTA per SM (its registers are set by setmaxnreg), two tensor maps
      o << "extern \"C\" __global__ void __launch_bounds__(" << s.threads() << ", 1) " << n
        << "(const splat::dev::AttnParams p, const __grid_constant__ splat::dev::TmaMap tk, "
           "const __grid_constant__ splat::dev::TmaMap tv) {\n"
        << "  extern __shared__ __align__(128) unsigned char smem[];\n"
        << "  splat::dev::attn_fwd_tma<" << n << "_cfg>(p, smem, &tk, &tv);\n}\n";
      continue;
    }
    o << "extern \"C\" __global__ void __launch_bounds__(" << s.threads()
      << (s.min_blocks > 0 ? ", " + std::to_string(s.min_blocks) : std::string()) << ") " << n
      << "(const splat::dev::AttnParams p) {\n"
      << "  extern __shared__ __align__(128) unsigned char smem[];\n"
      << "  splat::dev::" << fn << "<" << n << "_cfg>(p, smem);\n"
      << "}\n";
  }
  return o.str();
}

}  // namespace splat::jit
