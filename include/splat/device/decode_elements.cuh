// Element types of the decode kernels (bf16, f16 and f32 caches and queries; fp32 arithmetic in between) as raw bits
// and their conversions by PTX: the same instructions the CUDA headers' intrinsics emit (round to nearest even), so
// no CUDA include tree is needed (NVRTC).
#pragma once
#include "splat/device/decode_args.cuh"

namespace splat {
namespace dev {

enum DecodeElemKind { kDecodeBf16 = 0, kDecodeF16 = 1, kDecodeF32 = 2 };

template <int K>
struct DecodeElem {
  typedef unsigned short T;  // 16-bit float bits
};
template <>
struct DecodeElem<kDecodeF32> {
  typedef float T;
};

template <int K>
__device__ __forceinline__ float decode_to_f(typename DecodeElem<K>::T x) {
  if constexpr (K == kDecodeBf16) {
    return __uint_as_float(unsigned(x) << 16);
  } else if constexpr (K == kDecodeF16) {
    float f;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(x));
    return f;
  } else {
    return x;
  }
}

template <int K>
__device__ __forceinline__ typename DecodeElem<K>::T decode_from_f(float x) {
  if constexpr (K == kDecodeBf16) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(r) : "f"(x));
    return r;
  } else if constexpr (K == kDecodeF16) {
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;\n" : "=h"(r) : "f"(x));
    return r;
  } else {
    return x;
  }
}

// The elements of one 16-byte load as floats (8 of a 16-bit type, 4 of f32).
template <int K>
__device__ __forceinline__ void decode_unpack(const uint4& x, float* f) {
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
  if constexpr (K == kDecodeBf16) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      f[2 * i] = __uint_as_float(w[i] << 16), f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  } else if constexpr (K == kDecodeF16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = decode_to_f<kDecodeF16>((unsigned short)(w[i] & 0xffffu));
      f[2 * i + 1] = decode_to_f<kDecodeF16>((unsigned short)(w[i] >> 16));
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(w[i]);
  }
}

__device__ __forceinline__ float decode_inf() {
  return __int_as_float(0x7f800000);
}
__device__ __forceinline__ float decode_nan() {
  return __int_as_float(0x7fc00000);
}

}  // namespace dev
}  // namespace splat
