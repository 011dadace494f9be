// The FLuRKA cost model against the H200 rows it was fitted to (docs/BENCHMARKS-flurka.md fair table, the c3
// causal rows of docs/BENCHMARKS-flurka.md): broken constants or a broken formula move a row out of the stated range.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace {

using splat::FlurkaMethod;

struct Row {
  int64_t B, H, N, D;
  const char* method;
  double fwd_ms, train_ms;
};
// "fwd splat ms" and "fwd+bwd splat ms" of the fair table (k = m = 256, per-head E, F, W, bf16).
const std::vector<Row> kRows = {
    {4, 16, 4096, 64, "flurka-favor", 0.264, 1.286},     {4, 16, 4096, 64, "flurka-elu", 0.289, 1.287},
    {4, 16, 4096, 64, "flurka-relu", 0.284, 1.345},      {4, 16, 4096, 64, "linformer", 0.291, 1.374},
    {4, 16, 4096, 64, "performer-favor", 0.312, 1.303},  {4, 16, 4096, 64, "performer-relu", 0.272, 1.188},
    {4, 16, 4096, 64, "linear", 0.216, 0.974},           {1, 16, 16384, 64, "flurka-favor", 0.314, 1.274},
    {1, 16, 16384, 64, "flurka-elu", 0.268, 1.074},      {1, 16, 16384, 64, "flurka-relu", 0.308, 1.330},
    {1, 16, 16384, 64, "linformer", 0.293, 1.412},       {1, 16, 16384, 64, "performer-favor", 0.315, 1.118},
    {1, 16, 16384, 64, "performer-relu", 0.268, 1.043},  {1, 16, 16384, 64, "linear", 0.197, 0.873},
    {4, 16, 4096, 128, "flurka-favor", 0.480, 2.101},    {4, 16, 4096, 128, "flurka-elu", 0.437, 1.702},
    {4, 16, 4096, 128, "flurka-relu", 0.481, 2.219},     {4, 16, 4096, 128, "linformer", 0.491, 2.109},
    {4, 16, 4096, 128, "performer-favor", 0.641, 2.094}, {4, 16, 4096, 128, "performer-relu", 0.542, 1.889},
    {4, 16, 4096, 128, "linear", 0.389, 1.401},
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST(FlurkaCost, ForwardAndTrainingWithinStatedRangeOfH200Rows) {
  std::vector<double> fwd, train;
  for (const Row& r : kRows) {
    const auto c = splat::flurka_cost(splat::parse_flurka_method(r.method), r.B, r.H, r.N, r.D, 256, 256, 2, false);
    const double f = c.predicted_s * 1e3 / r.fwd_ms, t = c.train_predicted_s * 1e3 / r.train_ms;
    EXPECT_GE(f, 0.74) << r.method << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(f, 1.24) << r.method << " N=" << r.N << " D=" << r.D;
    EXPECT_GE(t, 0.86) << r.method << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(t, 1.28) << r.method << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(c.floor_s, c.predicted_s);
    fwd.push_back(f), train.push_back(t);
  }
  EXPECT_NEAR(median(fwd), 1.0, 0.05);
  EXPECT_NEAR(median(train), 1.0, 0.05);
}

TEST(FlurkaCost, CausalWithinStatedRangeOfC3Rows) {
  struct C {
    int64_t B, N, D;
    const char* method;
    double ms;
  };
  // the tensor-core causal forward on the H200 (commit 5fb7e29; docs/BENCHMARKS-flurka.md), C = 256, r = 64, m = 256
  const std::vector<C> rows = {
      {4, 4096, 64, "flurka-favor", 0.454},  {4, 4096, 64, "flurka-elu", 0.284},  {4, 4096, 64, "flurka-relu", 0.416},
      {1, 16384, 64, "flurka-favor", 0.476}, {1, 16384, 64, "flurka-elu", 0.286}, {1, 16384, 64, "flurka-relu", 0.433},
      {4, 4096, 128, "flurka-favor", 0.784}, {4, 4096, 128, "flurka-elu", 0.561}, {4, 4096, 128, "flurka-relu", 0.746}};
  for (const C& r : rows) {
    const auto c = splat::flurka_causal_cost(splat::parse_flurka_method(r.method), r.B, 16, r.N, r.D, 256, 64, 256, 2);
    const double q = c.predicted_s * 1e3 / r.ms;
    EXPECT_GE(q, 0.80) << r.method << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(q, 1.22) << r.method << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(c.floor_s, c.predicted_s);
  }
}

TEST(FlurkaCost, DenseWithinStatedRangeOfCudnnRows) {
  struct C {
    int64_t B, N, D;
    double ms;
  };
  // cuDNN dense SDPA forward: docs/BENCHMARKS-cuda.md v8 table and the fair table of BENCHMARKS-flurka.md
  const std::vector<C> rows = {{1, 16384, 128, 3.699}, {1, 16384, 64, 2.477}, {4, 4096, 128, 0.886},
                               {4, 4096, 64, 0.654},   {2, 8192, 128, 1.842}, {4, 4096, 64, 0.631},
                               {1, 16384, 64, 2.331}};
  for (const C& r : rows) {
    const double q = splat::dense_attention_cost(r.B, 16, r.N, r.D, 2).predicted_s * 1e3 / r.ms;
    EXPECT_GE(q, 0.95) << "N=" << r.N << " D=" << r.D;
    EXPECT_LE(q, 1.08) << "N=" << r.N << " D=" << r.D;
  }
}

TEST(FlurkaCost, MonotoneInSizes) {
  for (FlurkaMethod m : splat::all_flurka_methods()) {
    const double base = splat::flurka_cost(m, 1, 16, 16384, 64, 256, 256, 2, false).predicted_s;
    EXPECT_LT(base, splat::flurka_cost(m, 1, 16, 65536, 64, 256, 256, 2, false).predicted_s);
    EXPECT_LT(base, splat::flurka_cost(m, 4, 16, 16384, 64, 256, 256, 2, false).predicted_s);
    EXPECT_LE(base, splat::flurka_cost(m, 1, 16, 16384, 128, 256, 256, 2, false).predicted_s);
  }
  const double d1 = splat::dense_attention_cost(1, 16, 4096, 64, 2).predicted_s;
  EXPECT_LT(d1, splat::dense_attention_cost(1, 16, 8192, 64, 2).predicted_s);
  EXPECT_LT(splat::flurka_causal_cost(FlurkaMethod::FlurkaFavor, 1, 16, 4096, 64, 256, 64, 256, 2).predicted_s,
            splat::flurka_causal_cost(FlurkaMethod::FlurkaFavor, 1, 16, 8192, 64, 256, 64, 256, 2).predicted_s);
}

TEST(FlurkaCost, CausalOnlyForItsMethodsAndPositiveSizes) {
  EXPECT_THROW(splat::flurka_causal_cost(FlurkaMethod::Linformer, 1, 16, 4096, 64, 256, 64, 256, 2), splat::Error);
  EXPECT_THROW(splat::flurka_causal_cost(FlurkaMethod::FlurkaFavor, 1, 16, 4096, 64, 0, 64, 256, 2), splat::Error);
}

}  // namespace
