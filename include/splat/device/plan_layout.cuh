// Plain-data layout of a plan on the device, shared by the host (which packs it) and the kernels
// (which read it). Compiles as C++ under g++, nvcc and NVRTC alike: no includes, fixed-width types only.
#pragma once

namespace splat {
namespace dev {

typedef long long i64;
typedef unsigned long long u64;

enum SpanKindDev { kAffine = 0, kBlock = 1, kGather = 2 };

// One tile task: query rows row_begin + row_stride*r, r < row_count; spans [span_begin, span_end).
struct DevTask {
  int row_begin, row_stride, row_count, span_begin, span_end, pad0, pad1, pad2;
};

// One key span: keys key_begin + key_stride*c (Affine), key_begin + c (Block), gather_keys[key_begin + c]
// (Gather), for c < key_count, applying to local rows [row_lo, row_hi). Affine masks: segment, or'ed with
// segment2 when >= 0 (then each row's keys are one range with at most one key missing; see splat/plan.hpp).
struct DevSpan {
  int kind, key_begin, key_stride, key_count;
  int row_lo, row_hi, segment, full;
  int segment2, pad;
  i64 mask_offset;  // Gather: bit offset of (r=0, c=0)
};

// An ACSR affine segment (see splat/acsr.hpp); all values fit in int because N < 2^31.
struct DevSegment {
  int row_begin, row_end, slope, offset, stride, t_begin, t_end, key_begin, key_end, pad;
};

// The driver's CUtensorMap (a TMA descriptor: 128 opaque bytes, 128-byte aligned), declared here so the kernels need
// no CUDA headers under NVRTC. The host encodes it (cuTensorMapEncodeTiled) and passes it as a __grid_constant__
// kernel parameter.
struct alignas(128) TmaMap {
  u64 opaque[16];
};

// Kernel parameters, passed by value. Strides are in elements; D is contiguous.
struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // [B*H][N], natural log; written by a first pass of a multi-pass plan, read by later ones
  i64 q_sb, q_sh, q_sn;
  i64 k_sb, k_sh, k_sn;
  i64 v_sb, v_sh, v_sn;
  i64 o_sb, o_sh, o_sn;
  int B, H, Hkv, N;
  float scale_log2;  // softmax scale * log2(e)
  int num_tasks;
  const DevTask* tasks;
  const DevSpan* spans;
  const DevSegment* segments;
  int num_segments;
  const int* gather_keys;
  const u64* gather_mask;
  const int* key_lengths;  // KEY_PAD kernels: [B] valid keys per batch row (keys j >= len are masked)
  // Backward (attention_bwd.cuh): the forward's out and dout, the gradients, and the per-row Delta and lse * log2 e
  // (+inf for rows without keys) the preprocess kernel writes into the caller's workspace.
  const void* dout;
  void *dq, *dk, *dv;
  i64 do_sb, do_sh, do_sn;
  i64 dq_sb, dq_sh, dq_sn;
  i64 dk_sb, dk_sh, dk_sn;
  i64 dv_sb, dv_sh, dv_sn;
  float* delta;   // [B*H][N]
  float* lse2;    // [B*H][N]
  float scale;    // softmax scale (dQ, dK carry it)
  float* dq_acc;  // ATOMIC_DQ kernels: [B*H][N][D] fp32 dQ accumulator in the workspace (zeroed by the preprocess)
};

}  // namespace dev
}  // namespace splat
