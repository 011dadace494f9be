// The built-in benchmark suite: seven pattern families at a given sequence length, shared by the CLI
// (`splat bench`, `splat demo`), the CPU and CUDA benchmarks and the tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace splat {

struct SuiteEntry {
  std::string name;  // family, e.g. "window"
  std::string spec;  // pattern spec for the given n, e.g. "window:w=256"
};

// window:w=N/16, causal_window:w=N/8, dilated:w=N/16,d=4, strided:s=sqrt(N), blocked:b=N/8,
// longformer:w=N/16,g=32, bigbird:b=64,w=1,g=2,r=3,seed=1 (integer division; sqrt rounded down; >= 1).
std::vector<SuiteEntry> suite(int64_t n);
std::vector<std::string> suite_specs(int64_t n);
// The sequence lengths the suite is defined for: {4096, 16384}.
std::vector<int64_t> suite_sizes();

}  // namespace splat
