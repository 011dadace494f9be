// Host side of the causal CUDA FLuRKA forward (experimental): argument checks, workspace layout, the four
// launches of causal.cuh, and the host convenience the tests use.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/cuda/causal.cuh"
#include "flurka/cuda/causal_tc.hpp"
#include "flurka/cuda/launch_profile.hpp"
#include "flurka/cuda/launch_util.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
using namespace fk;
using namespace fk::causal;

namespace {

constexpr int64_t kMaxRank = 512;  // r and m: chunk_state keeps r x 33 floats, causal_query 8 x m, in shared memory

// Byte offsets of the workspace regions; nS = chunks whose state a later chunk reads (all of them full).
struct Layout {
  int64_t nC = 0, nS = 0;
  size_t kp = 0, vp = 0, S = 0, z = 0, off = 0, slot = 0, wt = 0, ut = 0, total = 0;
};
Layout layout(const FlurkaShape& s, int64_t C) {
  Layout l;
  l.nC = (s.N + C - 1) / C;
  l.nS = std::max<int64_t>(l.nC - 1, 0);
  const int64_t big = std::max<int64_t>({s.k, s.m, 1}), nS1 = std::max<int64_t>(l.nS, 1);
  checked_bytes({s.B, s.H, nS1, big, s.D, 8}, 4, "causal FLuRKA CUDA workspace [B, H, chunks, max(r, m), D]");
  const size_t BH = size_t(s.B * s.H), nS = size_t(l.nS), D = size_t(s.D), r = size_t(s.k), m = size_t(s.m);
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o += align_up(bytes);
    return at;
  };
  l.kp = take(BH * nS * r * D * 4);
  l.vp = take(BH * nS * r * D * 4);
  l.S = take(BH * nS * m * D * 4);
  l.z = take(BH * nS * m * 4);
  l.off = take(BH * nS * m * 4);
  l.slot = take(BH * nS * m * 4);
  l.wt = take(size_t(s.H) * std::max(m, D) * D * 2);  // the tensor-core path: W^T (or the identity) in bf16
  l.ut = take(BH * nS * m * D * 2);                   // and the scanned U in bf16
  l.total = std::max<size_t>(o, 256);
  return l;
}

template <class T, int D>
void launch(FlurkaMethod method, const FlurkaShape& s, int64_t C, const FlurkaInputs& in, const TensorView& out,
            char* ws, cudaStream_t st) {
  const Layout l = layout(s, C);
  const FeatureMap fm = feature_map_of(method);
  const int map = fm == FeatureMap::Favor ? kFavor : fm == FeatureMap::Relu ? kRelu : kElu;
  const int64_t BH = s.B * s.H, r = s.k, m = s.m;
  const float sfeat = std::pow(float(D), -0.25f);
  const Rows w = map == kElu ? Rows{nullptr, 0, 0, 0} : rows_of(in.w);
  const int state_smem = int(kMaxRank * (kFT + 1) * 4), query_smem = int(query_smem_floats<D>(int(kMaxRank)) * 4);
  static const bool attrs = [&] {
    cuda_check(cudaFuncSetAttribute(chunk_state<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, state_smem),
               "attr");
    cuda_check(cudaFuncSetAttribute(causal_query<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, query_smem),
               "attr");
    return true;
  }();
  (void)attrs;
  float* kp = reinterpret_cast<float*>(ws + l.kp);
  float* vp = reinterpret_cast<float*>(ws + l.vp);
  float* S = reinterpret_cast<float*>(ws + l.S);
  float* z = reinterpret_cast<float*>(ws + l.z);
  float* off = reinterpret_cast<float*>(ws + l.off);
  float* slot = reinterpret_cast<float*>(ws + l.slot);
  fk::LaunchProfile prof("flurka causal profile", st);
  prof.mark("start");
  if (l.nS > 0) {
    chunk_project<T, D><<<dim3(unsigned(l.nS), unsigned(BH), 2), kNT, 0, st>>>(
        rows_of(in.e), rows_of(in.f), rows_of(in.k), rows_of(in.v), s.H, r, C, l.nS, kp, vp);
    cuda_check(cudaGetLastError(), "chunk_project");
    prof.mark("project");
    chunk_state<T, D>
        <<<dim3(unsigned((m + kFT - 1) / kFT), unsigned(l.nS), unsigned(BH)), kNT, size_t(r * (kFT + 1) * 4), st>>>(
            kp, vp, w, s.H, r, m, l.nS, map, sfeat, S, z, off);
    cuda_check(cudaGetLastError(), "chunk_state");
    prof.mark("state");
    state_scan<<<dim3(unsigned((m * D + kNT - 1) / kNT), unsigned(BH)), kNT, 0, st>>>(S, z, off, m, D, l.nS, map, slot);
    cuda_check(cudaGetLastError(), "state_scan");
    prof.mark("scan");
  }
  const int64_t tiles = (std::min(C, s.N) + kQR - 1) / kQR;
  causal_query<T, D><<<dim3(unsigned(l.nC * tiles), unsigned(BH)), kNT, size_t(query_smem_floats<D>(int(m)) * 4), st>>>(
      rows_of(in.q), rows_of(in.k), rows_of(in.v), w, S, slot, s.H, s.N, C, m, l.nS, tiles, map, sfeat,
      static_cast<T*>(out.data), out.stride[0], out.stride[1], out.stride[2]);
  cuda_check(cudaGetLastError(), "causal_query");
  prof.mark("query");
}

