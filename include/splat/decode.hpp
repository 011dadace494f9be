// Serving: decode attention against a KV cache (contiguous or paged) and packed variable-length prefill.
//
// Decode: each sequence b has a KV cache of L_b tokens (the T newest already appended); its T queries sit at
// positions L_b-T .. L_b-1 and attend the keys of their pattern rows intersected with causal: out[b, h, t] is row
// L_b-T+t of the full attention of a sequence of length L_b. No N x N mask and no L-sized analysis: a DecodePlan is
// the pattern's row geometry as a small program, evaluated per query row at (row, L) in O(runs), so one plan serves
// every length (plan once, call per token). The CUDA decode kernels are a KernelSpec direction of their own that
// evaluates the same program per query row on the device, with the lengths read from device memory.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "splat/attention.hpp"
#include "splat/device/decode_rows.cuh"
#include "splat/pattern.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat {

// Keys j of one run of a row: lo <= j <= hi and pos_mod(j - base, stride) < width (1 <= width < stride, or an interval:
// stride = width = 1). A window is one interval, a dilated or strided residue class a run of width 1, fixed's column
// families a run of width c. dev::decode_run_count / dev::decode_run_contains count and test its keys.
using KeyRun = dev::DecodeRun;

struct DecodeOptions {
  DType dtype = DType::BF16;
  int32_t head_dim = 64;
};

// A pattern & causal as a row program: plain-data instructions in postfix order (leaves with their parameters, unions
// and intersections), evaluated per row by dev::decode_row_eval on the host and, as is, by device code. Depends on the
// pattern only (and records dtype and head dim for the backends), never on a length. Every family qualifies except
// explicit masks (Error(Unsupported): a mask has rows for its own N only; use the forward). BigBird's random blocks are
// drawn modulo ceil(L/b) as in the forward, so its rows are those of a sequence of length L (exact, but a token's keys
// change as L grows).
struct DecodePlan {
  std::string pattern;  // canonical spec of the pattern (without the implied & causal)
  Pattern source;       // the pattern itself (what the float64 reference evaluates, key by key)
  std::vector<dev::DecodeInstr> program;
  int32_t max_runs = 0;  // runs one row's evaluation holds at most (the capacity decode_row_eval needs)
  DecodeOptions options;
};
DecodePlan make_decode_plan(const Pattern& pattern, const DecodeOptions& options = {});

// Runs of row i (0 <= i < n) of a sequence of length n, clipped to causal [0, i]. May overlap.
void decode_row_runs(const DecodePlan& plan, int64_t i, int64_t n, std::vector<KeyRun>& out);
// The same as sorted distinct keys.
void decode_row_keys(const DecodePlan& plan, int64_t i, int64_t n, std::vector<int32_t>& out);

// A KV cache. Sequence b's token at position p sits at cache row r = starts[b] + p (starts optional: 0; it reads
// left-padded batches in place). Contiguous: k, v are [B, H_kv, capacity, D] views (any strides, e.g.
// [B, capacity, H_kv, D] memory) and row r is k[b, :, r]. Paged: k, v are [pages, H_kv, P, D] views of the page pool
// (P = page size, 16 ... 256 for the CUDA kernels, any P >= 1 on the CPU; any strides, e.g. vLLM's
// [pages, P, H_kv, D]) and row r is k[block_table[b * max_pages + r / P], :, r % P], pages in any order. seqlens: B
// lengths L_b >= 0 with starts[b] + L_b <= capacity (or max_pages * P). All host memory for the CPU backend (device
// memory for CUDA).
struct KvCache {
  TensorView k, v;
  const int32_t* seqlens = nullptr;
  const int32_t* block_table = nullptr;  // nullptr: contiguous
  int64_t max_pages = 0;                 // block table row length (paged)
  const int32_t* starts = nullptr;
};

