// CUDA code generation and the kernel cache, without a GPU: every suite pattern's kernels compile with
// NVRTC for sm_80 and sm_90 and their SASS holds tensor-core instructions (HMMA, via cuobjdump); cache
// entries are content-addressed, validated (a corrupt or truncated entry is rebuilt) and written
// atomically, also under concurrent writers.
#include <gtest/gtest.h>
#ifndef SPLAT_WITH_CUDA
TEST(CudaCodegen, BuiltWithoutCuda) {
  GTEST_SKIP() << "splat was built without the CUDA backend (SPLAT_WITH_CUDA=OFF)";
}
#else
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "jit/decode_spec.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/kernel_spec.hpp"
#include "jit/nvrtc_compile.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/pattern.hpp"
#include "splat/suite.hpp"

using namespace splat;
namespace fs = std::filesystem;

namespace {

// A private cache directory per test process, so tests neither see nor disturb the user's cache.
class CacheDir : public ::testing::Environment {
 public:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("splat-test-cache-" + std::to_string(getpid()));
    fs::remove_all(dir);
    setenv("SPLAT_CACHE_DIR", dir.c_str(), 1);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new CacheDir);

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// cuobjdump (+ nvdisasm beside it): the toolkit's, or the pip packages nvidia-cuda-cuobjdump/-nvdisasm.
std::string find_cuobjdump() {
  std::vector<std::string> dirs;
  if (const char* e = std::getenv("SPLAT_CUOBJDUMP_DIR")) dirs.push_back(e);
  dirs.push_back("/usr/local/cuda/bin");
  const std::string py = run_capture(
      "python3 -c 'import nvidia, os; print(\"\\n\".join(os.path.join(p, \"cu13\", \"bin\") for p in "
      "nvidia.__path__))' "
      "2>/dev/null");
  size_t s = 0;
  while (s < py.size()) {
    const size_t e = py.find('\n', s);
    dirs.push_back(py.substr(s, e == std::string::npos ? std::string::npos : e - s));
    s = e == std::string::npos ? py.size() : e + 1;
  }
  for (const auto& d : dirs)
    if (!d.empty() && fs::exists(d + "/cuobjdump") && fs::exists(d + "/nvdisasm")) return d;
  return "";
}

std::string sass_of(const std::vector<char>& cubin, const std::string& bindir) {
  const fs::path f = fs::temp_directory_path() / ("splat-test-" + std::to_string(getpid()) + ".cubin");
  {
    std::ofstream o(f, std::ios::binary);
    o.write(cubin.data(), std::streamsize(cubin.size()));
  }
  const std::string sass = run_capture("PATH=" + bindir + ":$PATH cuobjdump -sass " + f.string() + " 2>&1");
  fs::remove(f);
  return sass;
}

}  // namespace

TEST(CudaCodegen, EverySuitePatternCompilesToTensorCoreSass) {
  const std::string bindir = find_cuobjdump();
  ASSERT_FALSE(bindir.empty())
      << "cuobjdump/nvdisasm not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm "
         "(scripts/pip-requirements.txt) or set SPLAT_CUOBJDUMP_DIR";
  std::set<std::string> checked;  // distinct generated sources (patterns often share kernels)
  for (int64_t n : suite_sizes())
    for (const SuiteEntry& e : suite(n))
      for (int d : {64, 128})
        for (DType t : {DType::BF16, DType::F16})
          for (const char* arch : {"sm_80", "sm_90", "sm_90a"}) {
            SCOPED_TRACE(e.spec + " n=" + std::to_string(n) + " D=" + std::to_string(d) + " " + dtype_name(t) + " " +
                         arch);
            CudaPlanOptions o;
            o.dtype = t, o.head_dim = d, o.arch = arch;
            const Acsr a = analyse(parse_pattern(e.spec), n);
            const CodegenResult r = codegen_cuda(a, o, true);
            ASSERT_FALSE(r.cubin.empty());
            ASSERT_FALSE(r.specs.empty());
            EXPECT_NE(r.source.find("#include \"splat/device/attention_fwd.cuh\""), std::string::npos);
            EXPECT_LT(r.source.size(), 4000u) << "generated source should be small";
            if (!checked.insert(r.source + arch).second) continue;
            const std::string sass = sass_of(r.cubin, bindir);
            // mma.sync (HMMA) on sm_80/sm_90; warpgroup MMA (HGMMA) on sm_90a.
            EXPECT_NE(sass.find(std::string(arch) == "sm_90a" ? "HGMMA" : "HMMA"), std::string::npos)
                << sass.substr(0, 2000);
          }
  EXPECT_GE(checked.size(), 12u);
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Sets an environment variable for a scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* o = std::getenv(name)) had_ = true, old_ = o;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

