// Masks by content (issue 9, item 3): pattern_key() identifies a pattern by what it means, so a cache keyed
// by it never serves the plan of a mask file that has since been rewritten; in-memory masks are patterns.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/pattern.hpp"

using namespace splat;
namespace fs = std::filesystem;

namespace {

struct Dir {
  fs::path dir = fs::temp_directory_path() / ("splat-test-pattern-key-" + std::to_string(::getpid()));
  Dir() { fs::create_directories(dir); }
  ~Dir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::vector<uint8_t> random_bits(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(size_t(n * n));
  for (auto& x : b) x = rng() % 3 == 0;
  return b;
}

void write_mask(const std::string& path, int64_t n, const std::vector<uint8_t>& bits) {
  NpyArray a;
  a.dtype = NpyDType::Bool;
  a.shape = {n, n};
  a.data = bits;
  write_npy(path, a);
}

}  // namespace

TEST(PatternKey, RewrittenMaskFileChangesTheKey) {
  const Dir d;
  const int64_t n = 19;
  const std::string path = (d.dir / "m.npy").string();
  const auto first = random_bits(n, 1), second = random_bits(n, 2);
  write_mask(path, n, first);
  const std::string spec = "mask:" + path + "+causal_window:w=2";
  const Pattern a = parse_pattern(spec);
  write_mask(path, n, second);  // same path, same size, other content
  const Pattern b = parse_pattern(spec);
  EXPECT_EQ(to_string(a), to_string(b));      // the spec cannot tell them apart ...
  EXPECT_NE(pattern_key(a), pattern_key(b));  // ... the key does
  EXPECT_NE(dense_mask(a, n), dense_mask(b, n));
  write_mask(path, n, first);
  EXPECT_EQ(pattern_key(parse_pattern(spec)), pattern_key(a));
  // The key names the size and content, never the path.
  EXPECT_EQ(pattern_key(a).find(path), std::string::npos);
  EXPECT_NE(pattern_key(a).find("mask{n=19,content="), std::string::npos) << pattern_key(a);
  EXPECT_NE(pattern_key(a).find("+causal_window:w=2"), std::string::npos) << pattern_key(a);
  // Equal content elsewhere (another file, or memory) is the same pattern.
  const std::string other = (d.dir / "copy+of&m.npy").string();
  write_mask(other, n, first);
  EXPECT_EQ(pattern_key(parse_pattern(mask_spec(other) + "+causal_window:w=2")), pattern_key(a));
  Pattern mem;
  mem.kind = PatternKind::Union;
  mem.children = {mask_pattern(first.data(), n), parse_pattern("causal_window:w=2")};
  EXPECT_EQ(pattern_key(mem), pattern_key(a));
}

TEST(PatternKey, NonMaskPatternsKeyByTheirCanonicalSpec) {
  for (const char* spec :
       {"causal", "window:w=3+sink:g=1&causal", "(strided:s=4+blocked:b=2)&causal", "bigbird:b=4,w=1,g=1,r=2,seed=7"})
    EXPECT_EQ(pattern_key(parse_pattern(spec)), to_string(parse_pattern(spec)));
  EXPECT_NE(pattern_key(parse_pattern("bigbird:b=4,w=1,g=1,r=2,seed=7")),
            pattern_key(parse_pattern("bigbird:b=4,w=1,g=1,r=2,seed=8")));
}

TEST(PatternKey, InMemoryMasks) {
  const int64_t n = 23;
  auto bits = random_bits(n, 3);
  const Pattern p = mask_pattern(bits.data(), n);
  ASSERT_EQ(p.kind, PatternKind::Mask);
  EXPECT_EQ(p.mask->bits, bits);
  EXPECT_TRUE(p.mask->path.empty());
  EXPECT_EQ(dense_mask(p, n), bits);
  EXPECT_EQ(to_dense(analyse(p, n)), bits);
  EXPECT_EQ(to_string(p), "mask:<in-memory 23x23>");
  // Any nonzero byte attends: the same pattern, the same key.
  auto wide = bits;
  for (auto& x : wide) x = x ? 255 : 0;
  EXPECT_EQ(pattern_key(mask_pattern(wide.data(), n)), pattern_key(p));
  // The copy is the pattern's own: changing the caller's buffer changes neither mask nor key.
  const std::string key = pattern_key(p);
  bits[5] ^= 1;
  EXPECT_EQ(pattern_key(p), key);
  EXPECT_NE(pattern_key(mask_pattern(bits.data(), n)), key);
  EXPECT_THROW(mask_pattern(bits.data(), 0), Error);
  EXPECT_THROW(mask_pattern(bits.data(), -3), Error);
  EXPECT_THROW(mask_pattern(nullptr, 4), Error);
  EXPECT_THROW(mask_pattern(bits.data(), int64_t(1) << 31), Error);
  EXPECT_THROW(validate_pattern(p, n + 1), Error);
}

TEST(PatternKey, HashSeesEveryByteAndTheSize) {
  for (int64_t n : {1, 2, 3, 5, 8, 13}) {
    std::vector<uint8_t> bits(size_t(n * n), 0);
    const auto base = mask_hash(bits.data(), n);
    for (size_t k = 0; k < bits.size(); ++k) {
      bits[k] = 1;
      EXPECT_NE(mask_hash(bits.data(), n), base) << "n=" << n << " byte " << k;
      bits[k] = 0;
    }
  }
  // All-zero masks of different sizes differ, and a mask built without a hash is hashed on demand.
  std::vector<uint8_t> zeros(64, 0);
  EXPECT_NE(mask_hash(zeros.data(), 4), mask_hash(zeros.data(), 8));
  auto m = std::make_shared<MaskData>();
  m->n = 8;
  m->bits = zeros;
  EXPECT_EQ(mask_key(*m), mask_key(*mask_pattern(zeros.data(), 8).mask));
}

TEST(PatternKey, MaskLoaderSeesPathsOnlyOfValidSpecs) {
  std::vector<std::string> asked;
  const MaskLoader load = [&](const std::string& path) {
    asked.push_back(path);
    std::vector<uint8_t> bits(16, 1);
    auto m = std::make_shared<MaskData>(*mask_pattern(bits.data(), 4).mask);
    m->path = path;
    return std::shared_ptr<const MaskData>(m);
  };
  const Pattern p = parse_pattern("mask:\"x+y\"&causal+mask:plain.npy", load);
  EXPECT_EQ(asked, (std::vector<std::string>{"x+y", "plain.npy"}));
  EXPECT_EQ(to_string(p), "mask:\"x+y\"&causal+mask:plain.npy");
  EXPECT_EQ(dense_mask(p, 4), dense_mask(parse_pattern("dense"), 4));
  asked.clear();
  EXPECT_THROW(parse_pattern("mask:a.npy+windo:w=1", load), Error);
  EXPECT_TRUE(asked.empty());  // a bad spec is refused before any mask is read
}
