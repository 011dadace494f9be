// Host checks of a decode call's device-independent indices (lengths, starts, block table) and of the status word
// the CUDA kernels set for bad device-resident ones. Both build without CUDA.
#include <string>

#include "common/int_math.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {

void decode_check_cache(const KvCache& cache, int64_t batch) {
  const std::string w = "decode";
  require(cache.seqlens != nullptr, w + ": seqlens is null");
  const TensorView& k = cache.k;
  int64_t capacity = k.N(), page = 0;
  if (cache.block_table) {
    page = k.N();
    require(page >= 1, w + ": the page size must be positive");
    require(cache.max_pages >= 1, w + ": max_pages must be positive with a block table");
    capacity = checked_product({cache.max_pages, page}, w + ": max_pages * page size");
  }
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = cache.seqlens[b], start = cache.starts ? cache.starts[b] : 0;
    require(len >= 0 && start >= 0 && start + len <= capacity,
            w + ": sequence " + std::to_string(b) + " (start " + std::to_string(start) + ", length " +
                std::to_string(len) + ") does not fit the cache capacity " + std::to_string(capacity));
    if (!cache.block_table || len == 0) continue;
    for (int64_t pg = start / page; pg <= (start + len - 1) / page; ++pg) {
      const int32_t e = cache.block_table[b * cache.max_pages + pg];
      require(e >= 0 && e < k.B(), w + ": block_table[" + std::to_string(b) + ", " + std::to_string(pg) +
                                       "] = " + std::to_string(e) + " is not a page of the pool (0 ... " +
                                       std::to_string(k.B() - 1) + ")");
    }
  }
}

void decode_check_status(int32_t status) {
  if (status == kDecodeOk) return;
  std::string what;
  if (status & kDecodeBadLength)
    what += " a sequence's length or start does not fit the cache capacity (its outputs are NaN);";
  if (status & kDecodeBadPage)
    what += " a block-table entry is not a page of the pool (the rows that read it are NaN);";
  if (status & ~(kDecodeBadLength | kDecodeBadPage)) what += " unknown status bits " + std::to_string(status) + ";";
  what.pop_back();
  fail(ErrorCode::InvalidArgument, "decode_cuda:" + what);
}

}  // namespace splat
