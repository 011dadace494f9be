// transpose(ACSR): for every pattern family, random compositions, explicit masks and odd or tiny N, the dense mask
// of the transpose is the transposed mask at every coordinate, transposing twice gives the mask back, and the plan
// of the transpose covers it exactly. Spec patterns keep their geometry (bands stay bands) and transpose in time
// independent of nnz.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "format/segment_algebra.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/plan.hpp"

using namespace splat;

namespace {

std::vector<uint8_t> transposed(const std::vector<uint8_t>& m, int64_t n) {
  std::vector<uint8_t> t(m.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) t[size_t(j * n + i)] = m[size_t(i * n + j)];
  return t;
}

void expect_mask(const Acsr& a, const std::vector<uint8_t>& want) {
  const std::vector<uint8_t> got = to_dense(a);  // throws if two parts overlap
  ASSERT_EQ(got.size(), want.size());
  int64_t bad = 0;
  for (size_t k = 0; k < want.size(); ++k)
    if (got[k] != want[k] && bad++ < 5)
      ADD_FAILURE() << "mismatch at (" << k / size_t(a.n) << ", " << k % size_t(a.n) << "): want " << int(want[k]);
  ASSERT_EQ(bad, 0);
}

// Every attended (row, key) of the plan's ACSR is visited exactly once; full spans cover only attended entries.
void expect_plan_covers(const Plan& plan, const std::vector<uint8_t>& want) {
  const int64_t n = plan.acsr.n;
  std::vector<int> hits(size_t(n * n), 0);
  for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
    const Pass& pass = plan.passes[pi];
    std::vector<int> row_in_pass(size_t(n), 0);
    for (const TileTask& t : pass.tasks) {
      for (int32_t r = 0; r < t.row_count; ++r) ++row_in_pass[size_t(t.row_begin + t.row_stride * r)];
      for (int32_t s = t.span_begin; s < t.span_end; ++s) {
        const KeySpan& sp = pass.spans[size_t(s)];
        for (int32_t r = sp.row_lo; r < sp.row_hi; ++r)
          for (int64_t c = 0; c < sp.key_count; ++c) {
            const int64_t i = t.row_begin + t.row_stride * r, j = span_key(plan, sp, c);
            ASSERT_TRUE(i >= 0 && i < n && j >= 0 && j < n) << "row or key out of range";
            if (span_entry_attended(plan, t, sp, r, c)) ++hits[size_t(i * n + j)];
            if (sp.full) ASSERT_TRUE(want[size_t(i * n + j)]) << "full span covers a masked entry " << i << "," << j;
          }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_LE(row_in_pass[size_t(i)], 1) << "row twice in one pass";
      if (pi == 0) ASSERT_EQ(row_in_pass[size_t(i)], 1) << "pass 0 misses row " << i;
    }
  }
  for (int64_t k = 0; k < n * n; ++k)
    ASSERT_EQ(hits[size_t(k)], int(want[size_t(k)])) << "at " << k / n << "," << k % n;
}

// a has mask `want`: check its transpose against the transposed mask, every way it is used.
void expect_transpose(const Acsr& a, const std::vector<uint8_t>& want, bool check_plan = true) {
  const int64_t n = a.n;
  const std::vector<uint8_t> want_t = transposed(want, n);
  const Acsr t = transpose(a);
  ASSERT_EQ(t.n, n);
  expect_mask(t, want_t);
  const int64_t count = int64_t(std::count(want.begin(), want.end(), 1));
  EXPECT_EQ(nnz(t), count);
  std::vector<int32_t> keys;
  for (int64_t j = 0; j < n; ++j) {
    row_keys(t, j, keys);
    ASSERT_TRUE(std::is_sorted(keys.begin(), keys.end()));
    std::vector<int32_t> col;
    for (int64_t i = 0; i < n; ++i)
      if (want[size_t(i * n + j)]) col.push_back(int32_t(i));
    ASSERT_EQ(keys, col) << "row " << j << " of the transpose";
    ASSERT_EQ(row_nnz(t, j), int64_t(col.size()));
  }
  expect_mask(transpose(t), want);
  if (!check_plan) return;
  for (PlanOptions opt : {PlanOptions{}, PlanOptions{7, 5, true}, PlanOptions{16, 8, false}}) {
    Plan plan = make_plan(a, opt);
    add_transpose(plan);
    ASSERT_TRUE(plan.transposed);
    const Plan* first = plan.transposed.get();
    add_transpose(plan);
    EXPECT_EQ(plan.transposed.get(), first) << "add_transpose must be idempotent";
    EXPECT_EQ(first->options.block_m, opt.block_m);
    EXPECT_EQ(first->useful, count);
    expect_plan_covers(*first, want_t);
  }
}

void expect_spec(const std::string& spec, int64_t n, bool check_plan = true) {
  SCOPED_TRACE(spec + " n=" + std::to_string(n));
  const Pattern p = parse_pattern(spec);
  expect_transpose(analyse(p, n), dense_mask(p, n), check_plan);
}

std::string random_primitive(std::mt19937& rng, int64_t n) {
  auto u = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto s = [](int64_t v) { return std::to_string(v); };
  switch (u(0, 12)) {
    case 0: return "dense";
    case 1: return "causal";
    case 2: return "window:w=" + s(u(0, n));
    case 3: return "causal_window:w=" + s(u(0, n));
    case 4: return "dilated:w=" + s(u(0, 8)) + ",d=" + s(u(1, 9));
    case 5: return "causal_dilated:w=" + s(u(0, 8)) + ",d=" + s(u(1, 9));
    case 6: return "strided:s=" + s(u(1, n + 2));
    case 7: {
      const int64_t l = u(1, n + 3);
      return "fixed:l=" + s(l) + ",c=" + s(u(0, l));
    }
    case 8: return "blocked:b=" + s(u(1, n + 2));
    case 9: return "global:g=" + s(u(0, n + 1));
    case 10: return "sink:g=" + s(u(0, n + 1));
    case 11: return "longformer:w=" + s(u(0, n / 2 + 1)) + ",g=" + s(u(0, 5));
    default:
      return "bigbird:b=" + s(u(1, 9)) + ",w=" + s(u(0, 2)) + ",g=" + s(u(0, 2)) + ",r=" + s(u(0, 4)) +
             ",seed=" + s(u(0, 1000));
  }
}

const int64_t kSizes[] = {1, 2, 3, 17, 63, 64, 65, 100, 257};

}  // namespace

