// The CUDA decode kernels' launch parameters (plain data shared by the host, which checks the call and fills them,
// and the kernels of decode_split.cuh). Compiles under g++, nvcc and NVRTC alike: no includes beyond the row program.
#pragma once
#include "splat/device/decode_rows.cuh"

namespace splat {
namespace dev {

constexpr int kDecodeMaxInstr = 24, kDecodeMaxRuns = 32, kDecodeMaxGroup = 8;
constexpr int kDecodeMaxSplits = 64;  // split-KV: CTAs per (sequence, kv head, query), merged by a second kernel
constexpr int kDecodeWarps = 4;       // warps per CTA of the decode kernels

// Bits of the device status word (DecodeCudaWorkspace::status), as splat::DecodeStatus numbers them.
constexpr int kDecodeStatusBadLength = 1, kDecodeStatusBadPage = 2;

struct DecodeArgs {  // strides in elements; seqlens, table, starts in device memory
  const void *q, *k, *v;
  void* o;
  float* lse;
  i64 q_sb, q_sh, q_st, o_sb, o_sh, o_st, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn;
  const int *seqlens, *table, *starts;
  i64 max_pages, page, capacity, pool;
  int B, H, Hkv, T, G, n_instr;
  float q_scale;  // scale * log2(e)
  // Split-KV kernel: S splits per (sequence, kv head, query) with partial states in ws_acc [B, H, T, S, D] and
  // ws_ml [B, H, T, S, 2] (max, sum) when S > 1; GP query heads per CTA (1, 2, 4 or 8), NG = ceil(G / GP) CTAs.
  float *ws_acc, *ws_ml;
  int* status;  // optional: kDecodeStatus* bits ORed in
  int S, GP, NG;
  int dpl;  // dims per lane of groups of 2 or 4 heads in 16-bit types: 16 (default) or 8 (SPLAT_DECODE_DPL=8)
  DecodeInstr prog[kDecodeMaxInstr];
};

}  // namespace dev
}  // namespace splat