// q, out: [B, H, T, D] (T = 1 ... 64 newest positions per sequence; rows at positions < 0, when L_b < T, and rows
// without keys give zeros and lse -inf). lse (optional): float32 [B, H, T], natural log. opt.key_lengths must be null
// (the cache lengths are the key lengths).
void decode_reference(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                      const AttentionOptions& opt = {}, float* lse = nullptr);  // float64, pattern_contains per key
void decode_cpu(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                const AttentionOptions& opt = {}, float* lse = nullptr);  // fast: fp32 accumulation, threads
// CUDA (Error(Unsupported) in builds without the CUDA backend): device tensors, seqlens / block_table / starts in
// device memory, read by the kernel (a captured graph sees new lengths). bf16, f16, f32; head dims 64 and 128;
// launches on `stream` (a cudaStream_t) without synchronising or allocating. lse: optional device float32 [B, H, T].
// Split-KV (flash-decoding): with a workspace of decode_cuda_workspace_bytes (device memory, no initialisation
// needed) the keys of each row are split over several CTAs (as many as fill the device) and merged in split order
// (deterministic); without one (or too small) each (sequence, kv head, query) runs in one CTA.
// SPLAT_DECODE_KERNEL=simple selects the first, unsplit kernel (also taken by rows that are not 16-byte aligned).
// The kernels are KernelSpecs of the decode direction, compiled by NVRTC (or found in the kernel cache) on the first
// call of a shape; later calls only launch.
// Bad indices: where the lengths and tables are in host memory check them first with decode_check_cache. The
// kernels cannot throw on device-resident ones; instead a sequence whose length or start does not fit the capacity
// gets NaN in all its outputs and lse, a query row that would read a page outside the pool gets NaN in its outputs
// and lse, and `status` (optional device int32, zeroed by the caller) has kDecodeBadLength / kDecodeBadPage ORed
// into it; read it when convenient and pass it to decode_check_status, which throws naming the problem.
enum DecodeStatus : int32_t { kDecodeOk = 0, kDecodeBadLength = 1, kDecodeBadPage = 2 };
struct DecodeCudaWorkspace {
  void* data = nullptr;  // device memory, 16-byte aligned
  size_t bytes = 0;
  int32_t* status = nullptr;
};
// Workspace the split-KV launch for this call's shapes uses (0: no split pays); depends on shapes, the capacity and the
// device only, never on the lengths, so one allocation serves every step of a captured graph.
size_t decode_cuda_workspace_bytes(const DecodePlan& plan, const TensorView& q, const KvCache& cache);
void decode_cuda(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                 const AttentionOptions& opt = {}, void* stream = nullptr, float* lse = nullptr,
                 const DecodeCudaWorkspace& workspace = {});
void decode_check_status(int32_t status);  // Error(InvalidArgument) unless status == kDecodeOk
// The checks decode_cpu makes of the lengths, starts and every block-table entry a sequence uses, for a cache whose
// seqlens / block_table / starts point to host copies (k and v are used for their shapes only: the pool size, the
// page size or capacity; their data may be device memory). batch: q's B.
void decode_check_cache(const KvCache& cache, int64_t batch);

// Packed variable-length batches: sequence b is tokens cu_seqlens[b] .. cu_seqlens[b+1]-1 of q, k, v, which are
// [1, H, total, D] views (e.g. [total, H, D] memory: stride[2] = H*D, stride[1] = D); the pattern is applied per
// sequence (position 0 at its first token). The CPU runs the forward per sequence with the plan of its length; CUDA
// runs one forward over the whole token axis with the block-diagonal plan of the batch (block_diagonal in acsr.hpp).
struct Varlen {
  const int32_t* cu_seqlens = nullptr;  // B+1 offsets in host memory, cu_seqlens[0] = 0, non-decreasing, [B] = total
  int64_t batch = 0;
  int64_t max_seqlen = 0;  // >= every sequence's length
};
// The checks every varlen entry makes of cu_seqlens against `total` tokens (Error(InvalidArgument) naming `what`).
void varlen_check_batch(const Varlen& batch, int64_t total, const std::string& what);

