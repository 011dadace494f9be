// Host CPU feature check. This file is built without -march flags, so it runs on any x86-64 and lets
// the x86-64-v3 backends refuse an older CPU with an Error instead of dying on an illegal instruction.
#include "splat/cpu_features.hpp"

#include "splat/error.hpp"

namespace splat {

bool cpu_has_x86_64_v3() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

void require_x86_64_v3(const char* who) {
  static const bool ok = cpu_has_x86_64_v3();
  if (!ok)
    fail(ErrorCode::Unsupported,
         std::string(who) + " needs a CPU with AVX2, FMA and F16C (x86-64-v3); this CPU lacks one of them");
}

}  // namespace splat
