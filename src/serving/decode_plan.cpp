// The decode row program: a pattern & causal as closed-form runs per leaf, combined per row by union
// (concatenation; overlaps are resolved when keys are listed) and intersection (pairwise, exact by the Chinese
// remainder theorem). O(runs) per row at any length: what a decode step needs instead of an analysis of N rows.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "common/int_math.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {

constexpr int32_t kMaxRuns = 4096;

// Keys C(y) = #{u in [0, y] : u mod s < w} (extended to negative y so that differences count any interval).
int64_t count_upto(int64_t y, int64_t s, int64_t w) {
  return floor_div(y, s) * w + std::min(pos_mod(y, s) + 1, w);
}

void push(std::vector<KeyRun>& out, int64_t lo, int64_t hi, int64_t i, int64_t base = 0, int64_t stride = 1,
          int64_t width = 1) {
  lo = std::max<int64_t>(lo, 0), hi = std::min(hi, i);  // causal, and no key before 0
  if (lo > hi || width <= 0) return;
  if (width >= stride) base = 0, stride = 1, width = 1;
  out.push_back({lo, hi, pos_mod(base, stride), stride, width});
}

// Leaf runs of row i at length n, clipped to [0, i].
void leaf_runs(const Pattern& p, int64_t i, int64_t n, std::vector<KeyRun>& out) {
  switch (p.kind) {
    case PatternKind::Dense:
    case PatternKind::Causal: push(out, 0, i, i); break;
    case PatternKind::Window:
    case PatternKind::CausalWindow: push(out, i - p.w, i, i); break;
    case PatternKind::Dilated:
    case PatternKind::CausalDilated:
      push(out, p.w > i / p.d ? 0 : i - p.w * p.d, i, i, i, p.d, 1);  // w*d <= i in the second case
      break;
    case PatternKind::Strided:
      push(out, i - p.s + 1, i, i);
      push(out, 0, i - p.s, i, i, p.s, 1);
      break;
    case PatternKind::Fixed:
      push(out, i / p.l * p.l, i, i);
      push(out, 0, i, i, p.l - p.c, p.l, p.c);  // j mod l >= l - c
      break;
    case PatternKind::Blocked: push(out, i / p.b * p.b, i, i); break;
    case PatternKind::Global: push(out, 0, i < p.g ? i : p.g - 1, i); break;
    case PatternKind::Sink: push(out, 0, std::min(p.g, n) - 1, i); break;
    case PatternKind::Longformer:
      push(out, 0, i < p.g ? i : p.g - 1, i);
      push(out, i - p.w, i, i);
      break;
    case PatternKind::BigBird: {
      const int64_t b = p.b, qb = i / b, nb = ceil_div(n, b);
      if (qb < p.g) {
        push(out, 0, i, i);
        break;
      }
      push(out, std::max<int64_t>(0, qb - p.w) * b, i, i);  // the band (its upper half is past the diagonal)
      push(out, 0, std::min(p.g, nb) * b - 1, i);           // global blocks
      for (int64_t t = 0; t < p.r; ++t) {
        const int64_t kb = bigbird_random_block(p, n, qb, t);
        push(out, kb * b, kb * b + b - 1, i);
      }
      break;
    }
    default: fail(ErrorCode::Internal, "decode row program: not a leaf pattern");
  }
}

// Bound on a leaf's runs and the widest partial residue width they use (1: intervals and single residues).
struct Bound {
  int64_t runs = 0, width = 1;
};
Bound leaf_bound(const Pattern& p) {
  switch (p.kind) {
    case PatternKind::Strided: return {2, 1};
    case PatternKind::Fixed: return {2, std::max<int64_t>(1, p.c)};
    case PatternKind::Longformer: return {2, 1};
    case PatternKind::BigBird: return {2 + p.r, 1};
    default: return {1, 1};
  }
}

