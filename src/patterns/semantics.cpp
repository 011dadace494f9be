// The normative semantics of every pattern family (issue 2, section 1): the oracle for all tests.
#include <cctype>
#include <cstdlib>

#include "common/int_math.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace splat {

uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int64_t bigbird_random_block(const Pattern& p, int64_t n, int64_t query_block, int64_t t) {
  const uint64_t nb = uint64_t(ceil_div(n, p.b));
  return int64_t(splitmix64((p.seed << 32) + uint64_t(query_block) * uint64_t(p.r) + uint64_t(t)) % nb);
}

void validate_pattern(const Pattern& p, int64_t n) {
  require(n > 0, "sequence length must be positive, got " + std::to_string(n));
  require(n < (int64_t(1) << 31), "sequence length must be below 2^31, got " + std::to_string(n));
  switch (p.kind) {
    case PatternKind::Dilated:
    case PatternKind::CausalDilated: require(p.d >= 1, "dilated: d must be at least 1"); break;
    case PatternKind::Strided: require(p.s >= 1, "strided: s must be at least 1"); break;
    case PatternKind::Fixed:
      require(p.l >= 1, "fixed: l must be at least 1");
      require(p.c <= p.l, "fixed: c must not exceed l");
      break;
    case PatternKind::Blocked: require(p.b >= 1, "blocked: b must be at least 1"); break;
    case PatternKind::BigBird:
      require(p.b >= 1, "bigbird: b must be at least 1");
      require(p.r <= 4096, "bigbird: r must be at most 4096");
      require(p.seed < (uint64_t(1) << 32), "bigbird: seed must be below 2^32");
      break;
    case PatternKind::Mask: {
      const std::string name = !p.mask ? std::string() : p.mask->path.empty() ? "(in memory)" : printable(p.mask->path);
      const int64_t m = p.mask ? p.mask->n : 0;
      require(p.mask && m == n, "mask " + name + " is " + std::to_string(m) + " x " + std::to_string(m) +
                                    " but the sequence length is " + std::to_string(n));
      require(p.mask->bits.size() == size_t(n) * size_t(n), "mask data does not hold n x n entries");
      break;
    }
    case PatternKind::Union:
    case PatternKind::Intersection:
      require(!p.children.empty(), "a composition needs at least one operand");
      for (const Pattern& c : p.children) validate_pattern(c, n);
      break;
    default: break;
  }
}

bool pattern_contains(const Pattern& p, int64_t n, int64_t i, int64_t j) {
  const int64_t diff = i - j;
  switch (p.kind) {
    case PatternKind::Dense: return true;
    case PatternKind::Causal: return j <= i;
    case PatternKind::Window: return std::llabs(diff) <= p.w;
    case PatternKind::CausalWindow: return diff >= 0 && diff <= p.w;
    case PatternKind::Dilated: return std::llabs(diff) <= __int128(p.w) * p.d && pos_mod(diff, p.d) == 0;
    case PatternKind::CausalDilated: return diff >= 0 && diff <= __int128(p.w) * p.d && pos_mod(diff, p.d) == 0;
    case PatternKind::Strided: return std::llabs(diff) < p.s || pos_mod(diff, p.s) == 0;
    case PatternKind::Fixed: return i / p.l == j / p.l || (j % p.l) >= p.l - p.c;
    case PatternKind::Blocked: return i / p.b == j / p.b;
    case PatternKind::Global: return i < p.g || j < p.g;
    case PatternKind::Sink: return j < p.g;
    case PatternKind::Longformer: return std::llabs(diff) <= p.w || i < p.g || j < p.g;
    case PatternKind::BigBird: {
      const int64_t qb = i / p.b, kb = j / p.b;
      if (std::llabs(qb - kb) <= p.w || qb < p.g || kb < p.g) return true;
      for (int64_t t = 0; t < p.r; ++t)
        if (bigbird_random_block(p, n, qb, t) == kb) return true;
      return false;
    }
    case PatternKind::Mask:
      require(p.mask && p.mask->n == n, "mask size does not match the sequence length");
      return p.mask->bits[size_t(i * n + j)] != 0;
    case PatternKind::Union:
      for (const Pattern& c : p.children)
        if (pattern_contains(c, n, i, j)) return true;
      return false;
    case PatternKind::Intersection:
      for (const Pattern& c : p.children)
        if (!pattern_contains(c, n, i, j)) return false;
      return true;
  }
  return false;
}

