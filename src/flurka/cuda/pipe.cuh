// Primitives of the pipelined FLuRKA kernels (sm_80+): cp.async copies global -> shared without register
// staging (bytes in flight while the tensor cores work), ldmatrix fragment loads (one instruction for four
// 8x8 matrices instead of four 32-bit shared loads each), and mma.sync for bf16 or fp16 operands.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "flurka/cuda/tiles.cuh"

namespace splat::fk {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; bytes = 0 writes 16 zero bytes and reads nothing (src must still be a valid
// address expression, it is not dereferenced).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// 8 elements of a 2-byte type at src into shared dst (16-byte aligned): cp.async when src is 16-byte aligned
// and all 8 are valid, zeros when none is, else a synchronous element-wise copy (unaligned rows, tails).
template <class T>
__device__ __forceinline__ void copy8(T* dst, const T* src, int valid) {
  if (valid >= 8 && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
    cp_async16(dst, src, 16);
  } else if (valid <= 0) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  } else {
    alignas(16) T tmp[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) tmp[i] = i < valid ? src[i] : T(0.0f);
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(tmp);
  }
}

// Four 8x8 matrices of 2-byte elements; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// Fragment addresses for a row-major tile s with row pitch ld (elements), lane = lane id:
// A (16 x 16 at rows r, cols c): a0..a3 of m16n8k16.
template <class T>
__device__ __forceinline__ const T* frag_a(const T* s, int ld, int r, int c, int lane) {
  return s + (r + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + c + (lane >> 4) * 8;
}
// B of two n-tiles (n0, n0 + 8) x k16 from storage [n][k] (k contiguous): b0, b1 of n0 then of n0 + 8.
template <class T>
__device__ __forceinline__ const T* frag_b_nk(const T* s, int ld, int n0, int k0, int lane) {
  return s + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8;
}
// The same from storage [k][n] (n contiguous), loaded with ldsm_x4_t.
template <class T>
__device__ __forceinline__ const T* frag_b_kn(const T* s, int ld, int n0, int k0, int lane) {
  return s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8;
}

template <class T>
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// out (NT n8 tiles of scores) += A B^T: A one 16-row register fragment per k16 of D, B a bf16 [NT * 8][D] tile in
// shared memory (row pitch ld), read with ldmatrix.
template <int D, int NT>
__device__ __forceinline__ void mma_a_bt(float (&out)[NT][4], const uint32_t (&a)[D / 16][4], const __nv_bfloat16* b,
                                         int ld, int lane) {
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc)
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t bq[4];
      ldsm_x4(bq, frag_b_nk(b, ld, np * 16, kc * 16, lane));
      mma16816<__nv_bfloat16>(out[2 * np], a[kc], bq[0], bq[1]);
      mma16816<__nv_bfloat16>(out[2 * np + 1], a[kc], bq[2], bq[3]);
    }
}

// One k16 slice kc of P (fp32 in the mma C layout: n8 tiles 2 kc, 2 kc + 1) times the bf16 [k][D] tile u (row
// pitch ld): acc += P U, and rowsum += P 1 (an all-ones B operand sums p per row on the tensor cores).
template <int D, int NT>
__device__ __forceinline__ void mma_p_u(const float (&p)[NT][4], int kc, const __nv_bfloat16* u, int ld, int lane,
                                        float (&acc)[D / 8][4], float (&rowsum)[4]) {
  constexpr uint32_t kOnes = 0x3F803F80u;  // bf16x2 (1, 1)
  const uint32_t af[4] = {pack_bf16(p[2 * kc][0], p[2 * kc][1]), pack_bf16(p[2 * kc][2], p[2 * kc][3]),
                          pack_bf16(p[2 * kc + 1][0], p[2 * kc + 1][1]), pack_bf16(p[2 * kc + 1][2], p[2 * kc + 1][3])};
  mma16816<__nv_bfloat16>(rowsum, af, kOnes, kOnes);
#pragma unroll
  for (int np = 0; np < D / 16; ++np) {
    uint32_t bu[4];
    ldsm_x4_t(bu, frag_b_kn(u, ld, np * 16, kc * 16, lane));
    mma16816<__nv_bfloat16>(acc[2 * np], af, bu[0], bu[1]);
    mma16816<__nv_bfloat16>(acc[2 * np + 1], af, bu[2], bu[3]);
  }
}

// Adds (or stores) two adjacent fp32 outputs; one vector reduction on sm_90.
__device__ __forceinline__ void add2(float* p, float a, float b, bool atomic) {
  if (!atomic) {
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
    return;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

}  // namespace splat::fk
