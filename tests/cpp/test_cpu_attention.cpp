// attention_cpu against the float64 oracle (attention_reference on a dense mask) for every suite
// pattern, compositions, shapes (GQA/MQA, odd N, N=1, odd D), dtypes, strided layouts, plan
// options, empty rows and NaN/Inf inputs. Tolerance: err(ours) <= k * err(naive same dtype) + atol.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "backends/cpu/rows.hpp"
#include "backends/cpu/span_masks.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/plan.hpp"
#include "test_cpu_util.hpp"

using namespace splat;
using namespace cputest;

namespace {

struct Case {
  std::string spec;
  Shape s;
  DType dt = DType::F32;
  bool bnhd = false;  // memory [B, N, H, D] viewed as [B, H, N, D]
  PlanOptions popt{};
  float scale = 0.0f;
  std::vector<int32_t> key_lengths = {};  // empty: all keys
};

std::string describe(const Case& c) {
  return c.spec + " B=" + std::to_string(c.s.B) + " H=" + std::to_string(c.s.H) + " Hkv=" + std::to_string(c.s.Hkv) +
         " N=" + std::to_string(c.s.N) + " D=" + std::to_string(c.s.D) + " " + dtype_name(c.dt) +
         (c.bnhd ? " bnhd" : "") + " bm=" + std::to_string(c.popt.block_m) + " bn=" + std::to_string(c.popt.block_n) +
         (c.popt.permute_residues ? "" : " natural") + (c.key_lengths.empty() ? "" : " key_lengths");
}

// Runs ours and the oracle on fresh random inputs; returns ours (for extra checks).
Tensor check_plan_on(const Plan& plan, const std::vector<uint8_t>& mask, const Case& c,
                     const std::function<void(Tensor&, Tensor&, Tensor&)>& edit = {}) {
  SCOPED_TRACE(describe(c));
  const Shape& s = c.s;
  std::mt19937 rng(uint32_t(std::hash<std::string>{}(describe(c))));
  Tensor q(c.dt, s.B, s.H, s.N, s.D, c.bnhd), k(c.dt, s.B, s.Hkv, s.N, s.D, c.bnhd);
  Tensor v(c.dt, s.B, s.Hkv, s.N, s.D, c.bnhd), out(c.dt, s.B, s.H, s.N, s.D, c.bnhd);
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  if (edit) edit(q, k, v);
  out.poison();
  AttentionOptions opt;
  opt.scale = c.scale;
  const int32_t* kl = c.key_lengths.empty() ? nullptr : c.key_lengths.data();
  opt.key_lengths = kl;
  std::vector<float> lse(size_t(s.B * s.H * s.N), std::nanf("")), ref_lse = lse;
  attention_cpu(plan, q.view, k.view, v.view, out.view, opt, lse.data());

  const Tensor q32 = q.to_f32(), k32 = k.to_f32(), v32 = v.to_f32();
  Tensor ref(DType::F32, s.B, s.H, s.N, s.D, false);
  ref.poison();
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view, opt, ref_lse.data());
  const Tensor naive = naive_same_dtype(mask.data(), q32, k32, v32, c.dt, c.scale, kl);
  const double e_ours = max_abs_err(out, ref), e_naive = max_abs_err(naive, ref);
  EXPECT_LE(e_ours, 4.0 * e_naive + 2e-6) << "naive error " << e_naive;
  // lse (natural log, -inf for rows without keys) against a float64 log-sum-exp, from ours and from the oracle.
  EXPECT_LE(lse_err(lse, mask.data(), q32, k32, c.scale, kl), 2e-6) << "lse";
  EXPECT_LE(lse_err(ref_lse, mask.data(), q32, k32, c.scale, kl), 2e-7) << "reference lse";

