// attention_backward_cpu against the float64 dense oracle (attention_backward_reference) for every suite pattern,
// compositions, explicit masks, odd N, GQA/MQA, [B, N, H, D] strides, empty rows and columns, key_lengths, dtypes;
// float64 against the oracle to rounding and against finite differences; bitwise determinism across thread counts.
// Tolerance: err(ours) <= k * err(naive same-dtype backward) + atol, gradient buffers poisoned with NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

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
  bool bnhd = false;
  std::vector<int32_t> key_lengths = {};
  PlanOptions popt{};
  int threads = 0;
};

std::string describe(const Case& c) {
  return c.spec + " B=" + std::to_string(c.s.B) + " H=" + std::to_string(c.s.H) + " Hkv=" + std::to_string(c.s.Hkv) +
         " N=" + std::to_string(c.s.N) + " D=" + std::to_string(c.s.D) + " " + dtype_name(c.dt) +
         (c.bnhd ? " bnhd" : "") + (c.key_lengths.empty() ? "" : " key_lengths") +
         " bm=" + std::to_string(c.popt.block_m);
}

Tensor convert(const Tensor& t, DType dt) {
  Tensor r(dt, t.view.B(), t.view.H(), t.view.N(), t.view.D(), false);
  r.each([&](int64_t b, int64_t h, int64_t n, int64_t d) { r.set(b, h, n, d, t.get64(b, h, n, d)); });
  return r;
}

struct Grads {
  Tensor dq, dk, dv;
};

// The dense backward a user would compute in float32 (inputs as stored, the forward's output rounded to the
// dtype for Delta, gradients rounded to the dtype): the same-dtype baseline of the tolerance idiom.
Grads naive_backward(const uint8_t* mask, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                     DType dt, const int32_t* kl) {
  const int64_t B = q.view.B(), H = q.view.H(), Hkv = k.view.H(), N = q.view.N(), D = q.view.D(), g = H / Hkv;
  const Tensor o = naive_same_dtype(mask, q, k, v, dt, 0.0f, kl);
  const float sc = 1.0f / std::sqrt(float(D));
  Grads r{Tensor(DType::F32, B, H, N, D, false), Tensor(DType::F32, B, Hkv, N, D, false),
          Tensor(DType::F32, B, Hkv, N, D, false)};
  std::vector<float> p(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const int64_t limit = kl ? kl[b] : N;
        float mx = -INFINITY, l = 0.0f, delta = 0.0f;
        for (int64_t j = 0; j < limit; ++j) {
          if (!mask[i * N + j]) continue;
          float s = 0.0f;
          for (int64_t d = 0; d < D; ++d) s += q.get(b, h, i, d) * k.get(b, h / g, j, d);
          p[size_t(j)] = s * sc;
          mx = std::max(mx, s * sc);
        }
        for (int64_t j = 0; j < limit; ++j)
          if (mask[i * N + j]) l += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        for (int64_t d = 0; d < D; ++d) delta += dout.get(b, h, i, d) * o.get(b, h, i, d);
        for (int64_t j = 0; j < limit; ++j) {
          if (!mask[i * N + j]) continue;
          const float pj = p[size_t(j)] / l;
          float dp = 0.0f;
          for (int64_t d = 0; d < D; ++d) dp += dout.get(b, h, i, d) * v.get(b, h / g, j, d);
          const float ds = pj * (dp - delta);
          for (int64_t d = 0; d < D; ++d) {
            r.dq.set(b, h, i, d, r.dq.get(b, h, i, d) + sc * ds * k.get(b, h / g, j, d));
            r.dk.set(b, h / g, j, d, r.dk.get(b, h / g, j, d) + sc * ds * q.get(b, h, i, d));
            r.dv.set(b, h / g, j, d, r.dv.get(b, h / g, j, d) + pj * dout.get(b, h, i, d));
          }
        }
      }
  return {convert(convert(r.dq, dt), DType::F32), convert(convert(r.dk, dt), DType::F32),
          convert(convert(r.dv, dt), DType::F32)};
}

