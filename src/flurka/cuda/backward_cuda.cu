// Host side of the CUDA FLuRKA backward (non-causal): argument checks, a stream-ordered scratch allocation
// (cudaMallocAsync: no synchronisation, capturable) and the launch sequence of backward.cuh (fp32, fp16, and
// shapes past the tensor-core kernels' limits); bf16 runs backward_tc.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/cuda/backward.cuh"
#include "flurka/cuda/backward_tc.hpp"
#include "flurka/cuda/launch_util.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
using namespace fk;

namespace {

Rows rows(const TensorView& t) {
  return Rows{t.data, t.stride[0], t.stride[1], t.stride[2]};
}
Rows rows(const MatrixView& x) {
  return Rows{x.data, 0, x.heads == 1 ? 0 : x.rows * x.cols, x.cols};
}

// Scratch (floats): K', V' [BH, L, D] each; the slots (kernel maps) c, z, bias [BH, m], U [BH, m, D]; the query
// partials [BH, nblk, P]; dK', dV' [BH, L, D] each (projected kernel maps).
struct Scratch {
  int64_t L, slots, nblk, P;
  size_t kp, vp, c, z, bias, U, part, dkp, dvp, total;  // float offsets
};
Scratch scratch(FlurkaMethod m, const FlurkaShape& s) {
  const bool proj = uses_projection(m), lin = feature_map_of(m) == FeatureMap::None;
  Scratch x{};
  x.L = proj ? s.k : s.N;
  x.slots = lin ? s.k : s.m;
  x.nblk = (s.Nq + bwd::kRowBlock - 1) / bwd::kRowBlock;
  x.P = checked_product({x.slots, s.D, lin ? 2 : 1}, "backward partial") + (lin ? 0 : x.slots);
  const int64_t BH = checked_product({s.B, s.H}, "B H");
  size_t o = 0;
  auto take = [&](int64_t n) {
    const size_t at = o;
    o = size_t(checked_sum({int64_t(o), (n + 63) / 64 * 64}, "backward workspace"));
    return at;
  };
  const int64_t rows = checked_product({BH, x.L, s.D}, "backward workspace");
  x.kp = take(rows), x.vp = take(rows);
  const int64_t sm = lin ? 0 : checked_product({BH, x.slots}, "backward workspace");
  x.c = take(sm), x.z = take(sm), x.bias = take(sm);
  x.U = take(lin ? 0 : checked_product({BH, x.slots, s.D}, "backward workspace"));
  x.part = take(checked_product({BH, x.nblk, x.P}, "backward workspace"));
  const int64_t dk = proj && !lin ? rows : 0;
  x.dkp = take(dk), x.dvp = take(dk);
  x.total = o;
  checked_bytes({int64_t(o)}, 4, "backward workspace");
  return x;
}

template <class T>
void launch(FlurkaMethod method, const FlurkaShape& s, const FlurkaInputs& in, const FlurkaGrads& g, float* ws,
            const Scratch& x, cudaStream_t st) {
  const FeatureMap fm = feature_map_of(method);
  const bool proj = uses_projection(method), lin = fm == FeatureMap::None;
  const int map = fm == FeatureMap::Favor  ? bwd::kFavor
                  : fm == FeatureMap::Relu ? bwd::kRelu
                  : fm == FeatureMap::Elu  ? bwd::kElu
                                           : bwd::kSoftmax;
  const int64_t BH = s.B * s.H, D = s.D, L = x.L;
  const unsigned bh = unsigned(BH), nt = bwd::kThreads;
  float *kp = ws + x.kp, *vp = ws + x.vp, *part = ws + x.part;
  const Rows none{nullptr, 0, 0, 0};
  bwd::project_kernel<T><<<dim3(unsigned(L), bh), nt, 0, st>>>(proj ? rows(in.e) : none, rows(in.k), s.H, s.N, D, kp);
  bwd::project_kernel<T><<<dim3(unsigned(L), bh), nt, 0, st>>>(proj ? rows(in.f) : none, rows(in.v), s.H, s.N, D, vp);
  const float sfeat = std::pow(float(D), -0.25f);
  bwd::Slots sl{map,
                x.slots,
                D,
                s.m,
                lin                     ? 1.0f / std::sqrt(float(D))
                : fm == FeatureMap::Elu ? 1.0f
                                        : sfeat,
                kp,
                uses_random_features(method) ? rows(in.w) : none,
                lin ? vp : ws + x.U,
                ws + x.bias,
                ws + x.z};
  if (!lin)
    bwd::state_kernel<T><<<dim3(unsigned((s.m + 31) / 32), bh), 32, 0, st>>>(map, kp, vp, sl.W, s.H, L, D, s.m,
                                                                             fm == FeatureMap::Elu ? 1.0f : sfeat,
                                                                             ws + x.c, ws + x.z, ws + x.U, ws + x.bias);
  bwd::query_kernel<T>
      <<<dim3(unsigned(x.nblk), bh), nt, 0, st>>>(sl, rows(in.q), rows(g.dout), rows(g.dq), s.H, s.Nq, x.P, part);
  bwd::reduce_kernel<<<dim3(unsigned((x.P + 255) / 256), bh), 256, 0, st>>>(part, x.nblk, x.P, x.slots, D,
                                                                            lin ? nullptr : ws + x.z);
  if (!lin)
    bwd::key_kernel<T><<<dim3(unsigned((L + 15) / 16), bh), nt, 0, st>>>(
        sl, kp, vp, ws + x.c, part, x.nblk, x.P, s.H, L, proj ? ws + x.dkp : nullptr, proj ? ws + x.dvp : nullptr,
        rows(g.dk), rows(g.dv));
  if (proj) {  // linformer: dV' = G, dK' = Ka (in the reduced partials); kernel maps: the key kernel's rows
    const float* gk = lin ? part + x.slots * D : ws + x.dkp;
    const float* gv = lin ? part : ws + x.dvp;
    const int64_t stride = lin ? x.nblk * x.P : L * D;
    bwd::project_back_kernel<T>
        <<<dim3(unsigned(s.N), bh), nt, 0, st>>>(rows(in.e), gk, stride, s.H, s.k, D, rows(g.dk));
    bwd::project_back_kernel<T>
        <<<dim3(unsigned(s.N), bh), nt, 0, st>>>(rows(in.f), gv, stride, s.H, s.k, D, rows(g.dv));
    const dim3 grid(unsigned((s.N + nt - 1) / nt), unsigned(s.k), unsigned(in.e.heads));
    bwd::matrix_grad_kernel<T>
        <<<grid, nt, 0, st>>>(gk, stride, rows(in.k), s.B, s.H, in.e.heads, s.k, s.N, D, static_cast<T*>(g.de));
    bwd::matrix_grad_kernel<T>
        <<<grid, nt, 0, st>>>(gv, stride, rows(in.v), s.B, s.H, in.e.heads, s.k, s.N, D, static_cast<T*>(g.df));
  }
  cuda_check(cudaGetLastError(), "flurka_backward_cuda launch");
}

}  // namespace

