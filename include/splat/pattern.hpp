// Sparse-attention patterns: the declarative spec language and its exact semantics.
// Normative semantics (query i attends key j, 0 <= i, j < n) are in docs/patterns.md and
// implemented by pattern_contains(), the oracle that every other representation is tested against.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
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
  std::string path;                // the .npy file it was read from; empty for an in-memory mask
  std::array<uint64_t, 2> hash{};  // mask_hash(bits, n), set by parse_pattern and mask_pattern
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
// The same with masks from load(path) instead of .npy files (for callers that keep masks elsewhere, and
// for fuzzing the syntax without touching the file system). load is called only for a valid spec.
using MaskLoader = std::function<std::shared_ptr<const MaskData>(const std::string& path)>;
Pattern parse_pattern(std::string_view spec, const MaskLoader& load);
// What parse_pattern(spec) loads for mask:PATH: the .npy file at path, with its content hash.
std::shared_ptr<const MaskData> load_mask_file(const std::string& path);

// Canonical spec string (parse_pattern(to_string(p)) == p); mask paths are quoted where the plain form
// would not read back. An in-memory mask prints as mask:<in-memory NxN>, which does not read back
// (there is no file); use pattern_key() to identify patterns.
std::string to_string(const Pattern& p);
// The spec of a mask at path: mask:PATH, or mask:"PATH" (escaped) when needed.
std::string mask_spec(const std::string& path);

// What a pattern means, for cache keys: the canonical spec with every mask replaced by
// mask{n=N,content=HASH} (its size and content hash, never its path), so a rewritten mask file gives
// a different key and equal masks from anywhere give the same one. Not a spec (does not parse).
std::string pattern_key(const Pattern& p);
// 128-bit content hash of an n x n mask (row-major bytes as stored in MaskData::bits).
std::array<uint64_t, 2> mask_hash(const uint8_t* bits, int64_t n);
// mask{n=N,content=HASH}; hashes now if m.hash was never set.
std::string mask_key(const MaskData& m);
// An in-memory mask (row-major n x n, nonzero = attended) as a Mask pattern with its hash: one O(n^2)
// read (the bits are copied as 0/1). Throws Error(InvalidArgument) for n <= 0, n >= 2^31 or no data.
Pattern mask_pattern(const uint8_t* bits, int64_t n);

// The normative membership test. O(1) per query except BigBird (O(r)) and compositions.
// Throws Error(InvalidArgument) if a Mask pattern's size differs from n.
bool pattern_contains(const Pattern& p, int64_t n, int64_t i, int64_t j);

// Validates parameters against n (e.g. zero block size, mask size mismatch). Throws Error.
void validate_pattern(const Pattern& p, int64_t n);

// Dense n x n mask (row-major, 0/1) by brute force over pattern_contains: the test oracle.
std::vector<uint8_t> dense_mask(const Pattern& p, int64_t n);

// User text made safe to echo in a message: printable ASCII and valid UTF-8 stay, every other byte
// (NUL, control characters, broken UTF-8) becomes \xNN.
std::string printable(std::string_view text);
// Bytes of the valid UTF-8 sequence of a non-ASCII character starting at text[i], or 0.
size_t utf8_sequence(std::string_view text, size_t i);

// splitmix64 as used by BigBird's random blocks.
uint64_t splitmix64(uint64_t x);
int64_t bigbird_random_block(const Pattern& p, int64_t n, int64_t query_block, int64_t t);

}  // namespace splat