class CudaPlan;  // splat/cuda.hpp
// The plans of one pattern: the analysis and the CPU plan per length, and the packed CUDA plans of the most recently
// used batch compositions (keyed by the exact length list, dtype, head dim and device). Built on first use;
// thread-safe.
class VarlenPlans {
 public:
  explicit VarlenPlans(Pattern pattern, size_t capacity = 64, size_t packed_capacity = 8);
  std::shared_ptr<const Acsr> acsr(int64_t n);  // analyse(pattern, n), at most `capacity` lengths kept
  std::shared_ptr<const Plan> get(int64_t n);   // make_plan of acsr(n), at most `capacity` kept
  const Pattern& pattern() const { return pattern_; }

  // The packed plans' cache (varlen_cuda_plan fills it): most recently used first, at most packed_capacity.
  struct PackedKey {
    DType dtype = DType::BF16;
    int32_t head_dim = 0;
    int device = 0;
    std::vector<int32_t> lengths;
    bool operator==(const PackedKey&) const = default;
  };
  std::shared_ptr<CudaPlan> find_packed(const PackedKey& key);
  void keep_packed(const PackedKey& key, std::shared_ptr<CudaPlan> plan);

 private:
  Pattern pattern_;
  size_t capacity_, packed_capacity_;
  std::mutex mu_;
  std::map<int64_t, std::shared_ptr<const Acsr>> acsrs_;
  std::map<int64_t, std::shared_ptr<const Plan>> plans_;
  std::vector<std::pair<PackedKey, std::shared_ptr<CudaPlan>>> packed_;
};
// lse (optional): float32 [H, total].
void attention_varlen_cpu(VarlenPlans& plans, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, const Varlen& batch, const AttentionOptions& opt = {},
                          float* lse = nullptr);
void attention_varlen_reference(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const Varlen& batch, const AttentionOptions& opt = {},
                                float* lse = nullptr);  // float64, dense mask per sequence

// CUDA (builds with SPLAT_WITH_CUDA): q, k, v, out device views as above (GQA: k, v with H_kv dividing H); cu_seqlens
// stays in host memory (the plan depends on the lengths; a caller holding them on the device copies them once). One
// forward launch over [1, H, total, D] with the packed plan of the batch's lengths: the first call with a composition
// analyses each new length (kept per length), concatenates, schedules and uploads the plan (see varlen_cuda_plan);
// later calls with the same length list launch only. Kernels, dtypes, head dims, alignment and the finiteness of v as
// for attention_cuda (cuda.hpp); `stream` a cudaStream_t. lse: optional device float32 [H, total]; workspace: as
// attention_cuda's for the packed plan (nullptr: the plan's own, grown on first use). Not capturable on a first use.
void attention_varlen_cuda(VarlenPlans& plans, const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const Varlen& batch, const AttentionOptions& opt = {},
                           void* stream = nullptr, float* lse = nullptr, void* workspace = nullptr);
// Where the packed plan of a composition came from and what building it cost (host milliseconds).
struct VarlenPlanTimes {
  bool cached = false;  // found in the packed cache: nothing below was spent
  double acsr_ms = 0;   // analysis of lengths not seen before + block_diagonal
  double plan_ms = 0;   // plan_cuda: scheduling, kernel lookup (memory, disk or NVRTC), upload
  double total_ms = 0;
  int64_t tiles = 0;  // tile tasks of the packed plan, all passes
};
// The packed CUDA plan of a batch composition (dtype and head dim of the tensors it will run), cached in `plans`.
std::shared_ptr<CudaPlan> varlen_cuda_plan(VarlenPlans& plans, const Varlen& batch, DType dtype, int32_t head_dim,
                                           int device, VarlenPlanTimes* times = nullptr);
// Copies `count` int32 offsets from device memory to `host` on `stream` and waits for them (one synchronisation of
// that stream): what a caller holding cu_seqlens on the device does before attention_varlen_cuda.
void varlen_offsets_to_host(const int32_t* device_offsets, int64_t count, int32_t* host, void* stream, int device);

}  // namespace splat
