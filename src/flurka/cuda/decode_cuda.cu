// Host side of the CUDA decode step (experimental; decode.cuh): state allocation, argument checks, the two
// launches of a step, and the host convenience the tests use (a whole sequence fed token by token).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/cuda/decode.cuh"
#include "flurka/cuda/launch_util.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {
using namespace fk;
using namespace fk::dec;

namespace {

// Float offsets of the state regions in the one allocation (the position counter comes last, 8-byte aligned).
struct Regions {
  size_t S, z, off, ck, cv, kp, vp, pos, floats;
};
Regions regions(const FlurkaCudaDecodeState& st) {
  const size_t BH = size_t(st.B * st.H), m = size_t(st.m), D = size_t(st.D), C = size_t(st.C), r = size_t(st.r);
  Regions g{};
  size_t o = 0;
  g.S = o, o += BH * m * D;
  g.z = o, o += BH * m;
  g.off = o, o += BH * m;
  g.ck = o, o += BH * C * D;
  g.cv = o, o += BH * C * D;
  g.kp = o, o += BH * r * D;
  g.vp = o, o += BH * r * D;
  g.pos = (o + 1) / 2 * 2, g.floats = g.pos + 2;
  return g;
}

State state_of(const FlurkaCudaDecodeState& st) {
  float* base = static_cast<float*>(st.buf);
  const Regions g = regions(st);
  return State{base + g.S,  base + g.z,  base + g.off, base + g.ck,
               base + g.cv, base + g.kp, base + g.vp,  reinterpret_cast<unsigned long long*>(base + g.pos)};
}

template <class T, int D>
void launch(const FlurkaCudaDecodeState& st, const TensorView& q, const TensorView& k, const TensorView& v,
            const TensorView& out, cudaStream_t s) {
  const FeatureMap fm = feature_map_of(st.method);
  const int map = fm == FeatureMap::Favor ? kFavor : fm == FeatureMap::Relu ? kRelu : kElu;
  const int smem_max = decode_smem_floats(D, 512, int(kMaxChunk)) * 4;
  static const bool attrs = [&] {
    cuda_check(cudaFuncSetAttribute(decode_step<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max), "attr");
    return true;
  }();
  (void)attrs;
  const Rows w = map == kElu ? Rows{nullptr, 0, 0, 0} : rows_of(st.w);
  const State dev = state_of(st);
  decode_step<T, D><<<unsigned(st.B * st.H), kNT, size_t(decode_smem_floats(D, int(st.m), int(st.C))) * 4, s>>>(
      rows_of(q), rows_of(k), rows_of(v), rows_of(st.e), rows_of(st.f), w, dev, st.H, st.m, st.r, st.C, map,
      std::pow(float(D), -0.25f), static_cast<T*>(out.data), out.stride[0], out.stride[1]);
  cuda_check(cudaGetLastError(), "decode_step");
  decode_advance<<<1, 1, 0, s>>>(dev.pos);
  cuda_check(cudaGetLastError(), "decode_advance");
}

template <class T>
void dispatch_d(const FlurkaCudaDecodeState& st, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& out, cudaStream_t s) {
  switch (st.D) {
    case 32: return launch<T, 32>(st, q, k, v, out, s);
    case 64: return launch<T, 64>(st, q, k, v, out, s);
    case 128: return launch<T, 128>(st, q, k, v, out, s);
  }
}

}  // namespace

