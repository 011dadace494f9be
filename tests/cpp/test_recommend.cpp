// splat::recommend: the candidates for a budget, their order, the causal intersection, and bad queries.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "splat/error.hpp"
#include "splat/recommend.hpp"

namespace {

using splat::Candidate;
using splat::recommend;
using splat::RecommendQuery;

const Candidate* find(const splat::Recommendation& r, const std::string& name) {
  for (const Candidate& c : r.candidates)
    if (c.name == name) return &c;
  return nullptr;
}

RecommendQuery query(int64_t n, int64_t d) {
  RecommendQuery q;
  q.seq_len = n;
  q.head_dim = d;
  return q;
}

TEST(Recommend, FastestIsTheMinimumAndTheBaselineComesFirst) {
  RecommendQuery q = query(16384, 64);
  q.patterns = {"window:w=1024", "strided:s=128"};
  const auto r = recommend(q);
  ASSERT_GE(r.candidates.size(), 4u);
  EXPECT_EQ(r.candidates[0].name, "dense (exact, cuDNN)");
  EXPECT_TRUE(r.candidates[0].exact);
  for (const Candidate& c : r.candidates) {
    EXPECT_GT(c.predicted_s, 0) << c.name;
    EXPECT_GE(c.predicted_s, c.floor_s) << c.name;  // a model that beats its own floor is broken
    EXPECT_LE(r.candidates[r.fastest].predicted_s, c.predicted_s) << c.name;
  }
  const Candidate* lin = find(r, "linformer");
  ASSERT_NE(lin, nullptr);
  EXPECT_EQ(lin->k, 128);  // clustered inputs: the smallest k within 0.8 (0.789)
  EXPECT_LE(lin->error, 0.8);
  EXPECT_EQ(find(r, "flurka-elu"), nullptr);  // 0.922 at best
  EXPECT_NE(std::find_if(r.skipped.begin(), r.skipped.end(),
                         [](const std::string& s) { return s.rfind("flurka-elu", 0) == 0; }),
            r.skipped.end());
}

TEST(Recommend, TrainingCostsMoreThanTheForward) {
  RecommendQuery q = query(4096, 128);
  q.patterns = {"blocked:b=512"};
  const auto fwd = recommend(q);
  q.train = true;
  const auto train = recommend(q);
  ASSERT_EQ(fwd.candidates.size(), train.candidates.size());
  for (size_t i = 0; i < fwd.candidates.size(); ++i)
    EXPECT_GT(train.candidates[i].predicted_s, fwd.candidates[i].predicted_s) << fwd.candidates[i].name;
}

TEST(Recommend, CausalQueriesIntersectThePatternsWithCausal) {
  RecommendQuery q = query(16384, 64);
  q.causal = true;
  q.error_budget = 0.95;
  q.patterns = {"window:w=1024", "causal_window:w=2048", "strided:s=128&causal"};
  const auto r = recommend(q);
  EXPECT_EQ(r.candidates[0].name, "causal (exact, splat)");
  EXPECT_NE(find(r, "(window:w=1024)&causal"), nullptr);
  EXPECT_NE(find(r, "causal_window:w=2048"), nullptr);
  EXPECT_NE(find(r, "strided:s=128&causal"), nullptr);
  EXPECT_EQ(find(r, "window:w=1024"), nullptr);
  const Candidate* f = find(r, "flurka-favor");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->k, 64);  // the causal path's r
  EXPECT_EQ(find(r, "linformer"), nullptr);
}

TEST(Recommend, BadQueriesThrow) {
  EXPECT_THROW(recommend(query(0, 64)), splat::Error);
  EXPECT_THROW(recommend(query(64, 0)), splat::Error);
  RecommendQuery q = query(64, 64);
  q.error_budget = 0;
  EXPECT_THROW(recommend(q), splat::Error);
  q = query(64, 64);
  q.patterns = {"bogus:x=1"};
  EXPECT_THROW(recommend(q), splat::Error);
}

}  // namespace
