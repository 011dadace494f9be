// ACSR straight from a pattern spec: each family maps to a few affine segments in O(1) (or
// O(n / block) for block families); compositions use the exact segment algebra within a work and
// segment budget, and take the row path (analysis_rows.cpp) where the algebra cannot express the
// result or stops paying.
#include <algorithm>

#include "common/int_math.hpp"
#include "format/row_analysis.hpp"
#include "format/segment_algebra.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

Segment make_segment(int64_t n, int64_t r0, int64_t r1, int64_t slope, int64_t offset, int64_t stride, int64_t t0,
                     int64_t t1, int64_t k0 = 0, int64_t k1 = -1) {
  Segment s;
  s.row_begin = std::max<int64_t>(0, r0), s.row_end = std::min(n, r1);
  s.slope = slope, s.offset = offset, s.stride = stride, s.t_begin = t0, s.t_end = t1;
  s.key_begin = std::max<int64_t>(0, k0), s.key_end = k1 < 0 ? n : std::min(n, k1);
  return s;
}

void add(Acsr& a, const Segment& s) {
  if (!segment_empty(s)) a.segments.push_back(s);
}

// Rows [r0, r1) attend keys [k0, k1).
Segment rect(int64_t n, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
  return make_segment(n, r0, r1, 0, 0, 1, k0, k1);
}

Acsr bigbird(const Pattern& p, int64_t n) {
  Acsr a;
  a.n = n;
  const int64_t b = std::min(p.b, n), nb = ceil_div(n, b);
  const int64_t gb = std::min(p.g, nb), gr = std::min(n, gb * b), w = std::min(p.w, nb);
  add(a, rect(n, 0, gr, 0, n));   // global query blocks see everything
  add(a, rect(n, gr, n, 0, gr));  // every other row sees the global key blocks
  for (int64_t qb = gb; qb < nb; ++qb) {
    const int64_t lo = std::max(gb, qb - w), hi = std::min(nb - 1, qb + w);
    if (lo <= hi) add(a, rect(n, qb * b, (qb + 1) * b, lo * b, std::min(n, (hi + 1) * b)));
  }
  if (p.r > 0 && gb < nb) {
    BlockRemainder& br = a.blocks;
    br.block_rows = br.block_cols = b;
    br.row_ptr.assign(size_t(nb + 1), 0);
    std::vector<int32_t> row;
    for (int64_t qb = 0; qb < nb; ++qb) {
      row.clear();
      if (qb >= gb) {
        for (int64_t t = 0; t < p.r; ++t) {
          const int64_t kb = bigbird_random_block(p, n, qb, t);
          if (kb >= gb && std::llabs(kb - qb) > w) row.push_back(int32_t(kb));
        }
        std::sort(row.begin(), row.end());
        row.erase(std::unique(row.begin(), row.end()), row.end());
      }
      br.col_block.insert(br.col_block.end(), row.begin(), row.end());
      br.row_ptr[size_t(qb + 1)] = int64_t(br.col_block.size());
    }
    if (br.col_block.empty()) br = BlockRemainder{};
  }
  return a;
}

Acsr fixed(const Pattern& p, int64_t n) {
  Acsr a;
  a.n = n;
  const int64_t l = std::min(p.l, n), nb = ceil_div(n, l), c = p.c;
  // With l clamped to n there is one block; columns j mod l >= l-c only matter inside it (already attended).
  for (int64_t qb = 0; qb < nb; ++qb) {
    const int64_t r0 = qb * l, r1 = std::min(n, r0 + l);
    add(a, rect(n, r0, r1, r0, r1));
    if (c == 0 || nb == 1) continue;
    if (2 * c < nb - 1) {  // c strided column families, split around the own block
      for (int64_t cc = 0; cc < c; ++cc) {
        add(a, make_segment(n, r0, r1, 0, l - c + cc, l, 0, nb, 0, r0));
        add(a, make_segment(n, r0, r1, 0, l - c + cc, l, 0, nb, r1, n));
      }
    } else {  // one contiguous run of c columns per other block
      for (int64_t kb = 0; kb < nb; ++kb)
        if (kb != qb) add(a, rect(n, r0, r1, kb * l + l - c, std::min(n, kb * l + l)));
    }
  }
  return a;
}

