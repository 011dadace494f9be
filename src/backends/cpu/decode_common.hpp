// Shared by the decode entry points (reference and fast path): argument checks and KV cache addressing.
#pragma once
#include <cstddef>
#include <cstdint>

#include "splat/decode.hpp"

namespace splat::cpu {

struct DecodeShape {
  int64_t B = 0, H = 0, Hkv = 0, T = 0, D = 0, group = 0;
  int64_t page = 0;  // paged: tokens per page; 0: contiguous
  double scale = 0;
  int threads = 0;
};

// Checks q, out, the cache (shapes, dtypes, lengths, starts, every block-table entry a sequence uses), options and
// that out and lse overlap no input. Throws Error(InvalidArgument) naming the problem.
DecodeShape check_decode(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                         const AttentionOptions& opt, const float* lse, const char* what);

// Element offset of token `pos` (position in the sequence) of sequence b, kv head hk, in view t (k or v).
inline size_t cache_offset(const KvCache& c, const TensorView& t, int64_t page, int64_t b, int64_t hk, int64_t pos) {
  const int64_t row = (c.starts ? c.starts[b] : 0) + pos;
  if (!page) return t.offset(b, hk, row);
  return t.offset(c.block_table[b * c.max_pages + row / page], hk, row % page);
}

}  // namespace splat::cpu
