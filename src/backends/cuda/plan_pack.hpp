// Packs a Plan into the plain-data device layout of include/splat/device/plan_layout.cuh.
#pragma once
#include <vector>

#include "splat/device/plan_layout.cuh"
#include "splat/plan.hpp"

namespace splat::cuda {

struct PackedPlan {
  std::vector<dev::DevTask> tasks;  // all passes, concatenated; span indices are global
  std::vector<dev::DevSpan> spans;
  std::vector<dev::DevSegment> segments;
  std::vector<int32_t> gather_keys;
  std::vector<uint64_t> gather_mask;
  std::vector<int> pass_task_offset, pass_task_count;
};

// Throws Error(Unsupported) if a value does not fit the 32-bit device layout.
PackedPlan pack_plan(const Plan& plan);

}  // namespace splat::cuda
