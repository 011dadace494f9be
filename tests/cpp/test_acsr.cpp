// ACSR round trip: for every pattern family with random parameters, ACSR -> dense equals the
// pattern's mask at every coordinate, parts are disjoint, and nnz agrees.
#include <gtest/gtest.h>

#include <random>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

using namespace splat;

namespace {

void expect_round_trip(const std::string& spec, int64_t n) {
  SCOPED_TRACE(spec + " n=" + std::to_string(n));
  const Pattern p = parse_pattern(spec);
  const std::vector<uint8_t> want = dense_mask(p, n);
  const Acsr a = analyse(p, n);
  const std::vector<uint8_t> got = to_dense(a);  // throws if two parts overlap
  ASSERT_EQ(got.size(), want.size());
  int64_t want_nnz = 0, bad = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    want_nnz += want[k];
    if (got[k] != want[k] && bad++ < 5)
      ADD_FAILURE() << "mismatch at (" << k / size_t(n) << ", " << k % size_t(n) << "): want " << int(want[k]);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(nnz(a), want_nnz);
  for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 7)) {
    int64_t row = 0;
    for (int64_t j = 0; j < n; ++j) {
      row += want[size_t(i * n + j)];
      ASSERT_EQ(acsr_contains(a, i, j), want[size_t(i * n + j)] != 0) << i << "," << j;
    }
    EXPECT_EQ(row_nnz(a, i), row);
  }
  // The explicit-mask analysis must reproduce the same set.
  const Acsr m = analyse_mask(want.data(), n);
  EXPECT_EQ(to_dense(m), want);
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

}  // namespace

TEST(Acsr, SuitePatterns) {
  for (int64_t n : {64, 256, 197}) {
    const int64_t root = int64_t(std::sqrt(double(n)));
    for (const std::string& spec :
         {"window:w=" + std::to_string(n / 16), "causal_window:w=" + std::to_string(n / 8),
          "dilated:w=" + std::to_string(n / 16) + ",d=4", "strided:s=" + std::to_string(root),
          "blocked:b=" + std::to_string(n / 8), "longformer:w=" + std::to_string(n / 16) + ",g=32",
          std::string("bigbird:b=64,w=1,g=2,r=3,seed=1"), std::string("bigbird:b=8,w=1,g=2,r=3,seed=1")})
      expect_round_trip(spec, n);
  }
}

TEST(Acsr, EdgeSizes) {
  for (int64_t n : {1, 2, 3, 5}) {
    for (const char* spec : {"dense", "causal", "window:w=1", "dilated:w=1,d=2", "strided:s=2", "fixed:l=2,c=1",
                             "blocked:b=2", "global:g=1", "bigbird:b=2,w=0,g=0,r=2,seed=3", "window:w=0&causal"})
      expect_round_trip(spec, n);
  }
}

TEST(Acsr, RandomFamiliesAndCompositions) {
  std::mt19937 rng(20261124);
  for (int iter = 0; iter < 300; ++iter) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 70)(rng);
    std::string spec = random_primitive(rng, n);
    const int ops = std::uniform_int_distribution<int>(0, 2)(rng);
    for (int k = 0; k < ops; ++k)
      spec += (std::uniform_int_distribution<int>(0, 1)(rng) ? "+" : "&") + random_primitive(rng, n);
    expect_round_trip(spec, n);
  }
}

TEST(Acsr, NamedCompositions) {
  for (const char* spec : {"causal_window:w=10+sink:g=4", "strided:s=8&causal", "dilated:w=3,d=4+window:w=2",
                           "strided:s=5+strided:s=7", "bigbird:b=8,w=1,g=1,r=2,seed=5&causal",
                           "blocked:b=16&window:w=3", "window:w=4&dilated:w=4,d=2", "global:g=3+dilated:w=5,d=3"})
    expect_round_trip(spec, 100);
}

TEST(Acsr, EmptyRowsAndEmptyPattern) {
  expect_round_trip("window:w=0&causal_dilated:w=2,d=3&sink:g=0", 20);  // every row empty
  expect_round_trip("blocked:b=4&sink:g=2", 20);                        // only rows 0..3 non-empty
}

TEST(Acsr, CompactForSpecPatterns) {
  const int64_t n = 16384;
  for (const char* spec : {"window:w=1024", "dilated:w=1024,d=4", "strided:s=128", "longformer:w=1024,g=32",
                           "causal_window:w=2048"}) {
    const Acsr a = analyse(parse_pattern(spec), n);
    EXPECT_LE(a.segments.size(), 4u) << spec;
    EXPECT_LT(acsr_bytes(a), 1024) << spec;
    EXPECT_TRUE(a.columns.empty()) << spec;
  }
  const Acsr bb = analyse(parse_pattern("bigbird:b=64,w=1,g=2,r=3,seed=1"), n);
  EXPECT_LT(acsr_bytes(bb), csr_bytes(n, nnz(bb)) / 50);
}

TEST(Acsr, MaskAnalysisFindsAffineStructure) {
  const int64_t n = 300;
  const std::vector<uint8_t> m = dense_mask(parse_pattern("dilated:w=4,d=3"), n);
  const Acsr a = analyse_mask(m.data(), n);
  EXPECT_LE(a.segments.size(), 40u);  // one interior segment plus clipped edge rows
  EXPECT_EQ(to_dense(a), m);
}

TEST(Acsr, RegionsPartitionRows) {
  const Acsr a = analyse(parse_pattern("longformer:w=8,g=4"), 100);
  const auto rs = regions(a);
  ASSERT_FALSE(rs.empty());
  EXPECT_EQ(rs.front().row_begin, 0);
  EXPECT_EQ(rs.back().row_end, 100);
  for (size_t k = 1; k < rs.size(); ++k) EXPECT_EQ(rs[k].row_begin, rs[k - 1].row_end);
  const Acsr d = analyse(parse_pattern("dilated:w=4,d=4"), 100);
  EXPECT_EQ(regions(d).at(0).residue_stride, 4);
}

#include "format/segment_algebra.hpp"

TEST(Acsr, SegmentNnzClosedFormMatchesRowLoop) {
  std::mt19937 rng(99);
  auto u = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int iter = 0; iter < 20000; ++iter) {
    const int64_t n = u(1, 80);
    Segment s;
    s.row_begin = u(0, n), s.row_end = u(s.row_begin, n);
    s.slope = u(0, 1), s.offset = u(-n, n), s.stride = u(1, 9);
    s.t_begin = u(-n - 2, n), s.t_end = u(s.t_begin, n + 2);
    s.key_begin = u(0, n), s.key_end = u(s.key_begin, n);
    const int64_t r0 = u(-2, n), r1 = u(r0, n + 2);
    int64_t want = 0;
    for (int64_t i = std::max<int64_t>(r0, 0); i < std::min(r1, n); ++i) want += segment_row(s, i).count;
    ASSERT_EQ(segment_nnz(s, r0, r1), want) << "iter " << iter;
  }
}
