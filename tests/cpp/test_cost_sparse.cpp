// The sparse-attention cost model against the H200 rows it was fitted to (docs/BENCHMARKS-cuda.md "Kernel v8",
// docs/BENCHMARKS-backward.md first table): broken constants or plan accounting move a row out of range.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "splat/cost.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace {

splat::Plan plan_of(const std::string& spec, int64_t n) {
  return splat::make_plan(splat::analyse(splat::parse_pattern(spec), n));
}

struct Row {
  const char* spec;
  int64_t N, B, D;
  double ms;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST(SparseCost, ForwardWithinStatedRangeOfV8Rows) {
  const std::vector<Row> rows = {
      {"window:w=1024", 16384, 1, 128, 0.781},
      {"window:w=1024", 16384, 1, 64, 0.500},
      {"causal_window:w=2048", 16384, 1, 128, 0.762},
      {"causal_window:w=2048", 16384, 1, 64, 0.505},
      {"blocked:b=2048", 16384, 1, 128, 0.731},
      {"blocked:b=2048", 16384, 1, 64, 0.428},
      {"window:w=256", 4096, 4, 128, 0.333},
      {"window:w=256", 4096, 4, 64, 0.212},
      {"causal_window:w=512", 4096, 4, 128, 0.328},
      {"causal_window:w=512", 4096, 4, 64, 0.215},
      {"blocked:b=512", 4096, 4, 128, 0.264},
      {"blocked:b=512", 4096, 4, 64, 0.167},
      {"dense", 8192, 2, 128, 2.357},
      {"causal", 8192, 2, 128, 1.261},
  };
  std::vector<double> q;
  for (const Row& r : rows) {
    const auto c = splat::sparse_attention_cost(plan_of(r.spec, r.N), r.B, 16, r.D);
    const double x = c.predicted_s * 1e3 / r.ms;
    EXPECT_GE(x, 0.89) << r.spec << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(x, 1.14) << r.spec << " N=" << r.N << " D=" << r.D;
    EXPECT_LE(c.floor_s, c.predicted_s);
    q.push_back(x);
  }
  EXPECT_NEAR(median(q), 0.95, 0.05);
}

TEST(SparseCost, TrainingWithinStatedRangeOfBackwardRows) {
  const char* specs16k[] = {"window:w=1024",
                            "causal_window:w=2048",
                            "dilated:w=1024,d=4",
                            "strided:s=128",
                            "blocked:b=2048",
                            "longformer:w=1024,g=32",
                            "bigbird:b=64,w=1,g=2,r=3,seed=1"};
  const double ms16k[] = {3.128, 3.007, 2.960, 2.012, 3.058, 3.336, 1.702};
  const char* specs4k[] = {"window:w=256",
                           "causal_window:w=512",
                           "dilated:w=256,d=4",
                           "strided:s=64",
                           "blocked:b=512",
                           "longformer:w=256,g=32",
                           "bigbird:b=64,w=1,g=2,r=3,seed=1"};
  const double ms4k[] = {1.128, 1.161, 1.251, 1.302, 1.054, 1.121, 1.243};
  std::vector<double> q;
  for (int i = 0; i < 7; ++i) {
    const double a = splat::sparse_attention_cost(plan_of(specs16k[i], 16384), 1, 16, 128).train_predicted_s * 1e3;
    const double b = splat::sparse_attention_cost(plan_of(specs4k[i], 4096), 4, 16, 64).train_predicted_s * 1e3;
    for (double x : {a / ms16k[i], b / ms4k[i]}) {
      EXPECT_GE(x, 0.89) << specs16k[i] << " / " << specs4k[i];
      EXPECT_LE(x, 1.09) << specs16k[i] << " / " << specs4k[i];
      q.push_back(x);
    }
  }
  EXPECT_NEAR(median(q), 1.0, 0.05);
}

TEST(SparseCost, MoreEntriesCostMore) {
  double last = 0;
  int64_t last_nnz = 0;
  for (int w : {64, 256, 1024, 4096}) {
    const auto c = splat::sparse_attention_cost(plan_of("window:w=" + std::to_string(w), 16384), 1, 16, 64);
    EXPECT_GT(c.work.nnz, last_nnz);
    EXPECT_GT(c.predicted_s, last);
    EXPECT_GT(c.train_predicted_s, c.predicted_s);
    last = c.predicted_s, last_nnz = c.work.nnz;
  }
  const auto p = plan_of("causal_window:w=512", 4096);
  EXPECT_LT(splat::sparse_attention_cost(p, 1, 16, 64).predicted_s,
            splat::sparse_attention_cost(p, 2, 16, 64).predicted_s);
  EXPECT_LT(splat::sparse_attention_cost(p, 1, 16, 64).predicted_s,
            splat::sparse_attention_cost(p, 1, 16, 128).predicted_s);
  EXPECT_LT(splat::sparse_attention_cost(p, 1, 16, 64).predicted_s,
            splat::sparse_attention_cost(plan_of("dense", 4096), 1, 16, 64).predicted_s);
}

TEST(SparseCost, PlanWorkMatchesThePlan) {
  const auto p = plan_of("strided:s=64", 4096);
  const auto w = splat::plan_work(p);
  EXPECT_EQ(w.nnz, p.useful);
  EXPECT_EQ(w.computed, p.computed);
  EXPECT_EQ(w.tiles, p.tile_count());
}

TEST(SparseCost, BadInputIsAnError) {
  const auto p = plan_of("window:w=16", 256);
  EXPECT_THROW(splat::sparse_attention_cost(p, 0, 16, 64), splat::Error);
  EXPECT_THROW(splat::sparse_attention_cost(p, 1, 16, 0), splat::Error);
  EXPECT_THROW(splat::sparse_attention_cost(p, 1, 16, 64, 2, 0.0), splat::Error);
}

}  // namespace