template <class T>
void dispatch_d(FlurkaMethod m, const FlurkaShape& s, int64_t C, const FlurkaInputs& in, const TensorView& out,
                char* ws, cudaStream_t st) {
  switch (s.D) {
    case 32: return launch<T, 32>(m, s, C, in, out, ws, st);
    case 64: return launch<T, 64>(m, s, C, in, out, ws, st);
    case 128: return launch<T, 128>(m, s, C, in, out, ws, st);
  }
}

// The shapes the kernels take; "" when supported.
std::string unsupported(const FlurkaShape& s, int64_t C) {
  if (s.D != 32 && s.D != 64 && s.D != 128)
    return "the causal CUDA path supports head dim D in {32, 64, 128}, got " + std::to_string(s.D);
  if (s.k > kMaxRank || s.m > kMaxRank)
    return "the causal CUDA path supports r, m <= " + std::to_string(kMaxRank) + ", got r = " + std::to_string(s.k) +
           ", m = " + std::to_string(s.m);
  if (s.B * s.H > 65535) return "the causal CUDA path supports B * H <= 65535, got " + std::to_string(s.B * s.H);
  const int64_t nC = (s.N + C - 1) / C, tiles = (std::min(C, s.N) + kQR - 1) / kQR;
  if (nC > 65535) return "the causal CUDA path supports at most 65535 chunks (N / C), got " + std::to_string(nC);
  if (nC * tiles > (int64_t(1) << 31) - 1) return "the causal CUDA path: too many query tiles";
  return "";
}

// The tensor-core kernels (causal_tc.cu) for bf16 storage (SPLAT_FLURKA_CAUSAL_TC=0: the SIMT kernels); other
// dtypes and shapes keep the fp32 SIMT kernels above.
bool use_tc(const FlurkaInputs& in, const FlurkaShape& s, int64_t C) {
  static const bool on = [] {
    const char* e = std::getenv("SPLAT_FLURKA_CAUSAL_TC");
    return !(e && std::string(e) == "0");
  }();
  return on && causal_tc_unsupported(in, s, C).empty();
}

}  // namespace

size_t flurka_causal_cuda_workspace_bytes(FlurkaMethod, const FlurkaShape& s, int64_t chunk) {
  require(chunk >= 1, "the causal chunk length C must be >= 1");
  return layout(s, chunk).total;
}

