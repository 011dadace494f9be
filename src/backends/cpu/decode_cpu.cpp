// Fast CPU decode (flash-decoding on threads): the keys of every query row come from the decode plan's row program;
// each work item is (row, kv head, chunk of the row's keys) and computes all query heads of that kv head at once
// (GQA: each K/V row is read and converted once per group). Rows with many keys are split into chunks when there
// are few rows, and the chunks' (max, sum, accumulator) states merge exactly afterwards.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "decode_common.hpp"
#include "simd.hpp"
#include "splat/cpu_features.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {

constexpr int kBlock = 32;  // keys per softmax step
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float dot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), s1);
  }
  for (; c + 8 <= n; c += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
  s0 = _mm256_add_ps(s0, s1);
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  float s = _mm_cvtss_f32(x);
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

// The base-2 softmax state of `group` query heads over some keys: running max, sum and unnormalised output.
struct State {
  float* acc;  // group x D
  float* m;    // group
  float* l;    // group
};

struct Scratch {
  std::vector<float> k, v, s;
  explicit Scratch(int64_t D, int64_t group) : k(size_t(D)), v(size_t(D)), s(size_t(group * kBlock)) {}
};

// keys[0, count) of row (b, t) for kv head hk into st (initialised here). qs: group x D queries, pre-scaled.
void attend(const KvCache& c, const cpu::DecodeShape& sh, int64_t b, int64_t hk, const int32_t* keys, int64_t count,
            const float* qs, State st, Scratch& w) {
  const int64_t D = sh.D, G = sh.group;
  const DType dt = c.k.dtype;
  std::fill(st.acc, st.acc + G * D, 0.0f);
  std::fill(st.m, st.m + G, kNegInf);
  std::fill(st.l, st.l + G, 0.0f);
  for (int64_t k0 = 0; k0 < count; k0 += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, count - k0));
    for (int e = 0; e < n; ++e) {
      cpu::load_row(c.k.data, dt, cpu::cache_offset(c, c.k, sh.page, b, hk, keys[k0 + e]), D, w.k.data());
      for (int64_t g = 0; g < G; ++g) w.s[size_t(g * kBlock + e)] = dot(qs + g * D, w.k.data(), D);
    }
    for (int64_t g = 0; g < G; ++g) {
      float* s = w.s.data() + g * kBlock;
      for (int e = n; e < kBlock; ++e) s[e] = kNegInf;  // exp2 of -inf is 0: padding adds nothing
      float bm = kNegInf;
      for (int e = 0; e < n; ++e) bm = s[e] > bm ? s[e] : bm;  // a NaN never wins; exp2(NaN - m) spreads it
      const float mnew = std::max(st.m[g], bm);
      if (mnew == kNegInf) {  // every score so far -inf: no weight yet
        for (int e = 0; e < kBlock; ++e) s[e] = 0.0f;
        continue;
      }
      const float alpha = std::exp2(st.m[g] - mnew);
      st.m[g] = mnew;
      const __m256 mm = _mm256_set1_ps(mnew);
      __m256 sum = _mm256_setzero_ps();
      for (int e = 0; e < kBlock; e += 8) {
        const __m256 p = cpu::exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s + e), mm));
        _mm256_storeu_ps(s + e, p);
        sum = _mm256_add_ps(sum, p);
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, sum);
      float ls = 0;
      for (float x : lanes) ls += x;
      st.l[g] = st.l[g] * alpha + ls;
      if (alpha != 1.0f) {
        float* a = st.acc + g * D;
        for (int64_t d = 0; d < D; ++d) a[d] *= alpha;
      }
    }
    for (int e = 0; e < n; ++e) {
      cpu::load_row(c.v.data, dt, cpu::cache_offset(c, c.v, sh.page, b, hk, keys[k0 + e]), D, w.v.data());
      for (int64_t g = 0; g < G; ++g) {
        const float p = w.s[size_t(g * kBlock + e)];
        float* a = st.acc + g * D;
        const float* vr = w.v.data();
        for (int64_t d = 0; d < D; ++d) a[d] += p * vr[d];
      }
    }
  }
}

