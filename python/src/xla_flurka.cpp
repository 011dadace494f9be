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
      require(device < 0, "causal FLuRKA runs on the CPU only (no CUDA kernel yet)");
      flurka_causal_cpu(m, in, o, in.e.cols);
    } else if (device < 0) {
      flurka_cpu(m, in, o);
    } else {
      const FlurkaShape s = check_flurka_args(m, in, o);
      require(workspace.size_bytes() >= flurka_cuda_workspace_bytes(m, s), "FLuRKA workspace too small");
      flurka_cuda(m, in, o, workspace.untyped_data(), stream);
    }
  });
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

void splat::py::bind_xla_flurka(nanobind::module_& m) {
  nanobind::dict targets;
  targets["cpu"] = nanobind::capsule(reinterpret_cast<void*>(&SplatFlurkaHost));
#if SPLAT_WITH_CUDA
  targets["CUDA"] = nanobind::capsule(reinterpret_cast<void*>(&SplatFlurkaDevice));
#endif
  m.attr("xla_flurka_targets") = targets;
}

#else

void splat::py::bind_xla_flurka(nanobind::module_&) {}

#endif