std::vector<uint8_t> dense_mask(const Pattern& p, int64_t n) {
  validate_pattern(p, n);
  std::vector<uint8_t> m(size_t(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m[size_t(i * n + j)] = pattern_contains(p, n, i, j) ? 1 : 0;
  return m;
}

namespace {
// Unquoted, a mask path ends at '+', '&' or ')' and loses surrounding whitespace (see the parser).
bool path_needs_quotes(const std::string& path) {
  if (path.empty() || path.front() == '"' || std::isspace(static_cast<unsigned char>(path.front())) ||
      std::isspace(static_cast<unsigned char>(path.back())))
    return true;
  for (unsigned char c : path)
    if (c == '+' || c == '&' || c == ')' || c == '"' || c < 0x20 || c == 0x7f) return true;
  return false;
}
}  // namespace

std::string mask_spec(const std::string& path) {
  if (!path_needs_quotes(path)) return "mask:" + path;
  std::string s = "mask:\"";
  for (char c : path) {
    if (c == '"' || c == '\\') s += '\\';
    s += c;
  }
  return s + '"';
}

namespace {
std::string spec_string(const Pattern& p, bool key);
}

std::string to_string(const Pattern& p) {
  return spec_string(p, false);
}
std::string pattern_key(const Pattern& p) {
  return spec_string(p, true);
}

namespace {
std::string spec_string(const Pattern& p, bool key) {
  auto num = [](int64_t v) { return std::to_string(v); };
  switch (p.kind) {
    case PatternKind::Dense: return "dense";
    case PatternKind::Causal: return "causal";
    case PatternKind::Window: return "window:w=" + num(p.w);
    case PatternKind::CausalWindow: return "causal_window:w=" + num(p.w);
    case PatternKind::Dilated: return "dilated:w=" + num(p.w) + ",d=" + num(p.d);
    case PatternKind::CausalDilated: return "causal_dilated:w=" + num(p.w) + ",d=" + num(p.d);
    case PatternKind::Strided: return "strided:s=" + num(p.s);
    case PatternKind::Fixed: return "fixed:l=" + num(p.l) + ",c=" + num(p.c);
    case PatternKind::Blocked: return "blocked:b=" + num(p.b);
    case PatternKind::Global: return "global:g=" + num(p.g);
    case PatternKind::Sink: return "sink:g=" + num(p.g);
    case PatternKind::Longformer: return "longformer:w=" + num(p.w) + ",g=" + num(p.g);
    case PatternKind::BigBird:
      return "bigbird:b=" + num(p.b) + ",w=" + num(p.w) + ",g=" + num(p.g) + ",r=" + num(p.r) +
             ",seed=" + std::to_string(p.seed);
    case PatternKind::Mask:
      if (!p.mask) return "mask:";
      if (key) return mask_key(*p.mask);
      if (p.mask->path.empty()) return "mask:<in-memory " + num(p.mask->n) + "x" + num(p.mask->n) + ">";
      return mask_spec(p.mask->path);
    case PatternKind::Union:
    case PatternKind::Intersection: {
      const bool uni = p.kind == PatternKind::Union;
      std::string s;
      for (size_t k = 0; k < p.children.size(); ++k) {
        if (k) s += uni ? "+" : "&";
        const Pattern& c = p.children[k];
        const bool wrap = c.kind == PatternKind::Union || (c.kind == PatternKind::Intersection && !uni);
        s += wrap ? "(" + spec_string(c, key) + ")" : spec_string(c, key);
      }
      return s;
    }
  }
  return "?";
}
}  // namespace

}  // namespace splat