// float64 tensors: the same keys, scalar double arithmetic (gradcheck precision, not speed).
void decode_f64(const DecodePlan& plan, const TensorView& q, const KvCache& c, const TensorView& out,
                const cpu::DecodeShape& s, float* lse) {
  const int64_t D = s.D;
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(s.threads)
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      std::vector<int32_t> keys;
      std::vector<double> sc, acc(static_cast<size_t>(D));
      const int64_t L = c.seqlens[b], hk = h / s.group;
      for (int64_t t = 0; t < s.T; ++t) {
        const int64_t p = L - s.T + t;
        keys.clear();
        if (p >= 0) decode_row_keys(plan, p, L, keys);
        const double* qi = static_cast<const double*>(q.data) + q.offset(b, h, t);
        double mx = -INFINITY, l = 0;
        sc.resize(keys.size());
        for (size_t e = 0; e < keys.size(); ++e) {
          const double* kr = static_cast<const double*>(c.k.data) + cpu::cache_offset(c, c.k, s.page, b, hk, keys[e]);
          double dt = 0;
          for (int64_t d = 0; d < D; ++d) dt += qi[d] * kr[d];
          sc[e] = dt * s.scale;
          if (sc[e] > mx) mx = sc[e];
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (size_t e = 0; e < keys.size(); ++e) {
          const double wgt = std::exp(sc[e] - mx);
          l += wgt;
          const double* vr = static_cast<const double*>(c.v.data) + cpu::cache_offset(c, c.v, s.page, b, hk, keys[e]);
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += wgt * vr[d];
        }
        double* o = static_cast<double*>(out.data) + out.offset(b, h, t);
        for (int64_t d = 0; d < D; ++d) o[d] = keys.empty() ? 0.0 : acc[size_t(d)] / l;
        if (lse) lse[(b * s.H + h) * s.T + t] = keys.empty() ? -INFINITY : float(mx + std::log(l));
      }
    }
}

}  // namespace

