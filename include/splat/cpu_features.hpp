// Whether this CPU can run the vectorised CPU backends (built for x86-64-v3: AVX2, FMA, F16C).
#pragma once

namespace splat {

bool cpu_has_x86_64_v3();
// Throws Error(Unsupported) naming `who` when the CPU lacks AVX2, FMA or F16C.
void require_x86_64_v3(const char* who);

}  // namespace splat
