#include "backends/cuda/cuda_util.hpp"

#include "splat/cuda.hpp"
#include "splat/error.hpp"

namespace splat::cuda {

void check(cudaError_t rc, const char* what) {
  if (rc == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  fail(ErrorCode::Cuda, std::string(what) + ": " + cudaGetErrorName(rc) + ": " + cudaGetErrorString(rc));
}

void require_device(int device) {
  std::string why;
  if (!cuda_available(&why)) fail(ErrorCode::Unsupported, "CUDA backend unavailable: " + why);
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (device < 0 || device >= count)
    fail(ErrorCode::InvalidArgument,
         "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " devices)");
}

std::string device_arch(int device) {
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  return "sm_" + std::to_string(major) + std::to_string(minor);
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr) cudaFree(ptr);
}

void DeviceBuffer::allocate(size_t n) {
  if (ptr) cudaFree(ptr);
  ptr = nullptr;
  bytes = 0;
  if (n == 0) return;
  check(cudaMalloc(&ptr, n), "cudaMalloc");
  bytes = n;
}

void DeviceBuffer::upload(const void* host, size_t n) {
  allocate(n);
  if (n) check(cudaMemcpy(ptr, host, n, cudaMemcpyHostToDevice), "cudaMemcpy (plan upload)");
}

}  // namespace splat::cuda

namespace splat {

bool cuda_available(std::string* why) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    if (why)
      *why = std::string("no usable CUDA driver/device (") + cudaGetErrorName(rc) + ": " + cudaGetErrorString(rc) + ")";
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess || major < 8) {
    cudaGetLastError();
    if (why) *why = "CUDA device 0 is older than sm_80 (the kernels need Ampere or newer)";
    return false;
  }
  return true;
}

}  // namespace splat
