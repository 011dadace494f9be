// The CPU backends are built for x86-64-v3 and check for it at run time.
#include <gtest/gtest.h>

#include "splat/cpu_features.hpp"

using namespace splat;

TEST(CpuFeatures, ThisMachineRunsTheVectorBackends) {
  // CI and the GPU machine are x86-64-v3; if this fails, the CPU backends would refuse to run here.
  EXPECT_TRUE(cpu_has_x86_64_v3());
  EXPECT_NO_THROW(require_x86_64_v3("test"));
}
