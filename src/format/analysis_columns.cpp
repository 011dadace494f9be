// ACSR from explicit masks / column lists: one pass over the non-zeros. Each row is cut into
// maximal arithmetic progressions (greedy); a progression that reappears in the next row shifted by
// one key (slope 1) or unchanged (slope 0) extends the same segment. What stays a lone short
// progression of a single row goes to the explicit-column remainder.
#include <algorithm>
#include <map>
#include <tuple>

#include "splat/acsr.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

struct Progression {
  int64_t first, stride, count;
};

void split_row(const int32_t* c, int64_t len, std::vector<Progression>& out) {
  out.clear();
  int64_t p = 0;
  while (p < len) {
    if (p + 1 == len) {
      out.push_back({c[p], 1, 1});
      break;
    }
    const int64_t stride = c[p + 1] - c[p];
    int64_t q = p + 1;
    while (q + 1 < len && c[q + 1] - c[q] == stride) ++q;
    // A two-element progression followed by a unit-stride run is better left to that run.
    if (stride > 1 && q == p + 1 && q + 1 < len && c[q + 1] - c[q] == 1) {
      out.push_back({c[p], 1, 1});
      ++p;
      continue;
    }
    out.push_back({c[p], stride, q - p + 1});
    p = q + 1;
  }
}

struct Open {
  int64_t row_begin, first_begin, last_first, stride, count;
  int slope;  // -1: undecided (one row so far)
};

}  // namespace

Acsr analyse_columns(int64_t n, const std::vector<int64_t>& row_ptr, const std::vector<int32_t>& cols) {
  require(n > 0 && int64_t(row_ptr.size()) == n + 1, "column lists: row_ptr must have n+1 entries");
  require(row_ptr[0] == 0 && row_ptr[size_t(n)] == int64_t(cols.size()), "column lists: row_ptr does not match cols");
  Acsr a;
  a.n = n;
  std::vector<std::pair<int64_t, int32_t>> lone;  // (row, col) for the column remainder
  std::vector<Open> open, next_open;
  std::vector<Progression> prog;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<size_t>> by_end;  // (stride,count,last_first)
  std::vector<bool> used;

  auto close = [&](const Open& o, int64_t row_end) {
    const int64_t slope = o.slope < 0 ? 0 : o.slope;
    if (row_end - o.row_begin == 1 && o.count <= 2) {
      for (int64_t t = 0; t < o.count; ++t) lone.push_back({o.row_begin, int32_t(o.first_begin + o.stride * t)});
      return;
    }
    Segment s;
    s.row_begin = o.row_begin, s.row_end = row_end, s.slope = slope;
    s.offset = o.first_begin - slope * o.row_begin, s.stride = o.stride;
    s.t_begin = 0, s.t_end = o.count, s.key_begin = 0, s.key_end = n;
    a.segments.push_back(s);
  };

  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = row_ptr[size_t(i)], e = row_ptr[size_t(i + 1)];
    require(b <= e, "column lists: row_ptr must be non-decreasing");
    for (int64_t k = b; k < e; ++k) {
      require(cols[size_t(k)] >= 0 && cols[size_t(k)] < n, "column lists: column out of range");
      require(k == b || cols[size_t(k)] > cols[size_t(k - 1)], "column lists: columns must be sorted and unique");
    }
    split_row(cols.data() + b, e - b, prog);
    by_end.clear();
    for (size_t k = 0; k < open.size(); ++k)
      by_end[{open[k].stride, open[k].count, open[k].last_first}].push_back(k);
    used.assign(open.size(), false);
    next_open.clear();
    for (const Progression& pr : prog) {
      bool matched = false;
      for (int slope : {1, 0}) {
        auto it = by_end.find({pr.stride, pr.count, pr.first - slope});
        if (it == by_end.end()) continue;
        for (size_t k : it->second) {
          if (used[k] || (open[k].slope >= 0 && open[k].slope != slope)) continue;
          used[k] = true;
          Open o = open[k];
          o.slope = slope, o.last_first = pr.first;
          next_open.push_back(o);
          matched = true;
          break;
        }
        if (matched) break;
      }
      if (!matched) next_open.push_back({i, pr.first, pr.first, pr.stride, pr.count, -1});
    }
    for (size_t k = 0; k < open.size(); ++k)
      if (!used[k]) close(open[k], i);
    open.swap(next_open);
  }
  for (const Open& o : open) close(o, n);

  if (!lone.empty()) {
    std::sort(lone.begin(), lone.end());
    a.columns.row_ptr.assign(size_t(n + 1), 0);
    for (const auto& [row, col] : lone) {
      a.columns.cols.push_back(col);
      ++a.columns.row_ptr[size_t(row + 1)];
    }
    for (int64_t i = 0; i < n; ++i) a.columns.row_ptr[size_t(i + 1)] += a.columns.row_ptr[size_t(i)];
  }
  return a;
}

Acsr analyse_mask(const uint8_t* mask, int64_t n) {
  require(n > 0, "mask: size must be positive");
  std::vector<int64_t> row_ptr(size_t(n + 1), 0);
  std::vector<int32_t> cols;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* row = mask + i * n;
    for (int64_t j = 0; j < n; ++j)
      if (row[j]) cols.push_back(int32_t(j));
    row_ptr[size_t(i + 1)] = int64_t(cols.size());
  }
  return analyse_columns(n, row_ptr, cols);
}

}  // namespace splat
