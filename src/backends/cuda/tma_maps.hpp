// TMA descriptors (tensor maps) of K and V for the producer kernel (include/splat/device/attention_tma.cuh).
#pragma once
#include "splat/device/plan_layout.cuh"
#include "splat/tensor.hpp"

namespace splat::cuda {

// Encodes the maps of k and v (params' pointers and strides, B, Hkv, N) as 4-d tiled maps (D, N, Hkv, B) with
// boxes of 64 columns x block_n keys and the 128-byte swizzle, through the driver's cuTensorMapEncodeTiled (found
// with cudaGetDriverEntryPointByVersion: libcuda is not linked). Throws Error(Cuda) when the driver refuses.
void encode_kv_maps(const dev::AttnParams& p, DType dtype, int head_dim, int block_n, dev::TmaMap (&maps)[2]);

}  // namespace splat::cuda