namespace {

// The checked state description (no device memory yet).
FlurkaCudaDecodeState describe(FlurkaMethod method, int64_t B, int64_t H, int64_t D, int64_t chunk, const MatrixView& e,
                               const MatrixView& f, const MatrixView& w) {
  require(B >= 1 && H >= 1 && D >= 1, "decode: B, H and D must be positive");
  require(chunk >= 1, "decode: the chunk length C must be >= 1");
  require(e.device >= 0 && f.device == e.device && (!uses_random_features(method) || w.device == e.device),
          "flurka_decode_cuda_init: E, F (and W) must be device matrices on one device");
  // Validate E/F/W through the causal argument check with a one-token view that is never read.
  FlurkaInputs in;
  in.q = contiguous_view(const_cast<void*>(e.data), e.dtype, 1, H, 1, D, e.device);
  in.q.stride[0] = in.q.stride[1] = 0;
  in.k = in.v = in.q;
  in.e = e, in.f = f, in.w = w;
  const FlurkaShape s = check_flurka_args(method, in, in.q, chunk);
  if (D != 32 && D != 64 && D != 128)
    fail(ErrorCode::Unsupported, "the CUDA decode step supports head dim D in {32, 64, 128}, got " + std::to_string(D));
  if (s.k > 512 || s.m > 512 || chunk > kMaxChunk)
    fail(ErrorCode::Unsupported, "the CUDA decode step supports r, m <= 512 and C <= " + std::to_string(kMaxChunk) +
                                     " (use the CPU decode step)");
  require(f.dtype == e.dtype && (!uses_random_features(method) || w.dtype == e.dtype),
          "flurka_decode_cuda_init: E, F and W must have one dtype (q's)");
  checked_bytes({B, H, std::max<int64_t>({s.m, chunk, s.k}), D, 8}, 4, "CUDA decode state");
  FlurkaCudaDecodeState st;
  st.method = method, st.B = B, st.H = H, st.D = D, st.m = s.m, st.r = s.k, st.C = chunk, st.dtype = e.dtype;
  st.e = e, st.f = f, st.w = w, st.device = e.device;
  return st;
}

}  // namespace

size_t flurka_decode_cuda_state_bytes(FlurkaMethod m, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                      const MatrixView& e, const MatrixView& f, const MatrixView& w) {
  return regions(describe(m, B, H, D, chunk, e, f, w)).floats * 4;
}

FlurkaCudaDecodeState flurka_decode_cuda_attach(FlurkaMethod m, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                                const MatrixView& e, const MatrixView& f, const MatrixView& w,
                                                void* buffer) {
  require(buffer != nullptr && (reinterpret_cast<uintptr_t>(buffer) & 15) == 0,
          "decode: the state buffer must be a 16-byte aligned device allocation");
  FlurkaCudaDecodeState st = describe(m, B, H, D, chunk, e, f, w);
  st.buf = buffer, st.owns_buf = false;
  return st;
}

void flurka_decode_cuda_reset(FlurkaCudaDecodeState& st, void* stream) {
  require(st.buf != nullptr, "decode: the CUDA decode state was freed or never initialised");
  cudaStream_t cs = static_cast<cudaStream_t>(stream);
  const Regions g = regions(st);
  cuda_check(cudaMemsetAsync(st.buf, 0, g.floats * 4, cs), "cudaMemset(decode state)");
  if (feature_map_of(st.method) == FeatureMap::Favor) {
    const int64_t n = st.B * st.H * st.m;
    decode_reset_offsets<<<unsigned(std::min<int64_t>(1024, (n + 255) / 256)), 256, 0, cs>>>(
        static_cast<float*>(st.buf) + g.off, n);
    cuda_check(cudaGetLastError(), "decode_reset_offsets");
  }
  st.pos = 0;
}

FlurkaCudaDecodeState flurka_decode_cuda_init(FlurkaMethod method, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                              const MatrixView& e, const MatrixView& f, const MatrixView& w,
                                              void* stream) {
  FlurkaCudaDecodeState st = describe(method, B, H, D, chunk, e, f, w);
  cuda_check(cudaSetDevice(st.device), "cudaSetDevice");
  cuda_check(cudaMalloc(&st.buf, regions(st).floats * 4), "cudaMalloc(decode state)");
  try {
    flurka_decode_cuda_reset(st, stream);
    cuda_check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "flurka_decode_cuda_init");
  } catch (...) {
    cudaFree(st.buf);
    throw;
  }
  return st;
}

