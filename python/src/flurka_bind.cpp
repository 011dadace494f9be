// FLuRKA bindings: q, k, v, E, F, W as DLPack arrays; host or CUDA by q's device. Compiled in once
// include/splat/flurka.hpp exists (the FLuRKA interface).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "plans.hpp"
#include "splat/error.hpp"

#if __has_include("splat/flurka.hpp")
#include "splat/flurka.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

// E, F [k, N] or [H, k, N]; W [D, m] or [H, D, m]; row-major contiguous.
MatrixView matrix_view(const std::optional<InArray>& a, const std::string& dtype, const char* name) {
  MatrixView m;
  if (!a) return m;
  const std::string who(name);
  const size_t nd = a->ndim();
  require(nd == 2 || nd == 3, who + ": expected a matrix [rows, cols] or a stack [heads, rows, cols]");
  m.heads = nd == 3 ? int64_t(a->shape(0)) : 1;
  m.rows = int64_t(a->shape(nd - 2));
  m.cols = int64_t(a->shape(nd - 1));
  require((m.cols == 1 || a->stride(nd - 1) == 1) && (m.rows == 1 || a->stride(nd - 2) == m.cols) &&
              (nd == 2 || m.heads == 1 || a->stride(0) == m.rows * m.cols),
          who + ": must be contiguous (row-major)");
  m.data = a->data();
  m.dtype = array_dtype(a->dtype(), dtype, name);
  m.device = array_device(a->device_type(), a->device_id(), name);
  return m;
}

void flurka(const std::string& method, const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
            const std::optional<InArray>& e, const std::optional<InArray>& f, const std::optional<InArray>& w,
            bool causal, const std::string& layout, const std::string& dtype, uintptr_t stream,
            const std::optional<OutArray>& workspace, int threads) {
  const FlurkaMethod m = parse_flurka_method(method);
  const int l = parse_layout(layout);
  FlurkaInputs in;
  in.q = array_view(q, l, dtype, "q");
  in.k = array_view(k, l, dtype, "k");
  in.v = array_view(v, l, dtype, "v");
  in.e = matrix_view(e, dtype, "E");
  in.f = matrix_view(f, dtype, "F");
  in.w = matrix_view(w, dtype, "W");
  const TensorView o = array_view(out, l, dtype, "out");
  check_disjoint(o, in.q, "out", "q");  // the kernels read q, k, v after writing parts of out
  check_disjoint(o, in.k, "out", "k");
  check_disjoint(o, in.v, "out", "v");
  FlurkaOptions opt;
  opt.threads = threads;
  nb::gil_scoped_release release;
  if (causal) {
    require(in.e.data != nullptr, "causal FLuRKA needs the chunk projections E, F [r, C]");
    if (in.q.device < 0) {
      flurka_causal_cpu(m, in, o, in.e.cols, opt);
      return;
    }
    void* ws = nullptr;
    if (workspace) {
      const FlurkaShape s = check_flurka_args(m, in, o, in.e.cols);
      require(workspace->nbytes() >= flurka_causal_cuda_workspace_bytes(m, s, in.e.cols), "workspace too small");
      ws = workspace->data();
    }
    flurka_causal_cuda(m, in, o, in.e.cols, ws, reinterpret_cast<void*>(stream));
  } else if (in.q.device < 0) {
    flurka_cpu(m, in, o, opt);
  } else {
    void* ws = nullptr;
    if (workspace) {
      const FlurkaShape s = check_flurka_args(m, in, o);
      require(workspace->nbytes() >= flurka_cuda_workspace_bytes(m, s), "workspace too small");
      ws = workspace->data();
    }
    flurka_cuda(m, in, o, ws, reinterpret_cast<void*>(stream));
  }
}