  // Rows with no keys are exact zeros (not NaN, not tiny).
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.N; ++i) {
      bool any = false;
      for (int64_t j = 0; j < (kl ? kl[b] : s.N) && !any; ++j) any = mask[size_t(i * s.N + j)] != 0;
      if (any) continue;
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t d = 0; d < s.D; ++d) EXPECT_EQ(out.get(b, h, i, d), 0.0f) << "empty row " << i;
    }
  return out;
}

Tensor check_case(const Case& c) {
  const Pattern p = parse_pattern(c.spec);
  return check_plan_on(make_plan(analyse(p, c.s.N), c.popt), dense_mask(p, c.s.N), c);
}

std::vector<std::string> suite(int64_t n) {
  const std::string w16 = std::to_string(std::max<int64_t>(1, n / 16));
  const int64_t sq = std::max<int64_t>(1, int64_t(std::sqrt(double(n))));
  return {"window:w=" + w16,
          "causal_window:w=" + std::to_string(std::max<int64_t>(1, n / 8)),
          "dilated:w=" + w16 + ",d=4",
          "strided:s=" + std::to_string(sq),
          "blocked:b=" + std::to_string(std::max<int64_t>(1, n / 8)),
          "longformer:w=" + w16 + ",g=32",
          "bigbird:b=64,w=1,g=2,r=3,seed=1"};
}

}  // namespace

TEST(CpuAttention, SuitePatterns) {
  for (int64_t n : {256, 197})
    for (const std::string& spec : suite(n)) check_case({spec, {1, 2, 1, n, 64}});
}

TEST(CpuAttention, Compositions) {
  for (const char* spec : {"causal_window:w=16+sink:g=4", "strided:s=8&causal", "dense", "causal", "global:g=5",
                           "fixed:l=16,c=4", "causal_dilated:w=8,d=3", "window:w=3+strided:s=16",
                           "dilated:w=4,d=3+dilated:w=3,d=5", "bigbird:b=16,w=1,g=1,r=2,seed=7&causal"})
    check_case({spec, {1, 2, 2, 150, 32}});
}

TEST(CpuAttention, Shapes) {
  const Shape shapes[] = {{2, 4, 4, 64, 16},  {1, 4, 2, 97, 64},   {2, 3, 1, 33, 80}, {1, 1, 1, 1, 16},
                          {1, 2, 2, 129, 32}, {1, 2, 1, 200, 128}, {1, 2, 1, 50, 7},  {1, 6, 3, 70, 1}};
  for (const Shape& s : shapes)
    for (const char* spec : {"window:w=5", "strided:s=7", "longformer:w=4,g=3", "bigbird:b=16,w=1,g=1,r=2,seed=3"})
      check_case({spec, s});
}

TEST(CpuAttention, LowPrecisionDtypes) {
  for (DType dt : {DType::F16, DType::BF16})
    for (const std::string& spec : suite(160)) check_case({spec, {1, 4, 2, 160, 64}, dt});
}

TEST(CpuAttention, NonContiguousStrides) {
  for (DType dt : {DType::F32, DType::F16})
    for (const char* spec : {"window:w=9", "dilated:w=6,d=4", "strided:s=11", "longformer:w=5,g=4"})
      check_case({spec, {2, 4, 2, 91, 48}, dt, true});
}

TEST(CpuAttention, PlanOptions) {
  for (int bm : {1, 16, 48, 128, 200})
    for (int bn : {8, 64, 128})
      for (bool perm : {true, false}) {
        PlanOptions po;
        po.block_m = bm, po.block_n = bn, po.permute_residues = perm;
        for (const char* spec : {"window:w=20", "dilated:w=10,d=4", "strided:s=12", "bigbird:b=32,w=1,g=1,r=2,seed=5"})
          check_case({spec, {1, 2, 1, 211, 32}, DType::F32, false, po});
      }
}

TEST(CpuAttention, CustomScale) {
  check_case({"window:w=7", {1, 2, 1, 64, 32}, DType::F32, false, {}, 0.37f});
  check_case({"strided:s=8", {1, 2, 1, 64, 32}, DType::F32, false, {}, -0.2f});
}

