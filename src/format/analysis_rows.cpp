// The row path of the analysis: every row of the pattern as a short list of disjoint arithmetic
// progressions, combined with exact 1-D set operations (an intersection of two progressions is one
// progression; a difference is at most 2 + min(p-1, m-1) of them). A row whose progressions fragment
// beyond a small budget is expanded to columns instead, so the work per row is bounded by its
// progressions or its keys, never by a product of the operands' sizes.
#include <algorithm>
#include <numeric>
#include <utility>

#include "common/int_math.hpp"
#include "format/row_analysis.hpp"
#include "splat/error.hpp"

namespace splat {
namespace {

using Row = std::vector<Progression>;

void push_ap(Row& out, int64_t first, int64_t stride, int64_t count) {
  if (count > 0) out.push_back({first, count == 1 ? 1 : stride, count});
}
void push_interval(Row& out, int64_t lo, int64_t hi) {  // keys lo..hi inclusive
  if (lo <= hi) out.push_back({lo, 1, hi - lo + 1});
}

bool hulls_meet(const Progression& a, const Progression& b) {
  return a.first <= b.last() && b.first <= a.last();
}

bool ap_contains(const Progression& a, int64_t x) {
  return x >= a.first && x <= a.last() && (x - a.first) % a.stride == 0;
}

// x^-1 mod m for gcd(x, m) == 1 and 0 <= x < m < 2^31 (extended Euclid in 64 bits).
int64_t inverse_mod(int64_t x, int64_t m) {
  if (m == 1) return 0;
  int64_t t = 0, new_t = 1, r = m, new_r = x;
  while (new_r != 0) {
    const int64_t q = r / new_r;
    t = std::exchange(new_t, t - q * new_t);
    r = std::exchange(new_r, r - q * new_r);
  }
  return t < 0 ? t + m : t;
}

// a & b by the Chinese remainder theorem; count == 0 when empty.
Progression ap_intersect(const Progression& a, const Progression& b) {
  const int64_t lo = std::max(a.first, b.first), hi = std::min(a.last(), b.last());
  if (lo > hi) return {0, 1, 0};
  if (a.count == 1) return ap_contains(b, a.first) ? a : Progression{0, 1, 0};
  if (b.count == 1) return ap_contains(a, b.first) ? b : Progression{0, 1, 0};
  // A row's progressions repeat a few stride pairs many times: gcd and inverse are memoised.
  struct Crt {
    int64_t sa = 0, sb = 0, g = 0, inv = 0;
  };
  thread_local Crt memo[256];
  Crt& c = memo[(uint64_t(a.stride) * 31 + uint64_t(b.stride)) & 255];
  if (c.sa != a.stride || c.sb != b.stride) {
    const int64_t g = std::gcd(a.stride, b.stride);
    c = {a.stride, b.stride, g, inverse_mod(pos_mod(a.stride / g, b.stride / g), b.stride / g)};
  }
  const int64_t g = c.g, diff = b.first - a.first;
  if (pos_mod(diff, g) != 0) return {0, 1, 0};
  const int64_t m = b.stride / g;  // strides are below 2^31, so these products fit in 64 bits
  const int64_t k = pos_mod(diff / g, m) * c.inv % m;
  const int64_t lcm = a.stride * m, x0 = a.first + a.stride * k;
  const int64_t first = x0 + lcm * ceil_div(lo - x0, lcm);
  if (first > hi) return {0, 1, 0};
  const int64_t count = (hi - first) / lcm + 1;
  return {first, count == 1 ? 1 : lcm, count};
}

// b \ a appended to out.
void ap_subtract(const Progression& b, const Progression& a, Row& out) {
  const Progression x = ap_intersect(b, a);
  if (x.count == 0) {
    out.push_back(b);
    return;
  }
  // x is b at u = u0 + p*t, t in [0, m).
  const int64_t u0 = (x.first - b.first) / b.stride, m = x.count, p = m == 1 ? 1 : x.stride / b.stride;
  const int64_t ulast = u0 + p * (m - 1);
  push_ap(out, b.first, b.stride, u0);
  push_ap(out, b.first + b.stride * (ulast + 1), b.stride, b.count - ulast - 1);
  if (m < 2 || p < 2) return;
  // Residue classes compose: removing further progressions of a commensurate stride deletes whole
  // classes instead of cutting runs again. Gaps only when there are far fewer of them.
  if (p <= 64 || p <= m) {  // p-1 residue classes between the removed keys
    for (int64_t q = 1; q < p; ++q) push_ap(out, b.first + b.stride * (u0 + q), b.stride * p, m - 1);
  } else {  // m-1 gaps
    for (int64_t t = 0; t + 1 < m; ++t) push_ap(out, b.first + b.stride * (u0 + p * t + 1), b.stride, p - 1);
  }
}

// Sorted by first key; adjacent unit-stride runs merged.
void normalize(Row& r) {
  std::sort(r.begin(), r.end(), [](const Progression& x, const Progression& y) { return x.first < y.first; });
  size_t w = 0;
  for (size_t k = 0; k < r.size(); ++k) {
    if (w > 0 && r[w - 1].stride == 1 && r[k].stride == 1 && r[w - 1].last() + 1 == r[k].first)
      r[w - 1].count += r[k].count;
    else
      r[w++] = r[k];
  }
  r.resize(w);
}

// One node of the pattern tree with its scratch rows (no allocation per row once warm).
struct Node {
  const Pattern* p = nullptr;
  std::vector<Node> kids;
  Row row, other, pieces, next, runs, strided, swapped;
  int64_t cached_block = -1;  // BigBird: rows of a query block are identical
  Row cached;
};

Node compile(const Pattern& p) {
  Node node;
  node.p = &p;
  for (const Pattern& c : p.children) node.kids.push_back(compile(c));
  return node;
}

class RowEvaluator {
 public:
  RowEvaluator(const Pattern& p, int64_t n) : root_(compile(p)), n_(n), stamp_(size_t(n), 0) {}

