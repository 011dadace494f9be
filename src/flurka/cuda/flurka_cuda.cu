// Host side of the CUDA FLuRKA path: argument checks, workspace layout, launch sequence, host convenience.
// Sequence per call: [prepare W^T, zero the fp32 accumulators] -> [project E K, F V (split over N); bf16 copy
// for linformer] -> [state phi(X)^T Y, z (split over rows; reads fp32 K', V') -> slots] -> queries. Only
// O(B H (k + m) D) intermediates touch device memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/cuda/kernels.cuh"
#include "flurka/cuda/launch_profile.hpp"
#include "flurka/cuda/launch_util.hpp"
#include "flurka/cuda/project.cuh"
#include "flurka/cuda/query.cuh"
#include "flurka/cuda/state.cuh"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
using namespace fk;

namespace {

// Byte offsets of the workspace regions.
struct Layout {
  size_t kp, vp, kp16, vp16, wt, shift, S, z, ut, slot, total;
};
Layout layout(FlurkaMethod m, const FlurkaShape& s) {
  // The sizes may come straight from a caller (workspace queries): every product is checked (each region
  // is at most B H max(k, m) D 4 bytes; their sum at most 12 times that, with alignment).
  const int64_t big = std::max<int64_t>({s.k, s.m, 1});
  checked_bytes({s.B, s.H, big, s.D, 16}, 4, "FLuRKA CUDA workspace [B, H, max(k, m), D]");
  const size_t BH = size_t(s.B * s.H), D = size_t(s.D), k = size_t(s.k), mm = size_t(std::max<int64_t>(s.m, 1));
  const size_t H = size_t(s.H);
  Layout l{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o += align_up(bytes);
    return at;
  };
  const bool proj = uses_projection(m), kern = feature_map_of(m) != FeatureMap::None;
  l.kp = take(proj ? BH * k * D * 4 : 0);
  l.vp = take(proj ? BH * k * D * 4 : 0);
  l.kp16 = take(proj && !kern ? BH * k * D * 2 : 0);
  l.vp16 = take(proj && !kern ? BH * k * D * 2 : 0);
  l.wt = take(kern ? H * mm * D * 2 : 0);
  l.shift = take(kern ? H * mm * 4 : 0);
  l.S = take(kern ? BH * mm * D * 4 : 0);
  l.z = take(kern ? BH * mm * 4 : 0);
  l.ut = take(kern ? BH * mm * D * 2 : 0);
  l.slot = take(kern ? BH * mm * 4 : 0);
  l.total = o;
  return l;
}

int sm_count() {
  static int n = [] {
    int dev = 0, v = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
    return v;
  }();
  return n;
}

// Splits of a reduction of length n into chunks (multiples of 64) so that about 3 waves of blocks exist.
int64_t split_chunk(int64_t n, int64_t blocks_per_split) {
  const int64_t want = std::max<int64_t>(1, (3 * sm_count() + blocks_per_split - 1) / blocks_per_split);
  int64_t chunk = (n + want - 1) / want;
  chunk = std::max<int64_t>(256, (chunk + 63) / 64 * 64);
  return chunk;
}

// Grid of the pipelined projection: row tiles x column tiles x splits x (H, E|F), splits chosen for about one
// wave of (one-per-SM) blocks, each chunk a multiple of the 32-column stage.
struct ProjGrid {
  int64_t rt, ct, splits, chunk;
};
ProjGrid proj_grid(const FlurkaShape& s) {
  ProjGrid g{};
  g.rt = (s.k + ProjPipe::BM - 1) / ProjPipe::BM;
  g.ct = (s.B * s.D + ProjPipe::BC - 1) / ProjPipe::BC;
  const int64_t tiles = g.rt * g.ct * s.H * 2;
  int64_t splits = std::max<int64_t>(1, (sm_count() + tiles / 2) / tiles);
  splits = std::min(splits, (s.N + 255) / 256);
  g.chunk = ((s.N + splits - 1) / splits + ProjPipe::BK - 1) / ProjPipe::BK * ProjPipe::BK;
  g.splits = (s.N + g.chunk - 1) / g.chunk;
  return g;
}

template <class T, int D>
void launch_all(FlurkaMethod method, const FlurkaShape& s, const FlurkaInputs& in, const TensorView& out, char* ws,
                cudaStream_t st) {
  const Layout l = layout(method, s);
  const int64_t BH = s.B * s.H, k = s.k, m = s.m;
  const FeatureMap fm = feature_map_of(method);
  const bool proj = uses_projection(method), kern = fm != FeatureMap::None;
  const int map = fm == FeatureMap::Favor  ? kFavor
                  : fm == FeatureMap::Relu ? kRelu
                  : fm == FeatureMap::Elu  ? kElu
                                           : kSoftmax;
  constexpr bool pipe = sizeof(T) == 2;  // cp.async projection reads the storage type directly
  const size_t smem = size_t((128 + 64) * (D + 8) * 2 + D * (64 + 8) * 2 + 64 * 4);  // state kernel
  static bool attrs = [&] {
    cuda_check(cudaFuncSetAttribute(state_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "attr");
    cuda_check(cudaFuncSetAttribute(state_kernel<float, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "attr");
    cuda_check(cudaFuncSetAttribute(query_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(QueryPipe<D>::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(state_pipe_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(StatePipe<D>::smem_bytes)),
               "attr");
    if constexpr (pipe)
      cuda_check(cudaFuncSetAttribute(project_pipe_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(ProjPipe::smem_bytes)),
                 "attr");
    return true;
  }();
  (void)attrs;
  fk::LaunchProfile prof("flurka profile", st);
  prof.mark("start");
  const ProjGrid pg = proj ? proj_grid(s) : ProjGrid{};
  const bool proj_atomic = proj && (!pipe || pg.splits > 1);
  // One launch zeroes the fp32 accumulators (K', V' when split; S, z) and prepares W^T.
  float4* za = proj_atomic ? reinterpret_cast<float4*>(ws + l.kp) : nullptr;
  const int64_t nza = proj_atomic ? int64_t((l.vp - l.kp) / 16) + (BH * k * D * 4 + 15) / 16 : 0;
  // State grid: split over the rows of K' (k) or K (N). With one split and the non-pipelined kernel, the state
  // kernel writes the slots itself (no S, z accumulators to zero, no finalize launch).
  const int64_t mt = (m + 127) / 128, Ls = proj ? k : s.N;
  const int64_t schunk = kern ? split_chunk(Ls, mt * BH) : 1, ssplits = (Ls + schunk - 1) / schunk;
  const bool state_pipe = !proj && std::is_same_v<T, bf16>;
  const bool direct = kern && ssplits == 1 && !state_pipe;
  float4* zb = kern && !direct ? reinterpret_cast<float4*>(ws + l.S) : nullptr;
  const int64_t nzb = kern && !direct ? int64_t((l.z - l.S) / 16) + (BH * m * 4 + 15) / 16 : 0;
  const int64_t Hw = !kern ? 0 : fm == FeatureMap::Elu ? 1 : in.w.heads;
  bf16* wt = reinterpret_cast<bf16*>(ws + l.wt);
  if (kern || proj_atomic) {
    const int64_t work = std::max<int64_t>({Hw * m * D, nza, nzb});
    prepare_features<T><<<unsigned(std::min<int64_t>(2048, (work + 255) / 256)), 256, 0, st>>>(
        static_cast<const T*>(in.w.data), Hw, D, m, fm == FeatureMap::Elu, wt, za, nza, zb, nzb);
    cuda_check(cudaGetLastError(), "prepare_features");
    prof.mark("prepare");
  }
  const bf16 *keys = nullptr, *ut = nullptr;
  const float* slot = nullptr;
  int64_t keys_bh = 0, Hk = 1, L = 0;
  float a = 1.0f;
  const float sfeat = std::pow(float(D), -0.25f);
  float* kp = reinterpret_cast<float*>(ws + l.kp);
  float* vp = reinterpret_cast<float*>(ws + l.vp);
  if (proj) {
    if constexpr (pipe) {
      dim3 grid(unsigned(pg.rt * pg.ct), unsigned(pg.splits), unsigned(s.H * 2));
      project_pipe_kernel<T, D><<<grid, ProjPipe::NT, ProjPipe::smem_bytes, st>>>(
          rows_of(in.e), rows_of(in.f), rows_of(in.k), rows_of(in.v), s.B, s.H, k, s.N, pg.chunk, int(pg.ct),
          pg.splits > 1, kp, vp);
    } else {
      const int64_t kt = (k + 127) / 128;
      const int64_t chunk = split_chunk(s.N, kt * BH * 2);
      dim3 grid(unsigned(kt), unsigned((s.N + chunk - 1) / chunk), unsigned(BH * 2));
      project_kernel<T, D, 1><<<grid, 256, 0, st>>>(rows_of(in.e), rows_of(in.f), rows_of(in.k), rows_of(in.v), s.B,
                                                    s.H, k, s.N, chunk, kp, vp);
    }
    cuda_check(cudaGetLastError(), "project_kernel");
    prof.mark("project");
  }
  if (!kern) {
    bf16* kp16 = reinterpret_cast<bf16*>(ws + l.kp16);
    bf16* vp16 = reinterpret_cast<bf16*>(ws + l.vp16);
    convert_projection<<<unsigned(std::min<int64_t>(4096, (BH * k * D + 255) / 256)), 256, 0, st>>>(kp, vp, BH * k * D,
                                                                                                    kp16, vp16);
    cuda_check(cudaGetLastError(), "convert_projection");
    prof.mark("convert");
    keys = kp16, keys_bh = 1, Hk = BH, L = k, ut = vp16;
    a = 1.0f / std::sqrt(float(D));
  } else {
    float* shift = reinterpret_cast<float*>(ws + l.shift);
    float* S = reinterpret_cast<float*>(ws + l.S);
    float* z = reinterpret_cast<float*>(ws + l.z);
    const float sc = fm == FeatureMap::Elu ? 1.0f : sfeat;
    bf16* utw = reinterpret_cast<bf16*>(ws + l.ut);
    float* slotw = reinterpret_cast<float*>(ws + l.slot);
    const dim3 grid{unsigned(mt), unsigned(ssplits), unsigned(BH)};
    if (proj) {  // reads the fp32 K', V' of the projection directly (no conversion launch)
      // bh = b * H + h, so a per-(b, h) stride of k D is sb = H k D, sh = k D.
      const Rows x2{kp, s.H * k * D, k * D, D}, y2{vp, s.H * k * D, k * D, D};
      state_kernel<float, D><<<grid, 256, smem, st>>>(x2, y2, wt, Hw, shift, s.H, k, m, schunk, map, sc, S, z,
                                                      direct ? utw : nullptr, slotw);
    } else if constexpr (std::is_same_v<T, bf16>) {  // cp.async straight into the MMA operand type
      state_pipe_kernel<D><<<grid, 256, StatePipe<D>::smem_bytes, st>>>(rows_of(in.k), rows_of(in.v), wt, Hw, shift,
                                                                        s.H, s.N, m, schunk, map, sc, S, z);
    } else {
      state_kernel<T, D><<<grid, 256, smem, st>>>(rows_of(in.k), rows_of(in.v), wt, Hw, shift, s.H, s.N, m, schunk, map,
                                                  sc, S, z, direct ? utw : nullptr, slotw);
    }
    cuda_check(cudaGetLastError(), "state_kernel");
    prof.mark("state");
    if (!direct) {
      finalize_state<<<unsigned(std::min<int64_t>(8192, (BH * m + 3) / 4)), dim3(D, 4), 0, st>>>(
          S, z, shift, Hw, s.H, BH, m, D, map, utw, slotw);
      cuda_check(cudaGetLastError(), "finalize_state");
      prof.mark("finalize");
    }
    keys = wt, keys_bh = 0, Hk = Hw, L = m, ut = utw, slot = slotw, a = sc;
  }
  dim3 grid(unsigned((s.Nq + 127) / 128), unsigned(BH));
  query_kernel<T, D><<<grid, 256, QueryPipe<D>::smem_bytes, st>>>(rows_of(in.q), keys, keys_bh, Hk, ut, slot, s.H, s.Nq,
                                                                  L, map, a, static_cast<T*>(out.data), out.stride[0],
                                                                  out.stride[1], out.stride[2]);
  cuda_check(cudaGetLastError(), "query_kernel");
  prof.mark("query");
}

template <class T>
void dispatch_d(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in, const TensorView& out, char* ws,
                cudaStream_t st) {
  switch (s.D) {
    case 32: return launch_all<T, 32>(m, s, in, out, ws, st);
    case 64: return launch_all<T, 64>(m, s, in, out, ws, st);
    case 128: return launch_all<T, 128>(m, s, in, out, ws, st);
  }
}

}  // namespace

bool flurka_cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why)
      *why = e != cudaSuccess ? std::string("no usable CUDA device: ") + cudaGetErrorString(e) : "no CUDA device";
    cudaGetLastError();
    return false;
  }
  return true;
}

bool flurka_cuda_supports(FlurkaMethod m, const FlurkaShape& s, std::string* why) {
  std::string w;
  if (s.D != 32 && s.D != 64 && s.D != 128)
    w = "the CUDA path supports head dim D in {32, 64, 128}, got " + std::to_string(s.D);
  else if (uses_projection(m) && s.k > 512)
    w = "the CUDA path supports k <= 512, got " + std::to_string(s.k);
  else if (feature_map_of(m) != FeatureMap::None && s.m > 512)
    w = "the CUDA path supports m <= 512, got " + std::to_string(s.m);
  else if (s.B * s.H > 32767)  // grid dimensions y, z <= 65535 (2 B H projection blocks)
    w = "the CUDA path supports B * H <= 32767, got " + std::to_string(s.B * s.H);
  if (why) *why = w;
  return w.empty();
}

size_t flurka_cuda_workspace_bytes(FlurkaMethod m, const FlurkaShape& s) {
  return layout(m, s).total;
}

void flurka_cuda(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, void* workspace, void* stream) {
  const FlurkaShape s = check_flurka_args(m, in, out);
  require(in.q.device >= 0,
          "flurka_cuda needs device tensors (views with device >= 0); use flurka_cuda_host for "
          "host tensors");
  require(out.dtype == in.q.dtype, "flurka_cuda: out must have q's dtype");
  if (in.q.dtype == DType::F64)
    fail(ErrorCode::Unsupported, "flurka_cuda: float64 runs on the CPU only (CUDA: float32, float16, bfloat16)");
  if (uses_projection(m))
    require(in.e.dtype == in.q.dtype && in.f.dtype == in.q.dtype, "flurka_cuda: E and F must have q's dtype");
  if (uses_random_features(m)) require(in.w.dtype == in.q.dtype, "flurka_cuda: W must have q's dtype");
  std::string why;
  if (!flurka_cuda_supports(m, s, &why)) fail(ErrorCode::Unsupported, why + " (use the CPU backend)");
  cuda_check(cudaSetDevice(in.q.device), "cudaSetDevice");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  char* ws = static_cast<char*>(workspace);
  const size_t bytes = flurka_cuda_workspace_bytes(m, s);
  bool own = false;
  if (!ws) {
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&ws), bytes), "cudaMalloc(workspace)");
    own = true;
  }
  try {
    switch (in.q.dtype) {
      case DType::F32: dispatch_d<float>(m, s, in, out, ws, st); break;
      case DType::F16: dispatch_d<__half>(m, s, in, out, ws, st); break;
      case DType::BF16: dispatch_d<bf16>(m, s, in, out, ws, st); break;
    }
  } catch (...) {
    if (own) cudaFree(ws);
    throw;
  }
  if (own) {
    cuda_check(cudaStreamSynchronize(st), "flurka_cuda");
    cuda_check(cudaFree(ws), "cudaFree");
  }
}

