// Shared by the CLI tests: run the `splat` binary (build/bin/splat, found relative to the test's build
// dir) in a shell, capture its exit code, stdout and stderr; a per-process scratch directory.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "splat/npy.hpp"
#include "splat/tensor.hpp"

namespace splat_test {

namespace fs = std::filesystem;

struct Scratch {
  fs::path dir = fs::temp_directory_path() / ("splat_test_cli_" + std::to_string(getpid()));
  Scratch() { fs::create_directories(dir); }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
inline fs::path scratch() {
  static const Scratch s;
  return s.dir;
}

// build/tests/cpp (SPLAT_TEST_DATA, set by ctest) or this executable's directory -> build/bin/splat.
inline std::string splat_binary() {
  std::vector<fs::path> dirs;
  if (const char* d = std::getenv("SPLAT_TEST_DATA")) dirs.push_back(d);
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) dirs.push_back(self.parent_path());
  for (const auto& d : dirs) {
    const fs::path p = d / ".." / ".." / "bin" / "splat";
    if (fs::exists(p)) return fs::canonical(p).string();
  }
  return {};
}

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct CliResult {
  int rc = -1;
  std::string out, err;
  int err_lines() const { return int(std::count(err.begin(), err.end(), '\n')); }
};

// Runs `splat args...` (after a shell prefix such as "ulimit -f 8;"), capturing exit code and output.
inline CliResult run_cli(const std::vector<std::string>& args, const std::string& prefix = "") {
  static const std::string bin = splat_binary();
  CliResult r;
  if (bin.empty()) {
    ADD_FAILURE() << "build/bin/splat not found (build the splat_cli target)";
    return r;
  }
  std::string cmd = prefix + " " + quote(bin);
  for (const auto& a : args) cmd += " " + quote(a);
  const fs::path out = scratch() / "stdout.txt", err = scratch() / "stderr.txt";
  cmd += " >" + quote(out.string()) + " 2>" + quote(err.string());
  const int status = std::system(("sh -c " + quote(cmd)).c_str());
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  r.out = slurp(out), r.err = slurp(err);
  return r;
}

// Exit 2 and one line "splat: error: ..." containing `needle`.
inline void expect_usage_error(const std::vector<std::string>& args, const std::string& needle,
                               const std::string& prefix = "") {
  const CliResult r = run_cli(args, prefix);
  std::string all;
  for (const auto& a : args) all += a + " ";
  EXPECT_EQ(r.rc, 2) << all << "\nstderr: " << r.err << "\nstdout: " << r.out;
  EXPECT_EQ(r.err_lines(), 1) << all << "\nstderr: " << r.err;
  EXPECT_EQ(r.err.rfind("splat: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << all << "\nexpected '" << needle << "' in: " << r.err;
}

inline int64_t json_int(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\": (-?[0-9]+)"))) return -1;
  return std::stoll(m[1]);
}

inline splat::NpyArray random_tensor(splat::NpyDType t, std::vector<int64_t> shape, uint32_t seed) {
  splat::NpyArray a;
  a.dtype = t;
  a.shape = std::move(shape);
  a.data.resize(size_t(a.elements()) * splat::npy_item_size(t));
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const splat::DType dt = t == splat::NpyDType::F32   ? splat::DType::F32
                          : t == splat::NpyDType::F64 ? splat::DType::F64
                                                      : splat::DType::F16;
  for (int64_t i = 0; i < a.elements(); ++i) splat::store_element(a.data.data(), dt, size_t(i), dist(rng));
  return a;
}

inline std::string write_tmp(const std::string& name, const splat::NpyArray& a) {
  const std::string p = (scratch() / name).string();
  splat::write_npy(p, a);
  return p;
}

inline std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

}  // namespace splat_test