TEST(Transpose, EveryFamilyAtOddAndTinySizes) {
  for (int64_t n : kSizes) {
    const int64_t w = std::max<int64_t>(1, n / 9), root = std::max<int64_t>(1, int64_t(std::sqrt(double(n))));
    auto s = [](int64_t v) { return std::to_string(v); };
    for (const std::string& spec :
         {std::string("dense"), std::string("causal"), "window:w=" + s(w), "causal_window:w=" + s(2 * w),
          "dilated:w=" + s(w) + ",d=3", "causal_dilated:w=" + s(w) + ",d=4", "strided:s=" + s(root),
          "strided:s=" + s(root + 2), "fixed:l=" + s(root) + ",c=1", "fixed:l=" + s(2 * root) + ",c=" + s(root),
          std::string("fixed:l=4,c=2"), "blocked:b=" + s(w + 1), "global:g=" + s(w), "sink:g=" + s(w),
          "longformer:w=" + s(w) + ",g=" + s(std::min<int64_t>(n, 5)), std::string("bigbird:b=8,w=1,g=2,r=3,seed=1"),
          std::string("bigbird:b=5,w=1,g=1,r=4,seed=9"), std::string("bigbird:b=3,w=0,g=0,r=2,seed=4")})
      expect_spec(spec, n, n <= 100);
  }
}

TEST(Transpose, RandomFamiliesAndCompositions) {
  std::mt19937 rng(20261201);
  for (int iter = 0; iter < 300; ++iter) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 70)(rng);
    std::string spec = random_primitive(rng, n);
    const int ops = std::uniform_int_distribution<int>(0, 2)(rng);
    for (int k = 0; k < ops; ++k)
      spec += (std::uniform_int_distribution<int>(0, 1)(rng) ? "+" : "&") + random_primitive(rng, n);
    expect_spec(spec, n, iter % 3 == 0);
  }
}