TEST(CpuAttention, EmptyRowsAreZero) {
  check_case({"sink:g=8&blocked:b=16", {1, 2, 1, 100, 32}});  // rows >= 16 empty
  check_case({"causal_window:w=4&sink:g=3+blocked:b=1&global:g=2", {1, 2, 1, 64, 16}});
  // An explicit mask with empty rows and irregular columns (gather and block remainders).
  const int64_t n = 120;
  std::mt19937 rng(11);
  std::vector<uint8_t> mask(size_t(n * n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const bool band = std::abs(i - j) <= 3, rnd = rng() % 9 == 0;
      mask[size_t(i * n + j)] = (i % 7 == 3) ? 0 : uint8_t(band || rnd);
    }
  const Plan plan = make_plan(analyse_mask(mask.data(), n));
  check_plan_on(plan, mask, {"mask(random, empty rows)", {1, 3, 1, n, 40}});
}

TEST(CpuAttention, NaNPropagatesWhereAttended) {
  // NaN in one q row, one k row and one v row: rows touching them are NaN in both ours and the
  // oracle (max_abs_err treats NaN == NaN); every other row is unaffected.
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (const char* spec : {"window:w=6", "dilated:w=5,d=3", "bigbird:b=16,w=1,g=1,r=2,seed=2"})
      check_plan_on(make_plan(analyse(parse_pattern(spec), 96)), dense_mask(parse_pattern(spec), 96),
                    {spec, {1, 2, 1, 96, 32}, dt}, [](Tensor& q, Tensor& k, Tensor& v) {
                      q.set(0, 1, 5, 3, std::nanf(""));
                      k.set(0, 0, 40, 0, std::nanf(""));
                      v.set(0, 0, 70, 9, std::nanf(""));
                    });
}

TEST(CpuAttention, InfInValueOnlyReachesRowsThatAttendIt) {
  const int64_t n = 96;
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (const char* spec : {"window:w=6", "strided:s=10"}) {
      const Pattern p = parse_pattern(spec);
      const std::vector<uint8_t> mask = dense_mask(p, n);
      Tensor out = check_plan_on(make_plan(analyse(p, n)), mask, {spec, {1, 2, 1, n, 32}, dt},
                                 [](Tensor&, Tensor&, Tensor& v) { v.set(0, 0, 50, 2, INFINITY); });
      for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < 32; ++d)
          if (!mask[size_t(i * n + 50)]) ASSERT_TRUE(std::isfinite(out.get(0, 0, i, d))) << spec << " " << i;
    }
}

TEST(CpuAttention, ThreadCountDoesNotChangeResult) {
  // Multi-pass plans (dilated, strided, two residue strides) exercise the per-(pass, head) waits;
  // 5 threads on a small machine exercise them oversubscribed.
  const int64_t n = 300;
  for (const char* spec : {"longformer:w=17,g=5", "strided:s=17", "dilated:w=8,d=3+dilated:w=5,d=4"})
    for (DType dt : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(spec);
      const Plan plan = make_plan(analyse(parse_pattern(spec), n));
      std::mt19937 rng(5);
      Tensor q(dt, 2, 3, n, 40, false), k(dt, 2, 3, n, 40, false), v(dt, 2, 3, n, 40, false);
      q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
      std::vector<uint8_t> first;
      for (int threads : {1, 2, 5}) {
        Tensor o(dt, 2, 3, n, 40, false);
        o.poison();
        AttentionOptions opt;
        opt.threads = threads;
        attention_cpu(plan, q.view, k.view, v.view, o.view, opt);
        if (first.empty()) first = o.bytes;
        EXPECT_EQ(o.bytes, first) << "threads " << threads;
      }
    }
}