void flurka_decode_cuda_step(FlurkaCudaDecodeState& st, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, void* stream) {
  require(st.buf != nullptr, "decode: the CUDA decode state was freed or never initialised");
  for (const TensorView* t : {&q, &k, &v, &out}) {
    require(t->B() == st.B && t->H() == st.H && t->N() == 1 && t->D() == st.D,
            "decode: q, k, v and out must be [B, H, 1, D] = [" + std::to_string(st.B) + ", " + std::to_string(st.H) +
                ", 1, " + std::to_string(st.D) + "]");
    require(t->device == st.device && t->data != nullptr,
            "decode: q, k, v and out must be views on the state's device");
    require(t->stride[3] == 1, "decode: D must be contiguous");
    require(t->dtype == st.dtype, "decode: q, k, v and out must have the dtype of E, F");
  }
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (st.dtype) {
    case DType::F32: dispatch_d<float>(st, q, k, v, out, s); break;
    case DType::F16: dispatch_d<__half>(st, q, k, v, out, s); break;
    case DType::BF16: dispatch_d<bf16>(st, q, k, v, out, s); break;
    case DType::F64: fail(ErrorCode::Unsupported, "the CUDA decode step: float64 runs on the CPU only");
  }
  st.pos += 1;
}

void flurka_decode_cuda_free(FlurkaCudaDecodeState& st) {
  if (st.buf && st.owns_buf) cudaFree(st.buf);
  st.buf = nullptr;
}

void flurka_decode_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk) {
  const FlurkaShape s = check_flurka_args(m, in, out, chunk);
  require(in.q.device < 0, "flurka_decode_cuda_host takes host tensors");
  for (const TensorView* t : {&in.q, &in.k, &in.v, &out})
    require(t->stride[3] == 1 && t->stride[2] == s.D && t->stride[1] == s.N * s.D && t->stride[0] == s.H * s.N * s.D,
            "flurka_decode_cuda_host takes contiguous [B, H, N, D] tensors");
  std::string why;
  if (!flurka_cuda_available(&why)) fail(ErrorCode::Unsupported, why);
  const size_t es = dtype_size(in.q.dtype), row = size_t(s.D) * es, n = size_t(s.B * s.H * s.N) * row;
  auto up = [&](const MatrixView& x, DevBuf& b) {
    MatrixView d = x;
    cuda_check(cudaMemcpy(b.p, x.data, size_t(x.heads * x.rows * x.cols) * es, cudaMemcpyHostToDevice), "cudaMemcpy");
    d.data = b.p, d.device = 0;
    return d;
  };
  DevBuf de(size_t(in.e.heads * in.e.rows * in.e.cols) * es), df(size_t(in.f.heads * in.f.rows * in.f.cols) * es);
  DevBuf dw(uses_random_features(m) ? size_t(in.w.heads * in.w.rows * in.w.cols) * es : 16);
  const MatrixView e = up(in.e, de), f = up(in.f, df), w = uses_random_features(m) ? up(in.w, dw) : in.w;
  DevBuf dq(n), dk(n), dv(n), dout(n);
  cuda_check(cudaMemcpy(dq.p, in.q.data, n, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_check(cudaMemcpy(dk.p, in.k.data, n, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_check(cudaMemcpy(dv.p, in.v.data, n, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_check(cudaMemset(dout.p, 0xff, n), "cudaMemset");  // NaN poison
  FlurkaCudaDecodeState st = flurka_decode_cuda_init(m, s.B, s.H, s.D, chunk, e, f, w, nullptr);
  try {
    for (int64_t t = 0; t < s.N; ++t) {  // token t of every sequence: a [B, H, 1, D] view with the full strides
      auto at = [&](void* base) {
        TensorView x = contiguous_view(static_cast<char*>(base) + size_t(t) * row, in.q.dtype, s.B, s.H, 1, s.D, 0);
        x.stride[0] = s.H * s.N * s.D, x.stride[1] = s.N * s.D;
        return x;
      };
      flurka_decode_cuda_step(st, at(dq.p), at(dk.p), at(dv.p), at(dout.p), nullptr);
    }
    cuda_check(cudaDeviceSynchronize(), "flurka_decode_cuda_host");
  } catch (...) {
    flurka_decode_cuda_free(st);
    throw;
  }
  flurka_decode_cuda_free(st);
  cuda_check(cudaMemcpy(out.data, dout.p, n, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

}  // namespace splat