// Head dims 32, 96 and 256 (forward only): every suite pattern's forward
// kernels compile for sm_80, sm_90 and sm_90a to tensor-core SASS (HMMA; HGMMA on sm_90a) without spilling more
// than a few words (STL), in the tiles the generator picks for them (bench/NOTES-cuda.md, head dims).
TEST(CudaCodegen, ExtraHeadDimsCompileToTensorCoreSassWithoutSpills) {
  for (const char* v : {"SPLAT_CUDA_TILE", "SPLAT_CUDA_TMA", "SPLAT_CUDA_WGMMA", "SPLAT_CUDA_STAGES"})
    if (std::getenv(v)) GTEST_SKIP() << v << " overrides the choice";
  const std::string bindir = find_cuobjdump();
  ASSERT_FALSE(bindir.empty()) << "cuobjdump/nvdisasm not found";
  std::set<std::string> checked;
  for (int64_t n : suite_sizes())
    for (const SuiteEntry& e : suite(n))
      for (int d : {32, 96, 256})
        for (DType t : {DType::BF16, DType::F16})
          for (const char* arch : {"sm_80", "sm_90", "sm_90a"}) {
            SCOPED_TRACE(e.spec + " n=" + std::to_string(n) + " D=" + std::to_string(d) + " " + dtype_name(t) + " " +
                         arch);
            CudaPlanOptions o;
            o.dtype = t, o.head_dim = d, o.arch = arch;
            const CodegenResult r = codegen_cuda(analyse(parse_pattern(e.spec), n), o, true);
            ASSERT_FALSE(r.cubin.empty());
            ASSERT_FALSE(r.specs.empty());
            EXPECT_NE(r.specs[0].find(" D=" + std::to_string(d) + " "), std::string::npos) << r.specs[0];
            if (!checked.insert(r.source + arch).second) continue;
            const std::string sass = sass_of(r.cubin, bindir);
            EXPECT_NE(sass.find(std::string(arch) == "sm_90a" ? "HGMMA" : "HMMA"), std::string::npos)
                << sass.substr(0, 2000);
            // At most a few spilled words, as the D=64 twins of the D=32 kernels have at 128 registers (8 bytes).
            EXPECT_LE(count_of(sass, "STL"), 4) << "spills: " << r.specs[0];
          }
  EXPECT_GE(checked.size(), 18u);
}