TEST(CpuAttention, BadInputIsAnError) {
  const Plan plan = make_plan(analyse(parse_pattern("window:w=2"), 16));
  Tensor q(DType::F32, 1, 2, 17, 8, false), k = q, v = q, o = q;
  k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o.view.data = o.bytes.data();
  EXPECT_THROW(attention_cpu(plan, q.view, k.view, v.view, o.view), Error);  // plan N=16, tensors N=17
  TensorView dev = q.view;
  dev.device = 0;
  const Plan p17 = make_plan(analyse(parse_pattern("window:w=2"), 17));
  TensorView kd = k.view, vd = v.view, od = o.view;
  kd.device = vd.device = od.device = 0;
  EXPECT_THROW(attention_cpu(p17, dev, kd, vd, od), Error);
  EXPECT_THROW(attention_reference(nullptr, q.view, k.view, v.view, o.view), Error);
  Tensor k3(DType::F32, 1, 3, 17, 8, false);
  EXPECT_THROW(attention_cpu(p17, q.view, k3.view, k3.view, o.view), Error);  // 2 heads over 3 kv heads
}

// The backend's mask words agree with the plan's reference semantics (span_entry_attended).
TEST(CpuAttention, SpanMaskWordsMatchPlanSemantics) {
  std::vector<std::pair<std::string, PlanOptions>> cases;
  for (const std::string& spec : suite(197)) cases.push_back({spec, {}});
  PlanOptions natural;
  natural.permute_residues = false, natural.block_m = 100, natural.block_n = 16;
  for (const char* spec : {"dilated:w=10,d=4", "strided:s=12", "bigbird:b=16,w=1,g=1,r=2,seed=3"})
    cases.push_back({spec, natural});
  for (const auto& [spec, po] : cases) {
    SCOPED_TRACE(spec);
    const Plan plan = make_plan(analyse(parse_pattern(spec), 197), po);
    for (const Pass& pass : plan.passes)
      for (const TileTask& task : pass.tasks)
        for (int32_t si = task.span_begin; si < task.span_end; ++si) {
          const KeySpan& span = pass.spans[size_t(si)];
          if (span.full) continue;
          std::vector<uint64_t> w(size_t(span.key_count));
          for (int sub = 0; sub * cpu::kLanes < task.row_count; ++sub) {
            cpu::fill_span_words(plan, task, span, sub, w.data());
            for (int lane = 0; lane < cpu::kLanes && sub * cpu::kLanes + lane < task.row_count; ++lane)
              for (int64_t c = 0; c < span.key_count; ++c)
                ASSERT_EQ(bool((w[size_t(c)] >> lane) & 1),
                          span_entry_attended(plan, task, span, sub * cpu::kLanes + lane, c))
                    << "span " << si << " lane " << lane << " c " << c;
          }
        }
  }
}

// The backend's vectorised dtype conversions agree with the scalar ones in tensor.hpp on random
// bit patterns (normals, subnormals, overflow, Inf; NaN only has to stay NaN).
TEST(CpuAttention, VectorConversionsMatchScalar) {
  std::mt19937 rng(3);
  std::vector<float> src(77), back(77);
  std::vector<uint16_t> half(77);
  for (int it = 0; it < 2000; ++it) {
    for (float& x : src) {
      uint32_t u = rng();
      if (u % 3 == 0) u = (u & 0x87ffffffu) | 0x30000000u;  // near the f16 range
      std::memcpy(&x, &u, 4);
    }
    for (DType t : {DType::F16, DType::BF16}) {
      cpu::rows_from_float(src.data(), t, half.data(), 0, int64_t(src.size()));
      cpu::rows_to_float(half.data(), t, 0, int64_t(src.size()), back.data());
      for (size_t i = 0; i < src.size(); ++i) {
        const uint16_t want = t == DType::F16 ? float_to_half(src[i]) : float_to_bf16(src[i]);
        if (std::isnan(src[i])) {
          ASSERT_TRUE(std::isnan(back[i]));
          continue;
        }
        ASSERT_EQ(half[i], want) << dtype_name(t) << " " << src[i];
        const float w = load_element(half.data(), t, i);
        ASSERT_EQ(std::memcmp(&back[i], &w, 4), 0);
      }
    }
  }
}

