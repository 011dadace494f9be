#include "jit/hash.hpp"

#include <cstdio>

namespace splat::jit {

namespace {
uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

void Hasher::bytes(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    a_ = (a_ ^ p[i]) * 0x100000001b3ull;                           // FNV-1a
    b_ = (b_ + p[i] + 1) * 0x9e3779b97f4a7c15ull, b_ ^= b_ >> 29;  // an independent multiplicative lane
  }
}

void Hasher::field(std::string_view s) {
  const uint64_t n = s.size();
  bytes(&n, sizeof n);
  bytes(s.data(), s.size());
}

std::string Hasher::hex() const {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(mix(a_)),
                static_cast<unsigned long long>(mix(b_ ^ a_)));
  return buf;
}

uint64_t checksum64(const void* data, size_t n) {
  Hasher h;
  h.bytes(data, n);
  const std::string x = h.hex();
  return std::stoull(x.substr(0, 16), nullptr, 16);
}

}  // namespace splat::jit