  const Row& row(int64_t i) {
    eval(root_, i);
    normalize(root_.row);
    return root_.row;
  }

 private:
  void eval(Node& node, int64_t i) {
    const Pattern& p = *node.p;
    if (p.kind != PatternKind::Union && p.kind != PatternKind::Intersection) return leaf(node, i);
    eval(node.kids[0], i);
    node.row = node.kids[0].row;
    for (size_t k = 1; k < node.kids.size(); ++k) {
      eval(node.kids[k], i);
      if (p.kind == PatternKind::Union)
        unite(node, node.kids[k].row);
      else
        intersect(node, node.kids[k].row);
    }
  }

  // node.row |= b.
  void unite(Node& node, const Row& b) {
    Row& a = node.row;
    if (b.empty()) return;
    if (a.empty()) {
      a = b;
      return;
    }
    // a | b = cutters | (cut \ cutters). The cutters' unit-stride runs are cut out of each x by one walk
    // (they are sorted and disjoint); only their strided progressions go through the pairwise difference,
    // so the operand with fewer of those cuts the other.
    auto strided = [](const Row& r) {
      return std::count_if(r.begin(), r.end(), [](const Progression& x) { return x.stride > 1; });
    };
    Row* cutters = &a;
    const Row* cut = &b;
    if (strided(a) > strided(b)) {
      node.swapped = b;
      cutters = &node.swapped, cut = &a;
    }
    normalize(*cutters);
    node.runs.clear(), node.strided.clear();
    for (const Progression& y : *cutters) (y.stride == 1 ? node.runs : node.strided).push_back(y);
    node.other = *cutters;
    int64_t ops = 0;
    // Marking the keys (explicit_union) costs about their number: the difference may spend a fraction of
    // that, and at most a few steps per operand, before it gives way.
    int64_t keys = 0;
    for (const Row* r : std::initializer_list<const Row*>{&a, &b})
      for (const Progression& x : *r) keys += x.count;
    const int64_t budget = std::min<int64_t>(2048 + 32 * int64_t(a.size() + b.size()), 256 + keys / 4);
    for (const Progression& x : *cut) {
      node.pieces.clear();
      ops += subtract_runs(x, node.runs, node.pieces);
      for (const Progression& y : node.strided) {
        if (y.first > x.last()) break;  // sorted by first key
        if (++ops > budget) return explicit_union(node, b);
        if (!hulls_meet(x, y)) continue;
        node.next.clear();
        for (const Progression& piece : node.pieces) {
          if (hulls_meet(piece, y))
            ap_subtract(piece, y, node.next);
          else
            node.next.push_back(piece);
        }
        node.pieces.swap(node.next);
        ops += int64_t(node.pieces.size());
      }
      if (ops > budget) return explicit_union(node, b);
      node.other.insert(node.other.end(), node.pieces.begin(), node.pieces.end());
    }
    a.swap(node.other);
  }

