// Non-cryptographic 128-bit content hash (cache file names) and 64-bit checksum (cache entry validation).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace splat::jit {

class Hasher {
 public:
  void bytes(const void* data, size_t n);
  void field(std::string_view s);  // length-prefixed, so field boundaries are unambiguous
  std::string hex() const;         // 32 hex digits

 private:
  uint64_t a_ = 0xcbf29ce484222325ull, b_ = 0x84222325cbf29ce4ull;
};

uint64_t checksum64(const void* data, size_t n);

}  // namespace splat::jit
