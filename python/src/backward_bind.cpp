// Training entry points of splat._core: the forward that also returns the row log-sum-exp, and the backward.
// Thin like the rest of the module: views, checks of the extra arrays (lse, key lengths), GIL release.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <optional>

#include "arrays.hpp"
#include "bindings.hpp"
#include "plans.hpp"
#include "splat/error.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

// The row log-sum-exp: float32, contiguous, B*H*N elements on q's device (its shape is the caller's business:
// [..., H, N] in both layouts).
template <class Array>
float* lse_pointer(const Array& lse, const TensorView& q, const char* name) {
  const std::string who(name);
  require(lse.dtype() == nb::dtype<float>(), who + ": must be float32");
  require(array_device(lse.device_type(), lse.device_id(), name) == q.device, who + ": must be on q's device");
  int64_t expect = 1, count = 1;
  for (size_t i = lse.ndim(); i-- > 0;) {
    require(lse.shape(i) == 1 || lse.stride(i) == expect, who + ": must be contiguous");
    expect *= int64_t(lse.shape(i));
    count *= int64_t(lse.shape(i));
  }
  require(count == q.B() * q.H() * q.N(), who + ": must have B*H*N = " + std::to_string(q.B() * q.H() * q.N()) +
                                              " elements, got " + std::to_string(count));
  return static_cast<float*>(const_cast<void*>(static_cast<const void*>(lse.data())));
}

const int32_t* key_lengths_pointer(const std::optional<nb::ndarray<nb::ro>>& lengths, const TensorView& q) {
  if (!lengths) return nullptr;
  const auto& a = *lengths;
  require(a.dtype() == nb::dtype<int32_t>(), "key_lengths: must be int32");
  require(a.ndim() == 1 && int64_t(a.shape(0)) == q.B() && (a.shape(0) == 1 || a.stride(0) == 1),
          "key_lengths: must be a contiguous vector of B = " + std::to_string(q.B()) + " lengths");
  require(array_device(a.device_type(), a.device_id(), "key_lengths") == q.device,
          "key_lengths: must be on q's device");
  return static_cast<const int32_t*>(a.data());
}

AttentionOptions options(float scale, int threads, const int32_t* key_lengths, bool deterministic = true) {
  AttentionOptions opt;
  opt.scale = scale;
  opt.threads = threads;
  opt.key_lengths = key_lengths;
  opt.deterministic = deterministic;
  return opt;
}

void attention_lse(PlanHandle& plan, const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
                   const OutArray& lse, float scale, const std::string& layout, const std::string& dtype,
                   uintptr_t stream, int threads, uintptr_t workspace, size_t workspace_size,
                   const std::optional<nb::ndarray<nb::ro>>& key_lengths) {
  const int l = parse_layout(layout);
  const TensorView tq = array_view(q, l, dtype, "q");
  float* lp = lse_pointer(lse, tq, "lse");
  const AttentionOptions opt = options(scale, threads, key_lengths_pointer(key_lengths, tq));
  const TensorView tk = array_view(k, l, dtype, "k"), tv = array_view(v, l, dtype, "v");
  const TensorView to = array_view(out, l, dtype, "out");
  check_disjoint(to, tq, "out", "q");  // as _core.attention: out written while q, k, v are still read
  check_disjoint(to, tk, "out", "k");
  check_disjoint(to, tv, "out", "v");
  nb::gil_scoped_release release;
  run_plan(plan, tq, tk, tv, to, opt, reinterpret_cast<void*>(stream), reinterpret_cast<void*>(workspace),
           workspace_size, lp);
}

void attention_backward(PlanHandle& plan, const InArray& q, const InArray& k, const InArray& v, const InArray& out,
                        const InArray& dout, const InArray& lse, const OutArray& dq, const OutArray& dk,
                        const OutArray& dv, float scale, const std::string& layout, const std::string& dtype,
                        uintptr_t stream, int threads, uintptr_t workspace, size_t workspace_size,
                        const std::optional<nb::ndarray<nb::ro>>& key_lengths, bool deterministic) {
  const int l = parse_layout(layout);
  BackwardTensors t;
  t.q = array_view(q, l, dtype, "q");
  t.k = array_view(k, l, dtype, "k");
  t.v = array_view(v, l, dtype, "v");
  t.out = array_view(out, l, dtype, "out");
  t.dout = array_view(dout, l, dtype, "dout");
  t.dq = array_view(dq, l, dtype, "dq");
  t.dk = array_view(dk, l, dtype, "dk");
  t.dv = array_view(dv, l, dtype, "dv");
  t.lse = lse_pointer(lse, t.q, "lse");
  const AttentionOptions opt = options(scale, threads, key_lengths_pointer(key_lengths, t.q), deterministic);
  nb::gil_scoped_release release;
  run_backward(plan, t, opt, reinterpret_cast<void*>(stream), reinterpret_cast<void*>(workspace), workspace_size);
}

}  // namespace

void bind_backward(nb::module_& m) {
  m.def("attention_lse", &attention_lse, "plan"_a, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "scale"_a = 0.0f,
        "layout"_a = "bhnd", "dtype"_a = "", "stream"_a = 0, "threads"_a = 0, "workspace"_a = 0, "workspace_size"_a = 0,
        "key_lengths"_a = nb::none(),
        "Sparse attention into `out` that also writes the row log-sum-exp `lse` (float32, B*H*N, contiguous); "
        "key_lengths: optional int32 [B] on q's device (keys j >= key_lengths[b] are masked)");
  m.def("attention_backward", &attention_backward, "plan"_a, "q"_a, "k"_a, "v"_a, "out"_a, "dout"_a, "lse"_a, "dq"_a,
        "dk"_a, "dv"_a, "scale"_a = 0.0f, "layout"_a = "bhnd", "dtype"_a = "", "stream"_a = 0, "threads"_a = 0,
        "workspace"_a = 0, "workspace_size"_a = 0, "key_lengths"_a = nb::none(), "deterministic"_a = true,
        "Gradients dq, dk, dv (written) from the forward's out and lse and the output gradient dout; "
        "deterministic=False allows the faster CUDA backward whose dQ comes from fp32 atomics (last bits vary run "
        "to run; its workspace is backward_workspace_bytes(..., deterministic=False))");
  m.def(
      "backward_workspace_bytes",
      [](PlanHandle& plan, int64_t batch, int64_t heads, int device, bool deterministic) {
        nb::gil_scoped_release release;
        return backward_workspace_bytes(plan, batch, heads, device, deterministic);
      },
      "plan"_a, "batch"_a, "heads"_a, "device"_a, "deterministic"_a = true,
      "Bytes of device workspace a CUDA backward needs (0 on the CPU)");
  bind_xla_backward(m);
}

}  // namespace splat::py
