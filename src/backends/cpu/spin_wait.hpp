// Waiting for another thread's progress counter inside one parallel region: spin briefly, then yield. libgomp's
// own barriers spin far longer, which costs 2-4x on a machine shared with other work.
#pragma once
#include <immintrin.h>

#include <atomic>
#include <cstdint>
#include <thread>

namespace splat::cpu {

inline void wait_until(const std::atomic<int64_t>& counter, int64_t target) {
  for (int spin = 0; counter.load(std::memory_order_acquire) < target; ++spin) {
    if (spin < 2000)
      _mm_pause();
    else
      std::this_thread::yield();
  }
}

}  // namespace splat::cpu