// Forward (for out and lse), backward into poisoned buffers; returns the gradients.
Grads run_ours(const Plan& plan, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
               const AttentionOptions& opt, bool bnhd) {
  const auto& s = q.view;
  Tensor out(s.dtype, s.B(), s.H(), s.N(), s.D(), bnhd);
  out.poison();
  std::vector<float> lse(size_t(s.B() * s.H() * s.N()), std::nanf(""));
  attention_cpu(plan, q.view, k.view, v.view, out.view, opt, lse.data());
  Grads g{Tensor(s.dtype, s.B(), s.H(), s.N(), s.D(), bnhd), Tensor(s.dtype, s.B(), k.view.H(), s.N(), s.D(), bnhd),
          Tensor(s.dtype, s.B(), k.view.H(), s.N(), s.D(), bnhd)};
  g.dq.poison(), g.dk.poison(), g.dv.poison();
  BackwardTensors t{q.view, k.view, v.view, out.view, dout.view, lse.data(), g.dq.view, g.dk.view, g.dv.view};
  attention_backward_cpu(plan, t, opt);
  return g;
}

Grads run_oracle(const std::vector<uint8_t>& mask, const Tensor& q, const Tensor& k, const Tensor& v,
                 const Tensor& dout, const AttentionOptions& opt) {
  const Tensor q64 = convert(q, DType::F64), k64 = convert(k, DType::F64), v64 = convert(v, DType::F64),
               do64 = convert(dout, DType::F64);
  const auto& s = q.view;
  Grads g{Tensor(DType::F64, s.B(), s.H(), s.N(), s.D(), false),
          Tensor(DType::F64, s.B(), k.view.H(), s.N(), s.D(), false),
          Tensor(DType::F64, s.B(), k.view.H(), s.N(), s.D(), false)};
  g.dq.poison(), g.dk.poison(), g.dv.poison();
  BackwardTensors t{q64.view, k64.view, v64.view, q64.view, do64.view, nullptr, g.dq.view, g.dk.view, g.dv.view};
  attention_backward_reference(mask.data(), t, opt);
  return g;
}

struct Inputs {
  Tensor q, k, v, dout;
};
Inputs random_inputs(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const Shape& s = c.s;
  Inputs in{Tensor(c.dt, s.B, s.H, s.N, s.D, c.bnhd), Tensor(c.dt, s.B, s.Hkv, s.N, s.D, c.bnhd),
            Tensor(c.dt, s.B, s.Hkv, s.N, s.D, c.bnhd), Tensor(c.dt, s.B, s.H, s.N, s.D, c.bnhd)};
  std::normal_distribution<double> dist;
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.dout})
    t->each([&](int64_t b, int64_t h, int64_t n, int64_t d) { t->set(b, h, n, d, dist(rng)); });
  return in;
}

