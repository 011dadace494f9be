// ACSR from explicit masks / column lists: one pass over the non-zeros. Each row is cut into
// maximal arithmetic progressions (greedy); a progression that reappears in the next row shifted by
// one key (slope 1) or unchanged (slope 0) extends the same segment. What stays a lone short
// progression of a single row goes to the explicit-column remainder.
#include <algorithm>

#include "format/row_analysis.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"

namespace splat {

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

RowMerger::RowMerger(int64_t n) {
  a_.n = n;
}

void RowMerger::close(const Open& o, int64_t row_end) {
  const int64_t slope = o.slope < 0 ? 0 : o.slope;
  if (row_end - o.row_begin == 1 && o.count <= 2) {
    for (int64_t t = 0; t < o.count; ++t) lone_.push_back({o.row_begin, int32_t(o.first_begin + o.stride * t)});
    return;
  }
  Segment s;
  s.row_begin = o.row_begin, s.row_end = row_end, s.slope = slope;
  s.offset = o.first_begin - slope * o.row_begin, s.stride = o.stride;
  s.t_begin = 0, s.t_end = o.count, s.key_begin = 0, s.key_end = a_.n;
  a_.segments.push_back(s);
}

namespace {
uint64_t mix(int64_t stride, int64_t count, int64_t first) {
  return splitmix64(uint64_t(stride) * 0x9E3779B97F4A7C15ull ^ uint64_t(count) * 0xC2B2AE3D27D4EB4Full ^
                    uint64_t(first));
}
}  // namespace

void RowMerger::add_row(const std::vector<Progression>& row) {
  const int64_t i = row_++;
  // Open progressions hashed by (stride, count, last first key). Disjoint progressions of one row never
  // share that key, so each lookup finds at most one.
  size_t cap = 16;
  while (cap < 2 * open_.size()) cap *= 2;
  table_.assign(cap, -1);
  for (size_t k = 0; k < open_.size(); ++k) {
    size_t h = mix(open_[k].stride, open_[k].count, open_[k].last_first) & (cap - 1);
    while (table_[h] >= 0) h = (h + 1) & (cap - 1);
    table_[h] = int32_t(k);
  }
  auto find = [&](int64_t stride, int64_t count, int64_t last_first) -> int32_t {
    for (size_t h = mix(stride, count, last_first) & (cap - 1); table_[h] >= 0; h = (h + 1) & (cap - 1)) {
      const Open& o = open_[size_t(table_[h])];
      if (o.stride == stride && o.count == count && o.last_first == last_first) return table_[h];
    }
    return -1;
  };
  used_.assign(open_.size(), false);
  next_.clear();
  for (const Progression& pr : row) {
    bool matched = false;
    for (int slope : {1, 0}) {
      const int32_t k = find(pr.stride, pr.count, pr.first - slope);
      if (k < 0) continue;
      const Open& it = open_[size_t(k)];
      if (used_[size_t(k)] || (it.slope >= 0 && it.slope != slope)) continue;
      used_[size_t(k)] = true;
      Open o = it;
      o.slope = slope, o.last_first = pr.first;
      next_.push_back(o);
      matched = true;
      break;
    }
    if (!matched) next_.push_back({i, pr.first, pr.first, pr.stride, pr.count, -1});
  }
  for (size_t k = 0; k < open_.size(); ++k)
    if (!used_[k]) close(open_[k], i);
  open_.swap(next_);
}

Acsr RowMerger::finish() {
  require(row_ == a_.n, "internal: RowMerger fed the wrong number of rows");
  for (const Open& o : open_) close(o, a_.n);
  open_.clear();
  if (!lone_.empty()) {
    std::sort(lone_.begin(), lone_.end());
    a_.columns.row_ptr.assign(size_t(a_.n + 1), 0);
    for (const auto& [row, col] : lone_) {
      a_.columns.cols.push_back(col);
      ++a_.columns.row_ptr[size_t(row + 1)];
    }
    for (int64_t i = 0; i < a_.n; ++i) a_.columns.row_ptr[size_t(i + 1)] += a_.columns.row_ptr[size_t(i)];
  }
  return std::move(a_);
}

Acsr analyse_columns(int64_t n, const std::vector<int64_t>& row_ptr, const std::vector<int32_t>& cols) {
  require(n > 0 && int64_t(row_ptr.size()) == n + 1, "column lists: row_ptr must have n+1 entries");
  require(row_ptr[0] == 0 && row_ptr[size_t(n)] == int64_t(cols.size()), "column lists: row_ptr does not match cols");
  RowMerger merger(n);
  std::vector<Progression> prog;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = row_ptr[size_t(i)], e = row_ptr[size_t(i + 1)];
    require(b <= e, "column lists: row_ptr must be non-decreasing");
    for (int64_t k = b; k < e; ++k) {
      require(cols[size_t(k)] >= 0 && cols[size_t(k)] < n, "column lists: column out of range");
      require(k == b || cols[size_t(k)] > cols[size_t(k - 1)], "column lists: columns must be sorted and unique");
    }
    split_row(cols.data() + b, e - b, prog);
    merger.add_row(prog);
  }
  return merger.finish();
}

Acsr analyse_mask(const uint8_t* mask, int64_t n) {
  require(n > 0, "mask: size must be positive");
  RowMerger merger(n);
  std::vector<int32_t> cols;
  std::vector<Progression> prog;
  for (int64_t i = 0; i < n; ++i) {  // one row at a time: O(n) memory besides the result
    const uint8_t* row = mask + i * n;
    cols.clear();
    for (int64_t j = 0; j < n; ++j)
      if (row[j]) cols.push_back(int32_t(j));
    split_row(cols.data(), int64_t(cols.size()), prog);
    merger.add_row(prog);
  }
  return merger.finish();
}

}  // namespace splat
