// The `splat` binary end to end: every bad input gives exit 2 and exactly one line on stderr; inspect
// reports exact nnz (against brute force over pattern_contains); run/--check and .npy inputs/outputs
// give the reference's answer. The binary is build/bin/splat, found relative to this test's build dir.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include "splat/attention.hpp"
#include "splat/npy.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"
#include "test_cli_util.hpp"

namespace fs = std::filesystem;
using namespace splat;

using namespace splat_test;

namespace {

int64_t brute_force_nnz(const std::string& spec, int64_t n) {
  const Pattern p = parse_pattern(spec);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) count += pattern_contains(p, n, i, j);
  return count;
}

const std::vector<std::string> kRun = {"run", "window:w=4", "--seq-len", "32", "--heads", "2", "--head-dim", "8"};

}  // namespace

TEST(Cli, HelpAndUsage) {
  CliResult r = run_cli({});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("inspect"), std::string::npos);
  EXPECT_NE(r.out.find("demo"), std::string::npos);
  for (const char* c : {"inspect", "run", "bench", "demo"}) {
    r = run_cli({c, "--help"});
    EXPECT_EQ(r.rc, 0) << c;
    EXPECT_NE(r.out.find("usage: splat"), std::string::npos) << c;
  }
  expect_usage_error({"frobnicate"}, "unknown command 'frobnicate'");
  expect_usage_error(with(kRun, {"--frobnicate"}), "unknown option '--frobnicate'");
  expect_usage_error({"inspect", "causal", "--seq-len", "8", "--json=yes"}, "takes no value");
  expect_usage_error({"inspect", "causal"}, "--seq-len is required");
  expect_usage_error({"inspect", "--seq-len", "8"}, "missing PATTERN");
  expect_usage_error({"inspect", "causal", "extra", "--seq-len", "8"}, "unexpected argument 'extra'");
  expect_usage_error({"inspect", "causal", "--seq-len"}, "needs a value");
  expect_usage_error({"inspect", "causal", "--seq-len", "8", "--seq-len", "9"}, "given twice");
}

TEST(Cli, MalformedPatternsNameThePosition) {
  expect_usage_error({"inspect", "window:w=2+", "--seq-len", "10"}, "position 11");
  expect_usage_error({"inspect", "window:w=x", "--seq-len", "10"}, "position");
  expect_usage_error({"inspect", "windoww:w=2", "--seq-len", "10"}, "position");
  expect_usage_error({"inspect", "window:w=2,q=3", "--seq-len", "10"}, "unknown parameter 'q'");
  expect_usage_error({"inspect", "blocked:b=0", "--seq-len", "10"}, "b");
  expect_usage_error({"inspect", "window:w=-1", "--seq-len", "10"}, "position");
  expect_usage_error(with({"run", "strided:s=4&"}, {"--seq-len", "16", "--heads", "1", "--head-dim", "4"}), "position");
}

TEST(Cli, BadSizes) {
  expect_usage_error({"inspect", "causal", "--seq-len", "0"}, "--seq-len");
  expect_usage_error({"inspect", "causal", "--seq-len", "-5"}, "--seq-len");
  expect_usage_error({"inspect", "causal", "--seq-len", "12abc"}, "must be an integer");
  expect_usage_error({"inspect", "causal", "--seq-len", "99999999999999999999999"}, "--seq-len");
  expect_usage_error({"run", "causal", "--seq-len", "16", "--heads", "0", "--head-dim", "4"}, "--heads");
  expect_usage_error({"run", "causal", "--seq-len", "16", "--heads", "2", "--head-dim", "-4"}, "--head-dim");
  expect_usage_error({"run", "causal", "--seq-len", "16", "--heads", "2", "--head-dim", "4", "--batch", "0"},
                     "--batch");
  expect_usage_error({"run", "causal", "--seq-len", "16", "--heads", "6", "--head-dim", "4", "--kv-heads", "4"},
                     "multiple");
  expect_usage_error({"run", "causal", "--seq-len", "16", "--heads", "2", "--head-dim", "4", "--dtype", "f128"},
                     "dtype");
  expect_usage_error({"run", "causal", "--seq-len", "16", "--heads", "2", "--head-dim", "4", "--backend", "tpu"},
                     "--backend");
  // Sizes whose buffers could never be allocated are refused up front, not by crashing.
  expect_usage_error({"run", "causal", "--seq-len", "2000000000", "--heads", "1000000", "--head-dim", "1000"},
                     "memory");
  expect_usage_error({"bench", "--heads", "6", "--kv-heads", "4"}, "multiple");
}