// The tiles of the extra head dims: D=32 and D=96 those of the padded widths 64 and 128 (the same choices: 128-row
// tiles for long even bands on sm_90a, 128-key steps at D=96 as at D=128, the producer kernel at D=96 where D=128
// takes it); D=256 64x64 tiles without the overlap on sm_90a (2 stages, 161 KB) and 64x32 on mma.sync (97 KB), never
// 128-row tiles nor the producer kernel; D=32 never the producer kernel (a 64-column box is wider than the tensor).
// The producer kernel compiles at D=96 for contiguous spans (SPLAT_CUDA_TMA=1).
TEST(CudaCodegen, ExtraHeadDimsTiles) {
  for (const char* v :
       {"SPLAT_CUDA_TILE", "SPLAT_CUDA_TMA", "SPLAT_CUDA_WGMMA", "SPLAT_CUDA_STAGES", "SPLAT_CUDA_OVERLAP"})
    if (std::getenv(v)) GTEST_SKIP() << v << " overrides the choice";
  const Acsr win = analyse(parse_pattern("window:w=512"), 16384),
             dil = analyse(parse_pattern("dilated:w=512,d=2"), 4096);
  auto spec0 = [](const Acsr& a, int d, const char* arch) {
    CudaPlanOptions o;
    o.head_dim = d, o.arch = arch;
    return codegen_cuda(a, o, false).specs.at(0);
  };
  EXPECT_NE(spec0(win, 96, "sm_90a").find("producer=tma"), std::string::npos) << spec0(win, 96, "sm_90a");
  for (int d : {32, 256}) EXPECT_EQ(spec0(win, d, "sm_90a").find("producer=tma"), std::string::npos);
  EXPECT_NE(spec0(win, 32, "sm_90a").find("tile=128x64 warps=8"), std::string::npos) << spec0(win, 32, "sm_90a");
  EXPECT_NE(spec0(win, 256, "sm_90a").find("tile=64x64 warps=4 stages=2 mma=wgmma arch"), std::string::npos)
      << spec0(win, 256, "sm_90a");
  EXPECT_NE(spec0(win, 256, "sm_80").find("tile=64x32 warps=4 stages=2 mma=mma.sync"), std::string::npos)
      << spec0(win, 256, "sm_80");
  EXPECT_NE(spec0(dil, 96, "sm_90a").find("tile=64x64 warps=4 stages=3 mma=wgmma overlap"), std::string::npos)
      << spec0(dil, 96, "sm_90a");
  {
    const ScopedEnv off("SPLAT_CUDA_TMA", "0");
    EXPECT_NE(spec0(win, 96, "sm_90a").find("tile=128x128 warps=8"), std::string::npos) << spec0(win, 96, "sm_90a");
  }
  for (int d : {32, 96, 256})
    for (const char* arch : {"sm_80", "sm_90a"}) {
      const jit::KernelSpec b = jit::base_spec(DType::BF16, d, arch);
      EXPECT_LE(b.smem_bytes(), 227u * 1024) << d << " " << arch;
      if (std::string(arch) == "sm_80") EXPECT_LE(b.smem_bytes(), 99u * 1024) << d;  // sm_86 / sm_89 too
    }
  // The producer kernel at D=96 (two 64-column TMA boxes, the second half past the tensor: zero-filled) and the
  // key-padding variant of every extra head dim compile to warpgroup MMAs.
  const std::string bindir = find_cuobjdump();
  ASSERT_FALSE(bindir.empty()) << "cuobjdump/nvdisasm not found";
  const ScopedEnv tma("SPLAT_CUDA_TMA", "1");
  CudaPlanOptions o;
  o.head_dim = 96, o.arch = "sm_90a";
  const CodegenResult r = codegen_cuda(analyse(parse_pattern("causal_window:w=256"), 4096), o, true);
  ASSERT_NE(r.specs.at(0).find("producer=tma"), std::string::npos) << r.specs[0];
  const std::string sass = sass_of(r.cubin, bindir);
  EXPECT_NE(sass.find("UTMALDG"), std::string::npos);
  EXPECT_NE(sass.find("HGMMA"), std::string::npos);
  EXPECT_LE(count_of(sass, "STL"), 4) << "spills";
  const Plan plan = make_plan(analyse(parse_pattern("window:w=64"), 1024), {64, 64});
  for (int d : {32, 96, 256}) {
    const jit::KernelSpec kp = jit::forward_spec(jit::base_spec(DType::F16, d, "sm_90a"), plan, 0, true, true);
    const std::string ks = sass_of(jit::nvrtc_compile(jit::generate_source({kp}), "sm_90a").cubin, bindir);
    EXPECT_NE(ks.find("HGMMA"), std::string::npos) << kp.describe();
  }
}

// sm_90a picks 128-row tiles (two warpgroups) only where they measured faster (bench/NOTES-cuda.md v5):
// long even band tasks; never for the short residue tasks of strided, uneven longformer or gathered bigbird.
// At D=128 those take 128-key steps; the next step's S overlaps the softmax except in 64-row tiles at D=64 (v6).
TEST(CudaCodegen, TwoWarpgroupTilesOnlyForLongEvenTasks) {
  for (const char* v : {"SPLAT_CUDA_TILE", "SPLAT_CUDA_OVERLAP", "SPLAT_CUDA_TMA"})
    if (std::getenv(v)) GTEST_SKIP() << v << " overrides the choice";
  setenv("SPLAT_CUDA_TMA", "0", 1);  // the cp.async kernels' choice (the producer kernel's: the next test)
  const std::set<std::string> wide = {"window", "causal_window", "blocked", "dilated"};
  for (const SuiteEntry& e : suite(16384))
    for (int d : {64, 128}) {
      CudaPlanOptions o;
      o.head_dim = d, o.arch = "sm_90a";
      const CodegenResult r = codegen_cuda(analyse(parse_pattern(e.spec), 16384), o, false);
      ASSERT_FALSE(r.specs.empty());
      const bool two = r.specs[0].find(d == 128 ? "tile=128x128 warps=8" : "tile=128x64 warps=8") != std::string::npos;
      EXPECT_EQ(two, wide.count(e.name) > 0) << e.spec << " D=" << d << ": " << r.specs[0];
      const bool overlap = r.specs[0].find(" overlap") != std::string::npos;
      EXPECT_EQ(overlap, two || d == 128) << e.spec << " D=" << d << ": " << r.specs[0];
      o.arch = "sm_80";  // mma.sync keeps its 64-row default
      const std::string s80 = codegen_cuda(analyse(parse_pattern(e.spec), 16384), o, false).specs[0];
      EXPECT_NE(s80.find("tile=64x64 warps=4"), std::string::npos) << s80;
      EXPECT_EQ(s80.find(" overlap"), std::string::npos) << s80;
    }
  unsetenv("SPLAT_CUDA_TMA");
}

