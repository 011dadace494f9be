// Decode test scenarios: sequences of given lengths with random K/V, their KV cache (contiguous with per-sequence
// starts, or paged with shuffled pages; every unused cache row poisoned with NaN, so reading a key outside the row's
// set shows), and the oracle: row p of the full attention of each whole sequence (attention_reference on the dense
// mask of pattern & causal at that length).
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "splat/decode.hpp"
#include "test_cpu_util.hpp"

namespace decodetest {

using namespace splat;
using cputest::Tensor;

struct Case {
  std::string pattern = "causal";
  DType dt = DType::F32;
  int64_t H = 4, Hkv = 2, D = 16, T = 1;
  std::vector<int32_t> lengths = {1, 37};
  int64_t page = 0;     // 0: contiguous
  bool bnhd = false;    // cache memory [.., N, H, D]
  bool starts = false;  // contiguous: sequences start at a random row
  uint32_t seed = 1;
};

struct Scenario {
  Case c;
  int64_t B = 0;
  std::vector<Tensor> k_full, v_full;  // per sequence [1, Hkv, L, D] (f64 storage of dtype-rounded values)
  Tensor q{DType::F32, 1, 1, 1, 1, false};
  Tensor kc{DType::F32, 1, 1, 1, 1, false}, vc{DType::F32, 1, 1, 1, 1, false};
  std::vector<int32_t> starts, table;
  int64_t max_pages = 0;
  KvCache cache;