// Random patterns (families, unions, intersections), sizes, dtypes, layouts and plan options.
// SPLAT_SOAK_ITERS / SPLAT_SOAK_SEED override the count and seed for longer local runs.
TEST(CpuAttention, RandomisedAgainstOracle) {
  const char* iters_env = std::getenv("SPLAT_SOAK_ITERS");
  const char* seed_env = std::getenv("SPLAT_SOAK_SEED");
  const int iters = iters_env ? std::atoi(iters_env) : 40;
  std::mt19937 rng(seed_env ? uint32_t(std::atoll(seed_env)) : 20261124u);
  auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
  auto family = [&](int64_t n) -> std::string {
    const auto u = [](int64_t x) { return std::to_string(x); };
    switch (rng() % 12) {
      case 0: return "window:w=" + u(pick(0, n / 4 + 1));
      case 1: return "causal_window:w=" + u(pick(0, n / 3 + 1));
      case 2: return "dilated:w=" + u(pick(0, 12)) + ",d=" + u(pick(1, 7));
      case 3: return "causal_dilated:w=" + u(pick(0, 12)) + ",d=" + u(pick(1, 7));
      case 4: return "strided:s=" + u(pick(1, 24));
      case 5: {
        const int64_t l = pick(1, 32);
        return "fixed:l=" + u(l) + ",c=" + u(pick(0, std::min<int64_t>(l, 4)));
      }
      case 6: return "blocked:b=" + u(pick(1, 64));
      case 7: return "global:g=" + u(pick(0, 9));
      case 8: return "sink:g=" + u(pick(0, 9));
      case 9: return "longformer:w=" + u(pick(0, 20)) + ",g=" + u(pick(0, 9));
      case 10:
        return "bigbird:b=" + u(pick(1, 32)) + ",w=" + u(pick(0, 2)) + ",g=" + u(pick(0, 2)) + ",r=" + u(pick(0, 3)) +
               ",seed=" + u(pick(0, 99));
      default: return rng() % 2 ? "causal" : "dense";
    }
  };
  for (int it = 0; it < iters; ++it) {
    Case c;
    c.s.N = rng() % 8 == 0 ? pick(1, 5) : pick(6, 260);
    c.spec = family(c.s.N);
    if (rng() % 3 == 0) c.spec += (rng() % 2 ? "+" : "&") + family(c.s.N);
    if (rng() % 4 == 0) c.spec += "&causal";
    c.s.Hkv = pick(1, 2);
    c.s.H = c.s.Hkv * pick(1, 3);
    c.s.B = pick(1, 2);
    c.s.D = std::vector<int64_t>{1, 8, 13, 32, 64, 72}[rng() % 6];
    c.dt = std::vector<DType>{DType::F32, DType::F32, DType::F16, DType::BF16}[rng() % 4];
    c.bnhd = rng() % 3 == 0;
    c.popt.block_m = int32_t(std::vector<int>{1, 7, 16, 64, 100}[rng() % 5]);
    c.popt.block_n = int32_t(std::vector<int>{4, 32, 64, 200}[rng() % 4]);
    c.popt.permute_residues = rng() % 4 != 0;
    if (rng() % 5 == 0) {  // an explicit mask: the pattern's, with random edits (gather/block remainders)
      std::vector<uint8_t> mask = dense_mask(parse_pattern(c.spec), c.s.N);
      const int64_t flips = pick(0, c.s.N * 2);
      for (int64_t f = 0; f < flips; ++f) mask[size_t(pick(0, c.s.N * c.s.N - 1))] ^= 1;
      c.spec = "mask from " + c.spec;
      check_plan_on(make_plan(analyse_mask(mask.data(), c.s.N), c.popt), mask, c);
    } else {
      check_case(c);
    }
    if (HasFatalFailure()) return;
  }
}