// By default the producer kernel runs only where it measured faster on the H200 (bench/NOTES-cuda.md v8): the
// contiguous bands (window, causal_window, blocked) at D=128 for both suite sizes and at D=64 for N=16384, dense and
// causal; never gathered or strided keys (dilated, strided), uneven tasks (longformer, bigbird), sm_80 or training
// plans (backward).
TEST(CudaCodegen, ProducerKernelByDefaultOnlyWhereMeasured) {
  for (const char* v : {"SPLAT_CUDA_TILE", "SPLAT_CUDA_TMA", "SPLAT_CUDA_WGMMA"})
    if (std::getenv(v)) GTEST_SKIP() << v << " overrides the choice";
  const std::set<std::string> bands = {"window", "causal_window", "blocked"};
  for (int64_t n : {4096, 16384})
    for (const SuiteEntry& e : suite(n))
      for (int d : {64, 128}) {
        CudaPlanOptions o;
        o.head_dim = d, o.arch = "sm_90a";
        const Acsr a = analyse(parse_pattern(e.spec), n);
        const CodegenResult r = codegen_cuda(a, o, false);
        const bool want = bands.count(e.name) > 0 && (d == 128 || n == 16384);
        EXPECT_EQ(r.specs[0].find("producer=tma") != std::string::npos, want)
            << e.spec << " n=" << n << " D=" << d << ": " << r.specs[0];
        o.backward = true;
        EXPECT_EQ(codegen_cuda(a, o, false).specs[0].find("producer=tma"), std::string::npos) << e.spec;
        o.backward = false, o.arch = "sm_80";
        EXPECT_EQ(codegen_cuda(a, o, false).specs[0].find("producer=tma"), std::string::npos) << e.spec;
      }
  for (const char* s : {"dense", "causal"}) {
    CudaPlanOptions o;
    o.head_dim = 128, o.arch = "sm_90a";
    const CodegenResult r = codegen_cuda(analyse(parse_pattern(s), 8192), o, false);
    EXPECT_NE(r.specs[0].find("producer=tma"), std::string::npos) << s << ": " << r.specs[0];
  }
}

// The producer kernel (SPLAT_CUDA_TMA=1, experimental): chosen for plans of contiguous key spans only (never the
// gathered or strided keys of dilated and strided; bigbird's blocks are contiguous), with 128-row tiles of a producer +
// two consumer warpgroups; its SASS loads by TMA (UTMALDG), waits on mbarriers (SYNCS) and multiplies by warpgroup
// MMAs.
TEST(CudaCodegen, ProducerKernelLoadsByTmaForContiguousSpans) {
  for (const char* v : {"SPLAT_CUDA_TMA_BN", "SPLAT_CUDA_PINGPONG", "SPLAT_CUDA_STAGES", "SPLAT_CUDA_WGMMA"})
    if (std::getenv(v)) GTEST_SKIP() << v << " overrides the choice";
  const std::string bindir = find_cuobjdump();
  ASSERT_FALSE(bindir.empty()) << "cuobjdump/nvdisasm not found";
  const char* old = std::getenv("SPLAT_CUDA_TMA");
  const std::string keep = old ? old : "";
  setenv("SPLAT_CUDA_TMA", "1", 1);
  const std::set<std::string> contiguous = {"window", "causal_window", "blocked", "longformer", "bigbird"};
  for (const SuiteEntry& e : suite(4096))
    for (int d : {64, 128})
      for (DType t : {DType::BF16, DType::F16}) {
        SCOPED_TRACE(e.spec + " D=" + std::to_string(d) + " " + dtype_name(t));
        CudaPlanOptions o;
        o.dtype = t, o.head_dim = d, o.arch = "sm_90a";
        const Acsr a = analyse(parse_pattern(e.spec), 4096);
        const bool want = contiguous.count(e.name) > 0;
        const CodegenResult r = codegen_cuda(a, o, want && t == DType::BF16);
        ASSERT_FALSE(r.specs.empty());
        EXPECT_EQ(r.specs[0].find("producer=tma") != std::string::npos, want) << r.specs[0];
        if (!want) continue;
        EXPECT_NE(r.specs[0].find(d == 64 ? "tile=128x128 warps=8" : "tile=128x64 warps=8"), std::string::npos)
            << r.specs[0];
        EXPECT_NE(r.specs[0].find("pingpong"), std::string::npos) << r.specs[0];
        if (t != DType::BF16) continue;
        const std::string sass = sass_of(r.cubin, bindir);
        EXPECT_NE(sass.find("UTMALDG"), std::string::npos);
        EXPECT_NE(sass.find("HGMMA"), std::string::npos);
        EXPECT_NE(sass.find("SYNCS"), std::string::npos);
      }
  // Key padding takes the cp.async kernel of the same tiles.
  {
    const Plan plan = make_plan(analyse(parse_pattern("window:w=64"), 1024), {128, 128});
    const jit::KernelSpec base = jit::tma_spec(jit::base_spec(DType::BF16, 64, "sm_90a"));
    EXPECT_TRUE(jit::forward_spec(base, plan, 0, false, false).tma);
    EXPECT_FALSE(jit::forward_spec(base, plan, 0, false, true).tma);
    EXPECT_FALSE(jit::backward_dq_spec(base, plan, 0, false).tma);
  }
  if (old)
    setenv("SPLAT_CUDA_TMA", keep.c_str(), 1);
  else
    unsetenv("SPLAT_CUDA_TMA");
}

