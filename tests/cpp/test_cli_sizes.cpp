// Sizes the CLI cannot serve: every size product is checked (an int64 overflow is one clear error,
// exit 2, never a wrapped size).
#include <gtest/gtest.h>

#include "test_cli_util.hpp"

using namespace splat_test;


TEST(CliSizes, SizeProductsThatOverflowAreAClearError) {
  // The example (UBSan: signed overflow at B*H*N*D), and one whose wrapped product crashed.
  expect_usage_error({"flurka", "--backend", "cpu", "--method", "linear", "--batch", "511", "--heads", "65535",
                      "--seq-len", "829995071", "--head-dim", "3982", "--k", "0", "--m", "0"},
                     "too large");
  expect_usage_error({"flurka", "--backend", "cpu", "--method", "linear", "--batch", "65536", "--heads", "65536",
                      "--seq-len", "1073741824", "--head-dim", "4095", "--k", "0", "--m", "0"},
                     "too large");
  // E, F: [H, k, N]; W: [H, D, m].
  expect_usage_error({"flurka", "--backend", "cpu", "--method", "linformer", "--heads", "65536", "--seq-len",
                      "1073741824", "--head-dim", "1", "--k", "1073741824"},
                     "too large");
  // run, bench, demo: sizes within each option's range whose products are far beyond any memory.
  const std::string big = "2147483647";
  expect_usage_error({"run", "causal", "--seq-len", big, "--heads", big, "--head-dim", big, "--batch", big}, "memory");
  expect_usage_error({"bench", "--seq-len", big, "--heads", big, "--head-dim", big, "--batch", big}, "memory");
  expect_usage_error({"demo", "--seq-len", "65536", "--heads", big, "--head-dim", big, "--batch", big}, "memory");
  expect_usage_error({"flurka-quality", "--seq-len", "65536", "--heads", "256", "--head-dim", "1024"}, "memory");
}
