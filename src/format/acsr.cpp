// Queries on ACSR: per-row keys and counts, dense expansion, metadata size, regions.
#include "splat/acsr.hpp"

#include <algorithm>
#include <map>

#include "format/segment_algebra.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

bool in_any_segment(const Acsr& a, int64_t i, int64_t j) {
  for (const Segment& s : a.segments)
    if (segment_contains(s, i, j)) return true;
  return false;
}

// Keys of row i in remainder block kb that no segment covers.
int64_t block_row_count(const Acsr& a, int64_t i, int64_t kb) {
  const int64_t k0 = kb * a.blocks.block_cols, k1 = std::min(a.n, k0 + a.blocks.block_cols);
  int64_t c = k1 - k0;
  for (const Segment& s : a.segments) c -= segment_row_count_in(s, i, k0, k1);
  return c;
}

}  // namespace

int64_t row_nnz(const Acsr& a, int64_t i) {
  int64_t c = 0;
  for (const Segment& s : a.segments) c += segment_row(s, i).count;
  if (!a.blocks.empty()) {
    const int64_t qb = i / a.blocks.block_rows;
    for (int64_t e = a.blocks.row_ptr[size_t(qb)]; e < a.blocks.row_ptr[size_t(qb + 1)]; ++e)
      c += block_row_count(a, i, a.blocks.col_block[size_t(e)]);
  }
  if (!a.columns.empty()) c += a.columns.row_ptr[size_t(i + 1)] - a.columns.row_ptr[size_t(i)];
  return c;
}

int64_t nnz(const Acsr& a) {
  int64_t total = 0;
  for (const Segment& s : a.segments) total += segment_nnz(s, s.row_begin, s.row_end);
  if (!a.blocks.empty()) {
    const int64_t nbr = int64_t(a.blocks.row_ptr.size()) - 1, br = a.blocks.block_rows;
    // Segments bucketed by the block rows they touch, so each block looks only at its neighbours.
    std::vector<std::vector<const Segment*>> bucket(static_cast<size_t>(nbr));
    for (const Segment& s : a.segments)
      if (!segment_empty(s))
        for (int64_t qb = s.row_begin / br; qb < nbr && qb * br < s.row_end; ++qb) bucket[size_t(qb)].push_back(&s);
    std::vector<const Segment*> near;
    for (int64_t qb = 0; qb < nbr; ++qb) {
      const int64_t r0 = qb * br, r1 = std::min(a.n, r0 + br);
      for (int64_t e = a.blocks.row_ptr[size_t(qb)]; e < a.blocks.row_ptr[size_t(qb + 1)]; ++e) {
        const int64_t k0 = a.blocks.col_block[size_t(e)] * a.blocks.block_cols;
        const int64_t k1 = std::min(a.n, k0 + a.blocks.block_cols);
        near.clear();  // only segments that can touch this block cost anything per row
        for (const Segment* s : bucket[size_t(qb)])
          if (s->key_begin < k1 && s->key_end > k0) near.push_back(s);
        total += (r1 - r0) * (k1 - k0);
        for (const Segment* s : near) {
          const int64_t i0 = std::max(r0, s->row_begin), i1 = std::min(r1, s->row_end);
          if (s->slope == 0) {  // the same keys on every row
            total -= segment_row_count_in(*s, i0, k0, k1) * (i1 - i0);
            continue;
          }
          for (int64_t i = i0; i < i1; ++i) total -= segment_row_count_in(*s, i, k0, k1);
        }
      }
    }
  }
  total += int64_t(a.columns.cols.size());
  return total;
}

bool acsr_contains(const Acsr& a, int64_t i, int64_t j) {
  if (in_any_segment(a, i, j)) return true;
  if (!a.blocks.empty()) {
    const int64_t qb = i / a.blocks.block_rows, kb = j / a.blocks.block_cols;
    auto b0 = a.blocks.col_block.begin() + a.blocks.row_ptr[size_t(qb)];
    auto b1 = a.blocks.col_block.begin() + a.blocks.row_ptr[size_t(qb + 1)];
    if (std::binary_search(b0, b1, int32_t(kb))) return true;
  }
  if (!a.columns.empty()) {
    auto c0 = a.columns.cols.begin() + a.columns.row_ptr[size_t(i)];
    auto c1 = a.columns.cols.begin() + a.columns.row_ptr[size_t(i + 1)];
    if (std::binary_search(c0, c1, int32_t(j))) return true;
  }
  return false;
}

