// splat._core: the nanobind extension. Thin: argument conversion, GIL release, error translation;
// all work happens in the C++ library. The Python API (splat/*.py) wraps these functions.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstring>
#include <variant>

#include "arrays.hpp"
#include "bindings.hpp"
#include "plans.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

void translate(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const Error& e) {
    switch (e.code()) {
      case ErrorCode::InvalidArgument:
      case ErrorCode::Io: PyErr_SetString(PyExc_ValueError, e.what()); break;
      case ErrorCode::Unsupported: PyErr_SetString(PyExc_NotImplementedError, e.what()); break;
      default: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
    }
  }
}

struct Views {
  TensorView q, k, v, out;
};

Views views(const InArray& q, const InArray& k, const InArray& v, const OutArray& out, const std::string& layout,
            const std::string& dtype) {
  const int l = parse_layout(layout);
  Views w{array_view(q, l, dtype, "q"), array_view(k, l, dtype, "k"), array_view(v, l, dtype, "v"),
          array_view(out, l, dtype, "out")};
  check_disjoint(w.out, w.q, "out", "q");
  check_disjoint(w.out, w.k, "out", "k");
  check_disjoint(w.out, w.v, "out", "v");
  return w;
}

void attention(PlanHandle& plan, const InArray& q, const InArray& k, const InArray& v, const OutArray& out, float scale,
               const std::string& layout, const std::string& dtype, uintptr_t stream, int threads, uintptr_t workspace,
               size_t workspace_size) {
  const Views w = views(q, k, v, out, layout, dtype);
  require(threads >= 0 && threads <= 4096, "threads must be in [0, 4096] (0 = all), got " + std::to_string(threads));
  AttentionOptions opt;
  opt.scale = scale;
  opt.threads = threads;
  nb::gil_scoped_release release;
  run_plan(plan, w.q, w.k, w.v, w.out, opt, reinterpret_cast<void*>(stream), reinterpret_cast<void*>(workspace),
           workspace_size);
}

// The baseline of the overhead benchmark: the same launch looped in C++ (no Python in between).
double bench_launch(PlanHandle& plan, const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
                    int iters, uintptr_t stream) {
  const Views w = views(q, k, v, out, "bhnd", "");
  require(iters > 0, "iters must be positive");
  nb::gil_scoped_release release;
  run_plan(plan, w.q, w.k, w.v, w.out, {}, reinterpret_cast<void*>(stream));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) run_plan(plan, w.q, w.k, w.v, w.out, {}, reinterpret_cast<void*>(stream));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>> mask_array(const std::string& spec, int64_t n) {
  require(n > 0, "n must be positive");
  std::vector<uint8_t> bits;
  {
    const Pattern p = parse_pattern(spec);
    validate_pattern(p, n);
    nb::gil_scoped_release release;
    bits = dense_mask(p, n);
  }
  auto* data = new std::vector<uint8_t>(std::move(bits));
  nb::capsule owner(data, [](void* ptr) noexcept { delete static_cast<std::vector<uint8_t>*>(ptr); });
  return nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>>(data->data(), {size_t(n), size_t(n)}, owner);
}

using HostMask = nb::ndarray<nb::ro, uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// The reference with the pattern given as a spec string or as an n x n uint8 mask.
void reference(const std::variant<std::string, HostMask>& pattern, const InArray& q, const InArray& k, const InArray& v,
               const OutArray& out, float scale, const std::string& layout, const std::string& dtype) {
  const Views w = views(q, k, v, out, layout, dtype);
  require(w.q.device < 0, "the reference runs on host arrays only");
  const int64_t n = w.q.N();
  std::vector<uint8_t> spec_mask;
  const uint8_t* mask = nullptr;
  if (const auto* spec = std::get_if<std::string>(&pattern)) {
    const Pattern p = parse_pattern(*spec);
    validate_pattern(p, n);
    nb::gil_scoped_release release;
    spec_mask = dense_mask(p, n);
    mask = spec_mask.data();
  } else {
    const HostMask& m = std::get<HostMask>(pattern);
    require(int64_t(m.shape(0)) == n && int64_t(m.shape(1)) == n,
            "mask is " + std::to_string(m.shape(0)) + " x " + std::to_string(m.shape(1)) +
                " but the sequence length is " + std::to_string(n));
    mask = m.data();
  }
  AttentionOptions opt;
  opt.scale = scale;
  nb::gil_scoped_release release;
  attention_reference(mask, w.q, w.k, w.v, w.out, opt);
}

