// The decode row program: a pattern & causal compiled into plain-data instructions (splat/device/decode_rows.cuh:
// closed-form runs per leaf, union by concatenation, exact intersection by the Chinese remainder theorem), and the
// sorted keys of a row from its runs. O(runs) per row at any length: what a decode step needs instead of an
// analysis of N rows.
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
constexpr int64_t kClamp = int64_t(1) << 31;  // rows and keys are below 2^31: larger distances change nothing

// Bound on a leaf's runs and the widest partial residue width they use (1: intervals and single residues).
struct Bound {
  int64_t runs = 0, width = 1;
};
Bound leaf_bound(const Pattern& p) {
  switch (p.kind) {
    case PatternKind::Strided: return {2, 1};
    case PatternKind::Fixed: return {2, std::max<int64_t>(1, std::min(p.c, kClamp))};
    case PatternKind::Longformer: return {2, 1};
    case PatternKind::BigBird: return {2 + p.r, 1};
    default: return {1, 1};
  }
}

static_assert(int(PatternKind::BigBird) == dev::kLeafBigBird && int(PatternKind::Sink) == dev::kLeafSink &&
                  int(PatternKind::Dense) == dev::kLeafDense && int(PatternKind::Fixed) == dev::kLeafFixed,
              "dev::DecodeLeaf numbers the families as PatternKind does");

// Compiles p (postfix) and simulates the run stack's bounds: peak = the most runs held at once.
void compile(const Pattern& p, std::vector<dev::DecodeInstr>& prog, std::vector<Bound>& stack, int64_t& peak) {
  if (p.kind == PatternKind::Mask)
    fail(ErrorCode::Unsupported,
         "decode: an explicit mask has rows for its own N only, not at every position; use the forward "
         "(attention over the whole sequence) for mask patterns");
  auto held = [&] {
    int64_t t = 0;
    for (const Bound& b : stack) t += b.runs;
    return t;
  };
  dev::DecodeInstr op{};
  if (p.kind == PatternKind::Union || p.kind == PatternKind::Intersection) {
    require(!p.children.empty(), "a composition needs at least one operand");
    for (const Pattern& c : p.children) compile(c, prog, stack, peak);
    op.op = p.kind == PatternKind::Union ? dev::kDecodeUnion : dev::kDecodeIntersection;
    op.arity = int(p.children.size());
    Bound acc = stack[stack.size() - p.children.size()];
    for (size_t k = stack.size() - p.children.size() + 1; k < stack.size(); ++k) {
      const Bound& b = stack[k];
      if (op.op == dev::kDecodeUnion) {
        acc = {acc.runs + b.runs, std::max(acc.width, b.width)};
      } else {
        __int128 r = __int128(acc.runs) * b.runs;
        if (acc.width > 1 && b.width > 1) r *= __int128(acc.width) * b.width;
        acc = {int64_t(std::min<__int128>(r, kMaxRuns + 1)), std::max(acc.width, b.width)};
        peak = std::max(peak, held() + 2 * acc.runs);  // the operands plus the fold's two buffers
      }
      if (acc.runs > kMaxRuns || peak > kMaxRuns)
        fail(ErrorCode::Unsupported, "decode: pattern '" + to_string(p) + "' needs more than " +
                                         std::to_string(kMaxRuns) + " key runs per row; use the forward");
    }
    stack.resize(stack.size() - p.children.size());
    stack.push_back(acc);
  } else {
    op.op = dev::kDecodeLeaf;
    op.kind = int(p.kind);
    op.w = p.w, op.g = p.g, op.r = p.r, op.seed = p.seed;
    op.d = std::min(p.d, kClamp), op.s = std::min(p.s, kClamp), op.l = std::min(p.l, kClamp);
    op.b = std::min(p.b, kClamp), op.c = std::min<int64_t>(p.c, op.l);
    stack.push_back(leaf_bound(p));
  }
  prog.push_back(op);
  peak = std::max(peak, held());
}

}  // namespace

DecodePlan make_decode_plan(const Pattern& pattern, const DecodeOptions& options) {
  require(options.head_dim >= 1 && options.head_dim <= 4096,
          "decode: head_dim must be in [1, 4096], got " + std::to_string(options.head_dim));
  DecodePlan plan;
  plan.options = options;
  plan.source = pattern;
  plan.pattern = to_string(pattern);
  std::vector<Bound> stack;
  int64_t peak = 0;
  compile(pattern, plan.program, stack, peak);  // masks are refused here, before validation looks at their size
  validate_pattern(pattern, 1);                 // parameters (no length enters the rows' shape)
  plan.max_runs = int32_t(std::max<int64_t>(peak, 1));
  return plan;
}

void decode_row_runs(const DecodePlan& plan, int64_t i, int64_t n, std::vector<KeyRun>& out) {
  require(i >= 0 && i < n && n < (int64_t(1) << 31),
          "decode: row " + std::to_string(i) + " outside a sequence of length " + std::to_string(n));
  thread_local std::vector<int> ends;
  const size_t cap = size_t(plan.max_runs);
  out.resize(3 * cap);  // runs, and the fold's two buffers
  ends.resize(plan.program.size());
  const int count = dev::decode_row_eval(plan.program.data(), int(plan.program.size()), i, n, out.data(),
                                         out.data() + cap, out.data() + 2 * cap, ends.data(), int(cap));
  if (count < 0) fail(ErrorCode::Internal, "decode: a row needs more runs than the plan's bound");
  out.resize(size_t(count));
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
      for (int64_t j = std::max<int64_t>(q, r.lo); j <= std::min(r.hi, q + r.width - 1); ++j) f(j);
  };
  if (disjoint) {  // sorted hulls that do not meet: the keys come out in order
    for (const KeyRun& r : runs) each(r, [&](int64_t j) { out.push_back(int32_t(j)); });
    return;
  }
  // Overlapping runs: mark the keys over the hull, then list them in order.
  int64_t lo = runs.front().lo, hi = lo;
  for (const KeyRun& r : runs) hi = std::max<int64_t>(hi, r.hi);
  bits.assign(size_t((hi - lo) / 64 + 1), 0);
  for (const KeyRun& r : runs)
    each(r, [&](int64_t j) { bits[size_t((j - lo) >> 6)] |= uint64_t(1) << ((j - lo) & 63); });
  for (size_t w = 0; w < bits.size(); ++w)
    for (uint64_t x = bits[w]; x; x &= x - 1) out.push_back(int32_t(lo + int64_t(w) * 64 + __builtin_ctzll(x)));
}

}  // namespace splat