void check_plan_on(const Plan& plan, const std::vector<uint8_t>& mask, const Case& c) {
  SCOPED_TRACE(describe(c));
  const Shape& s = c.s;
  const Inputs in = random_inputs(c, uint32_t(std::hash<std::string>{}(describe(c))));
  AttentionOptions opt;
  opt.threads = c.threads;
  const int32_t* kl = c.key_lengths.empty() ? nullptr : c.key_lengths.data();
  opt.key_lengths = kl;
  const Grads ours = run_ours(plan, in.q, in.k, in.v, in.dout, opt, c.bnhd);
  const Grads ref = run_oracle(mask, in.q, in.k, in.v, in.dout, opt);
  if (c.dt == DType::F64) {  // float64 throughout: the oracle to rounding
    EXPECT_LE(max_abs_err(ours.dq, ref.dq), 1e-10) << "dq";
    EXPECT_LE(max_abs_err(ours.dk, ref.dk), 1e-10) << "dk";
    EXPECT_LE(max_abs_err(ours.dv, ref.dv), 1e-10) << "dv";
  } else {
    const Grads naive =
        naive_backward(mask.data(), in.q.to_f32(), in.k.to_f32(), in.v.to_f32(), in.dout.to_f32(), c.dt, kl);
    const double k = 4.0, atol = 1e-5;
    if (std::getenv("SPLAT_TEST_VERBOSE"))
      std::printf("%s: dq %.2e (naive %.2e) dk %.2e (%.2e) dv %.2e (%.2e)\n", describe(c).c_str(),
                  max_abs_err(ours.dq, ref.dq), max_abs_err(naive.dq, ref.dq), max_abs_err(ours.dk, ref.dk),
                  max_abs_err(naive.dk, ref.dk), max_abs_err(ours.dv, ref.dv), max_abs_err(naive.dv, ref.dv));
    EXPECT_LE(max_abs_err(ours.dq, ref.dq), k * max_abs_err(naive.dq, ref.dq) + atol) << "dq";
    EXPECT_LE(max_abs_err(ours.dk, ref.dk), k * max_abs_err(naive.dk, ref.dk) + atol) << "dk";
    EXPECT_LE(max_abs_err(ours.dv, ref.dv), k * max_abs_err(naive.dv, ref.dv) + atol) << "dv";
  }
  // Rows without keys: dq exactly 0; keys no query attends (or padded away): dk, dv exactly 0.
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t limit = kl ? kl[b] : s.N;
    for (int64_t i = 0; i < s.N; ++i) {
      bool row = false, col = false;
      for (int64_t j = 0; j < limit; ++j) row |= mask[size_t(i * s.N + j)] != 0;
      for (int64_t r = 0; r < s.N && i < limit; ++r) col |= mask[size_t(r * s.N + i)] != 0;
      for (int64_t d = 0; d < s.D; ++d) {
        for (int64_t h = 0; h < s.H && !row; ++h) ASSERT_EQ(ours.dq.get(b, h, i, d), 0.0f) << "empty row " << i;
        for (int64_t h = 0; h < s.Hkv && !col; ++h) {
          ASSERT_EQ(ours.dk.get(b, h, i, d), 0.0f) << "empty column " << i;
          ASSERT_EQ(ours.dv.get(b, h, i, d), 0.0f) << "empty column " << i;
        }
      }
    }
  }
}

Plan transposed_plan(Acsr a, const PlanOptions& po = {}) {
  Plan p = make_plan(std::move(a), po);
  add_transpose(p);
  return p;
}

void check_case(const Case& c) {
  const Pattern p = parse_pattern(c.spec);
  check_plan_on(transposed_plan(analyse(p, c.s.N), c.popt), dense_mask(p, c.s.N), c);
}

std::vector<std::string> suite(int64_t n) {
  const std::string w16 = std::to_string(std::max<int64_t>(1, n / 16));
  const int64_t sq = std::max<int64_t>(1, int64_t(std::sqrt(double(n))));
  return {"window:w=" + w16,
          "causal_window:w=" + std::to_string(std::max<int64_t>(1, n / 8)),
          "dilated:w=" + w16 + ",d=4",
          "strided:s=" + std::to_string(sq),
          "blocked:b=" + std::to_string(std::max<int64_t>(1, n / 8)),
          "longformer:w=" + w16 + ",g=8",
          "bigbird:b=16,w=1,g=1,r=2,seed=1"};
}

}  // namespace

TEST(CpuBackward, SuitePatterns) {
  for (int64_t n : {200, 65})
    for (const std::string& spec : suite(n)) check_case({spec, {1, 2, 1, n, 32}});
}

TEST(CpuBackward, LowPrecisionDtypes) {
  for (DType dt : {DType::BF16, DType::F16})
    for (const std::string& spec : suite(130)) check_case({spec, {1, 2, 2, 130, 32}, dt});
}

TEST(CpuBackward, Compositions) {
  for (const char* spec : {"causal_window:w=16+sink:g=4", "strided:s=8&causal", "dense", "causal", "global:g=5",
                           "fixed:l=16,c=4", "causal_dilated:w=8,d=3", "window:w=3+strided:s=16",
                           "dilated:w=4,d=3+dilated:w=3,d=5", "bigbird:b=16,w=1,g=1,r=2,seed=7&causal"})
    check_case({spec, {1, 2, 2, 100, 16}});
}

