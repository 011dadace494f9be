// Rectangle queries on an ACSR (splat/rect_geometry.hpp): for every pattern family, compositions, an explicit mask
// and odd N, the count, the hull (key range and range of j - i), the mask and the grid counts of random rectangles
// equal those read from the dense mask; the hull of the transpose gives the queries a key range serves.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/rect_geometry.hpp"

using namespace splat;

namespace {

struct Dense {
  std::vector<uint8_t> m;
  int64_t n;
  bool at(int64_t i, int64_t j) const { return m[size_t(i * n + j)] != 0; }
};

int64_t dense_nnz(const Dense& d, const Rect& r) {
  int64_t c = 0;
  for (int64_t i = r.r0; i < r.r1; ++i)
    for (int64_t j = r.k0; j < r.k1; ++j) c += d.at(i, j);
  return c;
}

std::optional<RectHull> dense_hull(const Dense& d, const Rect& r) {
  std::optional<RectHull> h;
  for (int64_t i = r.r0; i < r.r1; ++i)
    for (int64_t j = r.k0; j < r.k1; ++j) {
      if (!d.at(i, j)) continue;
      if (!h) h = RectHull{j - i, j - i, j, j};
      h->diff_lo = std::min(h->diff_lo, j - i), h->diff_hi = std::max(h->diff_hi, j - i);
      h->key_lo = std::min(h->key_lo, j), h->key_hi = std::max(h->key_hi, j);
    }
  return h;
}

Rect random_rect(std::mt19937& rng, int64_t n) {
  std::uniform_int_distribution<int64_t> u(0, n);
  int64_t a = u(rng), b = u(rng), c = u(rng), e = u(rng);
  return {std::min(a, b), std::max(a, b), std::min(c, e), std::max(c, e)};
}

std::vector<int64_t> random_cuts(std::mt19937& rng, int64_t n) {
  std::uniform_int_distribution<int64_t> u(0, n), k(1, 5);
  std::vector<int64_t> cuts{0, n};
  for (int64_t t = k(rng); t > 0; --t) cuts.push_back(u(rng));
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

void check_pattern(const Acsr& a, const Dense& d, std::mt19937& rng, const std::string& what) {
  SCOPED_TRACE(what);
  const Acsr t = transpose(a);
  for (int rep = 0; rep < 40; ++rep) {
    const Rect r = random_rect(rng, d.n);
    ASSERT_EQ(rect_nnz(a, r), dense_nnz(d, r)) << r.r0 << " " << r.r1 << " " << r.k0 << " " << r.k1;
    const auto got = rect_hull(a, r), want = dense_hull(d, r);
    ASSERT_EQ(got.has_value(), want.has_value());
    if (got) {
      EXPECT_EQ(got->diff_lo, want->diff_lo);
      EXPECT_EQ(got->diff_hi, want->diff_hi);
      EXPECT_EQ(got->key_lo, want->key_lo);
      EXPECT_EQ(got->key_hi, want->key_hi);
    }
    // Asked of the transpose with keys as rows: the queries [r0, r1) that use keys [k0, k1).
    const auto q = rect_hull(t, Rect{r.k0, r.k1, r.r0, r.r1});
    std::optional<std::pair<int64_t, int64_t>> rows;
    for (int64_t i = r.r0; i < r.r1; ++i)
      for (int64_t j = r.k0; j < r.k1; ++j)
        if (d.at(i, j))
          rows = rows ? std::make_pair(std::min(rows->first, i), std::max(rows->second, i)) : std::make_pair(i, i);
    ASSERT_EQ(q.has_value(), rows.has_value());
    if (q) EXPECT_EQ(std::make_pair(q->key_lo, q->key_hi), *rows);
    std::vector<uint8_t> m(size_t((r.r1 - r.r0) * (r.k1 - r.k0)), 7);  // poisoned: rect_mask must write every cell
    rect_mask(a, r, m.data());
    for (int64_t i = r.r0; i < r.r1; ++i)
      for (int64_t j = r.k0; j < r.k1; ++j)
        ASSERT_EQ(m[size_t((i - r.r0) * (r.k1 - r.k0) + j - r.k0)], uint8_t(d.at(i, j))) << i << ", " << j;
  }
  for (int rep = 0; rep < 10; ++rep) {
    const std::vector<int64_t> rc = random_cuts(rng, d.n), kc = random_cuts(rng, d.n);
    const GridCounts g = grid_nnz(a, rc, kc);
    std::vector<int64_t> want;  // (x, y, count) of the non-empty cells, in (x, y) order
    for (size_t x = 0; x + 1 < rc.size(); ++x)
      for (size_t y = 0; y + 1 < kc.size(); ++y)
        if (const int64_t c = dense_nnz(d, Rect{rc[x], rc[x + 1], kc[y], kc[y + 1]}); c > 0)
          want.insert(want.end(), {int64_t(x), int64_t(y), c});
    std::vector<int64_t> got;
    for (size_t e = 0; e < g.x.size(); ++e) got.insert(got.end(), {g.x[e], g.y[e], g.count[e]});
    ASSERT_EQ(got, want);
  }
  const std::vector<int64_t> cuts = segment_row_cuts(a);
  EXPECT_TRUE(std::is_sorted(cuts.begin(), cuts.end()));
  EXPECT_EQ(cuts.front(), 0);
  EXPECT_EQ(cuts.back(), d.n);
}

}  // namespace

TEST(RectGeometry, EveryFamilyAndCompositionsAgainstTheDenseMask) {
  std::mt19937 rng(20261201);
  for (const int64_t n : {int64_t(1), int64_t(37), int64_t(45)}) {
    for (const std::string spec :
         {"dense", "causal", "window:w=5", "causal_window:w=7", "dilated:w=6,d=3", "causal_dilated:w=5,d=2",
          "strided:s=6", "fixed:l=8,c=2", "blocked:b=8", "global:g=3", "sink:g=2", "longformer:w=4,g=3",
          "bigbird:b=4,w=1,g=1,r=2,seed=3", "causal_window:w=6+sink:g=2&causal", "strided:s=5&causal",
          "blocked:b=16&window:w=3", "global:g=3+dilated:w=5,d=3", "bigbird:b=8,w=1,g=1,r=2,seed=5&causal"}) {
      const Pattern p = parse_pattern(spec);
      validate_pattern(p, n);
      check_pattern(analyse(p, n), Dense{dense_mask(p, n), n}, rng, spec + " n=" + std::to_string(n));
    }
  }
}

TEST(RectGeometry, ExplicitMask) {
  std::mt19937 rng(7);
  const int64_t n = 41;
  std::vector<uint8_t> m(size_t(n * n));
  std::bernoulli_distribution b(0.2);
  for (auto& x : m) x = b(rng);
  check_pattern(analyse_mask(m.data(), n), Dense{m, n}, rng, "random mask");
}

TEST(RectGeometry, BadRectanglesAndCutsRaise) {
  const Acsr a = analyse(parse_pattern("window:w=3"), 10);
  EXPECT_THROW(checked_rect(a, 0, 11, 0, 5), Error);
  EXPECT_THROW(checked_rect(a, 5, 4, 0, 5), Error);
  EXPECT_THROW(checked_rect(a, -1, 4, 0, 5), Error);
  EXPECT_NO_THROW(checked_rect(a, 0, 10, 3, 3));
  EXPECT_THROW(grid_nnz(a, {0}, {0, 10}), Error);
  EXPECT_THROW(grid_nnz(a, {0, 6, 4, 10}, {0, 10}), Error);
  EXPECT_THROW(grid_nnz(a, {0, 11}, {0, 10}), Error);
}