void row_keys(const Acsr& a, int64_t i, std::vector<int32_t>& out) {
  out.clear();
  for (const Segment& s : a.segments) {
    const SegmentRow r = segment_row(s, i);
    for (int64_t t = 0; t < r.count; ++t) out.push_back(int32_t(r.first + s.stride * t));
  }
  if (!a.blocks.empty()) {
    const int64_t qb = i / a.blocks.block_rows;
    for (int64_t e = a.blocks.row_ptr[size_t(qb)]; e < a.blocks.row_ptr[size_t(qb + 1)]; ++e) {
      const int64_t k0 = a.blocks.col_block[size_t(e)] * a.blocks.block_cols;
      for (int64_t j = k0; j < std::min(a.n, k0 + a.blocks.block_cols); ++j)
        if (!in_any_segment(a, i, j)) out.push_back(int32_t(j));
    }
  }
  if (!a.columns.empty())
    out.insert(out.end(), a.columns.cols.begin() + a.columns.row_ptr[size_t(i)],
               a.columns.cols.begin() + a.columns.row_ptr[size_t(i + 1)]);
  std::sort(out.begin(), out.end());
}

std::vector<uint8_t> to_dense(const Acsr& a) {
  std::vector<uint8_t> m(size_t(a.n * a.n), 0);
  std::vector<int32_t> keys;
  for (int64_t i = 0; i < a.n; ++i) {
    row_keys(a, i, keys);
    for (int32_t j : keys) {
      if (m[size_t(i * a.n + j)])
        fail(ErrorCode::Internal, "ACSR parts overlap at (" + std::to_string(i) + ", " + std::to_string(j) + ")");
      m[size_t(i * a.n + j)] = 1;
    }
  }
  return m;
}

int64_t acsr_bytes(const Acsr& a) {
  return int64_t(a.segments.size() * sizeof(Segment) + a.blocks.row_ptr.size() * 8 + a.blocks.col_block.size() * 4 +
                 a.columns.row_ptr.size() * 8 + a.columns.cols.size() * 4);
}

int64_t csr_bytes(int64_t n, int64_t nnz) {  // saturates: dense masks at huge n exceed int64
  const __int128 b = __int128(n + 1) * 8 + __int128(nnz) * 4;
  return b > __int128(INT64_MAX) ? INT64_MAX : int64_t(b);
}

namespace {
std::string describe_segment(const Segment& s, int64_t n) {
  std::string d;
  if (s.slope == 1) {
    const int64_t lo = s.offset + s.stride * s.t_begin, hi = s.offset + s.stride * (s.t_end - 1);
    auto clampn = [n](int64_t v) { return std::max(-n, std::min(n, v)); };
    d = (s.stride == 1 ? "band" : "residue/" + std::to_string(s.stride)) + " j-i in [" + std::to_string(clampn(lo)) +
        "," + std::to_string(clampn(hi)) + "]";
  } else {
    d = (s.stride == 1 ? "cols" : "cols/" + std::to_string(s.stride)) + " [" +
        std::to_string(std::max(s.key_begin, s.offset + s.stride * s.t_begin)) + "," +
        std::to_string(std::min(s.key_end, s.offset + s.stride * (s.t_end - 1) + 1)) + ")";
    return d;
  }
  if (s.key_begin > 0 || s.key_end < n)
    d += " keys [" + std::to_string(s.key_begin) + "," + std::to_string(s.key_end) + ")";
  return d;
}
}  // namespace

constexpr size_t kDescribedSegments = 8;

std::vector<Region> regions(const Acsr& a) {
  std::vector<int64_t> cuts{0, a.n};
  for (const Segment& s : a.segments) cuts.push_back(s.row_begin), cuts.push_back(s.row_end);
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  // Sweep: segments sorted by row_begin enter, leave at row_end.
  std::vector<int32_t> order(a.segments.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = int32_t(k);
  std::sort(order.begin(), order.end(),
            [&](int32_t x, int32_t y) { return a.segments[size_t(x)].row_begin < a.segments[size_t(y)].row_begin; });
  std::vector<Region> out;
  std::vector<int32_t> active;
  size_t next = 0;
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const int64_t r0 = cuts[c], r1 = cuts[c + 1];
    if (r0 >= r1) continue;
    while (next < order.size() && a.segments[size_t(order[next])].row_begin <= r0) active.push_back(order[next++]);
    active.erase(
        std::remove_if(active.begin(), active.end(), [&](int32_t k) { return a.segments[size_t(k)].row_end <= r0; }),
        active.end());
    std::sort(active.begin(), active.end());
    Region r;
    r.row_begin = r0, r.row_end = r1, r.segments = active;
    size_t described = 0;
    for (int32_t k : active) {
      const Segment& s = a.segments[size_t(k)];
      if (s.slope == 1) r.residue_stride = std::max(r.residue_stride, s.stride);
      // A few segments describe a region; an irregular composition can have hundreds on every row.
      if (described++ >= kDescribedSegments) continue;
      if (!r.describe.empty()) r.describe += " + ";
      r.describe += describe_segment(s, a.n);
    }
    if (described > kDescribedSegments)
      r.describe += " + " + std::to_string(described - kDescribedSegments) + " more segment(s)";
    if (!a.blocks.empty()) r.describe += r.describe.empty() ? "random blocks" : " + random blocks";
    if (!a.columns.empty()) r.describe += r.describe.empty() ? "explicit columns" : " + explicit columns";
    if (r.describe.empty()) r.describe = "empty";
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace splat