TEST(CpuBackward, OddSequenceLengths) {
  for (int64_t n : {1, 17, 65, 200})
    for (const char* spec : {"window:w=5", "strided:s=7", "longformer:w=4,g=3", "causal"})
      check_case({spec, {1, 2, 1, n, 24}});
}

TEST(CpuBackward, GroupedAndMultiQueryHeads) {
  for (const Shape& s : {Shape{2, 4, 2, 90, 16}, Shape{1, 6, 1, 77, 8}, Shape{1, 3, 3, 64, 40}})
    for (const char* spec : {"window:w=6", "dilated:w=5,d=3", "bigbird:b=16,w=1,g=1,r=2,seed=3"}) check_case({spec, s});
}

TEST(CpuBackward, NonContiguousStrides) {
  for (DType dt : {DType::F32, DType::BF16})
    for (const char* spec : {"window:w=9", "strided:s=11", "longformer:w=5,g=4"})
      check_case({spec, {2, 4, 2, 91, 24}, dt, true});
}

TEST(CpuBackward, PlanOptions) {
  for (int bm : {1, 16, 100})
    for (bool perm : {true, false}) {
      PlanOptions po;
      po.block_m = bm, po.block_n = 16, po.permute_residues = perm;
      for (const char* spec : {"dilated:w=10,d=4", "strided:s=12", "bigbird:b=32,w=1,g=1,r=2,seed=5"})
        check_case({spec, {1, 2, 1, 150, 16}, DType::F32, false, {}, po});
    }
}

