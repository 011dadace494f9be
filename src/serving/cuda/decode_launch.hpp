// The CUDA decode kernels' launch parameters (plain data, C++17: shared by the nvcc-compiled kernels and the C++20
// host side that checks the call and fills them).
#pragma once
#include "splat/device/decode_rows.cuh"

namespace splat::cudadecode {

using dev::i64;

constexpr int kMaxInstr = 24, kMaxRuns = 32, kMaxGroup = 8;
constexpr int kMaxSplits = 64;  // split-KV: CTAs per (sequence, kv head, query), merged by a second kernel

// Bits of the device status word (KvCache-independent: DecodeCudaWorkspace::status), as DecodeStatus numbers them.
constexpr int kStatusBadLength = 1, kStatusBadPage = 2;

struct Args {  // strides in elements; seqlens, table, starts in device memory
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
  int* status;  // optional: kStatus* bits ORed in
  int S, GP, NG;
  int dpl;  // dims per lane of groups of 2 or 4 heads in 16-bit types: 16 (default) or 8 (SPLAT_DECODE_DPL=8)
  dev::DecodeInstr prog[kMaxInstr];
};

enum class Elem { BF16, F16, F32 };

// The first kernel (one CTA per (sequence, kv head, query), all heads of the group, no split); any alignment.
// Launches on `stream` (a cudaStream_t); returns nullptr or the CUDA error's text.
const char* launch(const Args& a, Elem e, int head_dim, void* stream);
// The split-KV kernel (+ its merge when a.S > 1); needs 16-byte aligned rows (data and strides).
const char* launch_split(const Args& a, Elem e, int head_dim, void* stream);
// Multiprocessors of a device (cached).
int device_sms(int device);

}  // namespace splat::cudadecode
