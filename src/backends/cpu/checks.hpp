// Checks shared by the CPU entry points: a plan against itself and N, key_lengths against B and N.
#pragma once
#include <cstdint>

#include "splat/plan.hpp"

namespace splat::cpu {

// A corrupt plan is an Error, never a wild read.
void check_plan(const Plan& plan, int64_t n);
// key_lengths (may be null): B values in [0, n].
void check_key_lengths(const int32_t* key_lengths, int64_t B, int64_t n);

}  // namespace splat::cpu