  // x minus sorted disjoint unit-stride runs, appended to out; returns the runs visited.
  static int64_t subtract_runs(const Progression& x, const Row& runs, Row& out) {
    auto it = std::lower_bound(runs.begin(), runs.end(), x.first,
                               [](const Progression& r, int64_t key) { return r.last() < key; });
    int64_t lo = x.first, visited = 0;
    auto keep = [&](int64_t k0, int64_t k1) {  // x's keys in [k0, k1]
      if (k0 > k1) return;
      const int64_t t0 = ceil_div(k0 - x.first, x.stride), t1 = floor_div(k1 - x.first, x.stride);
      push_ap(out, x.first + x.stride * t0, x.stride, t1 - t0 + 1);
    };
    for (; it != runs.end() && it->first <= x.last(); ++it, ++visited) {
      keep(lo, it->first - 1);
      lo = std::max(lo, it->last() + 1);
    }
    keep(lo, x.last());
    return visited;
  }

  // node.row &= b.
  void intersect(Node& node, const Row& b) {
    Row& a = node.row;
    if (a.empty() || b.empty()) {
      a.clear();
      return;
    }
    if (a.size() * b.size() > 4096 + 16 * (a.size() + b.size())) return explicit_intersection(node, b);
    node.other.clear();
    for (const Progression& x : a)
      for (const Progression& y : b)
        if (hulls_meet(x, y)) {
          const Progression z = ap_intersect(x, y);
          if (z.count > 0) node.other.push_back(z);
        }
    a.swap(node.other);
  }

  // Fragmenting rows: mark keys, collect, cut into progressions again. O(keys of both operands).
  void mark(const Row& r) {
    for (const Progression& x : r)
      for (int64_t t = 0, j = x.first; t < x.count; ++t, j += x.stride) stamp_[size_t(j)] = epoch_;
  }
  void next_epoch() {
    if (++epoch_ == 0) {  // wrapped: old stamps could collide
      std::fill(stamp_.begin(), stamp_.end(), 0u);
      epoch_ = 1;
    }
  }
  // The keys in cols_ (stamped with the current epoch) in order, cut into progressions: a scan of their
  // range when they are dense in it, a sort otherwise.
  void collect(Node& node) {
    if (!cols_.empty()) {
      const auto [lo, hi] = std::minmax_element(cols_.begin(), cols_.end());
      const int32_t k0 = *lo, k1 = *hi;
      if (int64_t(k1 - k0) < 16 * int64_t(cols_.size())) {
        cols_.clear();
        for (int32_t j = k0; j <= k1; ++j)
          if (stamp_[size_t(j)] == epoch_) cols_.push_back(j);
      } else {
        std::sort(cols_.begin(), cols_.end());
      }
    }
    split_row(cols_.data(), int64_t(cols_.size()), node.row);
  }
  void explicit_union(Node& node, const Row& b) {
    next_epoch();
    cols_.clear();
    for (const Row* r : std::initializer_list<const Row*>{&node.row, &b})
      for (const Progression& x : *r)
        for (int64_t t = 0, j = x.first; t < x.count; ++t, j += x.stride)
          if (stamp_[size_t(j)] != epoch_) stamp_[size_t(j)] = epoch_, cols_.push_back(int32_t(j));
    collect(node);
  }
  void explicit_intersection(Node& node, const Row& b) {
    next_epoch();
    mark(node.row);
    cols_.clear();
    for (const Progression& x : b)
      for (int64_t t = 0, j = x.first; t < x.count; ++t, j += x.stride)
        if (stamp_[size_t(j)] == epoch_) cols_.push_back(int32_t(j));
    next_epoch();  // collect() reads the stamps: only the common keys may carry the epoch
    for (int32_t j : cols_) stamp_[size_t(j)] = epoch_;
    collect(node);
  }