TEST(CpuBackward, EmptyRowsAndColumns) {
  check_case({"sink:g=8&blocked:b=16", {1, 2, 1, 100, 16}});  // rows >= 16 empty, columns >= 8 empty
  check_case({"causal_window:w=4&sink:g=3+blocked:b=1&global:g=2", {1, 2, 1, 64, 16}});
  // An explicit mask with empty rows, empty columns and irregular entries (gather and block remainders).
  const int64_t n = 120;
  std::mt19937 rng(11);
  std::vector<uint8_t> mask(size_t(n * n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const bool band = std::abs(i - j) <= 3, rnd = rng() % 9 == 0;
      mask[size_t(i * n + j)] = (i % 7 == 3 || j % 11 == 5) ? 0 : uint8_t(band || rnd);
    }
  check_plan_on(transposed_plan(analyse_mask(mask.data(), n)), mask,
                {"mask(random, empty rows/cols)", {1, 3, 1, n, 16}});
  check_plan_on(transposed_plan(analyse_mask(mask.data(), n)), mask,
                {"mask(random, empty rows/cols)", {1, 2, 1, n, 16}, DType::BF16});
}

TEST(CpuBackward, KeyLengths) {
  const int64_t n = 97;
  for (const char* spec : {"window:w=9", "strided:s=10", "dilated:w=6,d=4", "bigbird:b=16,w=1,g=1,r=2,seed=3", "dense"})
    for (DType dt : {DType::F32, DType::BF16}) check_case({spec, {4, 2, 1, n, 16}, dt, false, {0, int32_t(n), 1, 50}});
}

TEST(CpuBackward, Float64MatchesOracle) {
  for (const char* spec :
       {"window:w=7", "strided:s=8", "longformer:w=4,g=3", "bigbird:b=16,w=1,g=1,r=2,seed=3", "sink:g=8&blocked:b=16"})
    check_case({spec, {2, 4, 2, 70, 12}, DType::F64, true});
  check_case({"dilated:w=5,d=3", {3, 2, 1, 45, 8}, DType::F64, false, {0, 45, 20}});
  check_case({"dense", {1, 1, 1, 1, 4}, DType::F64});
}

// The float64 backward is the derivative of the float64 forward: central differences of
// loss = sum(dO * attention(q, k, v)) on a tiny case.
TEST(CpuBackward, Float64FiniteDifferences) {
  const int64_t n = 9, D = 3;
  for (const char* spec : {"window:w=2", "strided:s=3", "sink:g=2&causal"}) {
    SCOPED_TRACE(spec);
    const Case c{spec, {1, 2, 1, n, D}, DType::F64};
    Inputs in = random_inputs(c, 3);
    const Plan plan = transposed_plan(analyse(parse_pattern(spec), n));
    const Grads g = run_ours(plan, in.q, in.k, in.v, in.dout, {}, false);
    AttentionOptions one;
    one.threads = 1;
    auto loss = [&]() {
      Tensor out(DType::F64, 1, 2, n, D, false);
      attention_cpu(plan, in.q.view, in.k.view, in.v.view, out.view, one);
      double l = 0.0;
      out.each(
          [&](int64_t b, int64_t h, int64_t i, int64_t d) { l += out.get64(b, h, i, d) * in.dout.get64(b, h, i, d); });
      return l;
    };
    const double eps = 1e-6;
    for (auto [x, gx] : {std::pair{&in.q, &g.dq}, std::pair{&in.k, &g.dk}, std::pair{&in.v, &g.dv}})
      x->each([&](int64_t b, int64_t h, int64_t i, int64_t d) {
        const double x0 = x->get64(b, h, i, d);
        x->set(b, h, i, d, x0 + eps);
        const double up = loss();
        x->set(b, h, i, d, x0 - eps);
        const double down = loss();
        x->set(b, h, i, d, x0);
        EXPECT_NEAR(gx->get64(b, h, i, d), (up - down) / (2 * eps), 1e-7) << h << " " << i << " " << d;
      });
  }
}

TEST(CpuBackward, ThreadCountDoesNotChangeResult) {
  const int64_t n = 260;
  for (const char* spec : {"longformer:w=17,g=5", "strided:s=17", "dilated:w=8,d=3+dilated:w=5,d=4"})
    for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
      SCOPED_TRACE(spec);
      const Case c{spec, {2, 4, 2, n, 24}, dt};
      const Inputs in = random_inputs(c, 5);
      const Plan plan = transposed_plan(analyse(parse_pattern(spec), n));
      std::vector<uint8_t> dq, dk, dv;
      for (int threads : {1, 2, 3}) {
        AttentionOptions opt;
        opt.threads = threads;
        const Grads g = run_ours(plan, in.q, in.k, in.v, in.dout, opt, false);
        if (dq.empty()) dq = g.dq.bytes, dk = g.dk.bytes, dv = g.dv.bytes;
        EXPECT_EQ(g.dq.bytes, dq) << "threads " << threads;
        EXPECT_EQ(g.dk.bytes, dk) << "threads " << threads;
        EXPECT_EQ(g.dv.bytes, dv) << "threads " << threads;
      }
    }
}

