// CUDA runtime helpers for the backend: error checking into splat::Error(Cuda), device queries.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

namespace splat::cuda {

// Throws Error(Cuda) "<what>: <CUDA error string>" when rc != cudaSuccess.
void check(cudaError_t rc, const char* what);
// Throws Error(Unsupported) with the reason when no device is usable.
void require_device(int device);
std::string device_arch(int device);  // e.g. "sm_90"

// RAII device buffer (plan-time allocations only; the launch path allocates nothing).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void upload(const void* host, size_t n);  // allocates n bytes and copies (n == 0: stays null)
  void allocate(size_t n);
};

}  // namespace splat::cuda
