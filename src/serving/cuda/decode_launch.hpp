// The CUDA decode launch: the generated kernels (a KernelSpec of the decode direction, compiled by NVRTC and cached)
// and their parameters (decode_args.cuh).
#pragma once
#include "splat/device/decode_args.cuh"

namespace splat::cudadecode {

using dev::i64;

constexpr int kMaxInstr = dev::kDecodeMaxInstr, kMaxRuns = dev::kDecodeMaxRuns, kMaxGroup = dev::kDecodeMaxGroup;
constexpr int kMaxSplits = dev::kDecodeMaxSplits;
constexpr int kStatusBadLength = dev::kDecodeStatusBadLength, kStatusBadPage = dev::kDecodeStatusBadPage;
using Args = dev::DecodeArgs;  // include/splat/device/decode_args.cuh

enum class Elem { BF16, F16, F32 };

// Multiprocessors of a device (cached).
int device_sms(int device);

// The generated kernels (decode_jit.cpp): the split-KV kernel (+ its merge when a.S > 1; 16-byte aligned rows), or
// the first one (one CTA per (sequence, kv head, query), any alignment). Throws Error(Cuda) on a launch error.
void launch_jit(const Args& a, Elem e, int head_dim, bool split, bool paged, int device, void* stream);

}  // namespace splat::cudadecode
