// Fuzzes the pattern parser: any string either parses or throws splat::Error (never crashes, hangs or
// trips a sanitizer). What parses must print back to an equal pattern, and at a small N the analysis
// must agree exactly with the brute-force mask.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  // mask:PATH reads files; the fuzzer must not wander the file system (a FIFO would block).
  if (spec.find("mask") != std::string::npos || size > 512) return 0;
  splat::Pattern p;
  try {
    p = splat::parse_pattern(spec);
  } catch (const splat::Error&) {
    return 0;
  }
  const std::string canon = splat::to_string(p);
  splat::Pattern again;
  try {
    again = splat::parse_pattern(canon);
  } catch (const splat::Error&) {
    std::abort();  // the canonical form of a valid pattern must parse
  }
  if (splat::to_string(again) != canon) std::abort();
  const int64_t n = 1 + int64_t(size % 37);
  try {
    splat::validate_pattern(p, n);
  } catch (const splat::Error&) {
    return 0;
  }
  const splat::Acsr a = splat::analyse(p, n);
  const std::vector<uint8_t> dense = splat::dense_mask(p, n);
  int64_t count = 0;
  for (uint8_t v : dense) count += v;
  if (splat::nnz(a) != count || splat::to_dense(a) != dense) std::abort();
  return 0;
}