TEST(CudaCodegen, SpecNamesAndSourceAreDeterministic) {
  const Acsr a = analyse(parse_pattern("strided:s=64"), 4096);
  CudaPlanOptions o;
  o.arch = "sm_90";
  const CodegenResult x = codegen_cuda(a, o, false), y = codegen_cuda(a, o, false);
  EXPECT_EQ(x.source, y.source);
  ASSERT_EQ(x.specs.size(), 2u);  // natural-order band + residue-order pass continuing it
  EXPECT_NE(x.specs[0].find("writes-lse"), std::string::npos);
  EXPECT_NE(x.specs[1].find("continues-pass"), std::string::npos);
  EXPECT_TRUE(x.cubin.empty());
}

// The backward's kernels (preprocess, dQ per forward pass, dK/dV per transposed pass) and the lse-writing forward
// are directions / variants of the same spec and generator: every suite pattern's compile with NVRTC, on warpgroup
// MMAs for sm_90a (bf16, both head dims) and mma.sync for sm_80 (f16; the multi-pass and gathered patterns).
TEST(CudaCodegen, BackwardKernelsCompileForEverySuitePattern) {
  const std::string bindir = find_cuobjdump();
  for (const SuiteEntry& e : suite(1024))
    for (int d : {64, 128})
      for (const char* arch : {"sm_90a", "sm_80"}) {
        const bool sm80 = std::string(arch) == "sm_80";
        if (sm80 && (d != 64 || (e.name != "strided" && e.name != "bigbird"))) continue;
        const DType t = sm80 ? DType::F16 : DType::BF16;
        SCOPED_TRACE(e.spec + " D=" + std::to_string(d) + " " + arch);
        CudaPlanOptions o;
        o.dtype = t, o.head_dim = d, o.arch = arch, o.backward = true;
        const CodegenResult r = codegen_cuda(analyse(parse_pattern(e.spec), 1024), o, true);
        ASSERT_FALSE(r.cubin.empty());
        int pre = 0, dq = 0, dkdv = 0;
        for (const std::string& line : r.specs) {
          pre += line.find("attention_bwd_pre ") != std::string::npos;
          dq += line.find("attention_bwd_dq ") != std::string::npos;
          dkdv += line.find("attention_bwd_dkdv ") != std::string::npos;
        }
        EXPECT_EQ(pre, 1);
        EXPECT_GE(dq, 1);
        EXPECT_GE(dkdv, 1);
        EXPECT_NE(r.source.find("#include \"splat/device/attention_bwd.cuh\""), std::string::npos);
        if (bindir.empty() || d != 128) continue;
        const std::string sass = sass_of(r.cubin, bindir);
        EXPECT_NE(sass.find(std::string(arch) == "sm_90a" ? "HGMMA" : "HMMA"), std::string::npos);
      }
}