void flurka_backward_cuda(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g, void* stream) {
  const FlurkaShape s = check_flurka_backward_args(m, in, g);
  require(in.q.device >= 0, "flurka_backward_cuda needs device tensors (views with device >= 0)");
  const DType t = in.q.dtype;
  if (t == DType::F64)
    fail(ErrorCode::Unsupported, "flurka_backward_cuda: float64 runs on the CPU only (CUDA: f32, f16, bf16)");
  for (const TensorView* v : {&g.dout, &g.dq, &g.dk, &g.dv})
    require(v->dtype == t, "flurka_backward_cuda: dout and the gradients must have q's dtype");
  if (uses_projection(m))
    require(in.e.dtype == t && in.f.dtype == t, "flurka_backward_cuda: E and F must have q's dtype");
  if (uses_random_features(m)) require(in.w.dtype == t, "flurka_backward_cuda: W must have q's dtype");
  std::string why;
  if (!flurka_cuda_supports(m, s, &why)) fail(ErrorCode::Unsupported, why + " (use the CPU backend)");
  cuda_check(cudaSetDevice(in.q.device), "cudaSetDevice");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (tc_backward_applies(m, s, in)) return tc_backward(m, s, in, g, st);  // bf16: the tensor-core kernels
  const Scratch x = scratch(m, s);
  float* ws = nullptr;
  cuda_check(cudaMallocAsync(reinterpret_cast<void**>(&ws), std::max<size_t>(x.total, 64) * 4, st),
             "cudaMallocAsync(backward scratch)");
  try {
    switch (t) {
      case DType::F32: launch<float>(m, s, in, g, ws, x, st); break;
      case DType::F16: launch<__half>(m, s, in, g, ws, x, st); break;
      case DType::BF16: launch<bf16>(m, s, in, g, ws, x, st); break;
      case DType::F64: break;  // refused above
    }
  } catch (...) {
    cudaFreeAsync(ws, st);
    throw;
  }
  cuda_check(cudaFreeAsync(ws, st), "cudaFreeAsync(backward scratch)");
}

void flurka_backward_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g) {
  check_flurka_backward_args(m, in, g);
  require(in.q.device < 0, "flurka_backward_cuda_host takes host tensors");
  std::string why;
  if (!flurka_cuda_available(&why)) fail(ErrorCode::Unsupported, why);
  std::vector<std::unique_ptr<DevBuf>> mem;
  auto up = [&](auto& view, bool copy) {
    const size_t n = extent_bytes(view);
    mem.push_back(std::make_unique<DevBuf>(n));
    if (copy)
      cuda_check(cudaMemcpy(mem.back()->p, view.data, n, cudaMemcpyHostToDevice), "cudaMemcpy");
    else
      cuda_check(cudaMemset(mem.back()->p, 0xff, n), "cudaMemset");  // NaN poison: every gradient must be written
    view.data = mem.back()->p, view.device = 0;
  };
  FlurkaInputs d = in;
  FlurkaGrads dg = g;
  up(d.q, true), up(d.k, true), up(d.v, true), up(dg.dout, true);
  up(dg.dq, false), up(dg.dk, false), up(dg.dv, false);
  if (uses_projection(m)) {
    up(d.e, true), up(d.f, true);
    for (void** p : {&dg.de, &dg.df}) {
      mem.push_back(std::make_unique<DevBuf>(extent_bytes(in.e)));
      cuda_check(cudaMemset(mem.back()->p, 0xff, extent_bytes(in.e)), "cudaMemset");
      *p = mem.back()->p;
    }
  }
  if (uses_random_features(m)) up(d.w, true);
  flurka_backward_cuda(m, d, dg, nullptr);
  cuda_check(cudaDeviceSynchronize(), "flurka_backward_cuda");
  auto down = [&](const TensorView& host, const TensorView& dev) {
    cuda_check(cudaMemcpy(host.data, dev.data, extent_bytes(host), cudaMemcpyDeviceToHost), "cudaMemcpy");
  };
  down(g.dq, dg.dq), down(g.dk, dg.dk), down(g.dv, dg.dv);
  if (uses_projection(m)) {
    cuda_check(cudaMemcpy(g.de, dg.de, extent_bytes(in.e), cudaMemcpyDeviceToHost), "cudaMemcpy");
    cuda_check(cudaMemcpy(g.df, dg.df, extent_bytes(in.f), cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
}

}  // namespace splat
