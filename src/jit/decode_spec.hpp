// The decode direction of KernelSpec: the CUDA decode kernels (splat/device/decode_split.cuh) as specs, so that
// they are generated, named, logged and cached like the forward's and the backward's. What the kernels take as
// template parameters are spec fields: the element type (dtype: bf16, f16, f32), the head dim, the split-KV kernel
// or the first one, the split kernel's query heads per CTA and dims per lane, and paged or contiguous caches.
#pragma once
#include <string>
#include <vector>

#include "jit/kernel_spec.hpp"

namespace splat::jit {

bool is_decode(Direction d);
// The split-KV kernel (split: heads_per_cta 1, 2, 4 or 8 and dims_per_lane 16 or 8; 8 heads take 8 dims, 8 dims are
// for 16-bit types or 8 heads) or the first kernel (!split: heads and dims unused). Error(Unsupported) for other
// dtypes, head dims (64 and 128) or shapes.
KernelSpec decode_spec(DType dtype, int head_dim, bool split, int heads_per_cta, int dims_per_lane, bool paged,
                       const std::string& arch);
// The merge of the split kernel's partial states (the second kernel of a split launch with several splits).
KernelSpec decode_merge_spec(const KernelSpec& split);
// The specs one decode launch may run: {the first kernel} or {the split kernel, its merge}.
std::vector<KernelSpec> decode_specs(const KernelSpec& main);

std::string decode_kernel_name(const KernelSpec& s);  // KernelSpec::name() of the decode directions
std::string decode_describe(const KernelSpec& s);     // KernelSpec::describe() of the decode directions
std::string generate_decode_source(const std::vector<KernelSpec>& specs);  // generate_source of decode specs

}  // namespace splat::jit
