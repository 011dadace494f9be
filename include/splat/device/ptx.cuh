// Thin wrappers over the PTX instructions the attention kernels use (sm_80+): cp.async, ldmatrix,
// mma.sync m16n8k16 with fp32 accumulation, packed conversions, fast exp2/log2. No includes, so the
// header compiles under NVRTC without a CUDA include tree.
#pragma once

namespace splat {
namespace dev {

typedef unsigned short u16;
typedef unsigned int u32;

// Pure (not volatile): the compiler may hoist and fold it, e.g. the descriptors of a tile's sub-blocks.
__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// 16-byte asynchronous copy global -> shared; src_bytes = 0 zero-fills the destination (no read).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
// 4-byte asynchronous copy (per-query lse and Delta of the dK/dV direction); src_bytes = 0 zero-fills.
__device__ __forceinline__ void cp_async4(u32 dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// D = A(16x16, row) * B(16x8, col) + D, fp32 accumulators.
template <bool BF16>
__device__ __forceinline__ void mma16816(float* d, const u32* a, u32 b0, u32 b1) {
  if (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Packs (lo, hi) into two 16-bit floats, round to nearest even (lo in the low half).
template <bool BF16>
__device__ __forceinline__ u32 pack2(float lo, float hi) {
  u32 r;
  if (BF16)
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <bool BF16>
__device__ __forceinline__ float to_float(u16 x) {
  if (BF16) return __uint_as_float(u32(x) << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(x));
  return f;
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float neg_inf() {
  return __int_as_float(0xff800000);
}

}  // namespace dev
}  // namespace splat

// --- sm_90a warpgroup MMA (wgmma): only instantiated for kernels generated for sm_90a ---
namespace splat {
namespace dev {

// Shared-memory matrix descriptor for a 128-byte-swizzled tile (8-row groups of 1024 bytes, 1024-aligned).
__device__ __forceinline__ unsigned long long wgmma_desc_sw128(u32 saddr) {
  return (unsigned long long)((saddr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
         (1ull << 62);
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Waits until at most N committed wgmma groups of this warpgroup are still in flight.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// wgmma.wait_group 0 that ptxas does not schedule before a and b exist: it sits behind a branch on them (never
// taken: callers pass values that are never negative), and ptxas schedules within basic blocks. A plain wait was
// hoisted above the softmax meant to run while the MMA is in flight; a predicated wait serialises every wgmma
// (C7514). bench/NOTES-cuda.md v6.
__device__ __forceinline__ void wgmma_wait0_after(float a, float b) {
  if (__any_sync(0xffffffffu, a < 0.f || b < 0.f)) asm volatile("trap;\n");
  wgmma_wait0();
}
// The same for wgmma.wait_group 1 (all but the last committed group done).
__device__ __forceinline__ void wgmma_wait1_after(float a, float b) {
  if (__any_sync(0xffffffffu, a < 0.f || b < 0.f)) asm volatile("trap;\n");
  wgmma_wait<1>();
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// The 32 fp32 accumulators of an m64n64 wgmma (one warpgroup), shared by the wrappers below.
#define SPLAT_WGMMA_ACC                                                                                       \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

// D(64x64, f32) (+)= A(64x16, registers, the mma.m16n8k16 A layout per warp) * B(16x64, smem descriptor).
// TRANS_B = 0: B stored K-major (rows of n, k contiguous); 1: N-major (rows of k, n contiguous).
template <bool BF16, int TRANS_B>
__device__ __forceinline__ void wgmma_m64n64k16(float* d, const u32* a, unsigned long long desc, int accumulate) {
#define SPLAT_WGMMA_OPERANDS \
  : SPLAT_WGMMA_ACC                                                                                            \
  : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "n"(TRANS_B), "r"(accumulate)
#define SPLAT_WGMMA_BODY(T)                                                                                      \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"                                                                   \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." T "." T                                                          \
  " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28," \
  "%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, %37;\n}\n"
  if (BF16)
    asm volatile(SPLAT_WGMMA_BODY("bf16") SPLAT_WGMMA_OPERANDS);
  else
    asm volatile(SPLAT_WGMMA_BODY("f16") SPLAT_WGMMA_OPERANDS);
#undef SPLAT_WGMMA_BODY
#undef SPLAT_WGMMA_OPERANDS
}

// D(64xN, f32) (+)= A(64x16) * B(16xN), N = 64 or 128, both from shared-memory descriptors, both K-major (the
// Q and K tiles): no A fragments in registers, and no ldmatrix of Q per step. d holds N/2 accumulators.
#define SPLAT_WGMMA_ACC_HI                                                                                             \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
      "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),          \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),          \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
template <bool BF16, int N>
__device__ __forceinline__ void wgmma_ss(float* d, unsigned long long adesc, unsigned long long bdesc, int accumulate) {
  static_assert(N == 64 || N == 128, "wgmma_ss: n64 or n128");
#define SPLAT_WGMMA_BODY(T, SHAPE, REGS, A, P) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %" P       \
  ", 0;\n"                                     \
  "wgmma.mma_async.sync.aligned." SHAPE ".f32." T "." T " {" REGS "}, %" A ", p, 1, 1, 0, 0;\n}\n"
#define SPLAT_R32                                                                                                      \
  "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30," \
  "%31"
#define SPLAT_R64                                                                                                      \
  "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30," \
  "%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%"  \
  "59,%60,%61,%62,%63"
  if constexpr (N == 64) {
    if (BF16)
      asm volatile(SPLAT_WGMMA_BODY("bf16", "m64n64k16", SPLAT_R32, "32, %33", "34")
                   : SPLAT_WGMMA_ACC
                   : "l"(adesc), "l"(bdesc), "r"(accumulate));
    else
      asm volatile(SPLAT_WGMMA_BODY("f16", "m64n64k16", SPLAT_R32, "32, %33", "34")
                   : SPLAT_WGMMA_ACC
                   : "l"(adesc), "l"(bdesc), "r"(accumulate));
  } else {
    if (BF16)
      asm volatile(SPLAT_WGMMA_BODY("bf16", "m64n128k16", SPLAT_R64, "64, %65", "66")
                   : SPLAT_WGMMA_ACC, SPLAT_WGMMA_ACC_HI
                   : "l"(adesc), "l"(bdesc), "r"(accumulate));
    else
      asm volatile(SPLAT_WGMMA_BODY("f16", "m64n128k16", SPLAT_R64, "64, %65", "66")
                   : SPLAT_WGMMA_ACC, SPLAT_WGMMA_ACC_HI
                   : "l"(adesc), "l"(bdesc), "r"(accumulate));
  }
#undef SPLAT_R64
#undef SPLAT_R32
#undef SPLAT_WGMMA_BODY
}
#undef SPLAT_WGMMA_ACC_HI
#undef SPLAT_WGMMA_ACC

}  // namespace dev
}  // namespace splat
