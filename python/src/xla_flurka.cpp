// XLA FFI handlers for FLuRKA (splat.jax.flurka): q, k, v, E, F, W in; out and a device workspace out
// (sized at trace time, so the CUDA path never allocates or synchronises). Absent E/F/W arrive as empty
// arrays, flagged by the `mats` bitmask (1: E, 2: F, 4: W).
#include <nanobind/nanobind.h>

#include "bindings.hpp"

#if SPLAT_WITH_XLA_FFI && __has_include("splat/flurka.hpp")
#include <string>
#include <string_view>

#include "splat/flurka.hpp"
#include "xla_common.hpp"

namespace ffi = xla::ffi;

namespace splat::py {
namespace {

MatrixView matrix(const ffi::AnyBuffer& b, bool present, int device, const char* name) {
  MatrixView m;
  if (!present) return m;
  const auto dims = b.dimensions();
  require(dims.size() == 2 || dims.size() == 3,
          std::string(name) + ": expected a matrix [rows, cols] or a stack [heads, rows, cols]");
  m.heads = dims.size() == 3 ? dims[0] : 1;
  m.rows = dims[dims.size() - 2];
  m.cols = dims[dims.size() - 1];
  m.data = b.untyped_data();
  m.dtype = xla::buffer_dtype(b, name);
  m.device = device;
  return m;
}

ffi::Error run(int device, void* stream, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
               const ffi::AnyBuffer& e, const ffi::AnyBuffer& f, const ffi::AnyBuffer& w, ffi::AnyBuffer& out,
               ffi::AnyBuffer& workspace, std::string_view method, int64_t layout, bool causal, int64_t mats) {
  return xla::guarded([&] {
    const FlurkaMethod m = parse_flurka_method(std::string(method));
    const int l = int(layout);
    FlurkaInputs in;
    in.q = xla::buffer_view(q, l, device, "q");
    in.k = xla::buffer_view(k, l, device, "k");
    in.v = xla::buffer_view(v, l, device, "v");
    in.e = matrix(e, mats & 1, device, "E");
    in.f = matrix(f, mats & 2, device, "F");
    in.w = matrix(w, mats & 4, device, "W");
    const TensorView o = xla::buffer_view(out, l, device, "out");
    if (causal) {
      require(in.e.data != nullptr, "causal FLuRKA needs the chunk projections E, F [r, C]");
      if (device < 0) {
        flurka_causal_cpu(m, in, o, in.e.cols);
        return;
      }
      const FlurkaShape s = check_flurka_args(m, in, o, in.e.cols);
      require(workspace.size_bytes() >= flurka_causal_cuda_workspace_bytes(m, s, in.e.cols),
              "FLuRKA workspace too small");
      flurka_causal_cuda(m, in, o, in.e.cols, workspace.untyped_data(), stream);
    } else if (device < 0) {
      flurka_cpu(m, in, o);
    } else {
      const FlurkaShape s = check_flurka_args(m, in, o);
      require(workspace.size_bytes() >= flurka_cuda_workspace_bytes(m, s), "FLuRKA workspace too small");
      flurka_cuda(m, in, o, workspace.untyped_data(), stream);
    }
  });
}

// Backward: dq, dk, dv, dE, dF from q, k, v, E, F, W and dout (absent dE, dF are empty results).
ffi::Error backward(int device, void* stream, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k,
                    const ffi::AnyBuffer& v, const ffi::AnyBuffer& e, const ffi::AnyBuffer& f,
                    const ffi::AnyBuffer& w, const ffi::AnyBuffer& dout, ffi::AnyBuffer& dq, ffi::AnyBuffer& dk,
                    ffi::AnyBuffer& dv, ffi::AnyBuffer& de, ffi::AnyBuffer& df, std::string_view method,
                    int64_t layout, bool causal, int64_t mats) {
  return xla::guarded([&] {
    const FlurkaMethod m = parse_flurka_method(std::string(method));
    const int l = int(layout);
    FlurkaInputs in;
    in.q = xla::buffer_view(q, l, device, "q");
    in.k = xla::buffer_view(k, l, device, "k");
    in.v = xla::buffer_view(v, l, device, "v");
    in.e = matrix(e, mats & 1, device, "E");
    in.f = matrix(f, mats & 2, device, "F");
    in.w = matrix(w, mats & 4, device, "W");
    FlurkaGrads g;
    g.dout = xla::buffer_view(dout, l, device, "dout");
    g.dq = xla::buffer_view(dq, l, device, "dq");
    g.dk = xla::buffer_view(dk, l, device, "dk");
    g.dv = xla::buffer_view(dv, l, device, "dv");
    if (uses_projection(m)) {
      require(de.size_bytes() == e.size_bytes() && df.size_bytes() == f.size_bytes(),
              "dE, dF must have the shapes of E, F");
      g.de = de.untyped_data(), g.df = df.untyped_data();
    }
    if (causal) require(device < 0, "causal FLuRKA runs on the CPU only (no CUDA kernel yet)");
    if (device >= 0) {
      flurka_backward_cuda(m, in, g, stream);
    } else if (causal) {
      require(in.e.data != nullptr, "causal FLuRKA needs the chunk projections E, F [r, C]");
      flurka_causal_backward_cpu(m, in, g, in.e.cols);
    } else {
      flurka_backward_cpu(m, in, g);
    }
  });
}

ffi::Error flurka_backward_host(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer e,
                                ffi::AnyBuffer f, ffi::AnyBuffer w, ffi::AnyBuffer dout,
                                ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                                ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> de,
                                ffi::Result<ffi::AnyBuffer> df, std::string_view method, int64_t layout, bool causal,
                                int64_t mats) {
  return backward(-1, nullptr, q, k, v, e, f, w, dout, *dq, *dk, *dv, *de, *df, method, layout, causal, mats);
}

ffi::Error flurka_backward_device(void* stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                                  ffi::AnyBuffer e, ffi::AnyBuffer f, ffi::AnyBuffer w, ffi::AnyBuffer dout,
                                  ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                                  ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> de,
                                  ffi::Result<ffi::AnyBuffer> df, std::string_view method, int64_t layout,
                                  bool causal, int64_t mats) {
  return backward(device, stream, q, k, v, e, f, w, dout, *dq, *dk, *dv, *de, *df, method, layout, causal, mats);
}

ffi::Error flurka_host(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer e, ffi::AnyBuffer f,
                       ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> workspace,
                       std::string_view method, int64_t layout, bool causal, int64_t mats) {
  return run(-1, nullptr, q, k, v, e, f, w, *out, *workspace, method, layout, causal, mats);
}

ffi::Error flurka_device(void* stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                         ffi::AnyBuffer e, ffi::AnyBuffer f, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> out,
                         ffi::Result<ffi::AnyBuffer> workspace, std::string_view method, int64_t layout, bool causal,
                         int64_t mats) {
  return run(device, stream, q, k, v, e, f, w, *out, *workspace, method, layout, causal, mats);
}

}  // namespace
}  // namespace splat::py