// a & b (both width 1: one residue class each) by the Chinese remainder theorem; false when empty.
bool intersect_classes(const KeyRun& a, const KeyRun& b, int64_t lo, int64_t hi, KeyRun& out) {
  const int64_t g = std::gcd(a.stride, b.stride), diff = b.base - a.base;
  if (pos_mod(diff, g) != 0) return false;
  const int64_t m = b.stride / g;
  const __int128 k = __int128(pos_mod(diff / g, m)) * mod_inverse(pos_mod(a.stride / g, m), m) % m;
  const __int128 lcm = __int128(a.stride) * m, x0 = a.base + a.stride * k;  // x0 in both classes
  __int128 first = x0 + lcm * ((lo - x0 + lcm - 1) / lcm);                  // lo - x0 may be negative: fix below
  while (first - lcm >= lo) first -= lcm;
  while (first < lo) first += lcm;
  if (first > hi) return false;
  if (lcm > hi - lo) {  // one key
    out = {int64_t(first), int64_t(first), 0, 1, 1};
  } else {
    out = {lo, hi, int64_t(first % lcm), int64_t(lcm), 1};
  }
  return true;
}

// Runs of a & b appended to out.
void intersect_runs(const KeyRun& a, const KeyRun& b, std::vector<KeyRun>& out) {
  const int64_t lo = std::max(a.lo, b.lo), hi = std::min(a.hi, b.hi);
  if (lo > hi) return;
  if (a.stride == 1 || b.stride == 1) {  // an interval keeps the other's residues
    const KeyRun& r = a.stride == 1 ? b : a;
    out.push_back({lo, hi, r.base, r.stride, r.width});
    return;
  }
  // Residue class by residue class (widths are small: they come from fixed's c).
  for (int64_t u = 0; u < a.width; ++u)
    for (int64_t v = 0; v < b.width; ++v) {
      KeyRun x;
      if (intersect_classes({0, 0, a.base + u, a.stride, 1}, {0, 0, b.base + v, b.stride, 1}, lo, hi, x))
        out.push_back(x);
    }
}

void compile(const Pattern& p, std::vector<RowOp>& prog, std::vector<Bound>& stack) {
  if (p.kind == PatternKind::Mask)
    fail(ErrorCode::Unsupported,
         "decode: an explicit mask has rows for its own N only, not at every position; use the forward "
         "(attention over the whole sequence) for mask patterns");
  if (p.kind == PatternKind::Union || p.kind == PatternKind::Intersection) {
    require(!p.children.empty(), "a composition needs at least one operand");
    for (const Pattern& c : p.children) compile(c, prog, stack);
    RowOp op;
    op.kind = p.kind == PatternKind::Union ? RowOp::Union : RowOp::Intersection;
    op.arity = int32_t(p.children.size());
    Bound acc = stack[stack.size() - p.children.size()];
    for (size_t k = stack.size() - p.children.size() + 1; k < stack.size(); ++k) {
      const Bound& b = stack[k];
      if (op.kind == RowOp::Union) {
        acc = {acc.runs + b.runs, std::max(acc.width, b.width)};
      } else {
        __int128 r = __int128(acc.runs) * b.runs;
        if (acc.width > 1 && b.width > 1) r *= __int128(acc.width) * b.width;
        acc = {int64_t(std::min<__int128>(r, kMaxRuns + 1)), std::max(acc.width, b.width)};
      }
      if (acc.runs > kMaxRuns)
        fail(ErrorCode::Unsupported, "decode: pattern '" + to_string(p) + "' needs more than " +
                                         std::to_string(kMaxRuns) + " key runs per row; use the forward");
    }
    stack.resize(stack.size() - p.children.size());
    stack.push_back(acc);
    prog.push_back(op);
    return;
  }
  RowOp op;
  op.leaf = p;
  prog.push_back(op);
  stack.push_back(leaf_bound(p));
}

}  // namespace

int64_t KeyRun::count() const {
  if (lo > hi) return 0;
  return count_upto(hi - base, stride, width) - count_upto(lo - 1 - base, stride, width);
}

bool KeyRun::contains(int64_t j) const {
  return j >= lo && j <= hi && pos_mod(j - base, stride) < width;
}

