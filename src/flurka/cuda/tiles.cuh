// FLuRKA CUDA kernels (compiled ahead of time for sm_80/sm_90). All GEMM-shaped work runs on tensor cores
// through mma.sync m16n8k16 with bf16 operands and fp32 accumulators. Shared-memory tiles keep the reduction
// dimension contiguous (row-major A, "col" B = B^T row-major), padded by 8 elements so fragment loads hit
// 32 distinct banks. Fragment layout (PTX ISA, m16n8k16): g = lane / 4, t = lane % 4;
//   A: a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..);  B: b0 (k 2t.., n g) b1 (k 2t+8.., n g)
//   C: c0,c1 (g, 2t..2t+1)  c2,c3 (g+8, 2t..2t+1)
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Helpers of the FLuRKA kernels: the m16n8k16 MMA, bf16 packing and dtype conversion, 8-element loads, tiles
// staged through registers into padded shared memory, and per-(batch, head) row bases.
namespace splat::fk {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ void mma_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t lds32(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ float to_f(float x) {
  return x;
}
__device__ __forceinline__ float to_f(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_f(bf16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two adjacent outputs in one store (c is even and rows are 8-element aligned).
__device__ __forceinline__ void store2(float* p, float a, float b) {
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
__device__ __forceinline__ void store2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void store2(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}

// Loads 8 consecutive elements (fewer when valid < 8; the rest are 0) as bf16.
template <class T>
__device__ __forceinline__ void load8(const T* p, int valid, bf16* dst) {
  if (valid >= 8 && (reinterpret_cast<uintptr_t>(p) & 15) == 0) {
    if constexpr (sizeof(T) == 2) {
      uint4 v = *reinterpret_cast<const uint4*>(p);
      const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int i = 0; i < 8; ++i) dst[i] = __float2bfloat16_rn(to_f(e[i]));
    } else {
      float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
      const float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) dst[i] = __float2bfloat16_rn(f[i]);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) dst[i] = __float2bfloat16_rn(i < valid ? to_f(p[i]) : 0.0f);
}

// Rows [r0, r0 + R) x cols [c0, c0 + C) of a row-major matrix (row stride ld, rows < nrows, cols < ncols valid)
// into smem s[R][C + 8] as bf16; out-of-range elements are 0. C % 8 == 0.
template <class T, int R, int C, int NT>
__device__ __forceinline__ void tile_to_smem(const T* g, int64_t ld, int64_t r0, int64_t nrows, int64_t c0,
                                             int64_t ncols, bf16* s) {
  constexpr int V = C / 8;
  for (int i = threadIdx.x; i < R * V; i += NT) {
    const int r = i / V, c = (i % V) * 8;
    bf16 tmp[8];
    const int64_t gr = r0 + r, gc = c0 + c;
    const int valid = gr < nrows ? int(ncols - gc >= 8 ? 8 : (ncols - gc > 0 ? ncols - gc : 0)) : 0;
    load8(g + gr * ld + gc, valid, tmp);
    *reinterpret_cast<uint4*>(s + r * (C + 8) + c) = *reinterpret_cast<uint4*>(tmp);
  }
}

// A tile fetched into registers first (global loads in flight while the previous tile is being used) and
// stored into shared memory later, converted to bf16; TRANS stores it transposed (s[c][r]).
template <class T, int R, int C, int NT, bool TRANS>
struct Tile {
  static constexpr int V = C / 8, PER = (R * V + NT - 1) / NT, W = sizeof(T) / 2;
  uint4 raw[PER][W];  // 8 elements of T per entry
  __device__ __forceinline__ void index(int i, int& r, int& c) const {
    if (TRANS)
      r = i % R, c = (i / R) * 8;  // consecutive threads: consecutive rows -> distinct smem columns
    else
      r = i / V, c = (i % V) * 8;
  }
  __device__ __forceinline__ void load(const T* g, int64_t ld, int64_t r0, int64_t nrows, int64_t c0, int64_t ncols) {
#pragma unroll
    for (int p = 0; p < PER; ++p) {
      const int i = threadIdx.x + p * NT;
      if (i >= R * V) break;
      int r, c;
      index(i, r, c);
      const int64_t gr = r0 + r, gc = c0 + c;
      const int valid = gr < nrows ? int(ncols - gc >= 8 ? 8 : (ncols - gc > 0 ? ncols - gc : 0)) : 0;
      const T* src = g + gr * ld + gc;
      if (valid == 8 && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
#pragma unroll
        for (int w = 0; w < W; ++w) raw[p][w] = reinterpret_cast<const uint4*>(src)[w];
      } else {
        T* e = reinterpret_cast<T*>(raw[p]);
#pragma unroll
        for (int j = 0; j < 8; ++j) e[j] = j < valid ? src[j] : from_f<T>(0.0f);
      }
    }
  }
  __device__ __forceinline__ void store(bf16* s) const {
#pragma unroll
    for (int p = 0; p < PER; ++p) {
      const int i = threadIdx.x + p * NT;
      if (i >= R * V) break;
      int r, c;
      index(i, r, c);
      const T* e = reinterpret_cast<const T*>(raw[p]);
      bf16 o[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = __float2bfloat16_rn(to_f(e[j]));
      if (TRANS) {
#pragma unroll
        for (int j = 0; j < 8; ++j) s[(c + j) * (R + 8) + r] = o[j];
      } else {
        *reinterpret_cast<uint4*>(s + r * (C + 8) + c) = *reinterpret_cast<uint4*>(o);
      }
    }
  }
};

// Per-(b, h) base of a strided [B, H, N, D] tensor or of a per-head / shared matrix stack.
struct Rows {
  const void* p;
  int64_t sb, sh, ld;  // element strides of batch, head and row
  __device__ const char* base(int64_t b, int64_t h, int esize) const {
    return static_cast<const char*>(p) + (b * sb + h * sh) * esize;
  }
};

}  // namespace splat::fk