TEST(Cli, NpyInputErrors) {
  const NpyArray q = random_tensor(NpyDType::F32, {1, 2, 16, 4}, 1);
  const std::string qp = write_tmp("q.npy", q), kp = write_tmp("k.npy", random_tensor(NpyDType::F32, {1, 2, 16, 4}, 2));
  const std::string vp = write_tmp("v.npy", random_tensor(NpyDType::F32, {1, 2, 16, 4}, 3));
  const auto run = [&](const std::string& qq, const std::string& kk, const std::string& vv) {
    return std::vector<std::string>{"run", "window:w=2", "--q", qq, "--k", kk, "--v", vv};
  };
  EXPECT_EQ(run_cli(run(qp, kp, vp)).rc, 0);

  NpyArray ints;
  ints.dtype = NpyDType::I32;
  ints.shape = {1, 2, 16, 4};
  ints.data.assign(128 * 4, 0);
  expect_usage_error(run(write_tmp("int.npy", ints), kp, vp), "float32, float16 or float64");
  expect_usage_error(run(write_tmp("q3.npy", random_tensor(NpyDType::F32, {2, 16, 4}, 4)), kp, vp), "4-D");
  expect_usage_error(run(qp, write_tmp("kshort.npy", random_tensor(NpyDType::F32, {1, 2, 15, 4}, 5)), vp),
                     "sequence length");
  expect_usage_error(run(qp, write_tmp("kd.npy", random_tensor(NpyDType::F32, {1, 2, 16, 8}, 5)), vp), "head dim");
  expect_usage_error(run(qp, write_tmp("k16.npy", random_tensor(NpyDType::F16, {1, 2, 16, 4}, 5)), vp), "dtype");
  expect_usage_error(run(write_tmp("q3h.npy", random_tensor(NpyDType::F32, {1, 3, 16, 4}, 4)), kp, vp), "multiple");
  std::string bytes = slurp(qp);
  bytes[20] = '!';
  std::ofstream(scratch() / "corrupt.npy", std::ios::binary) << bytes;
  expect_usage_error(run((scratch() / "corrupt.npy").string(), kp, vp), "corrupt");
  std::ofstream(scratch() / "trunc.npy", std::ios::binary) << slurp(qp).substr(0, 200);
  expect_usage_error(run((scratch() / "trunc.npy").string(), kp, vp), "truncated");
  std::ofstream(scratch() / "text.npy") << "hello";
  expect_usage_error(run((scratch() / "text.npy").string(), kp, vp), "not a .npy file");
  expect_usage_error(run("/nonexistent/q.npy", kp, vp), "/nonexistent/q.npy");
  expect_usage_error({"run", "window:w=2", "--q", qp, "--k", kp}, "--v is missing");
  expect_usage_error(with(run(qp, kp, vp), {"--seq-len", "32"}), "disagrees");
  expect_usage_error({"run", "window:w=2", "--seq-len", "16", "--heads", "2", "--head-dim", "4", "--out", "o.npy"},
                     "--out needs");
  expect_usage_error({"inspect", "mask:/nonexistent/m.npy", "--seq-len", "4"}, "/nonexistent/m.npy");
  NpyArray mask;
  mask.dtype = NpyDType::Bool;
  mask.shape = {4, 4};
  mask.data.assign(16, 1);
  expect_usage_error({"inspect", "mask:" + write_tmp("m4.npy", mask), "--seq-len", "8"}, "");
  expect_usage_error({"inspect", "mask:" + qp, "--seq-len", "16"}, "mask");
}

