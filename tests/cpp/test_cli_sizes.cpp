// Sizes the CLI cannot serve: every size product is checked (an int64 overflow is one clear error,
// exit 2, never a wrapped size), the memory guard counts all of a run's memory (the CPU backend's
// per-thread scratch too) against the machine's and the process's limits, and an allocation that
// fails anyway is "splat: error: out of memory ..." with exit 2 (like the guard's refusal), never an abort.
#include <gtest/gtest.h>

#include "test_cli_util.hpp"

using namespace splat_test;

namespace {

// ulimit -v cannot be combined with AddressSanitizer (it reserves terabytes of address space).
bool address_sanitizer() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#endif
#endif
  return false;
}

}  // namespace

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

TEST(CliSizes, TheMemoryGuardCountsPerThreadScratch) {
  if (address_sanitizer()) GTEST_SKIP() << "ulimit -v does not work under AddressSanitizer";
  // Four tensors of 10^7 floats are 160 MB, but each CPU thread's tile scratch holds ~7 * 64 * D floats
  // (~18 GB here): two threads need ~36 GB, beyond a 4 GB address space limit (and this machine).
  expect_usage_error(
      {"run", "window:w=1", "--seq-len", "1", "--heads", "1", "--head-dim", "10000000", "--threads", "2"},
      "scratch would need", "ulimit -v 4000000;");
  // The same sizes at a small D run.
  const CliResult r = run_cli(
      {"run", "window:w=1", "--seq-len", "1", "--heads", "1", "--head-dim", "1000", "--threads", "2", "--reps", "1"},
      "ulimit -v 4000000;");
  EXPECT_EQ(r.rc, 0) << r.err;
}

TEST(CliSizes, OutOfMemoryIsAnErrorMessageNotAnAbort) {
  if (address_sanitizer()) GTEST_SKIP() << "ulimit -v does not work under AddressSanitizer";
  // The plan of a 2*10^8-row window needs more than 300 MB: the allocation fails in the analysis.
  expect_usage_error({"inspect", "window:w=1", "--seq-len", "200000000"}, "out of memory", "ulimit -v 300000;");
}
