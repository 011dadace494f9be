// Sparse-attention patterns: the declarative spec language and its exact semantics.
// Normative semantics (query i attends key j, 0 <= i, j < n) are in docs/patterns.md and
// implemented by pattern_contains(), the oracle that every other representation is tested against.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace splat {

enum class PatternKind {
  Dense,
  Causal,
  Window,         // |i-j| <= w
  CausalWindow,   // 0 <= i-j <= w
  Dilated,        // |i-j| <= w*d and (i-j) mod d == 0
  CausalDilated,  // 0 <= i-j <= w*d and (i-j) mod d == 0
  Strided,        // |i-j| < s or (i-j) mod s == 0
  Fixed,          // i/l == j/l or j mod l >= l-c
  Blocked,        // i/b == j/b
  Global,         // i < g or j < g
  Sink,           // j < g
  Longformer,     // window:w + global:g
  BigBird,        // block band, global blocks, random blocks (see docs/patterns.md)
  Mask,           // explicit n x n boolean mask from a .npy file
  Union,          // A+B
  Intersection,   // A&B
};

// An explicit mask, row-major n x n, 1 = attended.
struct MaskData {
  int64_t n = 0;
  std::vector<uint8_t> bits;
  std::string path;
};

struct Pattern {
  PatternKind kind = PatternKind::Dense;
  // Parameters; which are meaningful depends on kind (names as in the spec language).
  int64_t w = 0, d = 1, s = 1, l = 1, c = 0, b = 1, g = 0, r = 0;
  uint64_t seed = 0;
  std::shared_ptr<const MaskData> mask;  // Mask only
  std::vector<Pattern> children;         // Union / Intersection: two or more operands
};

// Parses e.g. "causal_window:w=1024+sink:g=4" or "strided:s=64&causal". '&' binds tighter than '+'.
// A mask is mask:PATH (the path runs to the next '+', '&' or ')'; surrounding whitespace is dropped) or
// mask:"PATH" for any other path, e.g. mask:"runs/a+b&c.npy", where \" is a quote and \\ a backslash
// (no other escapes). Throws Error(InvalidArgument) naming the offending position; Error(Io) for an
// unreadable mask file.
Pattern parse_pattern(std::string_view spec);

// Canonical spec string (parse_pattern(to_string(p)) == p); mask paths are quoted where the plain form
// would not read back.
std::string to_string(const Pattern& p);
// The spec of a mask at path: mask:PATH, or mask:"PATH" (escaped) when needed.
std::string mask_spec(const std::string& path);

// The normative membership test. O(1) per query except BigBird (O(r)) and compositions.
// Throws Error(InvalidArgument) if a Mask pattern's size differs from n.
bool pattern_contains(const Pattern& p, int64_t n, int64_t i, int64_t j);

// Validates parameters against n (e.g. zero block size, mask size mismatch). Throws Error.
void validate_pattern(const Pattern& p, int64_t n);

// Dense n x n mask (row-major, 0/1) by brute force over pattern_contains: the test oracle.
std::vector<uint8_t> dense_mask(const Pattern& p, int64_t n);

// splitmix64 as used by BigBird's random blocks.
uint64_t splitmix64(uint64_t x);
int64_t bigbird_random_block(const Pattern& p, int64_t n, int64_t query_block, int64_t t);

}  // namespace splat
