// `splat recommend`: the candidates it lists for a budget, the fastest it names, and its usage errors.
#include <gtest/gtest.h>

#include "test_cli_util.hpp"

namespace {

using splat_test::expect_usage_error;
using splat_test::run_cli;

TEST(CliRecommend, ListsDenseSparseAndFlurkaWithinTheBudget) {
  const auto r = run_cli({"recommend", "--seq-len", "16384", "--head-dim", "64", "--error", "0.8", "--pattern",
                          "window:w=1024;strided:s=128"});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* s : {"dense (exact, cuDNN)", "dense (exact, splat)", "window:w=1024", "strided:s=128", "linformer",
                        "flurka-favor", "fastest: "})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing in:\n" << r.out;
  // clustered inputs: linformer's smallest k within 0.8 is 128 (0.789), flurka-elu never gets there (0.922)
  EXPECT_NE(r.out.find("linformer                            128"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not considered: flurka-elu"), std::string::npos) << r.out;
  // the default suite is not listed when patterns are given
  EXPECT_EQ(r.out.find("blocked:"), std::string::npos) << r.out;
}

TEST(CliRecommend, TightBudgetLeavesOnlyExactAndSparse) {
  const auto r = run_cli({"recommend", "--seq-len", "4096", "--head-dim", "64", "--batch", "4", "--error", "0.1",
                          "--pattern", "window:w=256"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("fastest: window:w=256"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\nlinformer"), std::string::npos) << r.out;
}

TEST(CliRecommend, ShortSequencesStayExact) {
  const auto r = run_cli({"recommend", "--seq-len", "16", "--head-dim", "64"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("fastest: dense (exact, cuDNN) (predicted"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the exact baseline)"), std::string::npos) << r.out;
}

TEST(CliRecommend, CausalAndTrainModes) {
  auto r = run_cli({"recommend", "--seq-len", "16384", "--head-dim", "64", "--causal", "--error", "0.95"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("causal (exact, splat)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not considered: linformer (no causal CUDA path)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("flurka-favor"), std::string::npos) << r.out;
  r = run_cli({"recommend", "--seq-len", "4096", "--head-dim", "128", "--train", "--pattern", "blocked:b=512"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("forward + backward"), std::string::npos) << r.out;
}

TEST(CliRecommend, BadInputIsAUsageError) {
  expect_usage_error({"recommend", "--head-dim", "64"}, "--seq-len");
  expect_usage_error({"recommend", "--seq-len", "0", "--head-dim", "64"}, "--seq-len");
  expect_usage_error({"recommend", "--seq-len", "64", "--head-dim", "64", "--error", "0"}, "--error");
  expect_usage_error({"recommend", "--seq-len", "64", "--head-dim", "64", "--inputs", "foo"}, "--inputs");
  expect_usage_error({"recommend", "--seq-len", "64", "--head-dim", "64", "--pattern", ";"}, "--pattern");
  expect_usage_error({"recommend", "--seq-len", "64", "--head-dim", "64", "--pattern", "bogus:x=1"}, "bogus");
  expect_usage_error({"recommend", "--seq-len", "64", "--head-dim", "64", "--frobnicate"}, "--frobnicate");
}

}  // namespace