void decode_cpu(const DecodePlan& plan, const TensorView& q, const KvCache& cache, const TensorView& out,
                const AttentionOptions& opt, float* lse) {
  require_x86_64_v3("decode_cpu");
  const cpu::DecodeShape s = cpu::check_decode(plan, q, cache, out, opt, lse, "decode_cpu");
  if (q.dtype == DType::F64) return decode_f64(plan, q, cache, out, s, lse);
  const int64_t B = s.B, T = s.T, D = s.D, G = s.group, Hkv = s.Hkv, rows = B * T;

  // 1. Every query row's keys (positions), from the row program at the sequence's length: O(runs + keys) per row.
  std::vector<std::vector<int32_t>> keys(static_cast<size_t>(rows));
  int64_t total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / T, L = cache.seqlens[b], p = L - T + r % T;
    if (p >= 0) decode_row_keys(plan, p, L, keys[size_t(r)]);
    total += int64_t(keys[size_t(r)].size());
  }

  // 2. Work items (row, kv head, chunk): rows split into chunks of at least 256 keys while there are fewer than
  // about 4 items per thread, so that one long sequence still fills the machine. Small steps run on one thread:
  // waking others costs more than they save (and on a loaded machine a descheduled helper stalls the step).
  const int threads = int(std::min<int64_t>(s.threads, std::max<int64_t>(1, total * Hkv * G * D / (1 << 17))));
  const int64_t target = int64_t(threads) * 4;
  const int64_t chunk = std::max<int64_t>(256, (total * Hkv + target - 1) / target);
  struct Item {
    int64_t row, hk, k0, k1, slot;  // slot: partial state index, -1 = the row's only chunk (writes out)
  };
  std::vector<Item> items;
  const size_t RH = size_t(rows * Hkv);
  std::vector<int64_t> first_slot(RH, -1), chunks(RH, 0);
  int64_t slots = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      const int64_t n = int64_t(keys[size_t(r)].size()), nc = std::max<int64_t>(1, (n + chunk - 1) / chunk);
      chunks[size_t(r * Hkv + hk)] = nc;
      if (nc > 1) first_slot[size_t(r * Hkv + hk)] = slots;
      for (int64_t c = 0; c < nc; ++c) items.push_back({r, hk, n * c / nc, n * (c + 1) / nc, nc > 1 ? slots++ : -1});
    }
  const int64_t per = G * (D + 2);  // one partial state: acc, m, l of the group
  std::vector<float> partial(size_t(slots * per));
  const std::unique_ptr<std::atomic<int64_t>[]> left(new std::atomic<int64_t>[RH]);  // chunks not yet computed
  for (size_t e = 0; e < RH; ++e) left[e].store(chunks[e], std::memory_order_relaxed);
  std::vector<std::unique_ptr<Scratch>> scratch(static_cast<size_t>(threads));
  std::vector<std::vector<float>> own(static_cast<size_t>(threads));  // states of unsplit rows, and the group's queries
  for (int th = 0; th < threads; ++th) {
    scratch[size_t(th)] = std::make_unique<Scratch>(D, G);
    own[size_t(th)].resize(size_t(per + G * D + D));
  }
  const float q_scale = float(s.scale * 1.4426950408889634);  // log2(e): base-2 scores
  const float ln2 = 0.6931471805599453f;

  // The output of one (row, kv head): normalise a state and store it (zeros, lse -inf without keys).
  auto finish = [&](int64_t r, int64_t hk, const float* acc, const float* m, const float* l, float* tmp) {
    const int64_t b = r / T, t = r % T;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = hk * G + g;
      const bool any = m[g] != kNegInf || std::isnan(l[g]);
      const float inv = any ? 1.0f / l[g] : 0.0f;
      for (int64_t d = 0; d < D; ++d) tmp[d] = any ? acc[g * D + d] * inv : 0.0f;
      cpu::store_row(tmp, out.dtype, out.data, out.offset(b, h, t), D);
      if (lse) lse[(b * s.H + h) * T + t] = any ? (m[g] + std::log2(l[g])) * ln2 : kNegInf;
    }
  };
  // 3. The chunks of a split row merge exactly (each state rescaled to the common max), by whichever thread
  // computed the row's last chunk: no barrier anywhere.
  auto merge = [&](int64_t e, float* acc, float* tmp) {
    const int64_t nc = chunks[size_t(e)], f = first_slot[size_t(e)];
    float *m = acc + G * D, *l = m + G;
    for (int64_t g = 0; g < G; ++g) {
      float mx = kNegInf;
      for (int64_t c = 0; c < nc; ++c) mx = std::max(mx, partial[size_t((f + c) * per + G * D + g)]);
      m[g] = mx, l[g] = 0;
      std::fill(acc + g * D, acc + (g + 1) * D, 0.0f);
      for (int64_t c = 0; c < nc; ++c) {
        const float* st = partial.data() + (f + c) * per;
        const float cm = st[G * D + g], cl = st[G * D + G + g];
        if (cm == kNegInf) continue;  // a chunk with no weight
        const float a = std::exp2(cm - mx);
        l[g] += cl * a;
        for (int64_t d = 0; d < D; ++d) acc[g * D + d] += st[g * D + d] * a;
      }
    }
    finish(e / Hkv, e % Hkv, acc, m, l, tmp);
  };

  std::atomic<size_t> next{0};
  auto work = [&](int th) {
    Scratch& w = *scratch[size_t(th)];
    float* mine = own[size_t(th)].data();
    float* qs = mine + per;
    float* tmp = qs + G * D;
    for (size_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < items.size();) {
      const Item& x = items[it];
      const int64_t b = x.row / T, t = x.row % T;
      for (int64_t g = 0; g < G; ++g) {
        cpu::load_row(q.data, q.dtype, q.offset(b, x.hk * G + g, t), D, qs + g * D);
        for (int64_t d = 0; d < D; ++d) qs[g * D + d] *= q_scale;
      }
      float* st = x.slot < 0 ? mine : partial.data() + x.slot * per;
      State state{st, st + G * D, st + G * D + G};
      attend(cache, s, b, x.hk, keys[size_t(x.row)].data() + x.k0, x.k1 - x.k0, qs, state, w);
      if (x.slot < 0) {
        finish(x.row, x.hk, state.acc, state.m, state.l, tmp);
      } else if (left[size_t(x.row * Hkv + x.hk)].fetch_sub(1, std::memory_order_acq_rel) == 1) {
        merge(x.row * Hkv + x.hk, mine, tmp);  // the acquire above sees every other chunk's state
      }
    }
  };
  if (threads == 1) return work(0);
#pragma omp parallel num_threads(threads)
  work(omp_get_thread_num());
}

}  // namespace splat