// The direction and the key-padding flag are part of the kernel's name (and so of the generated source and the
// cache key); a forward-only plan generates no backward code.
TEST(CudaCodegen, DirectionAndPaddingNameTheKernel) {
  const Acsr a = analyse(parse_pattern("strided:s=64"), 4096);
  const jit::KernelSpec base = jit::base_spec(DType::BF16, 64, "sm_90a");
  const Plan plan = make_plan(a, {});
  const jit::KernelSpec f = jit::forward_spec(base, plan, 0, false, false);
  const jit::KernelSpec fp = jit::forward_spec(base, plan, 0, false, true);
  const jit::KernelSpec dq = jit::backward_dq_spec(base, plan, 0, false);
  const jit::KernelSpec pre = jit::backward_pre_spec(base);
  std::set<std::string> names = {f.name(), fp.name(), dq.name(), pre.name()};
  EXPECT_EQ(names.size(), 4u);
  EXPECT_NE(fp.describe().find("key-padding"), std::string::npos);
  EXPECT_NE(dq.describe().find("attention_bwd_dq"), std::string::npos);
  EXPECT_NE(jit::generate_source({f}), jit::generate_source({fp}));
  CudaPlanOptions o;
  o.arch = "sm_90a";
  const CodegenResult fwd = codegen_cuda(a, o, false);
  EXPECT_EQ(fwd.source.find("attention_bwd"), std::string::npos);
  EXPECT_EQ(fwd.specs.size(), 2u);
}

// The decode kernels are a direction of the same spec and generator: every code path of their source (the first
// kernel; each of the split kernel's (heads per CTA, dims per lane) shapes and its merge; paged and contiguous caches;
// bf16, f16 and f32; both head dims) compiles with NVRTC for sm_90, and the common shapes for sm_80 and sm_90a (a few
// kernels per source: each takes seconds to compile).
TEST(CudaCodegen, DecodeKernelsCompileForEveryShape) {
  const std::string bindir = find_cuobjdump();
  struct Shape {
    DType t;
    int d;
    bool split;
    int h, l;
    bool paged;
  };
  const std::vector<Shape> sm90 = {{DType::BF16, 128, true, 1, 16, true}, {DType::BF16, 128, true, 2, 16, true},
                                   {DType::BF16, 128, true, 2, 8, true},  {DType::BF16, 128, true, 4, 16, true},
                                   {DType::BF16, 128, true, 4, 8, true},  {DType::BF16, 128, true, 8, 8, true},
                                   {DType::BF16, 128, false, 0, 0, true}, {DType::BF16, 64, true, 4, 16, false},
                                   {DType::BF16, 64, false, 0, 0, false}, {DType::F16, 64, true, 2, 8, false},
                                   {DType::F32, 64, true, 4, 16, true},   {DType::F32, 128, true, 8, 8, false},
                                   {DType::F32, 64, false, 0, 0, true}};
  const std::vector<Shape> common = {{DType::BF16, 128, true, 4, 16, true}, {DType::BF16, 128, false, 0, 0, false}};
  for (const char* arch : {"sm_90", "sm_80", "sm_90a"}) {
    SCOPED_TRACE(arch);
    std::vector<jit::KernelSpec> specs;
    for (const Shape& x : std::string(arch) == "sm_90" ? sm90 : common)
      for (const jit::KernelSpec& s : jit::decode_specs(jit::decode_spec(x.t, x.d, x.split, x.h, x.l, x.paged, arch)))
        specs.push_back(s);
    std::set<std::string> names;
    for (const jit::KernelSpec& s : specs) names.insert(s.name());
    EXPECT_EQ(names.size(), std::string(arch) == "sm_90" ? 13u + 5u : 3u);  // + one merge per split (dtype, head dim)
    const std::string source = jit::generate_source(specs);
    EXPECT_NE(source.find("#include \"splat/device/decode_split.cuh\""), std::string::npos);
    EXPECT_EQ(source.find("attention_fwd"), std::string::npos);
    const jit::CachedCubin cc = jit::cached_cubin(source, arch, "decode codegen test");
    ASSERT_FALSE(cc.cubin.empty());
    if (bindir.empty()) continue;
    const std::string sass = sass_of(cc.cubin, bindir);
    for (const std::string& n : names) EXPECT_NE(sass.find(n), std::string::npos) << n;
  }
}