Acsr primitive(const Pattern& p, int64_t n) {
  Acsr a;
  a.n = n;
  const int64_t all = n + 1;  // t-range bound that reaches every key
  switch (p.kind) {
    case PatternKind::Dense: add(a, rect(n, 0, n, 0, n)); break;
    case PatternKind::Causal: add(a, make_segment(n, 0, n, 1, 0, 1, -all, 1)); break;
    case PatternKind::Window: {
      const int64_t w = std::min(p.w, n);
      add(a, make_segment(n, 0, n, 1, 0, 1, -w, w + 1));
      break;
    }
    case PatternKind::CausalWindow: add(a, make_segment(n, 0, n, 1, 0, 1, -std::min(p.w, n), 1)); break;
    case PatternKind::Dilated: {
      const int64_t w = std::min(p.w, n);
      add(a, make_segment(n, 0, n, 1, 0, std::min(p.d, n), -w, w + 1));
      break;
    }
    case PatternKind::CausalDilated: add(a, make_segment(n, 0, n, 1, 0, std::min(p.d, n), -std::min(p.w, n), 1)); break;
    case PatternKind::Strided: {
      const int64_t s = std::min(p.s, n);  // s >= n: the local band covers every key
      add(a, make_segment(n, 0, n, 1, 0, 1, -(s - 1), s));
      const int64_t reach = n / s + 2;
      add(a, make_segment(n, 0, n, 1, 0, s, -reach, 0));  // residue class, keys below the band
      add(a, make_segment(n, 0, n, 1, 0, s, 1, reach));   // and above it (t = 0 is the diagonal)
      break;
    }
    case PatternKind::Blocked: {
      const int64_t b = std::min(p.b, n);
      for (int64_t r0 = 0; r0 < n; r0 += b) add(a, rect(n, r0, std::min(n, r0 + b), r0, std::min(n, r0 + b)));
      break;
    }
    case PatternKind::Global: {
      const int64_t g = std::min(p.g, n);
      add(a, rect(n, 0, g, 0, n));
      add(a, rect(n, g, n, 0, g));
      break;
    }
    case PatternKind::Sink: add(a, rect(n, 0, n, 0, std::min(p.g, n))); break;
    case PatternKind::Longformer: {
      const int64_t g = std::min(p.g, n), w = std::min(p.w, n);
      add(a, rect(n, 0, g, 0, n));
      add(a, rect(n, g, n, 0, g));
      add(a, make_segment(n, g, n, 1, 0, 1, -w, w + 1, g, n));
      break;
    }
    case PatternKind::BigBird: return bigbird(p, n);
    case PatternKind::Fixed: return fixed(p, n);
    default: fail(ErrorCode::Internal, "primitive(): not a primitive pattern");
  }
  return a;
}

// The segment algebra spends at most this much work (pairs examined, pieces made) on a pattern and
// keeps at most this many segments; past either, the row path is cheaper and always exact.
struct Budget {
  int64_t work = 0, work_limit = 0, segment_limit = 0;
  bool charge(int64_t w) { return (work += w) <= work_limit; }
};

// Pairs (a, b) whose row ranges and key ranges meet: a sweep over row_begin, so the work is the number
// of row-overlapping pairs, not |A| * |B|. False when the budget runs out.
bool meeting_pairs(const std::vector<Segment>& A, const std::vector<Segment>& B, Budget& budget,
                   std::vector<std::pair<int32_t, int32_t>>& pairs) {
  struct Item {
    int64_t row_begin;
    int side;
    int32_t index;
  };
  std::vector<Item> items;
  items.reserve(A.size() + B.size());
  for (size_t k = 0; k < A.size(); ++k) items.push_back({A[k].row_begin, 0, int32_t(k)});
  for (size_t k = 0; k < B.size(); ++k) items.push_back({B[k].row_begin, 1, int32_t(k)});
  std::sort(items.begin(), items.end(), [](const Item& x, const Item& y) { return x.row_begin < y.row_begin; });
  if (!budget.charge(int64_t(items.size()))) return false;
  const std::vector<Segment>* side[2] = {&A, &B};
  std::vector<int32_t> active[2];
  for (const Item& it : items) {
    const Segment& x = (*side[it.side])[size_t(it.index)];
    std::vector<int32_t>& other = active[1 - it.side];
    const std::vector<Segment>& os = *side[1 - it.side];
    if (!budget.charge(int64_t(other.size()))) return false;
    size_t w = 0;
    for (int32_t k : other) {
      const Segment& y = os[size_t(k)];
      if (y.row_end <= x.row_begin) continue;  // ended: rows only grow from here
      other[w++] = k;
      if (y.key_begin < x.key_end && x.key_begin < y.key_end)
        pairs.push_back(it.side == 0 ? std::make_pair(it.index, k) : std::make_pair(k, it.index));
    }
    other.resize(w);
    active[it.side].push_back(it.index);
  }
  return true;
}

// A and (B \ A) over segments; nullopt if some difference is not affine or the budget runs out.
std::optional<std::vector<Segment>> union_segments(const std::vector<Segment>& A, const std::vector<Segment>& B,
                                                   Budget& budget) {
  std::vector<std::pair<int32_t, int32_t>> pairs;
  if (!meeting_pairs(A, B, budget, pairs)) return std::nullopt;
  std::sort(pairs.begin(), pairs.end(), [](const auto& x, const auto& y) {
    return x.second != y.second ? x.second < y.second : x.first < y.first;
  });
  std::vector<Segment> out = A;
  std::vector<Segment> pieces, next;
  size_t q = 0;
  for (size_t kb = 0; kb < B.size(); ++kb) {
    pieces.assign(1, B[kb]);
    for (; q < pairs.size() && pairs[q].second == int32_t(kb); ++q) {
      const Segment& a = A[size_t(pairs[q].first)];
      next.clear();
      for (const Segment& piece : pieces) {
        auto d = segment_subtract(piece, a);
        if (!d) return std::nullopt;
        next.insert(next.end(), d->begin(), d->end());
      }
      pieces.swap(next);
      if (!budget.charge(int64_t(pieces.size()))) return std::nullopt;
    }
    out.insert(out.end(), pieces.begin(), pieces.end());
    if (int64_t(out.size()) > budget.segment_limit) return std::nullopt;
  }
  return out;
}