TEST(Transpose, NamedCompositions) {
  for (const char* spec :
       {"causal_window:w=10+sink:g=4", "strided:s=8&causal", "dilated:w=3,d=4+window:w=2", "strided:s=5+strided:s=7",
        "bigbird:b=8,w=1,g=1,r=2,seed=5&causal", "blocked:b=16&window:w=3", "window:w=4&dilated:w=4,d=2",
        "global:g=3+dilated:w=5,d=3", "fixed:l=10,c=2+causal_window:w=3", "window:w=0&causal_dilated:w=2,d=3&sink:g=0",
        "blocked:b=4&sink:g=2", "fixed:l=5,c=2+fixed:l=7,c=1", "fixed:l=9,c=3&window:w=20", "fixed:l=6,c=1+strided:s=4",
        "fixed:l=8,c=3+sink:g=3+bigbird:b=4,w=0,g=1,r=2,seed=2"})
    for (int64_t n : {100, 65}) expect_spec(spec, n);
}

TEST(Transpose, ExplicitMasks) {
  std::mt19937 rng(11);
  for (int64_t n : kSizes) {
    for (int density : {2, 5, 17}) {
      SCOPED_TRACE("random bits n=" + std::to_string(n) + " 1/" + std::to_string(density));
      std::vector<uint8_t> m(size_t(n * n));
      for (auto& x : m) x = (rng() % uint32_t(density)) == 0;
      expect_transpose(analyse_mask(m.data(), n), m, n <= 100);
    }
    // Structured masks with noise: the mask analysis finds segments of both slopes and any stride.
    for (const char* spec : {"dilated:w=4,d=3", "fixed:l=8,c=2", "strided:s=6"}) {
      SCOPED_TRACE(std::string(spec) + " + noise n=" + std::to_string(n));
      std::vector<uint8_t> m = dense_mask(parse_pattern(spec), n);
      for (int k = 0; k < 4 && n > 1; ++k) m[size_t(rng() % uint32_t(n * n))] ^= 1;
      expect_transpose(analyse_mask(m.data(), n), m, n <= 100);
    }
  }
}

// The per-kind rules on single random segments (any slope, stride, t range and clamps), against brute force.
TEST(Transpose, SingleSegmentRules) {
  std::mt19937 rng(5);
  auto u = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int iter = 0; iter < 5000; ++iter) {
    const int64_t n = u(1, 40);
    Segment s;
    s.row_begin = u(0, n), s.row_end = u(s.row_begin, n);
    s.slope = u(0, 1), s.offset = u(-n, n), s.stride = u(1, 9);
    s.t_begin = u(-n - 2, n), s.t_end = u(s.t_begin, n + 2);
    s.key_begin = u(0, n), s.key_end = u(s.key_begin, n);
    Acsr a;
    a.n = n;
    a.segments.push_back(s);
    std::vector<uint8_t> want(size_t(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) want[size_t(i * n + j)] = segment_contains(s, i, j);
    SCOPED_TRACE("iter " + std::to_string(iter));
    expect_transpose(a, want, iter % 10 == 0);
    if (HasFatalFailure()) return;
  }
}

// Many stride-s key sets of one residue class on adjacent row ranges, ending at different keys: the sweep per class
// inserts, merges and splits row ranges.
TEST(Transpose, StridedKeySetsOfOneClass) {
  std::mt19937 rng(17);
  auto u = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int iter = 0; iter < 300; ++iter) {
    const int64_t n = u(2, 60), stride = u(2, 5);
    Acsr a;
    a.n = n;
    for (int64_t residue = 0; residue < stride; ++residue) {
      if (u(0, 2) == 0) continue;
      for (int64_t r0 = 0; r0 < n;) {  // rows cut into pieces; each piece sees its own range of the class
        const int64_t r1 = std::min(n, r0 + u(1, 8));
        Segment s;
        s.row_begin = r0, s.row_end = r1, s.slope = 0, s.offset = residue - stride * u(0, 3), s.stride = stride;
        s.t_begin = u(0, n / stride + 3), s.t_end = s.t_begin + u(0, n / stride + 2), s.key_end = n;
        if (u(0, 3) > 0) a.segments.push_back(s);
        r0 = r1;
      }
    }
    std::vector<uint8_t> want(size_t(n * n), 0);
    for (const Segment& s : a.segments)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) want[size_t(i * n + j)] |= segment_contains(s, i, j);
    SCOPED_TRACE("iter " + std::to_string(iter));
    expect_transpose(a, want, iter % 10 == 0);
    if (HasFatalFailure()) return;
  }
}

