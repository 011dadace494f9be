// Option parsing and the rough edges of the commands: a flag is never taken as a value, values are
// never empty, .npy inputs and size options do not mix, a failed --check writes nothing, every --json
// is valid UTF-8 JSON whatever bytes a path holds, and empty problems are refused the same way everywhere.
#include <gtest/gtest.h>

#include <cmath>

#include "splat/npy.hpp"
#include "test_cli_util.hpp"

using namespace splat;
using namespace splat_test;

namespace {

const std::vector<std::string> kRun = {"run", "window:w=4", "--seq-len", "32", "--heads", "2", "--head-dim", "8"};

// Strict UTF-8 (RFC 3629) check of a whole string.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80                 ? 1
                 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    const unsigned char c1 = static_cast<unsigned char>(len > 1 ? s[i + 1] : 0);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
      return false;
    i += len;
  }
  return true;
}

// Inside every JSON string literal: no raw control byte, only the escapes JSON knows.
bool json_strings_well_formed(const std::string& j) {
  bool in = false;
  for (size_t i = 0; i < j.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(j[i]);
    if (!in) {
      in = c == '"';
      continue;
    }
    if (c == '"') {
      in = false;
    } else if (c < 0x20) {
      return false;
    } else if (c == '\\') {
      const char e = i + 1 < j.size() ? j[i + 1] : 0;
      if (std::string("\"\\/bfnrtu").find(e) == std::string::npos) return false;
      ++i;
    }
  }
  return !in;
}

}  // namespace

TEST(CliArgs, AFlagIsNeverSwallowedAsAValue) {
  const std::string q = write_tmp("aq.npy", random_tensor(NpyDType::F32, {1, 1, 16, 4}, 1));
  const std::vector<std::string> files = {"run", "window:w=2", "--q", q, "--k", q, "--v", q};
  expect_usage_error(with(files, {"--out", "--check"}), "--out=");
  EXPECT_FALSE(fs::exists("--check"));
  EXPECT_FALSE(fs::exists(scratch() / "--check"));
  expect_usage_error({"inspect", "causal", "--seq-len", "--json"}, "'--seq-len' needs a value");
  expect_usage_error(with(kRun, {"--backend", "--check"}), "--backend");
  // The explicit form still gives a value that starts with dashes.
  const std::string odd = (scratch() / "--odd.npy").string();
  const CliResult r = run_cli(with(files, {"--out=" + odd}));
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(fs::exists(odd));
  // Negative numbers are values, not flags (and then out of range).
  expect_usage_error(with(kRun, {"--seed", "-3"}), "--seed");
}

TEST(CliArgs, EmptyValuesAreRefused) {
  expect_usage_error(with(kRun, {"--backend="}), "non-empty");
  expect_usage_error({"codegen", "causal", "--seq-len", "64", "--head-dim", "64", "--arch="}, "--arch");
  expect_usage_error({"inspect", "causal", "--seq-len", "16", "--png="}, "non-empty");
  expect_usage_error({"flurka", "--method", "linear", "--seq-len", "16", "--heads", "1", "--head-dim", "4", "--out="},
                     "non-empty");
}

TEST(CliArgs, FailedCheckLeavesTheOutputUntouched) {
  const fs::path out = scratch() / "checked.npy";
  std::ofstream(out) << "precious";
  // run: f16 inputs cannot meet a zero tolerance.
  const std::string q16 = write_tmp("c16.npy", random_tensor(NpyDType::F16, {1, 2, 24, 8}, 3));
  CliResult r = run_cli(
      {"run", "window:w=3", "--q", q16, "--k", q16, "--v", q16, "--check", "--tol", "0", "--out", out.string()});
  EXPECT_EQ(r.rc, 1) << r.err << r.out;
  EXPECT_NE(r.out.find("FAILED"), std::string::npos) << r.out;
  EXPECT_EQ(slurp(out), "precious");
  // flurka: a NaN query makes the check fail (the output is not finite).
  NpyArray qn = random_tensor(NpyDType::F32, {1, 1, 16, 4}, 4);
  store_element(qn.data.data(), DType::F32, 5, std::nanf(""));
  const std::string qp = write_tmp("fq.npy", qn),
                    kp = write_tmp("fk.npy", random_tensor(NpyDType::F32, {1, 1, 16, 4}, 5));
  r = run_cli({"flurka", "--method", "linear", "--backend", "cpu", "--q", qp, "--k-in", kp, "--v", kp, "--check",
               "--out", out.string()});
  EXPECT_EQ(r.rc, 1) << r.err << r.out;
  EXPECT_EQ(slurp(out), "precious");
  // A passing check writes it.
  r = run_cli({"flurka", "--method", "linear", "--backend", "cpu", "--q", kp, "--k-in", kp, "--v", kp, "--check",
               "--out", out.string()});
  EXPECT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_EQ(read_npy(out.string()).shape, (std::vector<int64_t>{1, 1, 16, 4}));
}