std::optional<Acsr> unite(const Acsr& A, const Acsr& B, Budget& budget) {
  const bool blocks_clash = !A.blocks.empty() && !B.blocks.empty() &&
                            (A.blocks.block_rows != B.blocks.block_rows || A.blocks.block_cols != B.blocks.block_cols);
  if (!A.columns.empty() || !B.columns.empty() || blocks_clash) return std::nullopt;
  auto segs = union_segments(A.segments, B.segments, budget);
  if (!segs) segs = union_segments(B.segments, A.segments, budget);
  if (!segs) return std::nullopt;
  Acsr r;
  r.n = A.n;
  r.segments = std::move(*segs);
  // Blocks exclude every segment by definition, so a plain merge of the block lists is exact.
  if (A.blocks.empty() || B.blocks.empty()) {
    r.blocks = A.blocks.empty() ? B.blocks : A.blocks;
  } else {
    r.blocks.block_rows = A.blocks.block_rows, r.blocks.block_cols = A.blocks.block_cols;
    const size_t rows = A.blocks.row_ptr.size() - 1;
    r.blocks.row_ptr.assign(rows + 1, 0);
    for (size_t q = 0; q < rows; ++q) {
      auto a0 = A.blocks.col_block.begin() + A.blocks.row_ptr[q],
           a1 = A.blocks.col_block.begin() + A.blocks.row_ptr[q + 1];
      auto b0 = B.blocks.col_block.begin() + B.blocks.row_ptr[q],
           b1 = B.blocks.col_block.begin() + B.blocks.row_ptr[q + 1];
      std::set_union(a0, a1, b0, b1, std::back_inserter(r.blocks.col_block));
      r.blocks.row_ptr[q + 1] = int64_t(r.blocks.col_block.size());
    }
  }
  return r;
}

std::optional<Acsr> intersect(const Acsr& A, const Acsr& B, Budget& budget) {
  if (!A.columns.empty() || !B.columns.empty() || !A.blocks.empty() || !B.blocks.empty()) return std::nullopt;
  std::vector<std::pair<int32_t, int32_t>> pairs;
  if (!meeting_pairs(A.segments, B.segments, budget, pairs)) return std::nullopt;
  Acsr r;
  r.n = A.n;
  for (const auto& [ka, kb] : pairs) {
    auto x = segment_intersect(A.segments[size_t(ka)], B.segments[size_t(kb)]);
    if (!x) return std::nullopt;
    if (*x) r.segments.push_back(**x);
  }
  if (int64_t(r.segments.size()) > budget.segment_limit) return std::nullopt;
  return r;
}

bool has_mask(const Pattern& p) {
  if (p.kind == PatternKind::Mask) return true;
  for (const Pattern& c : p.children)
    if (has_mask(c)) return true;
  return false;
}

// nullopt: the composition is not affine, or not cheaply so (the caller takes the row path).
std::optional<Acsr> build(const Pattern& p, int64_t n, Budget& budget) {
  switch (p.kind) {
    case PatternKind::Mask: return std::nullopt;  // masks only reach here inside compositions
    case PatternKind::Union:
    case PatternKind::Intersection: {
      std::optional<Acsr> acc = build(p.children.at(0), n, budget);
      for (size_t k = 1; acc && k < p.children.size(); ++k) {
        std::optional<Acsr> next = build(p.children[k], n, budget);
        if (!next) return std::nullopt;
        acc = p.kind == PatternKind::Union ? unite(*acc, *next, budget) : intersect(*acc, *next, budget);
      }
      return acc;
    }
    default: {
      Acsr a = primitive(p, n);
      if (!budget.charge(int64_t(a.segments.size()))) return std::nullopt;
      return a;
    }
  }
}

}  // namespace

Acsr analyse(const Pattern& p, int64_t n) {
  validate_pattern(p, n);
  if (p.kind == PatternKind::Mask) return analyse_mask(p.mask->bits.data(), n);
  if (p.kind != PatternKind::Union && p.kind != PatternKind::Intersection) return primitive(p, n);
  if (!has_mask(p)) {  // an explicit mask costs O(n^2) anyway: straight to the row path
    Budget budget;
    budget.work_limit = int64_t(1) << 21;
    budget.segment_limit = 4096 + 2 * n;
    if (std::optional<Acsr> a = build(p, n, budget)) return std::move(*a);
  }
  return analyse_rows(p, n);
}

}  // namespace splat
