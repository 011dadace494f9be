// Checks shared by the CPU entry points: a plan against itself and N, key_lengths against B and N.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "splat/attention.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat::cpu {

// A corrupt plan is an Error, never a wild read.
void check_plan(const Plan& plan, int64_t n);
// key_lengths (may be null): B values in [0, n].
void check_key_lengths(const int32_t* key_lengths, int64_t B, int64_t n);

// An output must not share memory with an input (out = q, out = k, a gradient over dout, an lse inside q, ...): the
// kernels read inputs after writing outputs, so that is a wrong answer, never a feature. Conservative: refuses
// overlapping byte ranges [first element, last element], even where strided views would interleave without a
// common element.
struct Memory {
  const void* data;
  size_t bytes;  // 0: nothing (a null optional output)
  const char* name;
};
Memory memory_of(const TensorView& t, const char* name);
Memory memory_of(const float* lse, int64_t count, const char* name);
void check_disjoint(const Memory& out, std::initializer_list<Memory> inputs);
// dq, dk, dv against q, k, v, out, dout and lse (out and lse may be unused by the callee: still inputs).
void check_backward_disjoint(const BackwardTensors& t);

}  // namespace splat::cpu
