// Internal: the row path of the analysis. Rows are described as disjoint arithmetic progressions; a
// progression that reappears in the next row shifted by one key (slope 1) or unchanged (slope 0) extends
// one segment. Used for explicit masks and for compositions the segment algebra does not express cheaply.
#pragma once
#include <cstdint>
#include <vector>

#include "splat/acsr.hpp"

namespace splat {

// Keys first + stride*t, t in [0, count). count >= 1; stride is 1 when count == 1.
struct Progression {
  int64_t first = 0, stride = 1, count = 1;
  int64_t last() const { return first + stride * (count - 1); }
};

// Cuts sorted distinct columns into maximal progressions (greedy).
void split_row(const int32_t* cols, int64_t len, std::vector<Progression>& out);

// Feeds rows 0..n-1 in order; each row's progressions must be pairwise disjoint. O(progressions).
class RowMerger {
 public:
  explicit RowMerger(int64_t n);
  void add_row(const std::vector<Progression>& row);
  Acsr finish();

 private:
  struct Open {
    int64_t row_begin, first_begin, last_first, stride, count;
    int slope;  // -1: undecided (one row so far)
  };
  void close(const Open& o, int64_t row_end);

  Acsr a_;
  int64_t row_ = 0;
  std::vector<Open> open_, next_;
  std::vector<bool> used_;
  std::vector<int32_t> table_;                     // open-addressing index into open_
  std::vector<std::pair<int64_t, int32_t>> lone_;  // (row, col) for the column remainder
};

// The pattern evaluated row by row: O(n + progressions) plus O(row) for the rows whose progressions
// fragment (those are expanded to columns). Exact for every pattern.
Acsr analyse_rows(const Pattern& p, int64_t n);

}  // namespace splat
