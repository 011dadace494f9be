// What `run`, `bench` and `demo` share: choosing a backend, analysing a pattern, making inputs,
// timing attention on the chosen backend and checking it against the dense float64 reference.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "splat/pattern.hpp"
#include "splat/plan.hpp"
#include "splat/tensor.hpp"

namespace splat::cli {

enum class Backend { Cpu, Cuda };

struct BackendChoice {
  Backend backend = Backend::Cpu;
  std::string name;  // "cpu" or "cuda"
  std::string note;  // e.g. why auto fell back to the CPU; empty if nothing to say
};
// requested: "cpu", "cuda" or "auto". cuda without a usable GPU (or without CUDA support) throws.
BackendChoice choose_backend(const std::string& requested);

struct Analysis {
  Pattern pattern;
  std::string canonical;  // to_string(pattern)
  int64_t n = 0;
  Plan plan;  // plan.acsr holds the ACSR
  int64_t nnz = 0;
  int64_t regions = 0;
  double analyse_ms = 0, plan_ms = 0;
};
Analysis analyse_spec(const std::string& spec, int64_t n);

struct HostTensor {
  std::vector<uint8_t> storage;
  TensorView view;
};
// Contiguous [B, H, N, D]; values uniform with unit variance from a splitmix64 stream (reproducible).
HostTensor random_tensor(DType dtype, int64_t B, int64_t H, int64_t N, int64_t D, uint64_t seed);
HostTensor nan_tensor(DType dtype, int64_t B, int64_t H, int64_t N, int64_t D);
// Refuses (InvalidArgument) sizes whose buffers would overflow or not fit in this machine's memory
// (physical memory, a cgroup limit or ulimit -v / -d, whichever is least).
void check_fits_in_memory(double bytes, const std::string& what);
// The thread count the CPU backend uses for `threads` (0: OpenMP's default).
int resolve_threads(int threads);
struct AttentionSizes {
  int64_t batch = 1, heads = 1, kv_heads = 1, n = 1, head_dim = 1;
  DType dtype = DType::F32;
  Backend backend = Backend::Cpu;
  int threads = 0;
  bool check = false;
};
// Host bytes one attention call of the CLI needs: tensors, the CPU backend's per-thread scratch and
// multi-pass carry, and with check the reference's mask and float32 copies. (Double: no overflow.)
double attention_bytes(const AttentionSizes& s);

struct Timing {
  double median_ms = 0;
  int reps = 0;
  std::vector<std::string> kernels;  // CUDA: one line per generated kernel
};
// Runs warmup + reps times on the backend (CUDA: compiles the plan's kernels first, not timed).
Timing time_attention(const Analysis& a, const BackendChoice& backend, const TensorView& q, const TensorView& k,
                      const TensorView& v, const TensorView& out, int threads, int warmup, int reps);

// Max |out - ref| / max |ref| over all elements, ref = the dense float64 reference on the pattern's
// brute-force mask (pattern_contains), so analysis, plan and backend are all checked. NaN if out has NaN.
double check_against_reference(const Analysis& a, const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out);
double default_tolerance(DType t);

// One suite case end to end on random inputs (used by bench and demo).
struct CaseConfig {
  std::string spec;
  int64_t n = 4096, batch = 1, heads = 1, kv_heads = 1, head_dim = 64;
  DType dtype = DType::F32;
  int threads = 0, warmup = 1, reps = 3;
  uint64_t seed = 1;
  bool check = false;
  double tol = 0;  // 0: default_tolerance(dtype)
};
struct CaseResult {
  std::string pattern;  // canonical spec
  int64_t n = 0, nnz = 0, segments = 0, regions = 0, tiles = 0, acsr_bytes = 0, csr_bytes = 0;
  double density = 0, waste = 0, analyse_ms = 0, plan_ms = 0, ms = 0, gflops = 0;
  bool checked = false, ok = true;
  double max_rel_err = 0, tol = 0;
};
CaseResult run_case(const CaseConfig& c, const BackendChoice& backend);
std::string case_json(const CaseResult& r);  // one JSON object

double gflops(int64_t nnz, int64_t batch, int64_t heads, int64_t head_dim, double ms);
std::string human_bytes(double bytes);

}  // namespace splat::cli