// Gradients of sum(out * dout): dq, dk, dv like q, k, v; de, df like E, F (projected methods).
void flurka_backward(const std::string& method, const InArray& q, const InArray& k, const InArray& v,
                     const InArray& dout, const OutArray& dq, const OutArray& dk, const OutArray& dv,
                     const std::optional<InArray>& e, const std::optional<InArray>& f, const std::optional<InArray>& w,
                     const std::optional<OutArray>& de, const std::optional<OutArray>& df, bool causal,
                     const std::string& layout, const std::string& dtype, uintptr_t stream, int threads) {
  const FlurkaMethod m = parse_flurka_method(method);
  const int l = parse_layout(layout);
  FlurkaInputs in;
  in.q = array_view(q, l, dtype, "q");
  in.k = array_view(k, l, dtype, "k");
  in.v = array_view(v, l, dtype, "v");
  in.e = matrix_view(e, dtype, "E");
  in.f = matrix_view(f, dtype, "F");
  in.w = matrix_view(w, dtype, "W");
  FlurkaGrads g;
  g.dout = array_view(dout, l, dtype, "dout");
  g.dq = array_view(dq, l, dtype, "dq");
  g.dk = array_view(dk, l, dtype, "dk");
  g.dv = array_view(dv, l, dtype, "dv");
  // dE, dF must be contiguous buffers shaped and typed like E, F (the kernels write E's layout).
  auto grad_of = [&](const std::optional<OutArray>& a, const MatrixView& like, const char* name) -> void* {
    if (!a) return nullptr;
    const MatrixView mv = matrix_view(InArray(*a), dtype, name);
    require(mv.heads * mv.rows * mv.cols == like.heads * like.rows * like.cols && mv.rows == like.rows &&
                mv.cols == like.cols && mv.dtype == like.dtype && mv.device == like.device,
            std::string(name) + " must have the shape, dtype and device of " + (name[1] == 'E' ? "E" : "F"));
    return a->data();
  };
  if (uses_projection(m)) g.de = grad_of(de, in.e, "dE"), g.df = grad_of(df, in.f, "dF");
  FlurkaOptions opt;
  opt.threads = threads;
  nb::gil_scoped_release release;
  if (causal) require(in.q.device < 0, "causal FLuRKA runs on the CPU only (no CUDA kernel yet)");
  if (in.q.device >= 0) return flurka_backward_cuda(m, in, g, reinterpret_cast<void*>(stream));
  if (causal) {
    require(in.e.data != nullptr, "causal FLuRKA needs the chunk projections E, F [r, C]");
    flurka_causal_backward_cpu(m, in, g, in.e.cols, opt);
  } else {
    flurka_backward_cpu(m, in, g, opt);
  }
}

size_t workspace_bytes(const std::string& method, int64_t B, int64_t H, int64_t Nq, int64_t N, int64_t D, int64_t k,
                       int64_t m, int64_t causal_chunk) {
  FlurkaShape s;
  s.B = B, s.H = H, s.Nq = Nq, s.N = N, s.D = D, s.k = k, s.m = m;
  if (causal_chunk > 0) return flurka_causal_cuda_workspace_bytes(parse_flurka_method(method), s, causal_chunk);
  return flurka_cuda_workspace_bytes(parse_flurka_method(method), s);
}

// The CUDA decode step on a caller-owned state buffer (uint8, flurka_decode_state_bytes): one token of each of the
// B x H sequences. reset empties a state. Both are launches only (no sync, no allocation): capturable in a graph.
size_t decode_state_bytes(const std::string& method, int64_t B, int64_t H, int64_t D, const InArray& e,
                          const InArray& f, const std::optional<InArray>& w, const std::string& dtype) {
  const FlurkaMethod m = parse_flurka_method(method);
  const MatrixView ev = matrix_view(e, dtype, "E"), fv = matrix_view(f, dtype, "F"), wv = matrix_view(w, dtype, "W");
  return flurka_decode_cuda_state_bytes(m, B, H, D, ev.cols, ev, fv, wv);
}

FlurkaCudaDecodeState attach(const std::string& method, const OutArray& state, int64_t B, int64_t H, int64_t D,
                             const InArray& e, const InArray& f, const std::optional<InArray>& w,
                             const std::string& dtype) {
  const FlurkaMethod m = parse_flurka_method(method);
  const MatrixView ev = matrix_view(e, dtype, "E"), fv = matrix_view(f, dtype, "F"), wv = matrix_view(w, dtype, "W");
  require(state.nbytes() >= flurka_decode_cuda_state_bytes(m, B, H, D, ev.cols, ev, fv, wv) &&
              array_device(state.device_type(), state.device_id(), "state") == ev.device,
          "flurka decode: the state must be a buffer of flurka_decode_state_bytes on the device of E, F");
  return flurka_decode_cuda_attach(m, B, H, D, ev.cols, ev, fv, wv, state.data());
}

