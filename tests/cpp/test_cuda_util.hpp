// Helpers shared by the CUDA tests: skip without a usable GPU, and an owning device buffer.
#pragma once
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "splat/cuda.hpp"

#define REQUIRE_GPU()                                                      \
  do {                                                                     \
    std::string why_;                                                      \
    if (!splat::cuda_available(&why_)) GTEST_SKIP() << "no GPU: " << why_; \
  } while (0)

namespace cudatest {

// Device memory freed on scope exit; a failed allocation throws (the test fails with the CUDA error string).
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    const cudaError_t e = cudaMalloc(&p, n > 0 ? n : 1);
    if (e != cudaSuccess) throw std::runtime_error(std::string("cudaMalloc: ") + cudaGetErrorString(e));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace cudatest
