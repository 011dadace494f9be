// Block-diagonal concatenation of ACSRs: the pattern of a packed batch of sequences, each sequence's own ACSR with
// its rows and keys shifted by the tokens before it. Segments shift in closed form; only block remainders need care
// (their grid is the part's own, which a shift by a non-multiple of the block size breaks).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "format/segment_algebra.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

// (i, j) -> (i + s, j + s): rows, the key clamp and, for slope 0, the offset move; a slope-1 offset is relative to
// the row and stays. Rows and keys are first clamped to the part ([0, n)), so nothing reaches a neighbour.
Segment shifted(const Segment& seg, int64_t n, int64_t s) {
  Segment out = seg;
  out.row_begin = std::max<int64_t>(0, seg.row_begin) + s;
  out.row_end = std::min(n, seg.row_end) + s;
  out.key_begin = std::max<int64_t>(0, seg.key_begin) + s;
  out.key_end = std::min(n, seg.key_end) + s;
  out.offset = seg.offset + s * (1 - seg.slope);
  return out;
}

bool block_meets_segments(const Acsr& a, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
  for (const Segment& s : a.segments) {
    if (s.row_end <= r0 || s.row_begin >= r1 || s.key_end <= k0 || s.key_begin >= k1) continue;
    for (int64_t i = std::max(r0, s.row_begin); i < std::min(r1, s.row_end); ++i)
      if (segment_row_count_in(s, i, k0, k1) > 0) return true;
  }
  return false;
}

// Part p's explicit columns (its own and those of remainder blocks that segments cut into), per row, shifted.
void append_columns(const Acsr& a, int64_t s, const std::vector<std::vector<int32_t>>& from_blocks,
                    ColumnRemainder& out) {
  std::vector<int32_t> row;
  for (int64_t i = 0; i < a.n; ++i) {
    row.clear();
    if (!a.columns.empty())
      row.assign(a.columns.cols.begin() + a.columns.row_ptr[size_t(i)],
                 a.columns.cols.begin() + a.columns.row_ptr[size_t(i + 1)]);
    if (!from_blocks.empty()) row.insert(row.end(), from_blocks[size_t(i)].begin(), from_blocks[size_t(i)].end());
    std::sort(row.begin(), row.end());
    for (int32_t j : row) out.cols.push_back(int32_t(j + s));
    out.row_ptr.push_back(int64_t(out.cols.size()));
  }
}

}  // namespace

Acsr block_diagonal(const std::vector<const Acsr*>& parts) {
  Acsr out;
  int64_t total = 0;
  for (const Acsr* p : parts) {
    if (!p || p->n < 0) fail(ErrorCode::InvalidArgument, "block_diagonal: null or negative-length part");
    total += p->n;
    if (total > std::numeric_limits<int32_t>::max())
      fail(ErrorCode::InvalidArgument, "block_diagonal: more than 2^31 - 1 tokens in all (keys are int32)");
  }
  out.n = total;
  // Remainder blocks a segment cuts into become explicit columns; the others (BigBird's random blocks, which
  // avoid the window and global blocks by construction) become one slope-0 segment each: a dense box.
  std::vector<std::vector<std::vector<int32_t>>> from_blocks(parts.size());
  bool any_columns = false;
  int64_t s = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    const Acsr& a = *parts[p];
    for (const Segment& seg : a.segments) {
      const Segment sh = shifted(seg, a.n, s);
      if (!segment_empty(sh)) out.segments.push_back(sh);
    }
    if (!a.blocks.empty()) {
      const int64_t br = a.blocks.block_rows, bc = a.blocks.block_cols;
      for (int64_t qb = 0; qb + 1 < int64_t(a.blocks.row_ptr.size()); ++qb) {
        const int64_t r0 = qb * br, r1 = std::min(a.n, r0 + br);
        for (int64_t e = a.blocks.row_ptr[size_t(qb)]; e < a.blocks.row_ptr[size_t(qb + 1)]; ++e) {
          const int64_t k0 = a.blocks.col_block[size_t(e)] * bc, k1 = std::min(a.n, k0 + bc);
          if (r0 >= r1 || k0 >= k1) continue;
          if (!block_meets_segments(a, r0, r1, k0, k1)) {
            Segment box;
            box.row_begin = r0 + s, box.row_end = r1 + s;
            box.slope = 0, box.offset = k0 + s, box.stride = 1, box.t_begin = 0, box.t_end = k1 - k0;
            box.key_begin = k0 + s, box.key_end = k1 + s;
            out.segments.push_back(box);
            continue;
          }
          auto& rows = from_blocks[p];
          if (rows.empty()) rows.resize(size_t(a.n));
          for (int64_t i = r0; i < r1; ++i)
            for (int64_t j = k0; j < k1; ++j) {
              bool in_segment = false;
              for (const Segment& seg : a.segments) in_segment = in_segment || segment_contains(seg, i, j);
              if (!in_segment) rows[size_t(i)].push_back(int32_t(j));
            }
        }
      }
    }
    any_columns = any_columns || !a.columns.empty() || !from_blocks[p].empty();
    s += a.n;
  }
  if (any_columns) {
    out.columns.row_ptr.assign(1, 0);
    s = 0;
    for (size_t p = 0; p < parts.size(); ++p) {
      append_columns(*parts[p], s, from_blocks[p], out.columns);
      s += parts[p]->n;
    }
    if (out.columns.cols.empty()) out.columns = ColumnRemainder{};
  }
  return out;
}

}  // namespace splat