DecodePlan make_decode_plan(const Pattern& pattern, const DecodeOptions& options) {
  require(options.head_dim >= 1 && options.head_dim <= 4096,
          "decode: head_dim must be in [1, 4096], got " + std::to_string(options.head_dim));
  DecodePlan plan;
  plan.options = options;
  plan.source = pattern;
  plan.pattern = to_string(pattern);
  std::vector<Bound> stack;
  compile(pattern, plan.program, stack);  // masks are refused here, before validation looks at their size
  validate_pattern(pattern, 1);           // parameters (no length enters the rows' shape)
  plan.max_runs = int32_t(stack.back().runs);
  return plan;
}

void decode_row_runs(const DecodePlan& plan, int64_t i, int64_t n, std::vector<KeyRun>& out) {
  require(i >= 0 && i < n && n < (int64_t(1) << 31),
          "decode: row " + std::to_string(i) + " outside a sequence of length " + std::to_string(n));
  // One run list per stack entry, in one buffer: entry e holds runs [ends[e-1], ends[e]).
  thread_local std::vector<KeyRun> runs, tmp;
  thread_local std::vector<size_t> ends;
  runs.clear(), ends.clear();
  for (const RowOp& op : plan.program) {
    if (op.kind == RowOp::Leaf) {
      leaf_runs(op.leaf, i, n, runs);
      ends.push_back(runs.size());
      continue;
    }
    const size_t first = ends.size() - size_t(op.arity), begin = first ? ends[first - 1] : 0;
    if (op.kind == RowOp::Union) {  // the lists are adjacent: the union is their concatenation
      ends.resize(first);
      ends.push_back(runs.size());
      continue;
    }
    // Intersection: fold the operands left to right into tmp.
    tmp.assign(runs.begin() + std::ptrdiff_t(begin), runs.begin() + std::ptrdiff_t(ends[first]));
    for (size_t e = first + 1; e < ends.size(); ++e) {
      std::vector<KeyRun> next;
      for (const KeyRun& a : tmp)
        for (size_t r = ends[e - 1]; r < ends[e]; ++r) intersect_runs(a, runs[r], next);
      tmp.swap(next);
    }
    runs.resize(begin);
    runs.insert(runs.end(), tmp.begin(), tmp.end());
    ends.resize(first);
    ends.push_back(runs.size());
  }
  out.assign(runs.begin(), runs.end());
}

void decode_row_keys(const DecodePlan& plan, int64_t i, int64_t n, std::vector<int32_t>& out) {
  thread_local std::vector<KeyRun> runs;
  thread_local std::vector<uint64_t> bits;
  decode_row_runs(plan, i, n, runs);
  out.clear();
  std::sort(runs.begin(), runs.end(), [](const KeyRun& a, const KeyRun& b) { return a.lo < b.lo; });
  bool disjoint = true;
  for (size_t r = 1; r < runs.size(); ++r) disjoint &= runs[r].lo > runs[r - 1].hi;
  auto each = [](const KeyRun& r, auto&& f) {
    if (r.stride == 1) {
      for (int64_t j = r.lo; j <= r.hi; ++j) f(j);
      return;
    }
    for (int64_t q = r.base + r.stride * floor_div(r.lo - r.base, r.stride); q <= r.hi; q += r.stride)
      for (int64_t j = std::max(q, r.lo); j <= std::min(r.hi, q + r.width - 1); ++j) f(j);
  };
  if (disjoint) {  // sorted hulls that do not meet: the keys come out in order
    for (const KeyRun& r : runs) each(r, [&](int64_t j) { out.push_back(int32_t(j)); });
    return;
  }
  // Overlapping runs: mark the keys over the hull, then list them in order.
  int64_t lo = runs.front().lo, hi = lo;
  for (const KeyRun& r : runs) hi = std::max(hi, r.hi);
  bits.assign(size_t((hi - lo) / 64 + 1), 0);
  for (const KeyRun& r : runs)
    each(r, [&](int64_t j) { bits[size_t((j - lo) >> 6)] |= uint64_t(1) << ((j - lo) & 63); });
  for (size_t w = 0; w < bits.size(); ++w)
    for (uint64_t x = bits[w]; x; x &= x - 1) out.push_back(int32_t(lo + int64_t(w) * 64 + __builtin_ctzll(x)));
}

}  // namespace splat