  void leaf(Node& node, int64_t i) {
    const Pattern& p = *node.p;
    const int64_t n = n_;
    Row& out = node.row;
    out.clear();
    switch (p.kind) {
      case PatternKind::Dense: push_interval(out, 0, n - 1); break;
      case PatternKind::Causal: push_interval(out, 0, i); break;
      case PatternKind::Window: push_interval(out, std::max<int64_t>(0, i - p.w), std::min(n - 1, i + p.w)); break;
      case PatternKind::CausalWindow: push_interval(out, std::max<int64_t>(0, i - p.w), i); break;
      case PatternKind::Dilated:
      case PatternKind::CausalDilated: {
        const int64_t below = std::min(p.w, i / p.d);
        const int64_t above = p.kind == PatternKind::Dilated ? std::min(p.w, (n - 1 - i) / p.d) : 0;
        push_ap(out, i - p.d * below, p.d, below + above + 1);
        break;
      }
      case PatternKind::Strided: {
        const int64_t s = p.s;
        push_interval(out, std::max<int64_t>(0, i - s + 1), std::min(n - 1, i + s - 1));
        if (i >= s) push_ap(out, i % s, s, (i - s - i % s) / s + 1);
        if (i + s <= n - 1) push_ap(out, i + s, s, (n - 1 - i - s) / s + 1);
        break;
      }
      case PatternKind::Fixed: {
        const int64_t l = std::min(p.l, n), qb = i / l, nb = ceil_div(n, l), c = std::min(p.c, l);
        const int64_t r0 = qb * l, r1 = std::min(n, r0 + l);
        push_interval(out, r0, r1 - 1);
        if (c == 0 || nb == 1) break;
        if (2 * c < nb) {  // c column families of stride l, split around the own block
          for (int64_t r = l - c; r < l; ++r) {
            push_ap(out, r, l, qb);
            const int64_t total = r < n ? (n - 1 - r) / l + 1 : 0;
            push_ap(out, r + l * (qb + 1), l, total - qb - 1);
          }
        } else {  // c columns at the end of every other block
          for (int64_t kb = 0; kb < nb; ++kb)
            if (kb != qb) push_interval(out, kb * l + l - c, std::min(n, kb * l + l) - 1);
        }
        break;
      }
      case PatternKind::Blocked: {
        const int64_t b = std::min(p.b, n), r0 = i / b * b;
        push_interval(out, r0, std::min(n, r0 + b) - 1);
        break;
      }
      case PatternKind::Global: push_interval(out, 0, i < p.g ? n - 1 : std::min(p.g, n) - 1); break;
      case PatternKind::Sink: push_interval(out, 0, std::min(p.g, n) - 1); break;
      case PatternKind::Longformer:
        if (i < p.g) {
          push_interval(out, 0, n - 1);
        } else {
          const int64_t g = std::min(p.g, n);
          push_interval(out, 0, g - 1);
          push_interval(out, std::max(g, i - p.w), std::min(n - 1, i + p.w));
        }
        break;
      case PatternKind::BigBird: bigbird(node, i); break;
      case PatternKind::Mask: {
        const uint8_t* bits = p.mask->bits.data() + i * n;
        cols_.clear();
        for (int64_t j = 0; j < n; ++j)
          if (bits[j]) cols_.push_back(int32_t(j));
        split_row(cols_.data(), int64_t(cols_.size()), out);
        break;
      }
      default: fail(ErrorCode::Internal, "row analysis: not a leaf pattern");
    }
  }

  void bigbird(Node& node, int64_t i) {
    const Pattern& p = *node.p;
    const int64_t n = n_, b = p.b, qb = i / b, nb = ceil_div(n, b);
    if (qb != node.cached_block) {
      node.cached_block = qb;
      Row& out = node.cached;
      out.clear();
      auto block = [&](int64_t k0, int64_t k1) { push_interval(out, k0 * b, std::min(n, k1 * b) - 1); };
      const int64_t gb = std::min(p.g, nb);
      if (qb < gb) {
        block(0, nb);
      } else {
        block(0, gb);
        const int64_t lo = std::max(gb, qb - std::min(p.w, nb)), hi = std::min(nb - 1, qb + std::min(p.w, nb));
        if (lo <= hi) block(lo, hi + 1);
        std::vector<int64_t> extra;
        for (int64_t t = 0; t < p.r; ++t) {
          const int64_t kb = bigbird_random_block(p, n, qb, t);
          if (kb >= gb && (kb < lo || kb > hi)) extra.push_back(kb);
        }
        std::sort(extra.begin(), extra.end());
        extra.erase(std::unique(extra.begin(), extra.end()), extra.end());
        for (int64_t kb : extra) block(kb, kb + 1);
      }
      normalize(out);
    }
    node.row = node.cached;
  }

  Node root_;
  int64_t n_;
  std::vector<uint32_t> stamp_;
  uint32_t epoch_ = 0;
  std::vector<int32_t> cols_;
};

}  // namespace

Acsr analyse_rows(const Pattern& p, int64_t n) {
  validate_pattern(p, n);
  RowEvaluator rows(p, n);
  RowMerger merger(n);
  for (int64_t i = 0; i < n; ++i) merger.add_row(rows.row(i));
  return merger.finish();
}

}  // namespace splat