// A plan whose middle pass is empty still orders the passes around it (the backend waits on every
// earlier pass of a head, not just the previous one).
TEST(CpuAttention, EmptyMiddlePass) {
  const int64_t n = 256;
  const Pattern p = parse_pattern("strided:s=16");
  Plan plan = make_plan(analyse(p, n));
  ASSERT_GE(plan.passes.size(), 2u);
  plan.passes.insert(plan.passes.begin() + 1, Pass{});
  for (int rep = 0; rep < 5; ++rep)
    check_plan_on(plan, dense_mask(p, n), {"strided:s=16 (empty middle pass)", {2, 4, 2, n, 32}});
}

TEST(CpuAttention, BrokenPlanIsAnError) {
  const int64_t n = 64;
  Tensor q(DType::F32, 1, 1, n, 8, false), k = q, v = q, o = q;
  k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o.view.data = o.bytes.data();
  Plan plan = make_plan(analyse(parse_pattern("window:w=3"), n));
  Plan missing = plan;
  missing.passes[0].tasks.pop_back();  // some rows never computed
  EXPECT_THROW(attention_cpu(missing, q.view, k.view, v.view, o.view), Error);
  Plan twice = plan;
  twice.passes[0].tasks.push_back(twice.passes[0].tasks[0]);  // two tasks write the same rows
  EXPECT_THROW(attention_cpu(twice, q.view, k.view, v.view, o.view), Error);
  Plan wild = plan;
  wild.passes[0].spans[0].key_begin = n;  // keys out of range
  EXPECT_THROW(attention_cpu(wild, q.view, k.view, v.view, o.view), Error);
}

// Key padding: batch row b sees keys j < key_lengths[b] (0 and N included), in single- and multi-pass plans, with
// gather and block remainders, GQA and strided layouts; the oracle with key_lengths equals the oracle on the mask
// with the padded columns cleared.
TEST(CpuAttention, KeyLengths) {
  const int64_t n = 131;
  for (const char* spec : {"window:w=9", "strided:s=11", "dilated:w=6,d=4", "longformer:w=5,g=4",
                           "bigbird:b=16,w=1,g=1,r=2,seed=3", "causal", "dense"})
    for (DType dt : {DType::F32, DType::BF16})
      check_case({spec, {4, 2, 1, n, 16}, dt, dt == DType::BF16, {}, 0.0f, {0, int32_t(n), 1, 70}});
  std::mt19937 rng(4);
  std::vector<uint8_t> mask(size_t(n * n));
  for (auto& m : mask) m = rng() % 5 == 0;
  check_plan_on(make_plan(analyse_mask(mask.data(), n)), mask,
                {"mask(random)", {3, 2, 1, n, 16}, DType::F32, false, {}, 0.0f, {5, 0, 130}});

  // The oracle's key_lengths is the mask with columns >= len cleared.
  const Pattern p = parse_pattern("window:w=20");
  const std::vector<uint8_t> full = dense_mask(p, n);
  Tensor q(DType::F32, 1, 1, n, 8, false), k = q, v = q, o1 = q, o2 = q;
  k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o1.view.data = o1.bytes.data();
  o2.view.data = o2.bytes.data();
  q.randomise(rng, 1.0f), k.randomise(rng, 1.0f), v.randomise(rng, 1.0f);
  std::vector<uint8_t> cut = full;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 60; j < n; ++j) cut[size_t(i * n + j)] = 0;
  const int32_t len = 60;
  AttentionOptions opt;
  opt.key_lengths = &len;
  attention_reference(full.data(), q.view, k.view, v.view, o1.view, opt);
  attention_reference(cut.data(), q.view, k.view, v.view, o2.view);
  EXPECT_EQ(o1.bytes, o2.bytes);
}