// A decode spec's fields are its name and log line (and so its source and cache key); shapes the kernels do not have
// are clear errors.
TEST(CudaCodegen, DecodeSpecNamesItsShape) {
  const jit::KernelSpec a = jit::decode_spec(DType::BF16, 128, true, 4, 16, true, "sm_90");
  const jit::KernelSpec b = jit::decode_spec(DType::BF16, 128, true, 4, 8, true, "sm_90");
  const jit::KernelSpec c = jit::decode_spec(DType::BF16, 128, true, 4, 16, false, "sm_90");
  const jit::KernelSpec f = jit::decode_spec(DType::F16, 64, false, 0, 0, false, "sm_90");
  EXPECT_EQ((std::set<std::string>{a.name(), b.name(), c.name(), f.name()}).size(), 4u);
  EXPECT_NE(a.describe().find("heads/cta=4 dims/lane=16"), std::string::npos) << a.describe();
  EXPECT_NE(a.describe().find("cache=paged"), std::string::npos) << a.describe();
  EXPECT_NE(f.describe().find("kernel=first"), std::string::npos) << f.describe();
  EXPECT_EQ(b.min_blocks, 3);
  EXPECT_EQ(a.threads(), 128);
  EXPECT_EQ(jit::decode_merge_spec(a).threads(), 128);
  EXPECT_EQ(jit::decode_merge_spec(a).name(), jit::decode_merge_spec(c).name());
  EXPECT_NE(jit::generate_source({a}), jit::generate_source({c}));
  for (const auto& [h, l] : std::vector<std::pair<int, int> >{{3, 16}, {1, 8}, {8, 16}})
    EXPECT_THROW(jit::decode_spec(DType::BF16, 64, true, h, l, false, "sm_90"), Error) << h << " " << l;
  EXPECT_THROW(jit::decode_spec(DType::F32, 64, true, 2, 8, false, "sm_90"), Error);
  EXPECT_THROW(jit::decode_spec(DType::BF16, 96, false, 0, 0, false, "sm_90"), Error);
  EXPECT_THROW(jit::decode_spec(DType::F64, 64, false, 0, 0, false, "sm_90"), Error);
}