TEST(CpuBackward, BadInputIsAnError) {
  const int64_t n = 32;
  const Case c{"window:w=2", {1, 2, 1, n, 8}};
  const Inputs in = random_inputs(c, 1);
  Tensor out(DType::F32, 1, 2, n, 8, false), dq = out, dk(DType::F32, 1, 1, n, 8, false), dv = dk;
  dq.view.data = dq.bytes.data(), dv.view.data = dv.bytes.data();
  std::vector<float> lse(size_t(2 * n), 0.0f);
  BackwardTensors t{in.q.view, in.k.view, in.v.view, out.view, in.dout.view, lse.data(), dq.view, dk.view, dv.view};
  const Plan no_transpose = make_plan(analyse(parse_pattern("window:w=2"), n));
  EXPECT_THROW(attention_backward_cpu(no_transpose, t), Error);
  const Plan plan = transposed_plan(analyse(parse_pattern("window:w=2"), n));
  BackwardTensors no_lse = t;
  no_lse.lse = nullptr;
  EXPECT_THROW(attention_backward_cpu(plan, no_lse), Error);
  BackwardTensors wrong = t;
  wrong.dk = dq.view;  // dk must have k's heads
  EXPECT_THROW(attention_backward_cpu(plan, wrong), Error);
  BackwardTensors dtype = t;
  dtype.dq.dtype = DType::F16;
  EXPECT_THROW(attention_backward_cpu(plan, dtype), Error);
  const int32_t bad_len = n + 1;
  AttentionOptions opt;
  opt.key_lengths = &bad_len;
  EXPECT_THROW(attention_backward_cpu(plan, t, opt), Error);
  const Plan other = transposed_plan(analyse(parse_pattern("window:w=2"), n + 1));
  EXPECT_THROW(attention_backward_cpu(other, t), Error);
  // Gradients over inputs (dq = dout, dk = k, dv = v, dq over the lse) or over each other (dv = dk).
  for (int which = 0; which < 5; ++which) {
    BackwardTensors alias = t;
    if (which == 0) alias.dq = t.dout;
    if (which == 1) alias.dk = t.k;
    if (which == 2) alias.dv = t.v;
    if (which == 3) alias.lse = static_cast<const float*>(static_cast<const void*>(dq.bytes.data()));
    if (which == 4) alias.dv = t.dk;
    EXPECT_THROW(attention_backward_cpu(plan, alias), Error) << which;
    EXPECT_THROW(attention_backward_reference(dense_mask(parse_pattern("window:w=2"), n).data(), alias), Error)
        << which;
  }
  const std::vector<uint8_t> mask = dense_mask(parse_pattern("window:w=2"), n);
  EXPECT_THROW(attention_backward_reference(nullptr, t), Error);
  EXPECT_NO_THROW(attention_backward_reference(mask.data(), t));
}

// NaN in a q row and Inf in a v row reach exactly the gradients the oracle says (NaN == NaN in the comparison), and
// no others: masked entries are never computed as 0 * Inf.
TEST(CpuBackward, NaNAndInfStayWhereAttended) {
  const int64_t n = 96;
  for (DType dt : {DType::F32, DType::BF16})
    for (const char* spec : {"window:w=6", "strided:s=10", "bigbird:b=16,w=1,g=1,r=2,seed=2"}) {
      const Case c{spec, {1, 2, 1, n, 16}, dt};
      SCOPED_TRACE(describe(c));
      Inputs in = random_inputs(c, 8);
      in.q.set(0, 1, 5, 3, std::nan(""));
      in.v.set(0, 0, 50, 2, INFINITY);
      const Pattern p = parse_pattern(spec);
      const std::vector<uint8_t> mask = dense_mask(p, n);
      const Plan plan = transposed_plan(analyse(p, n));
      const Grads ours = run_ours(plan, in.q, in.k, in.v, in.dout, {}, false);
      const Grads ref = run_oracle(mask, in.q, in.k, in.v, in.dout, {});
      const Grads naive =
          naive_backward(mask.data(), in.q.to_f32(), in.k.to_f32(), in.v.to_f32(), in.dout.to_f32(), dt, nullptr);
      EXPECT_LE(max_abs_err(ours.dq, ref.dq), 4 * max_abs_err(naive.dq, ref.dq) + 1e-5) << "dq";
      EXPECT_LE(max_abs_err(ours.dk, ref.dk), 4 * max_abs_err(naive.dk, ref.dk) + 1e-5) << "dk";
      EXPECT_LE(max_abs_err(ours.dv, ref.dv), 4 * max_abs_err(naive.dv, ref.dv) + 1e-5) << "dv";
      // Tainted rows: row 5 (NaN q) and the rows attending key 50 (their O and Delta are Inf). A key no tainted row
      // attends keeps finite gradients.
      std::vector<uint8_t> tainted(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) tainted[size_t(i)] = i == 5 || mask[size_t(i * n + 50)];
      for (int64_t j = 0; j < n; ++j) {
        bool clean = true;
        for (int64_t i = 0; i < n; ++i) clean &= !(tainted[size_t(i)] && mask[size_t(i * n + j)]);
        if (clean)
          for (int64_t d = 0; d < 16; ++d) ASSERT_TRUE(std::isfinite(ours.dk.get(0, 0, j, d))) << "key " << j;
      }
    }
}