void decode_reset(const std::string& method, const OutArray& state, int64_t B, int64_t H, int64_t D, const InArray& e,
                  const InArray& f, const std::optional<InArray>& w, const std::string& dtype, uintptr_t stream) {
  FlurkaCudaDecodeState st = attach(method, state, B, H, D, e, f, w, dtype);
  nb::gil_scoped_release release;
  flurka_decode_cuda_reset(st, reinterpret_cast<void*>(stream));
}

void decode_step(const std::string& method, const OutArray& state, const InArray& q, const InArray& k, const InArray& v,
                 const OutArray& out, const InArray& e, const InArray& f, const std::optional<InArray>& w,
                 const std::string& layout, const std::string& dtype, uintptr_t stream) {
  const int l = parse_layout(layout);
  const TensorView qv = array_view(q, l, dtype, "q"), kv = array_view(k, l, dtype, "k"),
                   vv = array_view(v, l, dtype, "v"), ov = array_view(out, l, dtype, "out");
  require(qv.device >= 0, "flurka decode step: q must be a CUDA tensor");
  FlurkaCudaDecodeState st = attach(method, state, qv.B(), qv.H(), qv.D(), e, f, w, dtype);
  check_disjoint(ov, qv, "out", "q");
  nb::gil_scoped_release release;
  flurka_decode_cuda_step(st, qv, kv, vv, ov, reinterpret_cast<void*>(stream));
}

}  // namespace
}  // namespace splat::py

void splat::py::bind_flurka(nb::module_& m) {
  m.attr("has_flurka") = true;
  m.def("flurka", &flurka, "method"_a, "q"_a, "k"_a, "v"_a, "out"_a, "e"_a.none(), "f"_a.none(), "w"_a.none(),
        "causal"_a = false, "layout"_a = "bhnd", "dtype"_a = "", "stream"_a = 0, "workspace"_a.none() = nb::none(),
        "threads"_a = 0);
  m.def("flurka_backward", &flurka_backward, "method"_a, "q"_a, "k"_a, "v"_a, "dout"_a, "dq"_a, "dk"_a, "dv"_a,
        "e"_a.none(), "f"_a.none(), "w"_a.none(), "de"_a.none(), "df"_a.none(), "causal"_a = false,
        "layout"_a = "bhnd", "dtype"_a = "", "stream"_a = 0, "threads"_a = 0);
  m.def("flurka_decode_state_bytes", &decode_state_bytes, "method"_a, "B"_a, "H"_a, "D"_a, "e"_a, "f"_a, "w"_a.none(),
        "dtype"_a = "");
  m.def("flurka_decode_reset", &decode_reset, "method"_a, "state"_a, "B"_a, "H"_a, "D"_a, "e"_a, "f"_a, "w"_a.none(),
        "dtype"_a = "", "stream"_a = 0);
  m.def("flurka_decode_step", &decode_step, "method"_a, "state"_a, "q"_a, "k"_a, "v"_a, "out"_a, "e"_a, "f"_a,
        "w"_a.none(), "layout"_a = "bhnd", "dtype"_a = "", "stream"_a = 0);
  m.def("flurka_workspace_bytes", &workspace_bytes, "method"_a, "B"_a, "H"_a, "Nq"_a, "N"_a, "D"_a, "k"_a, "m"_a,
        "causal_chunk"_a = 0);
  m.def("flurka_methods", []() {
    std::vector<std::string> names;
    for (FlurkaMethod x : all_flurka_methods()) names.push_back(flurka_method_name(x));
    return names;
  });
  m.def(
      "flurka_uses",
      [](const std::string& method) {
        const FlurkaMethod x = parse_flurka_method(method);
        return std::pair<bool, bool>(uses_projection(x), uses_random_features(x));
      },
      "method"_a, "(needs E/F, needs W)");
}

#else

void splat::py::bind_flurka(nanobind::module_& m) {
  m.attr("has_flurka") = false;
}

#endif
