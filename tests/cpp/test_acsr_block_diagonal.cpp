// block_diagonal: the ACSR of a packed batch against the dense per-sequence masks at every coordinate (every suite
// family, lengths 0, 1 and not multiples of any block size, BigBird's random blocks cut by segments and not, explicit
// masks), nnz, and no part overlapping another (to_dense fails on a key listed twice).
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace {

using namespace splat;

void expect_block_diagonal(const std::vector<Acsr>& parts, const std::vector<std::vector<uint8_t>>& masks,
                           const std::string& what) {
  std::vector<const Acsr*> ptrs;
  int64_t total = 0, want_nnz = 0;
  for (const Acsr& a : parts) ptrs.push_back(&a), total += a.n, want_nnz += nnz(a);
  const Acsr packed = block_diagonal(ptrs);
  ASSERT_EQ(packed.n, total) << what;
  std::vector<uint8_t> want(size_t(total * total), 0);
  int64_t s = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    const int64_t n = parts[p].n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) want[size_t((s + i) * total + s + j)] = masks[p][size_t(i * n + j)];
    s += n;
  }
  const std::vector<uint8_t> got = to_dense(packed);  // throws if two parts list one key
  for (int64_t i = 0; i < total; ++i)
    for (int64_t j = 0; j < total; ++j) {
      ASSERT_EQ(int(got[size_t(i * total + j)]), int(want[size_t(i * total + j)]))
          << what << " at (" << i << ", " << j << ")";
      ASSERT_EQ(acsr_contains(packed, i, j), want[size_t(i * total + j)] != 0) << what << " contains";
    }
  EXPECT_EQ(nnz(packed), want_nnz) << what;
}

void check_pattern(const std::string& spec, const std::vector<int64_t>& lengths) {
  const Pattern p = parse_pattern(spec);
  std::vector<Acsr> parts;
  std::vector<std::vector<uint8_t>> masks;
  for (int64_t n : lengths) {  // an empty sequence is an empty part (analyse needs n >= 1)
    Acsr a;
    if (n > 0)
      a = analyse(p, n), masks.push_back(dense_mask(p, n));
    else
      masks.emplace_back();
    parts.push_back(std::move(a));
  }
  expect_block_diagonal(parts, masks, spec);
}

TEST(BlockDiagonal, EveryFamilyAtMixedLengthsMatchesTheDenseMasks) {
  const std::vector<int64_t> lengths = {1, 37, 0, 64, 2, 129, 50, 0};
  for (const char* spec :
       {"dense", "causal", "window:w=5", "causal_window:w=9", "strided:s=8", "strided:s=6&causal", "dilated:w=12,d=3",
        "causal_dilated:w=10,d=4", "fixed:l=16,c=4", "causal_window:w=8+sink:g=4", "causal_window:w=7+sink:g=3&causal",
        "bigbird:b=8,w=1,g=1,r=2", "bigbird:b=16,w=0,g=1,r=3", "blocked:b=16", "longformer:w=6,g=3",
        "bigbird:b=64,w=1,g=2,r=3,seed=1", "(window:w=4+strided:s=16)&causal"})
    check_pattern(spec, lengths);
}

TEST(BlockDiagonal, DifferentPatternsPerPartAndBlocksCutBySegments) {
  // A BigBird part whose random blocks a union cuts into (explicit columns), next to masks and plain bands.
  const Pattern cut = parse_pattern("bigbird:b=8,w=0,g=0,r=3+causal_window:w=3");
  std::mt19937 rng(11);
  std::bernoulli_distribution bit(0.3);
  std::vector<uint8_t> bits(size_t(23 * 23));
  for (auto& b : bits) b = bit(rng);
  std::vector<Acsr> parts;
  std::vector<std::vector<uint8_t>> masks;
  for (int64_t n : {45, 1, 70}) parts.push_back(analyse(cut, n)), masks.push_back(dense_mask(cut, n));
  ASSERT_FALSE(parts[2].blocks.empty()) << "the union keeps BigBird's random blocks as a remainder";
  ASSERT_TRUE(parts[2].columns.empty());
  parts.push_back(analyse_mask(bits.data(), 23)), masks.push_back(bits);
  const Pattern band = parse_pattern("causal_dilated:w=6,d=2");
  parts.push_back(analyse(band, 31)), masks.push_back(dense_mask(band, 31));
  expect_block_diagonal(parts, masks, "mixed parts");
}

TEST(BlockDiagonal, EmptyAndSingle) {
  const Acsr one = analyse(parse_pattern("causal"), 1);
  EXPECT_EQ(block_diagonal({}).n, 0);
  const Acsr packed = block_diagonal({&one, &one, &one});
  EXPECT_EQ(packed.n, 3);
  EXPECT_EQ(nnz(packed), 3);
  EXPECT_TRUE(acsr_contains(packed, 2, 2));
  EXPECT_FALSE(acsr_contains(packed, 2, 1));
  EXPECT_THROW(block_diagonal({nullptr}), Error);
}

}  // namespace