TEST(CpuAttention, KeyLengthsOutOfRangeAreErrors) {
  const int64_t n = 16;
  const Plan plan = make_plan(analyse(parse_pattern("window:w=2"), n));
  Tensor q(DType::F32, 2, 1, n, 8, false), k = q, v = q, o = q;
  k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o.view.data = o.bytes.data();
  const std::vector<uint8_t> mask = dense_mask(parse_pattern("window:w=2"), n);
  for (std::vector<int32_t> bad : {std::vector<int32_t>{-1, 3}, std::vector<int32_t>{3, int32_t(n + 1)}}) {
    AttentionOptions opt;
    opt.key_lengths = bad.data();
    EXPECT_THROW(attention_cpu(plan, q.view, k.view, v.view, o.view, opt), Error);
    EXPECT_THROW(attention_reference(mask.data(), q.view, k.view, v.view, o.view, opt), Error);
  }
}

// A thread count is checked like the CLI's (0 = all hardware threads, else 1 ... 4096): 65536 used to reach the
// OpenMP runtime and crash it.
TEST(CpuAttention, ThreadCountsOutOfRangeAreErrors) {
  const int64_t n = 16;
  const Plan plan = make_plan(analyse(parse_pattern("window:w=2"), n));
  Tensor q(DType::F32, 1, 1, n, 8, false), k = q, v = q, o = q;
  k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o.view.data = o.bytes.data();
  const std::vector<uint8_t> mask = dense_mask(parse_pattern("window:w=2"), n);
  for (int bad : {-1, 4097, 65536}) {
    AttentionOptions opt;
    opt.threads = bad;
    EXPECT_THROW(attention_cpu(plan, q.view, k.view, v.view, o.view, opt), Error);
    EXPECT_THROW(attention_reference(mask.data(), q.view, k.view, v.view, o.view, opt), Error);
  }
}

// float64 tensors are computed in float64: ours equals the float64 oracle to rounding, lse included.
TEST(CpuAttention, Float64) {
  struct F64Case {
    std::string spec;
    Shape s;
    bool bnhd;
    std::vector<int32_t> lens;
  };
  const std::vector<F64Case> cases = {{"window:w=7", {1, 2, 1, 65, 16}, false, {}},
                                      {"strided:s=8", {2, 4, 2, 70, 8}, true, {}},
                                      {"bigbird:b=16,w=1,g=1,r=2,seed=3", {1, 2, 2, 96, 12}, false, {}},
                                      {"sink:g=8&blocked:b=16", {1, 1, 1, 50, 4}, false, {}},
                                      {"longformer:w=4,g=3", {3, 2, 1, 33, 8}, false, {0, 33, 17}},
                                      {"dense", {1, 1, 1, 1, 3}, false, {}}};
  for (const F64Case& fc : cases) {
    SCOPED_TRACE(fc.spec);
    const Shape& s = fc.s;
    const Pattern p = parse_pattern(fc.spec);
    const Plan plan = make_plan(analyse(p, s.N));
    const std::vector<uint8_t> mask = dense_mask(p, s.N);
    std::mt19937 rng(9);
    Tensor q(DType::F64, s.B, s.H, s.N, s.D, fc.bnhd), k(DType::F64, s.B, s.Hkv, s.N, s.D, fc.bnhd);
    Tensor v(DType::F64, s.B, s.Hkv, s.N, s.D, fc.bnhd), out(DType::F64, s.B, s.H, s.N, s.D, fc.bnhd);
    Tensor ref(DType::F64, s.B, s.H, s.N, s.D, false);
    std::normal_distribution<double> dist;
    q.each([&](int64_t b, int64_t h, int64_t n, int64_t d) { q.set(b, h, n, d, dist(rng)); });
    k.each([&](int64_t b, int64_t h, int64_t n, int64_t d) { k.set(b, h, n, d, dist(rng)); });
    v.each([&](int64_t b, int64_t h, int64_t n, int64_t d) { v.set(b, h, n, d, dist(rng)); });
    out.poison(), ref.poison();
    AttentionOptions opt;
    opt.key_lengths = fc.lens.empty() ? nullptr : fc.lens.data();
    std::vector<float> lse(size_t(s.B * s.H * s.N), std::nanf(""));
    attention_cpu(plan, q.view, k.view, v.view, out.view, opt, lse.data());
    attention_reference(mask.data(), q.view, k.view, v.view, ref.view, opt);
    EXPECT_LE(max_abs_err(out, ref), 1e-13);
    EXPECT_LE(lse_err(lse, mask.data(), q, k, 0.0f, opt.key_lengths), 1e-7);
  }
}

