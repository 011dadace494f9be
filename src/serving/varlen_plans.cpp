// The per-length analyses and plans of a varlen pattern, the packed-plan cache, and the checks of cu_seqlens that
// every varlen entry (CPU, reference, CUDA) makes with the same messages.
#include <algorithm>
#include <string>

#include "splat/acsr.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {

void varlen_check_batch(const Varlen& batch, int64_t total, const std::string& w) {
  require(batch.cu_seqlens != nullptr && batch.batch >= 1, w + ": cu_seqlens needs B+1 entries, B >= 1");
  require(batch.cu_seqlens[0] == 0, w + ": cu_seqlens[0] must be 0");
  for (int64_t b = 0; b < batch.batch; ++b) {
    const int64_t n = int64_t(batch.cu_seqlens[b + 1]) - batch.cu_seqlens[b];
    require(n >= 0, w + ": cu_seqlens must be non-decreasing (entry " + std::to_string(b + 1) + ")");
    require(n <= batch.max_seqlen, w + ": sequence " + std::to_string(b) + " has " + std::to_string(n) +
                                       " tokens, more than max_seqlen = " + std::to_string(batch.max_seqlen));
  }
  require(batch.cu_seqlens[batch.batch] == total,
          w + ": cu_seqlens[B] = " + std::to_string(batch.cu_seqlens[batch.batch]) + " but the packed tensors hold " +
              std::to_string(total) + " tokens");
}

VarlenPlans::VarlenPlans(Pattern pattern, size_t capacity, size_t packed_capacity)
    : pattern_(std::move(pattern)),
      capacity_(std::max<size_t>(capacity, 1)),
      packed_capacity_(std::max<size_t>(packed_capacity, 1)) {}

namespace {
// Find-or-build in a map bounded to `capacity` entries; the build runs outside the lock (it may be slow).
template <class T, class Make>
std::shared_ptr<const T> cached(std::mutex& mu, std::map<int64_t, std::shared_ptr<const T>>& m, size_t capacity,
                                int64_t n, Make make) {
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = m.find(n);
    if (it != m.end()) return it->second;
  }
  auto made = std::make_shared<const T>(make());
  std::lock_guard<std::mutex> lock(mu);
  if (m.size() >= capacity && !m.count(n)) m.erase(m.begin());
  return m.emplace(n, made).first->second;
}
}  // namespace

std::shared_ptr<const Acsr> VarlenPlans::acsr(int64_t n) {
  return cached(mu_, acsrs_, capacity_, n, [&] { return analyse(pattern_, n); });
}

std::shared_ptr<const Plan> VarlenPlans::get(int64_t n) {
  return cached(mu_, plans_, capacity_, n, [&] { return make_plan(*acsr(n)); });
}

std::shared_ptr<CudaPlan> VarlenPlans::find_packed(const PackedKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(packed_.begin(), packed_.end(), [&](const auto& e) { return e.first == key; });
  if (it == packed_.end()) return nullptr;
  std::rotate(packed_.begin(), it, it + 1);  // most recently used first
  return packed_.front().second;
}

void VarlenPlans::keep_packed(const PackedKey& key, std::shared_ptr<CudaPlan> plan) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(packed_.begin(), packed_.end(), [&](const auto& e) { return e.first == key; });
  if (it != packed_.end()) packed_.erase(it);
  packed_.insert(packed_.begin(), {key, std::move(plan)});
  if (packed_.size() > packed_capacity_) packed_.resize(packed_capacity_);
}

}  // namespace splat
