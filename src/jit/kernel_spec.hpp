// KernelSpec: the single description of a generated kernel. It is the generator's input, part of the
// cache key (through the source it generates) and the line SPLAT_JIT_VERBOSE prints.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat::jit {

enum class KernelOp { AttentionForward };

// Which way a kernel runs over a plan: the forward (a pass of the plan), or a step of the backward: the
// preprocess (Delta and lse per query row, no plan), dQ (a pass of the forward plan), dK/dV (a pass of the
// transposed plan), and in the non-deterministic mode (KernelSpec::atomic_dq) the cast of the dQ accumulator to the
// gradient's dtype; or decode against a KV cache (no plan: a row program evaluated per query row, its split-KV merge
// a direction of its own; specs from jit/decode_spec.hpp). Part of the generator's input, the kernel name and so of
// the cache key.
enum class Direction { Forward, BackwardPre, BackwardDq, BackwardDkDv, BackwardDqCast, Decode, DecodeMerge };
const char* direction_name(Direction d);

struct KernelSpec {
  KernelOp op = KernelOp::AttentionForward;
  Direction direction = Direction::Forward;
  DType dtype = DType::BF16;
  int head_dim = 64;
  int block_m = 64;  // query rows per CTA = 16 * mt * warps
  int block_n = 64;  // keys per step
  int warps = 4;
  int mt = 1;            // 16-row m-tiles per warp
  bool wgmma = false;    // sm_90a warpgroup MMA (warpgroups of 64 rows, 64- or 128-key steps)
  bool overlap = false;  // wgmma only: S of the next step runs during the softmax (needs stages >= 3)
  int stages = 2;        // K/V shared-memory buffers (cp.async pipeline depth + 1; TMA: the mbarrier ring)
  // sm_90a forward, contiguous key spans only (attention_tma.cuh; experimental, SPLAT_CUDA_TMA=1): a producer
  // warpgroup loading K/V by TMA for `warps` / 4 consumer warpgroups; pingpong: the consumers take turns on the
  // tensor cores. The launch passes two tensor maps (K, V) after the parameters.
  bool tma = false;
  bool pingpong = false;
  int min_blocks = 0;    // __launch_bounds__ min blocks per SM (0: not set; caps registers when set)
  std::string arch = "sm_90";
  // Which span kinds / masks occur (code for the others is compiled out).
  bool mask_affine = false;
  bool has_block = false;
  bool has_gather = false;
  bool two_segments = false;  // some affine span masks two segments (KeySpan::segment2)
  // Pass continuation: write_lse (a later pass follows), continuation (start from out + lse).
  bool write_lse = false;
  bool continuation = false;  // backward: start from the gradients an earlier pass wrote
  // Key padding: keys j >= key_lengths[b] are masked (AttentionOptions::key_lengths); off: the kernel reads none.
  bool key_padding = false;
  // Backward, AttentionOptions::deterministic = false (sm_90a): the dK/dV pass also accumulates dQ with fp32 atomics
  // into the workspace (zeroed by the preprocess; cast by BackwardDqCast), and no dQ pass runs.
  bool atomic_dq = false;
  // Decode (splat/device/decode_split.cuh): the split-KV kernel (else the first one), its query heads per CTA and
  // dims per lane, and whether the cache is paged (a block table) or contiguous.
  bool decode_split = false;
  int heads_per_cta = 0, dims_per_lane = 0;
  bool paged = false;

  std::string name() const;      // the kernel's extern "C" symbol, unique per spec (arch aside)
  std::string describe() const;  // one human line
  size_t smem_bytes() const;     // dynamic shared memory per CTA
  int threads() const { return warps * 32 + (tma ? 128 : 0); }
};

// Tile shape the kernel uses for this dtype / head dim (the plan is built with the same block_m/block_n).
KernelSpec base_spec(DType dtype, int head_dim, const std::string& arch);
// sm_90a: whether a plan built with base's 64-row tiles runs faster as 128-row tiles of two warpgroups sharing
// each K/V tile (measured, bench/NOTES-cuda.md v5: long, even tasks of one pass gain 1-11%; short or uneven
// tasks, gathered spans and multi-pass plans lose 4-30%). Never when SPLAT_CUDA_TILE fixes the tile.
bool two_warpgroups_pay(const KernelSpec& base, const Plan& plan);
// base with 8 warps (two warpgroups of 64 rows): block_m 128; at D=128 also 128-key steps (block_n 128).
KernelSpec two_warpgroup_spec(const KernelSpec& base);
// sm_90a forward: whether plan (built with base's tiles) runs on the producer kernel. Needs contiguous key spans
// only (no gathered spans, affine spans of key stride 1). By default only where measured faster (one pass of long,
// even tasks: bench/NOTES-cuda.md v8); SPLAT_CUDA_TMA=1 takes it for every contiguous plan (experimental beyond the
// measured shapes), SPLAT_CUDA_TMA=0 never.
bool tma_fits(const KernelSpec& base, const Plan& plan);
// base as the producer kernel: 128-row tiles of two consumer warpgroups, 128-key steps at D=64, 64 at D=128
// (SPLAT_CUDA_TMA_BN),
// ping-pong (SPLAT_CUDA_PINGPONG=0: off).
KernelSpec tma_spec(const KernelSpec& base);
// Spec of pass `pass_index` of a plan built with base's tile shape.
KernelSpec pass_spec(const KernelSpec& base, const Plan& plan, size_t pass_index);
// Spec of the forward pass `pass_index` writing the lse of every row (for backward), with or without key padding.
KernelSpec forward_spec(const KernelSpec& base, const Plan& plan, size_t pass_index, bool lse, bool key_padding);
// The backward's kernels: the preprocess; dQ over pass `pass_index` of the forward plan (whose tile rows are
// base's); dK/dV over pass `pass_index` of the transposed plan, built with backward_plan_options' tile shape.
// atomic_dq: the non-deterministic mode's kernels (see KernelSpec::atomic_dq; backward_atomic_dq says where they
// exist) and the cast of its accumulator.
KernelSpec backward_pre_spec(const KernelSpec& base, bool atomic_dq = false);
KernelSpec backward_dq_spec(const KernelSpec& base, const Plan& plan, size_t pass_index, bool key_padding);
KernelSpec backward_dkdv_spec(const KernelSpec& base, const Plan& transposed, size_t pass_index, bool key_padding,
                              bool atomic_dq = false);
KernelSpec backward_dq_cast_spec(const KernelSpec& base);
// Whether the non-deterministic mode has its own kernels for base (warpgroup MMAs on sm_90a); elsewhere it runs the
// deterministic ones.
bool backward_atomic_dq(const KernelSpec& base);
PlanOptions backward_plan_options(const KernelSpec& base);
// Throws Error(Unsupported) for head dims / dtypes the kernels do not cover: bf16 / f16, head dims 32, 64, 96, 128
// and 256.
void check_supported(DType dtype, int head_dim);
// Throws Error(Unsupported) for head dims the backward kernels do not cover (64 and 128 only).
void check_backward_supported(int head_dim);
// Columns of the kernels' shared-memory tiles for a head dim: whole 64-column swizzle blocks (padded_dim in
// attention_parts.cuh).
inline int padded_dim(int head_dim) {
  return (head_dim + 63) / 64 * 64;
}

// One translation unit: constants + one instantiation per (distinct) spec.
std::string generate_source(const std::vector<KernelSpec>& specs);

}  // namespace splat::jit
