// Explicit masks by content: a 128-bit hash of (n, bits) so that caches key masks by what they hold,
// never by where they came from, and in-memory masks as patterns.
#include <cstring>

#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace splat {
namespace {
uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}
}  // namespace

std::array<uint64_t, 2> mask_hash(const uint8_t* bits, int64_t n) {
  require(n >= 0 && n < (int64_t(1) << 31), "mask_hash: size out of range");
  const size_t total = size_t(n) * size_t(n);
  // Two chained multiply-rotate lanes over 8-byte words (each step is a bijection of the state for a
  // given word, so a changed word always changes the lane), finalised with the size.
  uint64_t h1 = 0x243F6A8885A308D3ull, h2 = 0x13198A2E03707344ull;
  size_t k = 0;
  for (; k + 8 <= total; k += 8) {
    uint64_t w;
    std::memcpy(&w, bits + k, 8);
    h1 = (rotl(h1, 31) ^ (w * 0x9E3779B97F4A7C15ull)) * 0xFF51AFD7ED558CCDull;
    h2 = (rotl(h2, 29) ^ (w * 0xC2B2AE3D27D4EB4Full)) * 0xC4CEB9FE1A85EC53ull;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, bits + k, total - k);
  h1 = (rotl(h1, 31) ^ (tail * 0x9E3779B97F4A7C15ull)) * 0xFF51AFD7ED558CCDull;
  h2 = (rotl(h2, 29) ^ (tail * 0xC2B2AE3D27D4EB4Full)) * 0xC4CEB9FE1A85EC53ull;
  return {splitmix64(h1 ^ rotl(h2, 17) ^ uint64_t(n)), splitmix64(h2 ^ rotl(h1, 41) ^ (uint64_t(n) << 32))};
}

Pattern mask_pattern(const uint8_t* bits, int64_t n) {
  require(n > 0, "a mask must be N x N with N > 0, got N = " + std::to_string(n));
  require(n < (int64_t(1) << 31), "mask too large (N must be below 2^31), got N = " + std::to_string(n));
  require(bits != nullptr, "mask_pattern: no mask data");
  auto m = std::make_shared<MaskData>();
  m->n = n;
  m->bits.resize(size_t(n) * size_t(n));
  for (size_t k = 0; k < m->bits.size(); ++k) m->bits[k] = bits[k] != 0 ? 1 : 0;  // any nonzero attends
  m->hash = mask_hash(m->bits.data(), n);
  Pattern p;
  p.kind = PatternKind::Mask;
  p.mask = std::move(m);
  return p;
}

std::string mask_key(const MaskData& m) {
  std::array<uint64_t, 2> h = m.hash;
  if (h[0] == 0 && h[1] == 0) h = mask_hash(m.bits.data(), m.n);  // built without one: hash it now
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
  return "mask{n=" + std::to_string(m.n) + ",content=" + hex + "}";
}

}  // namespace splat
