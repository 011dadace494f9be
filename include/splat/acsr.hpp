// ACSR: affine-compressed sparse rows. Each row's key set is a disjoint union of
//   - affine segments: keys j = slope*i + offset + stride*t, t in [t_begin, t_end), j in [key_begin, key_end),
//     valid for rows i in [row_begin, row_end) (start is affine in the row; no per-row storage),
//   - an irregular remainder of dense blocks (BigBird's random blocks) and
//   - an irregular remainder of explicit columns (what an explicit mask leaves over).
// The three parts are pairwise disjoint, so nnz and softmax sums never count a key twice.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "splat/pattern.hpp"

namespace splat {

struct Segment {
  int64_t row_begin = 0, row_end = 0;  // rows [row_begin, row_end)
  int64_t slope = 0;                   // 0 (fixed columns) or 1 (moves with the row)
  int64_t offset = 0;
  int64_t stride = 1;                  // >= 1
  int64_t t_begin = 0, t_end = 0;      // t in [t_begin, t_end)
  int64_t key_begin = 0, key_end = 0;  // keys clamped to [key_begin, key_end)
  bool operator==(const Segment&) const = default;
};

// Keys of segment s in row i: first key, and how many (stride s.stride). count==0 if none.
struct SegmentRow {
  int64_t first = 0;
  int64_t count = 0;
};
SegmentRow segment_row(const Segment& s, int64_t i);
bool segment_contains(const Segment& s, int64_t i, int64_t j);

// Dense blocks block_rows x block_cols. Block-row qb lists key blocks col_block[row_ptr[qb]..row_ptr[qb+1]).
// (i, j) belongs to the remainder iff its block is listed and (i, j) is in no segment.
struct BlockRemainder {
  int64_t block_rows = 0, block_cols = 0;
  std::vector<int64_t> row_ptr;   // size ceil(n/block_rows)+1, or empty when there are no blocks
  std::vector<int32_t> col_block;
  bool empty() const { return col_block.empty(); }
};

// Explicit columns per row (CSR), disjoint from segments and blocks.
struct ColumnRemainder {
  std::vector<int64_t> row_ptr;  // size n+1, or empty when there are no columns
  std::vector<int32_t> cols;     // sorted within each row
  bool empty() const { return cols.empty(); }
};

struct Acsr {
  int64_t n = 0;
  std::vector<Segment> segments;
  BlockRemainder blocks;
  ColumnRemainder columns;
};

// A maximal run of rows that see the same set of segments (and so share geometry).
struct Region {
  int64_t row_begin = 0, row_end = 0;
  std::vector<int32_t> segments;  // indices into Acsr::segments active on these rows
  int64_t residue_stride = 1;     // > 1: in the residue-permuted order the region is a dense band
  std::string describe;           // e.g. "band w=256", "residue s=64 + band", "global rows"
};

// Analysis from a pattern spec: O(n + segments), no n x n scan. Compositions use the affine algebra
// within a work and segment budget; where it cannot express the result, or stops paying, the pattern is
// evaluated row by row as arithmetic progressions (work near-linear in the result's progressions, at
// most O(keys) for a row that fragments). Always exact.
Acsr analyse(const Pattern& p, int64_t n);
// Analysis from an explicit mask (row-major n x n, nonzero = attended): one O(n^2) read, O(nnz) work.
Acsr analyse_mask(const uint8_t* mask, int64_t n);
// Analysis from per-row sorted column lists (CSR): discovers arithmetic progressions per row and
// affine relations between rows (shift by one: slope 1; identical: slope 0). O(nnz).
Acsr analyse_columns(int64_t n, const std::vector<int64_t>& row_ptr, const std::vector<int32_t>& cols);

// The transpose: row j of transpose(a) holds the queries i with (i, j) in a. Exact and derived from the affine
// description in O(rows + segments) (a window is its own transpose, causal_window becomes an anti-causal window,
// global rows become global columns, sink columns global rows, ...); the block and column remainders transpose in
// O(blocks) and O(nnz). transpose(transpose(a)) has a's mask.
Acsr transpose(const Acsr& a);

std::vector<Region> regions(const Acsr& a);

// The block-diagonal concatenation (a packed batch of sequences): part p's (i, j) becomes (s + i, s + j), s the
// total length of the parts before it; n = the sum of the parts' n (< 2^31). Segments shift exactly; remainder
// blocks become a slope-0 segment each where no segment meets them, else explicit columns. O(segments + blocks).
Acsr block_diagonal(const std::vector<const Acsr*>& parts);

int64_t nnz(const Acsr& a);
int64_t row_nnz(const Acsr& a, int64_t i);
bool acsr_contains(const Acsr& a, int64_t i, int64_t j);
// Sorted keys of row i (appended to out after clearing it).
void row_keys(const Acsr& a, int64_t i, std::vector<int32_t>& out);
std::vector<uint8_t> to_dense(const Acsr& a);  // n x n, row-major 0/1

int64_t acsr_bytes(const Acsr& a);           // metadata bytes of this representation
int64_t csr_bytes(int64_t n, int64_t nnz);   // int64 row_ptr + int32 columns

}  // namespace splat