std::pair<bool, std::string> cuda_status() {
#if SPLAT_WITH_CUDA
  std::string why;
  const bool ok = cuda_available(&why);
  return {ok, why};
#else
  return {false, "splat was built without CUDA (SPLAT_WITH_CUDA=OFF)"};
#endif
}

}  // namespace
void bind_geometry(nb::module_& m);  // geometry_bind.cpp: what the context-parallel planner asks
}  // namespace splat::py

NB_MODULE(_core, m) {
  using namespace splat;
  using namespace splat::py;
  m.doc() = "splat C++ core (nanobind extension); use the `splat` package API instead of this module";
  nb::register_exception_translator(translate);
  nb::set_leak_warnings(false);  // cached plans may outlive the interpreter's teardown order

  nb::class_<PlanHandle>(m, "Plan", "A pattern analysed and compiled for one (seq_len, head_dim, dtype, device)")
      .def_prop_ro("pattern", [](const PlanHandle& p) { return p.spec; })
      .def_prop_ro("seq_len", [](const PlanHandle& p) { return p.seq_len; })
      .def_prop_ro("head_dim", [](const PlanHandle& p) { return p.head_dim; })
      .def_prop_ro("dtype", [](const PlanHandle& p) { return std::string(dtype_name(p.dtype)); })
      .def_prop_ro(
          "device", [](const PlanHandle& p) { return p.device; }, "-1 for CPU, else the CUDA ordinal")
      .def_prop_ro("nnz", [](const PlanHandle& p) { return nnz(p.acsr); })
      .def_prop_ro("density",
                   [](const PlanHandle& p) { return double(nnz(p.acsr)) / double(p.seq_len) / double(p.seq_len); })
      .def_prop_ro(
          "waste",
          [](PlanHandle& p) -> nb::object {
            std::lock_guard<std::mutex> lock(p.mu);
            return p.cpu ? nb::cast(p.cpu->waste()) : nb::none();
          },
          "computed / useful entries of the CPU plan (None for a CUDA plan)")
      .def(
          "describe",
          [](PlanHandle& p) {
            std::vector<std::string> lines;
            for (const Region& r : regions(p.acsr))
              lines.push_back("rows [" + std::to_string(r.row_begin) + ", " + std::to_string(r.row_end) +
                              "): " + r.describe);
            std::lock_guard<std::mutex> lock(p.mu);
#if SPLAT_WITH_CUDA
            if (p.cuda)
              for (auto& s : describe_cuda_plan(*p.cuda)) lines.push_back(s);
#endif
            return lines;
          },
          "Regions of the analysed pattern and, for CUDA plans, the generated kernels")
      .def(
          "_register", [](const std::shared_ptr<PlanHandle>& p) { return register_plan(p); },
          "Registers the plan for XLA FFI calls; returns its id (the plan then lives until exit)")
      .def("__repr__", [](const PlanHandle& p) {
        return "splat.Plan('" + p.spec + "', seq_len=" + std::to_string(p.seq_len) +
               ", head_dim=" + std::to_string(p.head_dim) + ", dtype=" + dtype_name(p.dtype) +
               ", device=" + (p.device < 0 ? std::string("cpu") : "cuda:" + std::to_string(p.device)) + ")";
      });

  m.def(
      "make_plan",
      [](const std::string& spec, int64_t seq_len, int32_t head_dim, const std::string& dtype, int device) {
        const DType dt = parse_dtype(dtype);
        nb::gil_scoped_release release;  // analysis and NVRTC compilation can take a while
        return build_plan(spec, seq_len, head_dim, dt, device);
      },
      "pattern"_a, "seq_len"_a, "head_dim"_a, "dtype"_a = "f32", "device"_a = -1);
  m.def("attention", &attention, "plan"_a, "q"_a, "k"_a, "v"_a, "out"_a, "scale"_a = 0.0f, "layout"_a = "bhnd",
        "dtype"_a = "", "stream"_a = 0, "threads"_a = 0, "workspace"_a = 0, "workspace_size"_a = 0,
        "Sparse attention into `out` (no copies). stream: a cudaStream_t as int for CUDA arrays; workspace: "
        "device memory of workspace_bytes(plan, B, H, device) bytes (0 = the plan's own buffer).");
  m.def(
      "make_mask_plan",
      [](const HostMask& mask, std::string name, int32_t head_dim, const std::string& dtype, int device) {
        const int64_t n = int64_t(mask.shape(0));
        require(n > 0 && int64_t(mask.shape(1)) == n, "mask must be a non-empty square [N, N] array");
        const DType dt = parse_dtype(dtype);
        nb::gil_scoped_release release;  // one O(N^2) read, O(nnz) analysis; CUDA: NVRTC compilation
        return build_plan_from(analyse_mask(mask.data(), n), std::move(name), n, head_dim, dt, device);
      },
      "mask"_a, "name"_a, "head_dim"_a, "dtype"_a = "f32", "device"_a = -1,
      "A plan from an in-memory boolean mask (uint8 [N, N], C-contiguous, nonzero = attended); name labels it");
  m.def(
      "workspace_bytes",
      [](PlanHandle& plan, int64_t batch, int64_t heads, int device) {
        nb::gil_scoped_release release;
        return attention_workspace_bytes(plan, batch, heads, device);
      },
      "plan"_a, "batch"_a, "heads"_a, "device"_a,
      "Bytes of device workspace a CUDA launch needs (0 for CPU and single-pass plans)");
  m.def("reference", &reference, "pattern"_a, "q"_a, "k"_a, "v"_a, "out"_a, "scale"_a = 0.0f, "layout"_a = "bhnd",
        "dtype"_a = "", "Dense masked reference with float64 accumulation (host arrays)");
  m.def("dense_mask", &mask_array, "pattern"_a, "n"_a, "The pattern as an n x n uint8 mask (the oracle)");
  m.def(
      "canonical_pattern", [](const std::string& spec) { return to_string(parse_pattern(spec)); }, "pattern"_a);
  m.def(
      "pattern_key", [](const std::string& spec) { return pattern_key(parse_pattern(spec)); }, "pattern"_a,
      "What a spec means, for caches: masks by size and content hash (reads the mask files), never by path");
  m.def("cuda_status", &cuda_status, "(usable, why not) for the CUDA backend");
  m.def("_bench_launch", &bench_launch, "plan"_a, "q"_a, "k"_a, "v"_a, "out"_a, "iters"_a = 1000, "stream"_a = 0);
#if SPLAT_WITH_CUDA
  m.def(
      "_codegen",
      [](const std::string& spec, int64_t n, int head_dim) {
        CudaPlanOptions o;
        o.head_dim = head_dim;
        o.arch = "sm_90";
        return codegen_cuda(analyse(parse_pattern(spec), n), o, false).specs;
      },
      "pattern"_a, "n"_a, "head_dim"_a = 64, "Generated kernel specs (no GPU needed): a self-check of the JIT");
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  bind_xla(m);
  bind_flurka(m);
  bind_backward(m);
  bind_decode(m);
  bind_geometry(m);
  bind_recommend(m);
}
