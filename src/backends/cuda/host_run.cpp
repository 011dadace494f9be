// attention_cuda_host: the CLI's and tests' convenience path. Copies each host view's whole extent
// (gaps included, so strides are exercised on the device as on the host), times the launches with
// CUDA events and copies the output's extent back.
#include <algorithm>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {
size_t extent_bytes(const TensorView& t) {
  size_t last = 0;
  for (int a = 0; a < 3; ++a) last += size_t(t.shape[a] - 1) * size_t(t.stride[a]);
  return (last + size_t(t.shape[3])) * dtype_size(t.dtype);
}

struct Event {
  cudaEvent_t e = nullptr;
  Event() { cuda::check(cudaEventCreate(&e), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(e); }
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(s); }
};
}  // namespace

double attention_cuda_host(const CudaPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const AttentionOptions& opt, int warmup, int repeats) {
  check_attention_args(q, k, v, out);
  if (q.device >= 0) fail(ErrorCode::InvalidArgument, "attention_cuda_host takes host tensors (device = -1)");
  const int dev = plan.options.device;
  cuda::check(cudaSetDevice(dev), "cudaSetDevice");
  const TensorView* views[4] = {&q, &k, &v, &out};
  cuda::DeviceBuffer bufs[4];
  TensorView dv[4];
  for (int i = 0; i < 4; ++i) {
    const size_t n = extent_bytes(*views[i]);
    bufs[i].upload(views[i]->data, n);
    dv[i] = *views[i];
    dv[i].data = bufs[i].ptr;
    dv[i].device = dev;
  }
  cuda_workspace_reserve(plan, q.B(), q.H());
  Stream stream;
  for (int i = 0; i < warmup; ++i) attention_cuda(plan, dv[0], dv[1], dv[2], dv[3], opt, stream.s);
  repeats = std::max(repeats, 1);
  std::vector<Event> ev(static_cast<size_t>(repeats) + 1);
  cuda::check(cudaEventRecord(ev[0].e, stream.s), "cudaEventRecord");
  for (int i = 0; i < repeats; ++i) {
    attention_cuda(plan, dv[0], dv[1], dv[2], dv[3], opt, stream.s);
    cuda::check(cudaEventRecord(ev[size_t(i) + 1].e, stream.s), "cudaEventRecord");
  }
  cuda::check(cudaStreamSynchronize(stream.s), "running the attention kernel");
  std::vector<float> ms(static_cast<size_t>(repeats));
  for (int i = 0; i < repeats; ++i)
    cuda::check(cudaEventElapsedTime(&ms[size_t(i)], ev[size_t(i)].e, ev[size_t(i) + 1].e), "cudaEventElapsedTime");
  cuda::check(cudaMemcpy(out.data, bufs[3].ptr, bufs[3].bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (output)");
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace splat
