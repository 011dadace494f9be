// Host CPU feature check. This file is built without -march flags, so it runs on any x86-64 and lets
// the x86-64-v3 backends refuse an older CPU with an Error instead of dying on an illegal instruction.
#include "splat/cpu_features.hpp"

#include "splat/error.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace splat {

bool cpu_has_x86_64_v3() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  // F16C (leaf 1, ECX bit 29) by cpuid: not every compiler's __builtin_cpu_supports knows "f16c".
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29));
  return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