TEST(CliArgs, FlurkaNpyInputsConflictWithSizeOptions) {
  const std::string p = write_tmp("nq.npy", random_tensor(NpyDType::F32, {1, 2, 16, 4}, 6));
  const std::vector<std::string> base = {"flurka", "--method", "linear", "--backend", "cpu", "--q",
                                         p,        "--k-in",   p,        "--v",       p};
  EXPECT_EQ(run_cli(base).rc, 0);
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{{"--seq-len", "16"},
                                                                                     {"--heads", "2"},
                                                                                     {"--head-dim", "4"},
                                                                                     {"--batch", "1"},
                                                                                     {"--dtype", "f16"},
                                                                                     {"--k", "4"},
                                                                                     {"--m", "4"},
                                                                                     {"--seed", "3"},
                                                                                     {"--shared"}})
    expect_usage_error(with(base, extra), extra[0]);
}

TEST(CliArgs, FlurkaPlanRefusesAProjectionLongerThanTheSequence) {
  expect_usage_error({"flurka-plan", "--seq-len", "100", "--head-dim", "64"}, "--k");
  expect_usage_error({"flurka-plan", "--seq-len", "100", "--head-dim", "64", "--k", "256"}, "--k");
  const CliResult r = run_cli({"flurka-plan", "--seq-len", "100", "--head-dim", "64", "--k", "50", "--m", "64"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("recommendation"), std::string::npos);
}

TEST(CliArgs, JsonIsValidUtf8WhateverBytesAPathHolds) {
  NpyArray m;
  m.dtype = NpyDType::Bool;
  m.shape = {8, 8};
  m.data.assign(64, 1);
  // A file name with a byte that is not UTF-8, a control character and a quote.
  const std::string name = std::string("m\xff\x01\"q\xc3(.npy");
  write_tmp(name, m);
  const std::string spec = "mask:" + (scratch() / name).string();
  const CliResult r = run_cli({"inspect", spec, "--seq-len", "8", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(valid_utf8(r.out)) << r.out;
  EXPECT_TRUE(json_strings_well_formed(r.out)) << r.out;
  EXPECT_NE(r.out.find("\\ufffd"), std::string::npos) << r.out;
  EXPECT_EQ(json_int(r.out, "nnz"), 64);
}

TEST(CliArgs, ControlBytesInMessagesAreEscaped) {
  // A path with an escape sequence is shown escaped in the one-line message, not sent to the terminal.
  const std::string p = "/nonexistent/\x1b[2Jq.npy";
  expect_usage_error({"run", "causal", "--q", p, "--k", p, "--v", p}, "/nonexistent/\\x1b[2Jq.npy");
}

TEST(CliArgs, EmptyProblemsAreRefusedTheSameWayEverywhere) {
  // Documented in --help: sizes are >= 1; N = 0 or B = 0 is an error (exit 2) naming the size.
  expect_usage_error({"inspect", "causal", "--seq-len", "0"}, "--seq-len");
  expect_usage_error(with(kRun, {"--batch", "0"}), "--batch");
  expect_usage_error({"run", "causal", "--seq-len", "0", "--heads", "1", "--head-dim", "4"}, "--seq-len");
  expect_usage_error({"bench", "--seq-len", "0"}, "--seq-len");
  expect_usage_error({"flurka", "--method", "linear", "--seq-len", "0", "--heads", "1", "--head-dim", "4"},
                     "--seq-len");
  expect_usage_error(
      {"flurka", "--method", "linear", "--seq-len", "8", "--heads", "1", "--head-dim", "4", "--batch", "0"}, "--batch");
  expect_usage_error({"flurka-plan", "--seq-len", "0", "--head-dim", "4"}, "--seq-len");
  NpyArray empty;
  empty.dtype = NpyDType::F32;
  empty.shape = {0, 1, 16, 4};
  const std::string e = write_tmp("empty.npy", empty);
  expect_usage_error({"run", "causal", "--q", e, "--k", e, "--v", e}, "empty");
  expect_usage_error({"flurka", "--method", "linear", "--q", e, "--k-in", e, "--v", e}, "empty");
  for (const char* c : {"run", "flurka", "bench", "inspect"}) {
    const CliResult r = run_cli({c, "--help"});
    EXPECT_NE(r.out.find("empty"), std::string::npos) << c << " --help says what an empty problem does";
  }
}