// Out of memory is a std::bad_alloc (Python: MemoryError) thrown outside every parallel region, never an abort from
// inside one (the oracle used to allocate its row buffers inside its parallel region). Child process with a limited
// address space: per-thread buffers of a huge head dim do not fit.
TEST(CpuAttentionDeathTest, OutOfMemoryThrowsInsteadOfAborting) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "address-space limits do not work under AddressSanitizer";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const int64_t D = int64_t(1) << 23;  // 32 MiB per f32 row
  auto run = [&](int which) {
    Tensor q(DType::F32, 1, 1, 1, D, false), k = q, v = q, o = q;
    k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o.view.data = o.bytes.data();
    const uint8_t mask = 1;
    AttentionOptions opt;
    opt.threads = 2;
    {  // start the thread pool (its stacks) before the limit
      Tensor s(DType::F32, 1, 1, 1, 8, false), so = s;
      so.view.data = so.bytes.data();
      attention_reference(&mask, s.view, s.view, s.view, so.view, opt);
    }
    long pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    const rlim_t limit = rlim_t(pages) * 4096 + (rlim_t(150) << 20);
    const rlimit rl{limit, limit};
    setrlimit(RLIMIT_AS, &rl);
    try {
      if (which == 0) attention_reference(&mask, q.view, k.view, v.view, o.view, opt);
      if (which == 1) attention_cpu(make_plan(analyse(parse_pattern("dense"), 1)), q.view, k.view, v.view, o.view, opt);
    } catch (const std::bad_alloc&) {
      std::exit(0);
    } catch (const Error&) {
      std::exit(0);
    }
    std::exit(1);  // the limit did not bite: the test is not testing anything
  };
  EXPECT_EXIT(run(0), ::testing::ExitedWithCode(0), "") << "attention_reference";
  EXPECT_EXIT(run(1), ::testing::ExitedWithCode(0), "") << "attention_cpu";
#endif
}

// An output sharing memory with an input is an Error (out = q was silently wrong for multi-pass plans, out = k or v
// always), whether the same view, a shifted view or the lse inside a tensor.
TEST(CpuAttention, OutputOverlappingAnInputIsAnError) {
  const int64_t n = 64;
  for (const char* spec : {"window:w=3", "strided:s=8"}) {
    const Pattern p = parse_pattern(spec);
    const Plan plan = make_plan(analyse(p, n));
    const std::vector<uint8_t> mask = dense_mask(p, n);
    Tensor q(DType::F32, 1, 2, n, 8, false), k = q, v = q, o = q;
    k.view.data = k.bytes.data(), v.view.data = v.bytes.data(), o.view.data = o.bytes.data();
    TensorView shifted = k.view;  // starts inside k
    shifted.data = k.bytes.data() + 64;
    std::vector<float> lse(size_t(2 * n));
    for (const TensorView& bad : {q.view, k.view, v.view, shifted}) {
      EXPECT_THROW(attention_cpu(plan, q.view, k.view, v.view, bad), Error) << spec;
      EXPECT_THROW(attention_reference(mask.data(), q.view, k.view, v.view, bad), Error) << spec;
    }
    float* inside_q = reinterpret_cast<float*>(q.bytes.data());
    EXPECT_THROW(attention_cpu(plan, q.view, k.view, v.view, o.view, {}, inside_q), Error);
    EXPECT_THROW(attention_reference(mask.data(), q.view, k.view, v.view, o.view, {}, inside_q), Error);
    EXPECT_NO_THROW(attention_cpu(plan, q.view, k.view, v.view, o.view, {}, lse.data()));
  }
}