void flurka_causal_cuda(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk, void* workspace,
                        void* stream) {
  require(chunk >= 1, "the causal chunk length C must be >= 1");
  const FlurkaShape s = check_flurka_args(m, in, out, chunk);
  require(in.q.device >= 0, "flurka_causal_cuda needs device tensors (views with device >= 0)");
  require(out.dtype == in.q.dtype, "flurka_causal_cuda: out must have q's dtype");
  if (in.q.dtype == DType::F64)
    fail(ErrorCode::Unsupported, "flurka_causal_cuda: float64 runs on the CPU only (CUDA: float32, float16, bfloat16)");
  require(in.e.dtype == in.q.dtype && in.f.dtype == in.q.dtype, "flurka_causal_cuda: E and F must have q's dtype");
  if (uses_random_features(m)) require(in.w.dtype == in.q.dtype, "flurka_causal_cuda: W must have q's dtype");
  require(in.q.stride[3] == 1 && in.k.stride[3] == 1 && in.v.stride[3] == 1 && out.stride[3] == 1,
          "flurka_causal_cuda: D must be contiguous in q, k, v and out");
  const std::string why = unsupported(s, chunk);
  if (!why.empty()) fail(ErrorCode::Unsupported, why + " (use the CPU backend)");
  cuda_check(cudaSetDevice(in.q.device), "cudaSetDevice");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  char* ws = static_cast<char*>(workspace);
  bool own = false;
  if (!ws) {
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&ws), layout(s, chunk).total), "cudaMalloc(causal workspace)");
    own = true;
  }
  try {
    if (use_tc(in, s, chunk)) {
      const Layout l = layout(s, chunk);
      auto f = [&](size_t off) { return reinterpret_cast<float*>(ws + off); };
      const CausalTcBuffers b{f(l.kp), f(l.vp), f(l.S), f(l.slot), f(l.off), f(l.z), ws + l.wt, ws + l.ut};
      causal_tc_launch(m, s, chunk, in, out, b, st);
    } else {
      switch (in.q.dtype) {
        case DType::F32: dispatch_d<float>(m, s, chunk, in, out, ws, st); break;
        case DType::F16: dispatch_d<__half>(m, s, chunk, in, out, ws, st); break;
        case DType::BF16: dispatch_d<bf16>(m, s, chunk, in, out, ws, st); break;
        case DType::F64: break;  // refused above
      }
    }
  } catch (...) {
    if (own) cudaFree(ws);
    throw;
  }
  if (own) {
    cuda_check(cudaStreamSynchronize(st), "flurka_causal_cuda");
    cuda_check(cudaFree(ws), "cudaFree");
  }
}

double flurka_causal_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk, int warmup,
                               int repeats) {
  require(chunk >= 1, "the causal chunk length C must be >= 1");
  const FlurkaShape s = check_flurka_args(m, in, out, chunk);
  require(in.q.device < 0, "flurka_causal_cuda_host takes host tensors");
  std::string why;
  if (!flurka_cuda_available(&why)) fail(ErrorCode::Unsupported, why);
  std::vector<std::unique_ptr<DevBuf>> bufs;
  auto up = [&](const void* src, size_t n) {
    bufs.push_back(std::make_unique<DevBuf>(n));
    cuda_check(cudaMemcpy(bufs.back()->p, src, n, cudaMemcpyHostToDevice), "cudaMemcpy");
    return bufs.back()->p;
  };
  FlurkaInputs d = in;
  d.q.data = up(in.q.data, extent_bytes(in.q)), d.q.device = 0;
  d.k.data = up(in.k.data, extent_bytes(in.k)), d.k.device = 0;
  d.v.data = up(in.v.data, extent_bytes(in.v)), d.v.device = 0;
  const size_t eb = size_t(in.e.heads * in.e.rows * in.e.cols) * dtype_size(in.e.dtype);
  d.e.data = up(in.e.data, eb), d.e.device = 0;
  d.f.data = up(in.f.data, eb), d.f.device = 0;
  if (uses_random_features(m)) {
    d.w.data = up(in.w.data, size_t(in.w.heads * in.w.rows * in.w.cols) * dtype_size(in.w.dtype));
    d.w.device = 0;
  }
  TensorView o = out;
  bufs.push_back(std::make_unique<DevBuf>(extent_bytes(out)));
  o.data = bufs.back()->p, o.device = 0;
  cuda_check(cudaMemset(o.data, 0xff, extent_bytes(out)), "cudaMemset");  // NaN poison
  DevBuf ws(flurka_causal_cuda_workspace_bytes(m, s, chunk));
  cuda_check(cudaMemset(ws.p, 0xff, flurka_causal_cuda_workspace_bytes(m, s, chunk)), "cudaMemset");  // NaN poison
  cudaEvent_t e0, e1;
  cuda_check(cudaEventCreate(&e0), "event");
  cuda_check(cudaEventCreate(&e1), "event");
  for (int i = 0; i < warmup; ++i) flurka_causal_cuda(m, d, o, chunk, ws.p, nullptr);
  std::vector<float> times;
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    cuda_check(cudaEventRecord(e0), "event");
    flurka_causal_cuda(m, d, o, chunk, ws.p, nullptr);
    cuda_check(cudaEventRecord(e1), "event");
    cuda_check(cudaEventSynchronize(e1), "flurka_causal_cuda");
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    times.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(times.begin(), times.end());
  cuda_check(cudaMemcpy(out.data, o.data, extent_bytes(out), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return times[times.size() / 2];
}

}  // namespace splat