// Random compositions of the families (unions, intersections, & causal), explicit masks with random edits, sizes,
// dtypes, layouts, plan options and key_lengths. SPLAT_SOAK_ITERS / SPLAT_SOAK_SEED for longer local runs.
TEST(CpuBackward, RandomisedAgainstOracle) {
  const char* iters_env = std::getenv("SPLAT_SOAK_ITERS");
  const char* seed_env = std::getenv("SPLAT_SOAK_SEED");
  const int iters = iters_env ? std::atoi(iters_env) : 16;
  std::mt19937 rng(seed_env ? uint32_t(std::atoll(seed_env)) : 20261201u);
  auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
  auto family = [&](int64_t n) -> std::string {
    const auto u = [](int64_t x) { return std::to_string(x); };
    switch (rng() % 11) {
      case 0: return "window:w=" + u(pick(0, n / 4 + 1));
      case 1: return "causal_window:w=" + u(pick(0, n / 3 + 1));
      case 2: return "dilated:w=" + u(pick(0, 12)) + ",d=" + u(pick(1, 7));
      case 3: return "causal_dilated:w=" + u(pick(0, 12)) + ",d=" + u(pick(1, 7));
      case 4: return "strided:s=" + u(pick(1, 24));
      case 5: return "fixed:l=" + u(pick(4, 32)) + ",c=" + u(pick(0, 4));
      case 6: return "blocked:b=" + u(pick(1, 64));
      case 7: return "global:g=" + u(pick(0, 9));
      case 8: return "sink:g=" + u(pick(0, 9));
      case 9: return "longformer:w=" + u(pick(0, 20)) + ",g=" + u(pick(0, 9));
      default:
        return "bigbird:b=" + u(pick(1, 32)) + ",w=" + u(pick(0, 2)) + ",g=" + u(pick(0, 2)) + ",r=" + u(pick(0, 3)) +
               ",seed=" + u(pick(0, 99));
    }
  };
  for (int it = 0; it < iters; ++it) {
    Case c;
    c.s.N = rng() % 8 == 0 ? pick(1, 5) : pick(6, 150);
    c.spec = family(c.s.N);
    if (rng() % 3 == 0) c.spec += (rng() % 2 ? "+" : "&") + family(c.s.N);
    if (rng() % 4 == 0) c.spec += "&causal";
    c.s.Hkv = pick(1, 2);
    c.s.H = c.s.Hkv * pick(1, 2);
    c.s.B = pick(1, 2);
    c.s.D = std::vector<int64_t>{1, 8, 13, 32}[rng() % 4];
    c.dt = std::vector<DType>{DType::F32, DType::F32, DType::BF16, DType::F64}[rng() % 4];
    c.bnhd = rng() % 3 == 0;
    c.popt.block_m = int32_t(std::vector<int>{1, 16, 64, 100}[rng() % 4]);
    c.popt.block_n = int32_t(std::vector<int>{4, 32, 64}[rng() % 3]);
    c.popt.permute_residues = rng() % 4 != 0;
    if (rng() % 3 == 0)
      for (int64_t b = 0; b < c.s.B; ++b) c.key_lengths.push_back(int32_t(pick(0, c.s.N)));
    if (rng() % 5 == 0) {
      std::vector<uint8_t> mask = dense_mask(parse_pattern(c.spec), c.s.N);
      const int64_t flips = pick(0, c.s.N * 2);
      for (int64_t f = 0; f < flips; ++f) mask[size_t(pick(0, c.s.N * c.s.N - 1))] ^= 1;
      c.spec = "mask from " + c.spec;
      check_plan_on(transposed_plan(analyse_mask(mask.data(), c.s.N), c.popt), mask, c);
    } else {
      check_case(c);
    }
    if (HasFatalFailure()) return;
  }
}
