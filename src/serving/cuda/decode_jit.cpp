// The generated decode kernels: a KernelSpec of the decode direction per (device, dtype, head dim, kernel, cache
// layout), compiled by NVRTC through the kernel cache on first use and then held in a fixed table, so a launch per
// token costs an index and an atomic load (no spec string, no source, no hashing, no lock).
#include <cuda_runtime_api.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/cuda_util.hpp"
#include "jit/decode_spec.hpp"
#include "jit/kernel_cache.hpp"
#include "serving/cuda/decode_launch.hpp"
#include "splat/error.hpp"

namespace splat::cudadecode {
namespace {

constexpr int kDevices = 64, kKernels = 7;  // kernels: the first one, then the split kernel's (heads, dims) shapes

struct Slot {
  std::atomic<bool> ready{false};
  cudaKernel_t main = nullptr, merge = nullptr;
};
Slot g_slots[kDevices][3][2][kKernels][2];  // device, element, head dim, kernel, paged
std::mutex g_load;

int kernel_index(bool split, int gp, int dpl) {
  if (!split) return 0;
  switch (gp) {
    case 1: return 1;
    case 2: return dpl == 8 ? 3 : 2;
    case 4: return dpl == 8 ? 5 : 4;
    default: return 6;
  }
}

DType dtype_of(Elem e) {
  return e == Elem::BF16 ? DType::BF16 : e == Elem::F16 ? DType::F16 : DType::F32;
}

// Compiles (or finds in the kernel cache) and loads the slot's kernels. Loading is no stream operation, but a
// capture in global mode refuses the calls that could synchronise: this thread relaxes it while it loads, so the
// first step of a decoder may be captured too.
void load(Slot& slot, Elem e, int head_dim, bool split, int gp, int dpl, bool paged, int device) {
  std::lock_guard<std::mutex> lock(g_load);
  if (slot.ready.load(std::memory_order_acquire)) return;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cuda::check(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode");
  struct Restore {
    cudaStreamCaptureMode& m;
    ~Restore() { cudaThreadExchangeStreamCaptureMode(&m); }
  } restore{mode};
  const jit::KernelSpec spec =
      jit::decode_spec(dtype_of(e), head_dim, split, gp, dpl, paged, cuda::device_arch(device));
  const std::vector<jit::KernelSpec> specs = jit::decode_specs(spec);
  const jit::CachedCubin cc = jit::cached_cubin(jit::generate_source(specs), spec.arch, spec.describe());
  cudaLibrary_t lib = nullptr;
  cuda::check(cudaLibraryLoadData(&lib, cc.cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
              "cudaLibraryLoadData (loading the generated decode kernels)");
  cudaKernel_t k[2] = {nullptr, nullptr};
  for (size_t i = 0; i < specs.size(); ++i)
    cuda::check(cudaLibraryGetKernel(&k[i], lib, specs[i].name().c_str()), "cudaLibraryGetKernel (decode)");
  slot.main = k[0], slot.merge = k[1];
  slot.ready.store(true, std::memory_order_release);
}

void launch_one(cudaKernel_t k, dim3 grid, unsigned threads, const Args& a, cudaStream_t s) {
  void* args[] = {const_cast<Args*>(&a)};
  const cudaError_t rc = cudaLaunchKernel(reinterpret_cast<const void*>(k), grid, dim3(threads), args, 0, s);
  if (rc != cudaSuccess)
    fail(ErrorCode::Cuda, std::string("CUDA error in the decode kernel launch: ") + cudaGetErrorString(rc));
}

}  // namespace

void launch_jit(const Args& a, Elem e, int head_dim, bool split, bool paged, int device, void* stream) {
  if (device < 0 || device >= kDevices)
    fail(ErrorCode::Unsupported, "decode_cuda: device " + std::to_string(device) + " is beyond the kernel table");
  // The split kernel's dims per lane: 16, or 8 for groups of 8 heads and (SPLAT_DECODE_DPL=8) 16-bit groups of 2-4.
  const int dpl = !split ? 0 : a.GP == 1 ? 16 : a.GP == 8 ? 8 : e != Elem::F32 && a.dpl == 8 ? 8 : 16;
  Slot& slot = g_slots[device][int(e)][head_dim == 128][kernel_index(split, a.GP, dpl)][paged];
  if (!slot.ready.load(std::memory_order_acquire)) load(slot, e, head_dim, split, split ? a.GP : 0, dpl, paged, device);
  auto s = static_cast<cudaStream_t>(stream);
  if (!split)
    return launch_one(slot.main, dim3(unsigned(a.B * a.Hkv), unsigned(a.T)), unsigned(dev::kDecodeWarps * 32), a, s);
  launch_one(slot.main, dim3(unsigned(a.B * a.Hkv * a.NG), unsigned(a.S), unsigned(a.T)),
             unsigned(dev::kDecodeWarps * 32), a, s);
  if (a.S > 1) launch_one(slot.merge, dim3(unsigned(a.B * a.H * a.T)), unsigned(head_dim), a, s);
}

int device_sms(int device) {
  static std::atomic<int> cached[kDevices] = {};
  if (device < 0 || device >= kDevices) return 132;
  int n = cached[device].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
    cached[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace splat::cudadecode
