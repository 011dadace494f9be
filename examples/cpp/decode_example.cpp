// Decode against a paged KV cache from C++ (docs/SERVING.md): plan once per pattern, then per generated token append
// its K/V to the sequence's page and call decode_cpu. Checks every step against the float64 oracle.
//   splat_decode_example [pattern] [tokens]     e.g. splat_decode_example "causal_window:w=64+sink:g=4" 300
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "splat/decode.hpp"
#include "splat/error.hpp"

int main(int argc, char** argv) try {
  const std::string spec = argc > 1 ? argv[1] : "causal_window:w=64+sink:g=4";
  const int steps = argc > 2 ? std::stoi(argv[2]) : 200;
  const int64_t B = 2, H = 8, Hkv = 2, D = 64, P = 16;  // two sequences, GQA 4:1, pages of 16 tokens
  const int64_t max_pages = (steps + P - 1) / P, pages = B * max_pages;

  // Once: the decode plan (depends on the pattern, dtype and head dim; never on the length).
  const splat::DecodePlan plan = splat::make_decode_plan(splat::parse_pattern(spec), {splat::DType::F32, int32_t(D)});

  // The engine's page pool [pages, H_kv, P, D], pages handed out in shuffled order, and the block table.
  std::vector<float> kpool(size_t(pages * Hkv * P * D)), vpool(kpool.size());
  std::vector<int32_t> free_pages(static_cast<size_t>(pages)), table(static_cast<size_t>(B * max_pages), -1);
  std::vector<int32_t> lengths(static_cast<size_t>(B), 0);
  for (int64_t i = 0; i < pages; ++i) free_pages[size_t(i)] = int32_t(i);
  std::mt19937 rng(7);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  std::normal_distribution<float> nd(0.0f, 1.0f);

  splat::KvCache cache;
  cache.k = splat::contiguous_view(kpool.data(), splat::DType::F32, pages, Hkv, P, D);
  cache.v = splat::contiguous_view(vpool.data(), splat::DType::F32, pages, Hkv, P, D);
  cache.seqlens = lengths.data();
  cache.block_table = table.data();
  cache.max_pages = max_pages;

  std::vector<float> q(size_t(B * H * D)), out(q.size()), ref(q.size());
  const auto qv = splat::contiguous_view(q.data(), splat::DType::F32, B, H, 1, D);
  const auto ov = splat::contiguous_view(out.data(), splat::DType::F32, B, H, 1, D);
  const auto rv = splat::contiguous_view(ref.data(), splat::DType::F32, B, H, 1, D);
  double worst = 0;
  for (int step = 0; step < steps; ++step) {
    for (int64_t b = 0; b < B; ++b) {  // the new token's K/V go into its sequence's page (a new page every P tokens)
      if (b == 1 && step % 3 == 0) continue;  // sequence 1 grows more slowly: lengths differ
      const int64_t pos = lengths[size_t(b)];
      if (pos % P == 0) table[size_t(b * max_pages + pos / P)] = free_pages[size_t(b * max_pages + pos / P)];
      const int64_t page = table[size_t(b * max_pages + pos / P)];
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t d = 0; d < D; ++d) {
          const size_t at = size_t(((page * Hkv + h) * P + pos % P) * D + d);
          kpool[at] = nd(rng), vpool[at] = nd(rng);
        }
      lengths[size_t(b)] = int32_t(pos + 1);
    }
    for (float& x : q) x = nd(rng);
    splat::decode_cpu(plan, qv, cache, ov);  // per token: no planning, no mask, only the rows' keys are read
    splat::decode_reference(plan, qv, cache, rv);
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, double(std::fabs(out[i] - ref[i])));
  }
  std::printf("%s: %d decode steps, lengths %d and %d, max |decode_cpu - reference| = %.3g\n", spec.c_str(), steps,
              lengths[0], lengths[1], worst);
  return worst < 1e-5 ? 0 : 1;
} catch (const splat::Error& e) {
  std::fprintf(stderr, "splat: error: %s\n", e.what());
  return 2;
}