  explicit Scenario(const Case& s) : c(s), B(int64_t(s.lengths.size())) {
    std::mt19937 rng(s.seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    q = Tensor(s.dt, B, s.H, s.T, s.D, false);
    q.each([&](int64_t b, int64_t h, int64_t n, int64_t d) { q.set(b, h, n, d, nd(rng)); });
    int64_t lmax = 1;
    for (int32_t L : s.lengths) lmax = std::max<int64_t>(lmax, L);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = std::max<int32_t>(s.lengths[size_t(b)], 1);
      Tensor kf(DType::F64, 1, s.Hkv, L, s.D, false), vf(DType::F64, 1, s.Hkv, L, s.D, false);
      kf.each([&](int64_t, int64_t h, int64_t n, int64_t d) { kf.set(0, h, n, d, round_to(nd(rng))); });
      vf.each([&](int64_t, int64_t h, int64_t n, int64_t d) { vf.set(0, h, n, d, round_to(nd(rng))); });
      k_full.push_back(std::move(kf)), v_full.push_back(std::move(vf));
    }
    if (s.page == 0) {
      const int64_t cap = lmax + (s.starts ? 11 : 0);
      kc = Tensor(s.dt, B, s.Hkv, cap, s.D, s.bnhd), vc = Tensor(s.dt, B, s.Hkv, cap, s.D, s.bnhd);
      kc.poison(), vc.poison();
      for (int64_t b = 0; b < B; ++b)
        starts.push_back(s.starts ? int32_t(rng() % (cap - s.lengths[size_t(b)] + 1)) : 0);
    } else {
      max_pages = (lmax + s.page - 1) / s.page + 1;
      int64_t pages = 0;
      for (int32_t L : s.lengths) pages += (L + s.page - 1) / s.page;
      pages += 3;  // unused pages in the pool
      std::vector<int32_t> ids(static_cast<size_t>(pages));
      for (int64_t e = 0; e < pages; ++e) ids[size_t(e)] = int32_t(e);
      std::shuffle(ids.begin(), ids.end(), rng);
      table.assign(size_t(B * max_pages), -1);  // unused entries: never read
      size_t next = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t pg = 0; pg < (s.lengths[size_t(b)] + s.page - 1) / s.page; ++pg)
          table[size_t(b * max_pages + pg)] = ids[next++];
      kc = Tensor(s.dt, pages, s.Hkv, s.page, s.D, s.bnhd), vc = Tensor(s.dt, pages, s.Hkv, s.page, s.D, s.bnhd);
      kc.poison(), vc.poison();
    }
    // Only the keys some queried row attends are written: every other cache row stays NaN, so a decode that reads
    // one key outside the rows' sets shows (the oracle reads k_full, v_full).
    const Pattern pat = parse_pattern(s.pattern);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < s.Hkv; ++h)
        for (int64_t p = 0; p < s.lengths[size_t(b)]; ++p) {
          const int64_t L = s.lengths[size_t(b)];
          bool used = false;
          for (int64_t i = std::max<int64_t>(p, L - s.T); i < L && !used; ++i) used = pattern_contains(pat, L, i, p);
          if (!used) continue;
          int64_t pb = b, row = p;
          if (s.page) {
            pb = table[size_t(b * max_pages + p / s.page)], row = p % s.page;
          } else {
            row = starts[size_t(b)] + p;
          }
          for (int64_t d = 0; d < s.D; ++d) {
            kc.set(pb, h, row, d, k_full[size_t(b)].get64(0, h, p, d));
            vc.set(pb, h, row, d, v_full[size_t(b)].get64(0, h, p, d));
          }
        }
    cache.k = kc.view, cache.v = vc.view;
    cache.seqlens = c.lengths.data();
    if (s.page) cache.block_table = table.data(), cache.max_pages = max_pages;
    if (s.starts) cache.starts = starts.data();
  }

  double round_to(double x) const {
    switch (c.dt) {
      case DType::F16: return half_to_float(float_to_half(float(x)));
      case DType::BF16: return bf16_to_float(float_to_bf16(float(x)));
      case DType::F32: return float(x);
      default: return x;
    }
  }

  // Row p of the full attention per (b, h, t), float64 ([B, H, T, D], zeros where p < 0), its lse, and the naive
  // float32 computation of the same rows (rounded to the dtype) for the tolerance idiom.
  void oracle(Tensor& want, Tensor& naive, std::vector<float>& want_lse) const {
    want = Tensor(DType::F64, B, c.H, c.T, c.D, false);
    naive = Tensor(DType::F32, B, c.H, c.T, c.D, false);
    want_lse.assign(size_t(B * c.H * c.T), -INFINITY);
    const Pattern pat = parse_pattern("(" + c.pattern + ")&causal");
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = c.lengths[size_t(b)];
      if (L == 0) {  // no rows: zeros
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t t = 0; t < c.T; ++t)
            for (int64_t d = 0; d < c.D; ++d) want.set(b, h, t, d, 0.0), naive.set(b, h, t, d, 0.0);
        continue;
      }
      Tensor qf(DType::F64, 1, c.H, L, c.D, false);
      std::mt19937 rng(uint32_t(b) + 77);
      std::normal_distribution<double> nd(0.0, 1.0);
      qf.each([&](int64_t, int64_t h, int64_t n, int64_t d) { qf.set(0, h, n, d, round_to(nd(rng))); });
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t t = 0; t < c.T; ++t)
          if (L - c.T + t >= 0)
            for (int64_t d = 0; d < c.D; ++d) qf.set(0, h, L - c.T + t, d, q.get64(b, h, t, d));
      std::vector<uint8_t> mask = dense_mask(pat, L);
      // Rows are independent: only the queried ones need computing (the others get no keys).
      std::fill(mask.begin(), mask.begin() + std::max<int64_t>(0, L - c.T) * L, uint8_t(0));
      Tensor of(DType::F64, 1, c.H, L, c.D, false);
      std::vector<float> lse(size_t(c.H * L));
      attention_reference(mask.data(), qf.view, k_full[size_t(b)].view, v_full[size_t(b)].view, of.view, {},
                          lse.data());
      const Tensor nf = cputest::naive_same_dtype(mask.data(), qf.to_f32(), k_full[size_t(b)].to_f32(),
                                                  v_full[size_t(b)].to_f32(), c.dt == DType::F64 ? DType::F32 : c.dt);
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t t = 0; t < c.T; ++t) {
          const int64_t p = L - c.T + t;
          for (int64_t d = 0; d < c.D; ++d) {
            want.set(b, h, t, d, p >= 0 ? of.get64(0, h, p, d) : 0.0);
            naive.set(b, h, t, d, p >= 0 ? nf.get64(0, h, p, d) : 0.0);
          }
          if (p >= 0) want_lse[size_t((b * c.H + h) * c.T + t)] = lse[size_t(h * L + p)];
        }
    }
  }
};

inline double lse_error(const std::vector<float>& got, const std::vector<float>& want) {
  double e = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i]) || std::isinf(got[i]))
      e = std::max(e, got[i] == want[i] ? 0.0 : INFINITY);
    else
      e = std::max(e, std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i])));
  }
  return e;
}

inline double atol(DType t) {
  return t == DType::F16 ? 2e-3 : t == DType::BF16 ? 1.6e-2 : 2e-6;
}

}  // namespace decodetest