TEST(Cli, UnwritableOutputLeavesTheExistingFileUntouched) {
  const std::string qp = write_tmp("uq.npy", random_tensor(NpyDType::F32, {1, 1, 64, 64}, 1));
  const std::string out = (scratch() / "existing.npy").string();
  std::ofstream(out) << "precious";
  const std::vector<std::string> args = {"run", "causal", "--q", qp, "--k", qp, "--v", qp, "--out", out};
  // The 16 KiB output cannot be written past a 4 KiB file size limit: the temporary file fails, the
  // target keeps its contents and no temporary file is left.
  expect_usage_error(args, "cannot write", "ulimit -f 4;");
  EXPECT_EQ(slurp(out), "precious");
  for (auto& e : fs::directory_iterator(scratch()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  // Also a failing run (bad pattern) must not touch it, and paths that cannot be written fail cleanly.
  std::vector<std::string> bad = args;
  bad[1] = "causal+";
  expect_usage_error(bad, "position");
  EXPECT_EQ(slurp(out), "precious");
  bad = args;
  bad.back() = "/nonexistent/dir/o.npy";
  expect_usage_error(bad, "cannot write");
  bad.back() = out + "/child.npy";
  expect_usage_error(bad, "cannot write");
  expect_usage_error({"inspect", "causal", "--seq-len", "64", "--png", "/nonexistent/dir/p.png"}, "cannot write");
  EXPECT_EQ(slurp(out), "precious");
  // And with no limit the same command replaces it with the result.
  EXPECT_EQ(run_cli(args).rc, 0);
  EXPECT_EQ(read_npy(out).shape, (std::vector<int64_t>{1, 1, 64, 64}));
}

TEST(Cli, InspectJsonGivesExactNnzForTheSuiteAndCompositions) {
  for (int64_t n : {64, 100, 257}) {
    std::vector<std::string> specs = suite_specs(n);
    specs.insert(specs.end(), {"causal_window:w=7+sink:g=4", "strided:s=8&causal", "dilated:w=3,d=5+global:g=2",
                               "fixed:l=16,c=4", "bigbird:b=16,w=1,g=1,r=2,seed=7&causal"});
    for (const auto& spec : specs) {
      const CliResult r = run_cli({"inspect", spec, "--seq-len", std::to_string(n), "--json"});
      ASSERT_EQ(r.rc, 0) << spec << ": " << r.err;
      EXPECT_EQ(r.err, "");
      EXPECT_EQ(json_int(r.out, "nnz"), brute_force_nnz(spec, n)) << spec << " n=" << n << "\n" << r.out;
      for (const char* key :
           {"\"density\"", "\"acsr_bytes\"", "\"csr_bytes\"", "\"waste\"", "\"segments\"", "\"regions\"", "\"tiles\""})
        EXPECT_NE(r.out.find(key), std::string::npos) << key;
      EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "one JSON object on one line";
    }
  }
  // The text form and the picture.
  const std::string png = (scratch() / "m.png").string();
  const CliResult r = run_cli({"inspect", "longformer:w=64,g=8", "--seq-len", "2000", "--png", png});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("nnz"), std::string::npos);
  EXPECT_NE(r.out.find("waste"), std::string::npos);
  const std::string bytes = slurp(png);
  ASSERT_GT(bytes.size(), 8u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
}

TEST(Cli, RunCheckPassesForTheSuite) {
  for (const auto& spec : suite_specs(192)) {
    const CliResult r = run_cli({"run", spec, "--seq-len", "192", "--heads", "4", "--kv-heads", "2", "--head-dim", "16",
                                 "--batch", "2", "--check", "--reps", "1"});
    EXPECT_EQ(r.rc, 0) << spec << ": " << r.err << r.out;
    EXPECT_NE(r.out.find("GFLOP/s"), std::string::npos);
    EXPECT_NE(r.out.find(": ok"), std::string::npos) << r.out;
  }
  const CliResult r = run_cli({"run", "causal_window:w=9+sink:g=3", "--seq-len", "77", "--heads", "2", "--head-dim",
                               "8", "--dtype", "f16", "--check", "--reps", "1"});
  EXPECT_EQ(r.rc, 0) << r.err << r.out;
}

TEST(Cli, NpyInputsGiveTheReferenceOutputInTheInputDtype) {
  for (NpyDType t : {NpyDType::F32, NpyDType::F16}) {
    NpyArray q = random_tensor(t, {2, 4, 33, 8}, 1), k = random_tensor(t, {2, 2, 33, 8}, 2),
             v = random_tensor(t, {2, 2, 33, 8}, 3);
    const std::string out = (scratch() / "o.npy").string();
    const std::string spec = "strided:s=5+sink:g=2";
    const CliResult r = run_cli({"run", spec, "--q", write_tmp("q.npy", q), "--k", write_tmp("k.npy", k), "--v",
                                 write_tmp("v.npy", v), "--out", out, "--check"});
    ASSERT_EQ(r.rc, 0) << r.err << r.out;
    NpyArray o = read_npy(out);
    EXPECT_EQ(int(o.dtype), int(t));
    ASSERT_EQ(o.shape, q.shape);
    // Our own oracle call on float32 copies of the same inputs.
    const auto f32 = [](NpyArray& a) {
      NpyArray c;
      c.dtype = NpyDType::F32;
      c.shape = a.shape;
      c.data.resize(size_t(a.elements()) * 4);
      const TensorView v = npy_tensor_view(a, "x");
      for (int64_t i = 0; i < a.elements(); ++i)
        store_element(c.data.data(), DType::F32, size_t(i), load_element(v.data, v.dtype, size_t(i)));
      return c;
    };
    NpyArray q32 = f32(q), k32 = f32(k), v32 = f32(v), ref = f32(o);
    const std::vector<uint8_t> mask = dense_mask(parse_pattern(spec), 33);
    attention_reference(mask.data(), npy_tensor_view(q32, "q"), npy_tensor_view(k32, "k"), npy_tensor_view(v32, "v"),
                        npy_tensor_view(ref, "ref"));
    const TensorView ov = npy_tensor_view(o, "o");
    double max_err = 0;
    for (int64_t i = 0; i < o.elements(); ++i) {
      const float got = load_element(ov.data, ov.dtype, size_t(i));
      const float want = load_element(ref.data.data(), DType::F32, size_t(i));
      max_err = std::max(max_err, double(std::fabs(got - want)));
    }
    EXPECT_LT(max_err, t == NpyDType::F32 ? 1e-5 : 4e-3) << npy_descr(t);
  }
}

TEST(Cli, Float64InputsAreComputedInFloat64) {
  // NumPy's default dtype: read, computed in float64 on the CPU, written back as float64, and checked
  // against the float64 reference far below float32 precision.
  const NpyArray q = random_tensor(NpyDType::F64, {1, 2, 40, 8}, 21),
                 k = random_tensor(NpyDType::F64, {1, 1, 40, 8}, 22),
                 v = random_tensor(NpyDType::F64, {1, 1, 40, 8}, 23);
  const std::string out = (scratch() / "o64.npy").string();
  const std::string spec = "causal_window:w=7+sink:g=2";
  const CliResult r = run_cli({"run", spec, "--q", write_tmp("q64.npy", q), "--k", write_tmp("k64.npy", k), "--v",
                               write_tmp("v64.npy", v), "--out", out, "--check"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("f64"), std::string::npos) << r.out;
  NpyArray o = read_npy(out);
  ASSERT_EQ(int(o.dtype), int(NpyDType::F64));
  NpyArray qc = q, kc = k, vc = v, ref = o;
  const std::vector<uint8_t> mask = dense_mask(parse_pattern(spec), 40);
  attention_reference(mask.data(), npy_tensor_view(qc, "q"), npy_tensor_view(kc, "k"), npy_tensor_view(vc, "v"),
                      npy_tensor_view(ref, "ref"));
  double max_err = 0;
  for (int64_t i = 0; i < o.elements(); ++i)
    max_err = std::max(max_err, std::fabs(load_element_f64(o.data.data(), DType::F64, size_t(i)) -
                                          load_element_f64(ref.data.data(), DType::F64, size_t(i))));
  EXPECT_LT(max_err, 1e-12);
  // Random float64 inputs too.
  const CliResult g = run_cli(
      {"run", spec, "--seq-len", "40", "--heads", "2", "--head-dim", "8", "--dtype", "f64", "--check", "--reps", "1"});
  EXPECT_EQ(g.rc, 0) << g.err << g.out;
  EXPECT_NE(g.out.find(": ok"), std::string::npos) << g.out;
}

TEST(Cli, MaskPatternFromNpy) {
  NpyArray m;
  m.dtype = NpyDType::U8;
  m.shape = {40, 40};
  std::mt19937 rng(5);
  int64_t count = 0;
  for (int i = 0; i < 1600; ++i) {
    m.data.push_back(uint8_t(rng() % 5 == 0));
    count += m.data.back();
  }
  const std::string path = write_tmp("mask.npy", m);
  const CliResult r = run_cli({"inspect", "mask:" + path, "--seq-len", "40", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(json_int(r.out, "nnz"), count);
  const CliResult run = run_cli({"run", "mask:" + path + "+window:w=1", "--seq-len", "40", "--heads", "1", "--head-dim",
                                 "8", "--check", "--reps", "1"});
  EXPECT_EQ(run.rc, 0) << run.err << run.out;
}

TEST(Cli, BenchAndDemo) {
  const std::string json = (scratch() / "bench.json").string();
  CliResult r = run_cli({"bench", "--backend", "cpu", "--seq-len", "256", "--heads", "1", "--head-dim", "16", "--reps",
                         "1", "--check", "--json", json});
  EXPECT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("[7/7]"), std::string::npos) << "progress lines on stderr: " << r.err;
  const std::string j = slurp(json);
  EXPECT_EQ(std::count(j.begin(), j.end(), '{'), 8) << j;
  EXPECT_NE(j.find("\"gflops\""), std::string::npos);
  r = run_cli({"demo", "--seq-len", "512", "--heads", "1", "--reps", "1"});
  EXPECT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("0 failed"), std::string::npos) << r.out;
}

TEST(Cli, CudaBackendWithoutAGpuIsAClearError) {
  const CliResult r = run_cli(with(kRun, {"--backend", "cuda"}));
  if (r.rc == 0) GTEST_SKIP() << "a GPU is available: --backend cuda ran";
  EXPECT_TRUE(r.rc == 1 || r.rc == 2) << r.rc;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find("cuda"), std::string::npos) << r.err;
  // auto falls back to the CPU with a one-line note.
  const CliResult a = run_cli(with(kRun, {"--backend", "auto"}));
  EXPECT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(a.err_lines(), 1) << a.err;
}

TEST(Cli, NonFiniteInputsPropagateWithoutCrashing) {
  NpyArray q = random_tensor(NpyDType::F32, {1, 1, 48, 8}, 9), k = random_tensor(NpyDType::F32, {1, 1, 48, 8}, 10);
  store_element(q.data.data(), DType::F32, 20 * 8 + 3, std::nanf(""));
  store_element(k.data.data(), DType::F32, 30 * 8 + 1, INFINITY);
  const std::string out = (scratch() / "nan_out.npy").string();
  const CliResult r = run_cli({"run", "window:w=3", "--q", write_tmp("qn.npy", q), "--k", write_tmp("kn.npy", k), "--v",
                               write_tmp("vn.npy", q), "--out", out, "--check"});
  EXPECT_EQ(r.rc, 0) << r.err << r.out;
  NpyArray o = read_npy(out);
  const TensorView ov = npy_tensor_view(o, "o");
  // Row 0 sees keys 0..3 only: finite. Row 20 has a NaN query: NaN.
  EXPECT_TRUE(std::isfinite(load_element(ov.data, ov.dtype, 0)));
  EXPECT_TRUE(std::isnan(load_element(ov.data, ov.dtype, 20 * 8)));
}
