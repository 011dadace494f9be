// Element conversions of the decode kernels (bf16, f16, f32 caches and queries), fp32 arithmetic in between.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace splat::cudadecode {

template <class E>
__device__ __forceinline__ float to_f(E x) {
  if constexpr (std::is_same_v<E, __nv_bfloat16>)
    return __bfloat162float(x);
  else if constexpr (std::is_same_v<E, __half>)
    return __half2float(x);
  else
    return x;
}

template <class E>
__device__ __forceinline__ E from_f(float x) {
  if constexpr (std::is_same_v<E, __nv_bfloat16>)
    return __float2bfloat16(x);
  else if constexpr (std::is_same_v<E, __half>)
    return __float2half(x);
  else
    return x;
}

}  // namespace splat::cudadecode