TEST(CudaCodegen, UnsupportedRequestsAreClearErrors) {
  const Acsr a = analyse(parse_pattern("window:w=8"), 128);
  CudaPlanOptions o;
  o.arch = "sm_90";
  auto unsupported = [&](const char* says) {
    try {
      codegen_cuda(a, o, false);
      ADD_FAILURE() << "expected an error for D=" << o.head_dim;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  // Other head dims are refused, and the forward's 32, 96 and 256 have no backward (training plans refuse them).
  for (int d : {0, 16, 48, 80, 160, 512}) {
    o.head_dim = d;
    unsupported("32, 64, 96, 128 or 256");
  }
  o.backward = true;
  for (int d : {32, 96, 256}) {
    o.head_dim = d;
    unsupported("the backward takes 64 or 128");
  }
  o.backward = false;
  o.head_dim = 64;
  o.dtype = DType::F32;
  EXPECT_THROW(codegen_cuda(a, o, false), Error);
  o.dtype = DType::BF16;
  o.arch = "sm_75";
  EXPECT_THROW(codegen_cuda(a, o, false), Error);
  o.arch = "compute_90";
  try {
    codegen_cuda(a, o, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  }
}

TEST(CudaCodegen, NvrtcFailureReportsLogAndSavedSource) {
  try {
    jit::nvrtc_compile("__global__ void broken( { this is not CUDA }", "sm_90");
    FAIL() << "expected Error(Jit)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Jit);
    const std::string msg = e.what();
    const size_t at = msg.find("source saved to ");
    ASSERT_NE(at, std::string::npos) << msg;
    const std::string path = msg.substr(at + 16, msg.find_first_of(" \n", at + 16) - at - 16);
    EXPECT_TRUE(fs::exists(path)) << path;
    EXPECT_NE(msg.find("error"), std::string::npos) << "NVRTC log missing: " << msg;
  }
}

TEST(CudaCache, EntryEncodingDetectsCorruption) {
  const std::vector<char> payload = {'c', 'u', 'b', 'i', 'n', '\0', 'x'};
  std::vector<char> file = jit::encode_entry(payload), back;
  ASSERT_TRUE(jit::decode_entry(file, back));
  EXPECT_EQ(back, payload);
  std::vector<char> bad = file;
  bad.back() ^= 1;  // flipped payload bit
  EXPECT_FALSE(jit::decode_entry(bad, back));
  bad = file;
  bad.pop_back();  // truncated
  EXPECT_FALSE(jit::decode_entry(bad, back));
  bad = file;
  bad[0] = 'X';  // wrong magic
  EXPECT_FALSE(jit::decode_entry(bad, back));
  EXPECT_FALSE(jit::decode_entry({}, back));
}

TEST(CudaCache, DiskHitCorruptAndTruncatedEntriesAreRebuilt) {
  kernel_cache_clear();
  const Acsr a = analyse(parse_pattern("window:w=16"), 256);
  CudaPlanOptions o;
  o.arch = "sm_90";
  const CodegenResult g = codegen_cuda(a, o, false);
  const jit::CachedCubin first = jit::cached_cubin(g.source, "sm_90", "test");
  EXPECT_EQ(first.source, "compiled");
  const std::string path = jit::entry_path(first.key);
  ASSERT_TRUE(fs::exists(path));
  EXPECT_EQ(jit::cached_cubin(g.source, "sm_90", "test").source, "memory");
  jit::clear_memory_cache();
  const jit::CachedCubin disk = jit::cached_cubin(g.source, "sm_90", "test");
  EXPECT_EQ(disk.source, "disk");
  EXPECT_EQ(disk.cubin, first.cubin);

  // Corrupt one byte in the middle: detected by the checksum, rebuilt, rewritten valid.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  jit::clear_memory_cache();
  const jit::CachedCubin rebuilt = jit::cached_cubin(g.source, "sm_90", "test");
  EXPECT_EQ(rebuilt.source, "compiled");
  EXPECT_NE(rebuilt.why.find("corrupt"), std::string::npos);
  EXPECT_EQ(rebuilt.cubin, first.cubin);
  jit::clear_memory_cache();
  EXPECT_EQ(jit::cached_cubin(g.source, "sm_90", "test").source, "disk");

  // Truncate it: rebuilt as well.
  fs::resize_file(path, fs::file_size(path) / 2);
  jit::clear_memory_cache();
  EXPECT_EQ(jit::cached_cubin(g.source, "sm_90", "test").source, "compiled");

  // The key depends on the arch and on the source.
  EXPECT_NE(jit::cache_key(g.source, "sm_90"), jit::cache_key(g.source, "sm_80"));
  EXPECT_NE(jit::cache_key(g.source, "sm_90"), jit::cache_key(g.source + "\n", "sm_90"));

  const CacheInfo info = kernel_cache_info();
  EXPECT_GE(info.entries, 1);
  EXPECT_GT(info.bytes, 0);
  kernel_cache_clear();
  EXPECT_EQ(kernel_cache_info().entries, 0);
}

TEST(CudaCache, ConcurrentWritersNeverLeaveAPartialEntry) {
  const std::string dir = jit::cache_directory();
  jit::ensure_directory(dir);
  const std::string path = dir + "/concurrent-test.cubin";
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::vector<char> payload(size_t(200000 + 1000 * t), char('a' + t));
      for (int r = 0; r < 10; ++r) {
        const std::vector<char> entry = jit::encode_entry(payload);
        write_file_atomic(path, entry.data(), entry.size());
      }
    });
  // Meanwhile a reader only ever sees complete, valid entries.
  for (int r = 0; r < 200; ++r) {
    std::ifstream f(path, std::ios::binary);
    if (!f) continue;
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), payload;
    EXPECT_TRUE(jit::decode_entry(bytes, payload)) << "partial entry seen";
  }
  for (auto& t : threads) t.join();
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "temp file left: " << e.path();
  fs::remove(path);
}

TEST(CudaCache, ConcurrentProcessesShareOneValidEntry) {
  kernel_cache_clear();
  const Acsr a = analyse(parse_pattern("causal_window:w=32"), 256);
  CudaPlanOptions o;
  o.arch = "sm_80";
  const std::string source = codegen_cuda(a, o, false).source;
  std::vector<pid_t> kids;
  for (int i = 0; i < 3; ++i) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      try {
        rc = jit::cached_cubin(source, "sm_80", "child").cubin.empty() ? 1 : 0;
      } catch (...) {
        rc = 2;
      }
      _exit(rc);
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) {
    int status = 0;
    waitpid(k, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  jit::clear_memory_cache();
  EXPECT_EQ(jit::cached_cubin(source, "sm_80", "parent").source, "disk");
  EXPECT_EQ(kernel_cache_info().entries, 1);
}

TEST(CudaRuntime, NoGpuGivesAClearReason) {
  std::string why;
  if (cuda_available(&why)) GTEST_SKIP() << "a GPU is present; this checks the no-GPU path";
  EXPECT_FALSE(why.empty());
  const Acsr a = analyse(parse_pattern("window:w=8"), 128);
  try {
    plan_cuda(a, CudaPlanOptions{});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsupported);
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos);
  }
}
#endif  // SPLAT_WITH_CUDA