#define SPLAT_FLURKA_BINDING(...)                    \
  ffi::Ffi::Bind() __VA_ARGS__.Arg<ffi::AnyBuffer>() \
      .Arg<ffi::AnyBuffer>()                         \
      .Arg<ffi::AnyBuffer>()                         \
      .Arg<ffi::AnyBuffer>()                         \
      .Arg<ffi::AnyBuffer>()                         \
      .Arg<ffi::AnyBuffer>()                         \
      .Ret<ffi::AnyBuffer>()                         \
      .Ret<ffi::AnyBuffer>()                         \
      .Attr<std::string_view>("method")              \
      .Attr<int64_t>("layout")                       \
      .Attr<bool>("causal")                          \
      .Attr<int64_t>("mats")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatFlurkaHost, splat::py::flurka_host, SPLAT_FLURKA_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatFlurkaDevice, splat::py::flurka_device,
                              SPLAT_FLURKA_BINDING(.Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::DeviceOrdinal>()));

#define SPLAT_FLURKA_BACKWARD_BINDING(...)                                      \
  ffi::Ffi::Bind() __VA_ARGS__.Arg<ffi::AnyBuffer>() /* q, k, v, E, F, W, dout */ \
      .Arg<ffi::AnyBuffer>()                                                      \
      .Arg<ffi::AnyBuffer>()                                                      \
      .Arg<ffi::AnyBuffer>()                                                      \
      .Arg<ffi::AnyBuffer>()                                                      \
      .Arg<ffi::AnyBuffer>()                                                      \
      .Arg<ffi::AnyBuffer>()                                                      \
      .Ret<ffi::AnyBuffer>() /* dq, dk, dv, dE, dF */                             \
      .Ret<ffi::AnyBuffer>()                                                      \
      .Ret<ffi::AnyBuffer>()                                                      \
      .Ret<ffi::AnyBuffer>()                                                      \
      .Ret<ffi::AnyBuffer>()                                                      \
      .Attr<std::string_view>("method")                                           \
      .Attr<int64_t>("layout")                                                    \
      .Attr<bool>("causal")                                                       \
      .Attr<int64_t>("mats")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatFlurkaBackwardHost, splat::py::flurka_backward_host,
                              SPLAT_FLURKA_BACKWARD_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatFlurkaBackwardDevice, splat::py::flurka_backward_device,
                              SPLAT_FLURKA_BACKWARD_BINDING(.Ctx<ffi::PlatformStream<void*>>()
                                                                .Ctx<ffi::DeviceOrdinal>()));

void splat::py::bind_xla_flurka(nanobind::module_& m) {
  nanobind::dict targets, backward;
  targets["cpu"] = nanobind::capsule(reinterpret_cast<void*>(&SplatFlurkaHost));
  backward["cpu"] = nanobind::capsule(reinterpret_cast<void*>(&SplatFlurkaBackwardHost));
#if SPLAT_WITH_CUDA
  targets["CUDA"] = nanobind::capsule(reinterpret_cast<void*>(&SplatFlurkaDevice));
  backward["CUDA"] = nanobind::capsule(reinterpret_cast<void*>(&SplatFlurkaBackwardDevice));
#endif
  m.attr("xla_flurka_targets") = targets;
  m.attr("xla_flurka_backward_targets") = backward;
}

#else

void splat::py::bind_xla_flurka(nanobind::module_&) {}

#endif
