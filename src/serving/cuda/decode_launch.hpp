// The CUDA decode kernel's launch parameters (plain data, C++17: shared by the nvcc-compiled kernel and the C++20 host
// side that checks the call and fills them).
#pragma once
#include "splat/device/decode_rows.cuh"

namespace splat::cudadecode {

using dev::i64;

constexpr int kMaxInstr = 24, kMaxRuns = 32, kMaxGroup = 8;

struct Args {  // strides in elements; seqlens, table, starts in device memory
  const void *q, *k, *v;
  void* o;
  float* lse;
  i64 q_sb, q_sh, q_st, o_sb, o_sh, o_st, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn;
  const int *seqlens, *table, *starts;
  i64 max_pages, page, capacity, pool;
  int B, H, Hkv, T, G, n_instr;
  float q_scale;  // scale * log2(e)
  dev::DecodeInstr prog[kMaxInstr];
};

enum class Elem { BF16, F16, F32 };

// Launches on `stream` (a cudaStream_t); returns nullptr or the CUDA error's text.
const char* launch(const Args& a, Elem e, int head_dim, void* stream);

}  // namespace splat::cudadecode