// Remainders transpose by themselves: blocks with rectangular (block_rows != block_cols) shapes and columns.
TEST(Transpose, RemaindersWithRectangularBlocks) {
  std::mt19937 rng(3);
  for (int64_t n : {1, 17, 63, 100}) {
    for (int iter = 0; iter < 6; ++iter) {
      Acsr a;
      a.n = n;
      a.blocks.block_rows = int64_t(rng() % 9) + 1, a.blocks.block_cols = int64_t(rng() % 9) + 1;
      const int64_t qbs = (n + a.blocks.block_rows - 1) / a.blocks.block_rows;
      const int64_t kbs = (n + a.blocks.block_cols - 1) / a.blocks.block_cols;
      a.blocks.row_ptr.assign(size_t(qbs + 1), 0);
      for (int64_t qb = 0; qb < qbs; ++qb) {
        for (int64_t kb = 0; kb < kbs; ++kb)
          if (rng() % 4 == 0) a.blocks.col_block.push_back(int32_t(kb));
        a.blocks.row_ptr[size_t(qb + 1)] = int64_t(a.blocks.col_block.size());
      }
      // A band over the blocks (blocks exclude it) and explicit columns outside both.
      Segment band;
      band.row_begin = 0, band.row_end = n, band.slope = 1, band.t_begin = -2, band.t_end = 3, band.key_end = n;
      a.segments.push_back(band);
      std::vector<uint8_t> want(size_t(n * n), 0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const int64_t qb = i / a.blocks.block_rows;
          const auto b0 = a.blocks.col_block.begin() + a.blocks.row_ptr[size_t(qb)];
          const auto b1 = a.blocks.col_block.begin() + a.blocks.row_ptr[size_t(qb + 1)];
          want[size_t(i * n + j)] =
              segment_contains(band, i, j) || std::binary_search(b0, b1, int32_t(j / a.blocks.block_cols));
        }
      a.columns.row_ptr.assign(size_t(n + 1), 0);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j)
          if (!want[size_t(i * n + j)] && rng() % 7 == 0)
            a.columns.cols.push_back(int32_t(j)), want[size_t(i * n + j)] = 1;
        a.columns.row_ptr[size_t(i + 1)] = int64_t(a.columns.cols.size());
      }
      if (a.blocks.col_block.empty()) a.blocks = BlockRemainder{};
      if (a.columns.cols.empty()) a.columns = ColumnRemainder{};
      SCOPED_TRACE("n=" + std::to_string(n) + " iter " + std::to_string(iter));
      expect_transpose(a, want);
      const Acsr t = transpose(a);
      if (!a.blocks.empty()) {
        EXPECT_EQ(t.blocks.block_rows, a.blocks.block_cols);
        EXPECT_EQ(t.blocks.block_cols, a.blocks.block_rows);
        EXPECT_EQ(t.blocks.col_block.size(), a.blocks.col_block.size());
      }
      EXPECT_EQ(t.columns.cols.size(), a.columns.cols.size());
    }
  }
}

