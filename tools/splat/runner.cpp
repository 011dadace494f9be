#include "runner.hpp"

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include "common/int_math.hpp"
#include "report.hpp"
#include "splat/acsr.hpp"
#include "splat/attention.hpp"
#include "splat/error.hpp"
#ifdef SPLAT_WITH_CUDA
#include "splat/cuda.hpp"
#endif

namespace splat::cli {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t mix(uint64_t x) {  // splitmix64 step
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

HostTensor alloc_tensor(DType dtype, int64_t B, int64_t H, int64_t N, int64_t D) {
  const size_t bytes = checked_bytes({B, H, N, D}, dtype_size(dtype), "a [B, H, N, D] tensor");
  check_fits_in_memory(double(bytes), "a [B, H, N, D] tensor");
  HostTensor t;
  t.storage.resize(bytes);
  t.view = contiguous_view(t.storage.data(), dtype, B, H, N, D);
  return t;
}

// A contiguous float32 copy (float64 for f64 tensors), so the oracle sees exactly the values the backend saw.
HostTensor reference_copy(const TensorView& t) {
  const DType rt = t.dtype == DType::F64 ? DType::F64 : DType::F32;
  HostTensor c = alloc_tensor(rt, t.B(), t.H(), t.N(), t.D());
  size_t i = 0;
  for (int64_t b = 0; b < t.B(); ++b)
    for (int64_t h = 0; h < t.H(); ++h)
      for (int64_t n = 0; n < t.N(); ++n)
        for (int64_t d = 0; d < t.D(); ++d)
          store_element_f64(c.storage.data(), rt, i++,
                            load_element_f64(t.data, t.dtype, t.offset(b, h, n) + size_t(d)));
  return c;
}
}  // namespace

BackendChoice choose_backend(const std::string& requested) {
  require(requested == "cpu" || requested == "cuda" || requested == "auto",
          "--backend must be cpu, cuda or auto, got '" + requested + "'");
  BackendChoice c{Backend::Cpu, "cpu", ""};
  if (requested == "cpu") return c;
#ifdef SPLAT_WITH_CUDA
  std::string why;
  if (cuda_available(&why)) return {Backend::Cuda, "cuda", ""};
  if (requested == "cuda") fail(ErrorCode::Unsupported, "--backend cuda: no usable GPU: " + why);
  c.note = "note: no usable GPU (" + why + "); running on the CPU";
#else
  if (requested == "cuda") fail(ErrorCode::Unsupported, "--backend cuda: this splat was built without CUDA support");
  c.note = "note: built without CUDA; running on the CPU";
#endif
  return c;
}

Analysis analyse_spec(const std::string& spec, int64_t n) {
  require(n > 0, "--seq-len must be positive");
  Analysis a;
  a.n = n;
  a.pattern = parse_pattern(spec);
  validate_pattern(a.pattern, n);
  a.canonical = to_string(a.pattern);
  auto t0 = std::chrono::steady_clock::now();
  Acsr acsr = analyse(a.pattern, n);
  a.analyse_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  a.plan = make_plan(std::move(acsr));
  a.plan_ms = ms_since(t0);
  a.nnz = a.plan.useful;
  a.regions = int64_t(regions(a.plan.acsr).size());
  return a;
}

namespace {
// The most memory this process may use: physical memory, lowered by a cgroup (v2) limit and by the
// address-space and data-segment rlimits (ulimit -v, -d).
std::pair<double, std::string> memory_limit() {
  const double page = double(sysconf(_SC_PAGESIZE)), pages = double(sysconf(_SC_PHYS_PAGES));
  std::pair<double, std::string> lim{page > 0 && pages > 0 ? page * pages : 1e15, "this machine's"};
  std::ifstream cg("/sys/fs/cgroup/memory.max");
  double v = 0;
  if (cg >> v && v > 0 && v < lim.first) lim = {v, "the memory limit (cgroup) of"};
  for (int res : {RLIMIT_AS, RLIMIT_DATA}) {
    rlimit rl{};
    if (getrlimit(res, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && double(rl.rlim_cur) < lim.first)
      lim = {double(rl.rlim_cur), "the process limit (ulimit) of"};
  }
  return lim;
}
}  // namespace

void check_fits_in_memory(double bytes, const std::string& what) {
  const auto [limit, whose] = memory_limit();
  require(bytes <= limit, what + " would need " + human_bytes(bytes) + ", more than " + whose + " " +
                              human_bytes(limit) + " of memory: use smaller sizes");
}

int resolve_threads(int threads) {
  return threads > 0 ? threads : std::max(1, omp_get_max_threads());
}

double attention_bytes(const AttentionSizes& s) {
  const double B = double(s.batch), H = double(s.heads), Hkv = double(s.kv_heads), N = double(s.n),
               D = double(s.head_dim), elem = double(dtype_size(s.dtype));
  // q and out [B, H, N, D], k and v [B, H_kv, N, D] in the storage dtype.
  double bytes = B * N * D * (2 * H + 2 * Hkv) * elem;
  if (s.backend == Backend::Cpu) {
    // Per thread, the tile kernel's scratch (tile_kernel.hpp Scratch, counted with headroom):
    // (4*64*Dp + 64*64 + 2*64 + 64*Dp + 2*64*Dp) floats, Dp = D rounded up to 8.
    const double Dp = double((s.head_dim + 7) / 8 * 8);
    bytes += double(resolve_threads(s.threads)) * 4.0 * (4 * 64 * Dp + 64 * 64 + 2 * 64 + 64 * Dp + 2 * 64 * Dp);
    // Multi-pass plans carry O in float32 and the running log-sum-exp; per-key NaN flags of V.
    bytes += B * H * N * (D + 1) * 4.0 + B * Hkv * N;
  }
  // --check: the dense N x N mask, float32 copies of q, k, v and the reference output.
  if (s.check) bytes += N * N + B * N * D * (2 * H + 2 * Hkv) * std::max(4.0, elem);
  return bytes;
}

HostTensor random_tensor(DType dtype, int64_t B, int64_t H, int64_t N, int64_t D, uint64_t seed) {
  HostTensor t = alloc_tensor(dtype, B, H, N, D);
  const size_t count = t.storage.size() / dtype_size(dtype);
  uint64_t state = mix(seed ^ 0x5bd1e995u);
  for (size_t i = 0; i < count; ++i) {
    state = mix(state);
    // Uniform on [-sqrt(3), sqrt(3)): unit variance, so q.k/sqrt(D) has unit scale.
    if (dtype == DType::F64) {  // 53 random bits, so float64 runs see values float32 cannot hold
      const double u = double(state >> 11) * (1.0 / double(1ull << 53));
      store_element_f64(t.storage.data(), dtype, i, (2.0 * u - 1.0) * 1.7320508075688772);
      continue;
    }
    const float u = float(double(state >> 40) * (1.0 / double(1ull << 24)));
    store_element(t.storage.data(), dtype, i, (2.0f * u - 1.0f) * 1.7320508f);
  }
  return t;
}

HostTensor nan_tensor(DType dtype, int64_t B, int64_t H, int64_t N, int64_t D) {
  HostTensor t = alloc_tensor(dtype, B, H, N, D);
  const size_t count = t.storage.size() / dtype_size(dtype);
  for (size_t i = 0; i < count; ++i) store_element(t.storage.data(), dtype, i, std::numeric_limits<float>::quiet_NaN());
  return t;
}

Timing time_attention(const Analysis& a, const BackendChoice& backend, const TensorView& q, const TensorView& k,
                      const TensorView& v, const TensorView& out, int threads, int warmup, int reps) {
  check_attention_args(q, k, v, out);
  require(q.N() == a.n,
          "the inputs' sequence length " + std::to_string(q.N()) + " differs from --seq-len " + std::to_string(a.n));
  AttentionOptions opt;
  opt.threads = threads;
  Timing t;
  t.reps = reps;
  if (backend.backend == Backend::Cuda) {
#ifdef SPLAT_WITH_CUDA
    CudaPlanOptions co;
    co.dtype = q.dtype;
    co.head_dim = int32_t(q.D());
    auto plan = plan_cuda(a.plan.acsr, co);
    t.median_ms = attention_cuda_host(*plan, q, k, v, out, opt, warmup, reps);
    t.kernels = describe_cuda_plan(*plan);
    return t;
#else
    fail(ErrorCode::Unsupported, "this splat was built without CUDA support");
#endif
  }
  for (int w = 0; w < warmup; ++w) attention_cpu(a.plan, q, k, v, out, opt);
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    attention_cpu(a.plan, q, k, v, out, opt);
    ms.push_back(ms_since(t0));
  }
  std::sort(ms.begin(), ms.end());
  t.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  return t;
}

double check_against_reference(const Analysis& a, const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out) {
  check_fits_in_memory(double(a.n) * double(a.n), "the dense reference mask");
  const std::vector<uint8_t> mask = dense_mask(a.pattern, a.n);
  HostTensor q32 = reference_copy(q), k32 = reference_copy(k), v32 = reference_copy(v);
  const DType rt = q32.view.dtype;
  HostTensor ref = nan_tensor(rt, out.B(), out.H(), out.N(), out.D());
  attention_reference(mask.data(), q32.view, k32.view, v32.view, ref.view);
  const auto r = [&](size_t i) { return load_element_f64(ref.storage.data(), rt, i); };
  double max_ref = 0, max_err = 0;
  size_t i = 0;
  for (int64_t b = 0; b < out.B(); ++b)
    for (int64_t h = 0; h < out.H(); ++h)
      for (int64_t n = 0; n < out.N(); ++n)
        for (int64_t d = 0; d < out.D(); ++d, ++i) {
          const double o = load_element_f64(out.data, out.dtype, out.offset(b, h, n) + size_t(d));
          // NaN/Inf inputs propagate: the same non-finite value in both places counts as agreement.
          if (o == r(i) || (std::isnan(o) && std::isnan(r(i)))) {
            if (std::isfinite(o)) max_ref = std::max(max_ref, std::fabs(o));
            continue;
          }
          const double e = std::fabs(o - r(i));
          if (!std::isfinite(e)) return std::numeric_limits<double>::quiet_NaN();
          max_err = std::max(max_err, e);
          max_ref = std::max(max_ref, std::fabs(r(i)));
        }
  return max_err / std::max(max_ref, 1e-30);
}

CaseResult run_case(const CaseConfig& c, const BackendChoice& backend) {
  CaseResult r;
  const Analysis a = analyse_spec(c.spec, c.n);
  r.pattern = a.canonical, r.n = c.n, r.nnz = a.nnz;
  r.density = double(a.nnz) / (double(c.n) * double(c.n));
  r.segments = int64_t(a.plan.acsr.segments.size()), r.regions = a.regions, r.tiles = a.plan.tile_count();
  r.acsr_bytes = acsr_bytes(a.plan.acsr), r.csr_bytes = csr_bytes(c.n, a.nnz);
  r.waste = a.plan.waste(), r.analyse_ms = a.analyse_ms, r.plan_ms = a.plan_ms;
  check_fits_in_memory(
      attention_bytes({c.batch, c.heads, c.kv_heads, c.n, c.head_dim, c.dtype, backend.backend, c.threads, c.check}),
      "the inputs, output and scratch");
  HostTensor q = random_tensor(c.dtype, c.batch, c.heads, c.n, c.head_dim, c.seed);
  HostTensor k = random_tensor(c.dtype, c.batch, c.kv_heads, c.n, c.head_dim, c.seed + 1);
  HostTensor v = random_tensor(c.dtype, c.batch, c.kv_heads, c.n, c.head_dim, c.seed + 2);
  HostTensor out = nan_tensor(c.dtype, c.batch, c.heads, c.n, c.head_dim);
  const Timing t = time_attention(a, backend, q.view, k.view, v.view, out.view, c.threads, c.warmup, c.reps);
  r.ms = t.median_ms;
  r.gflops = gflops(a.nnz, c.batch, c.heads, c.head_dim, t.median_ms);
  if (c.check) {
    r.checked = true;
    r.tol = c.tol > 0 ? c.tol : default_tolerance(c.dtype);
    r.max_rel_err = check_against_reference(a, q.view, k.view, v.view, out.view);
    r.ok = r.max_rel_err <= r.tol;  // false for NaN
  }
  return r;
}

std::string case_json(const CaseResult& r) {
  std::string j = "{\"pattern\": " + json_string(r.pattern) + ", \"seq_len\": " + std::to_string(r.n);
  j += ", \"nnz\": " + std::to_string(r.nnz) + ", \"density\": " + json_number(r.density);
  j += ", \"segments\": " + std::to_string(r.segments) + ", \"regions\": " + std::to_string(r.regions);
  j += ", \"tiles\": " + std::to_string(r.tiles) + ", \"acsr_bytes\": " + std::to_string(r.acsr_bytes);
  j += ", \"csr_bytes\": " + std::to_string(r.csr_bytes) + ", \"waste\": " + json_number(r.waste);
  j += ", \"analyse_ms\": " + json_number(r.analyse_ms) + ", \"plan_ms\": " + json_number(r.plan_ms);
  j += ", \"ms\": " + json_number(r.ms) + ", \"gflops\": " + json_number(r.gflops);
  if (r.checked)
    j += ", \"max_rel_err\": " + json_number(r.max_rel_err) + ", \"tol\": " + json_number(r.tol) +
         ", \"ok\": " + (r.ok ? "true" : "false");
  return j + "}";
}

double default_tolerance(DType t) {
  // Storage rounding of the output dominates: 2^-24 (f32), 2^-11 (f16), 2^-8 (bf16), with headroom.
  switch (t) {
    case DType::F32: return 1e-4;
    case DType::F16: return 5e-3;
    case DType::BF16: return 3e-2;
    case DType::F64: return 1e-10;  // computed and stored in float64, like the reference
  }
  return 1e-4;
}

double gflops(int64_t nnz, int64_t batch, int64_t heads, int64_t head_dim, double ms) {
  return ms > 0 ? 4.0 * double(nnz) * double(head_dim) * double(batch) * double(heads) / (ms * 1e6) : 0.0;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) bytes /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

}  // namespace splat::cli
