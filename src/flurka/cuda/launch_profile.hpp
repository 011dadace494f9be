// SPLAT_FLURKA_PROFILE=1: the time of each launch of one call on stderr, as "<title>: <name> <ms> ... ms" (events
// between the launches; synchronises once, when the call's profile goes out of scope). Off, it records nothing.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

namespace splat::fk {

class LaunchProfile {
 public:
  LaunchProfile(const char* title, cudaStream_t stream) : title_(title), stream_(stream) {}
  LaunchProfile(const LaunchProfile&) = delete;
  LaunchProfile& operator=(const LaunchProfile&) = delete;

  // Marks the end of the launch `name` (the first mark is the start).
  void mark(const char* name) {
    if (!on_) return;
    cudaEvent_t e;
    cudaEventCreate(&e);
    cudaEventRecord(e, stream_);
    marks_.emplace_back(name, e);
  }

  ~LaunchProfile() {
    if (!on_ || marks_.empty()) return;
    cudaEventSynchronize(marks_.back().second);
    std::fprintf(stderr, "%s:", title_);
    for (size_t i = 1; i < marks_.size(); ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second);
      std::fprintf(stderr, " %s %.4f", marks_[i].first, ms);
    }
    std::fprintf(stderr, " ms\n");
    for (auto& m : marks_) cudaEventDestroy(m.second);
  }

 private:
  bool on_ = std::getenv("SPLAT_FLURKA_PROFILE") != nullptr;
  const char* title_;
  cudaStream_t stream_;
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
};

}  // namespace splat::fk