// The transpose keeps the forward's geometry: bands stay bands (same stride), globals and sinks swap.
TEST(Transpose, KeepsGeometry) {
  const int64_t n = 4096;
  auto T = [&](const char* spec) { return transpose(analyse(parse_pattern(spec), n)); };
  const Acsr window = analyse(parse_pattern("window:w=256"), n);
  EXPECT_EQ(T("window:w=256").segments, window.segments);  // a window is its own transpose
  const Acsr cw = T("causal_window:w=128");                // an anti-causal window
  ASSERT_EQ(cw.segments.size(), 1u);
  EXPECT_EQ(cw.segments[0].slope, 1);
  EXPECT_EQ(cw.segments[0].offset + cw.segments[0].t_begin, 0);
  EXPECT_EQ(cw.segments[0].offset + cw.segments[0].t_end - 1, 128);
  const Acsr dil = T("dilated:w=64,d=4");
  ASSERT_EQ(dil.segments.size(), 1u);
  EXPECT_EQ(dil.segments[0].stride, 4);
  EXPECT_EQ(regions(dil).at(0).residue_stride, 4);
  const Acsr str = T("strided:s=64");
  EXPECT_EQ(str.segments.size(), 3u);
  for (const Segment& s : str.segments) EXPECT_EQ(s.slope, 1);
  const Acsr sink = T("sink:g=4");  // sink columns -> global rows of the transpose
  ASSERT_EQ(sink.segments.size(), 1u);
  EXPECT_EQ(sink.segments[0].row_begin, 0);
  EXPECT_EQ(sink.segments[0].row_end, 4);
  EXPECT_EQ(segment_row(sink.segments[0], 2).count, n);
  const Acsr glob = T("global:g=8");  // global rows + columns: its own transpose as a set, two rectangles
  EXPECT_EQ(glob.segments.size(), 2u);
  const Acsr bb = T("bigbird:b=64,w=1,g=2,r=3,seed=1");
  EXPECT_TRUE(bb.columns.empty());
  EXPECT_FALSE(bb.blocks.empty());
  EXPECT_LE(bb.segments.size(), size_t(n / 64 + 2));  // one rectangle per block row, the global rows, the columns
  const Acsr fx = T("fixed:l=64,c=4");  // column families -> rows that see every key (with their own block)
  EXPECT_EQ(fx.segments.size(), size_t(2 * n / 64));
  EXPECT_EQ(segment_row(fx.segments.at(1), 63).count, n);
  for (const char* spec : {"window:w=256", "dilated:w=64,d=4", "strided:s=64", "longformer:w=64,g=32"}) {
    const Acsr t = T(spec);
    EXPECT_TRUE(t.columns.empty() && t.blocks.empty()) << spec;
    const Plan fwd = make_plan(analyse(parse_pattern(spec), n)), bwd = make_plan(t);
    EXPECT_EQ(bwd.passes.size(), fwd.passes.size()) << spec;
    EXPECT_NEAR(bwd.waste(), fwd.waste(), 0.02) << spec;  // the same dense-band tiles
  }
  for (const char* spec : {"causal", "causal_dilated:w=9,d=3", "strided:s=64", "strided:s=7&causal"}) {
    const Acsr a = analyse(parse_pattern(spec), n);  // bands only: transposing twice gives the same segments
    EXPECT_EQ(transpose(transpose(a)).segments, a.segments) << spec;
  }
  // Strided's residue halves still merge into one two-segment span per residue task.
  const Plan sp = make_plan(T("strided:s=64"));
  ASSERT_EQ(sp.passes.size(), 2u);
  int64_t merged = 0;
  for (const KeySpan& s : sp.passes[1].spans) merged += s.segment2 >= 0;
  EXPECT_EQ(merged, int64_t(sp.passes[1].tasks.size()));
}

// Spec patterns at N = 2^20: the transpose costs O(segments + blocks), never O(nnz) or N x N.
TEST(Transpose, FastAtHugeN) {
  const int64_t n = int64_t(1) << 20;
  for (const char* spec : {"window:w=1024", "dilated:w=1024,d=4", "strided:s=1024", "longformer:w=1024,g=32",
                           "bigbird:b=64,w=1,g=2,r=3,seed=1", "causal_window:w=2048+sink:g=4", "fixed:l=1024,c=8"}) {
    const Acsr a = analyse(parse_pattern(spec), n);
    const auto t0 = std::chrono::steady_clock::now();
    const Acsr t = transpose(a);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    RecordProperty(std::string("transpose_ms ") + spec, std::to_string(ms));
    EXPECT_LT(ms, 1000.0) << spec;  // ~10 ms in Release, ~0.2 s under the sanitizers
    EXPECT_LE(t.segments.size(), 4 * a.segments.size() + 8) << spec;
    EXPECT_EQ(t.blocks.col_block.size(), a.blocks.col_block.size()) << spec;
    EXPECT_TRUE(t.columns.empty()) << spec;
    EXPECT_LT(acsr_bytes(t), 4 * acsr_bytes(a) + 1024) << spec;
    EXPECT_EQ(nnz(t), nnz(a)) << spec;
  }
}

TEST(Transpose, RejectsBrokenAcsr) {
  Acsr a;
  a.n = 10;
  Segment s;
  s.row_begin = 0, s.row_end = 10, s.slope = 2, s.t_begin = 0, s.t_end = 1, s.key_end = 10;
  a.segments.push_back(s);
  EXPECT_THROW(transpose(a), Error);
}