double flurka_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int warmup, int repeats) {
  const FlurkaShape s = check_flurka_args(m, in, out);
  require(in.q.device < 0, "flurka_cuda_host takes host tensors");
  std::string why;
  if (!flurka_cuda_available(&why)) fail(ErrorCode::Unsupported, why);
  FlurkaInputs d = in;
  std::vector<DevBuf*> bufs;
  auto up_t = [&](TensorView& t) {
    const size_t n = extent_bytes(t);
    bufs.push_back(new DevBuf(n));
    cuda_check(cudaMemcpy(bufs.back()->p, t.data, n, cudaMemcpyHostToDevice), "cudaMemcpy");
    t.data = bufs.back()->p, t.device = 0;
  };
  auto up_m = [&](MatrixView& x) {
    if (!x.data) return;
    const size_t n = extent_bytes(x);
    bufs.push_back(new DevBuf(n));
    cuda_check(cudaMemcpy(bufs.back()->p, x.data, n, cudaMemcpyHostToDevice), "cudaMemcpy");
    x.data = bufs.back()->p, x.device = 0;
  };
  double ms = 0;
  try {
    up_t(d.q), up_t(d.k), up_t(d.v);
    if (uses_projection(m)) up_m(d.e), up_m(d.f);
    if (uses_random_features(m)) up_m(d.w);
    TensorView o = out;
    bufs.push_back(new DevBuf(extent_bytes(out)));
    o.data = bufs.back()->p, o.device = 0;
    cuda_check(cudaMemset(o.data, 0xff, extent_bytes(out)), "cudaMemset");  // NaN poison
    DevBuf ws(flurka_cuda_workspace_bytes(m, s));
    cudaEvent_t e0, e1;
    cuda_check(cudaEventCreate(&e0), "event");
    cuda_check(cudaEventCreate(&e1), "event");
    for (int i = 0; i < warmup; ++i) flurka_cuda(m, d, o, ws.p, nullptr);
    std::vector<float> times;
    for (int i = 0; i < std::max(repeats, 1); ++i) {
      cuda_check(cudaEventRecord(e0), "event");
      flurka_cuda(m, d, o, ws.p, nullptr);
      cuda_check(cudaEventRecord(e1), "event");
      cuda_check(cudaEventSynchronize(e1), "flurka_cuda");
      float t = 0;
      cudaEventElapsedTime(&t, e0, e1);
      times.push_back(t);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::sort(times.begin(), times.end());
    ms = times[times.size() / 2];
    cuda_check(cudaMemcpy(out.data, o.data, extent_bytes(out), cudaMemcpyDeviceToHost), "cudaMemcpy");
  } catch (...) {
    for (DevBuf* b : bufs) delete b;
    throw;
  }
  for (DevBuf* b : bufs) delete b;
  return ms;
}

}  // namespace splat
