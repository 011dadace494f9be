// The CUDA decode launches: the ahead-of-time kernels (nvcc; SPLAT_DECODE_JIT=0) and the generated ones (a KernelSpec
// of the decode direction, compiled by NVRTC and cached) take the same parameters (decode_args.cuh).
#pragma once
#include "splat/device/decode_args.cuh"

namespace splat::cudadecode {

using dev::i64;

constexpr int kMaxInstr = dev::kDecodeMaxInstr, kMaxRuns = dev::kDecodeMaxRuns, kMaxGroup = dev::kDecodeMaxGroup;
constexpr int kMaxSplits = dev::kDecodeMaxSplits;
constexpr int kStatusBadLength = dev::kDecodeStatusBadLength, kStatusBadPage = dev::kDecodeStatusBadPage;
using Args = dev::DecodeArgs;  // include/splat/device/decode_args.cuh

enum class Elem { BF16, F16, F32 };

// The first kernel (one CTA per (sequence, kv head, query), all heads of the group, no split); any alignment.
// Launches on `stream` (a cudaStream_t); returns nullptr or the CUDA error's text.
const char* launch(const Args& a, Elem e, int head_dim, void* stream);
// The split-KV kernel (+ its merge when a.S > 1); needs 16-byte aligned rows (data and strides).
const char* launch_split(const Args& a, Elem e, int head_dim, void* stream);
// Multiprocessors of a device (cached).
int device_sms(int device);

// The generated kernels (decode_jit.cpp): the split kernel (+ its merge when a.S > 1), or the first one.
void launch_jit(const Args& a, Elem e, int head_dim, bool split, bool paged, int device, void* stream);
// Whether this build has the ahead-of-time kernels, and whether this call takes the generated ones instead.
bool have_aot();
bool want_jit();

}  // namespace splat::cudadecode
