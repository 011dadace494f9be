// A plan turns ACSR into work: passes of tile tasks, each a set of query rows (a row tile,
// possibly in residue-permuted order) and the key spans it must visit. Backends (CPU, CUDA)
// execute plans; they never look at the pattern again.
//
// Passes: pass 0 covers every row exactly once (tiles with no spans write zeros). A later pass
// covers some rows again with other spans (e.g. strided's residue classes in permuted order) and
// continues the online softmax from the state pass 0 left (out, log-sum-exp): exact merge.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "splat/acsr.hpp"

namespace splat {

enum class SpanKind : uint8_t {
  Affine,  // keys key_begin + key_stride*c; mask (if !full) = segment_contains(acsr.segments[segment], i, j),
           // or'ed with segment2's where segment2 >= 0 (two segments of one row set, see PlanOptions)
  Block,   // keys key_begin + c (one remainder block); mask (if !full) = not in any segment
  Gather,  // keys gather_keys[key_begin + c]; mask (if !full) = bit (r, c) of gather_mask at mask_offset
};

struct KeySpan {
  SpanKind kind = SpanKind::Affine;
  int64_t key_begin = 0;
  int64_t key_stride = 1;
  int64_t key_count = 0;
  int32_t row_lo = 0, row_hi = 0;  // local rows r of the tile this span applies to: [row_lo, row_hi)
  int32_t segment = -1;            // Affine: the one segment this span computes
  bool full = false;               // every (row in [row_lo,row_hi), key) is attended: no mask at all
  int64_t mask_offset = 0;         // Gather: bit offset; bit index = mask_offset + r*key_count + c
  // Affine, !full: a second segment over the same keys. In every row of the span the two segments' key
  // indices c form [lo, hi) with at most one c missing (e.g. strided's residue class around the diagonal).
  int32_t segment2 = -1;
};

struct TileTask {
  int64_t row_begin = 0;  // query rows row_begin + row_stride*r, r in [0, row_count)
  int64_t row_stride = 1;
  int32_t row_count = 0;
  int32_t span_begin = 0, span_end = 0;  // spans [span_begin, span_end) of the pass
  int64_t cost = 0;                      // computed entries (rows x keys), for scheduling
};

struct Pass {
  std::vector<TileTask> tasks;  // longest first
  std::vector<KeySpan> spans;
  std::string describe;  // e.g. "natural order", "residue order stride 64"
};

struct PlanOptions {
  int32_t block_m = 64;          // query rows per tile
  int32_t block_n = 64;          // key granularity for full/partial splitting of band spans
  bool permute_residues = true;  // compute stride>1 segments in residue-permuted order
  // Merge two partial Affine spans over the same keys into one (segment2) where their rows' key ranges meet
  // with at most a one-key gap: strided's residue class around the diagonal is computed once, not as two
  // triangles over the same box.
  bool merge_split_segments = true;
};

struct Plan {
  Acsr acsr;
  PlanOptions options;
  std::vector<Pass> passes;
  std::vector<int32_t> gather_keys;
  std::vector<uint64_t> gather_mask;  // bitset
  int64_t useful = 0;                 // nnz
  int64_t computed = 0;               // sum over spans of rows x keys
  // The plan of transpose(acsr) with the same options (key tiles as rows, the queries that attend them as spans):
  // what backward's dK/dV direction runs. Set by add_transpose; null until then.
  std::shared_ptr<const Plan> transposed;
  double waste() const { return useful ? double(computed) / double(useful) : 1.0; }
  int64_t tile_count() const;
};

Plan make_plan(Acsr acsr, const PlanOptions& options = {});
// Sets plan.transposed (once; a no-op when already set). Backward needs it.
void add_transpose(Plan& plan);

// True if (local row r of task, key at index c of span) is attended, per the span's rules.
bool span_entry_attended(const Plan& plan, const TileTask& task, const KeySpan& span, int32_t r, int64_t c);
int64_t span_key(const Plan& plan, const KeySpan& span, int64_t c);

}  // namespace splat
