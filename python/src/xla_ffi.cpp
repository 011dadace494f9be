// XLA FFI handlers for jax.ffi.ffi_call: splat attention on CPU and CUDA buffers. The plan (and its NVRTC
// kernels) is built in Python at trace time and passed by registry id, so the handler only launches.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings.hpp"
#include "plans.hpp"
#include "splat/error.hpp"

#if SPLAT_WITH_XLA_FFI
#include <optional>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace splat::py {
namespace {

std::optional<DType> to_dtype(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return DType::F32;
    case ffi::DataType::F16: return DType::F16;
    case ffi::DataType::BF16: return DType::BF16;
    default: return std::nullopt;
  }
}

// XLA buffers are dense row-major.
TensorView buffer_view(const ffi::AnyBuffer& b, int layout, int device, const char* name) {
  const auto dims = b.dimensions();
  const auto dt = to_dtype(b.element_type());
  require(dt.has_value(), std::string(name) + ": unsupported dtype (expected float32, float16 or bfloat16)");
  const int nd = int(dims.size());
  std::vector<int64_t> shape(dims.begin(), dims.end()), strides(static_cast<size_t>(nd));
  int64_t s = 1;
  for (int i = nd - 1; i >= 0; --i) strides[size_t(i)] = s, s *= shape[size_t(i)];
  return make_view(b.untyped_data(), *dt, nd, shape.data(), strides.data(), layout, device, name);
}

ffi::Error run(int device, void* stream, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
               ffi::AnyBuffer& out, int64_t plan_id, int64_t layout, float scale) {
  try {
    PlanHandle* plan = find_plan(plan_id);
    if (!plan) return ffi::Error::InvalidArgument("splat: unknown plan id " + std::to_string(plan_id));
    const int l = int(layout);
    AttentionOptions opt;
    opt.scale = scale;
    run_plan(*plan, buffer_view(q, l, device, "q"), buffer_view(k, l, device, "k"), buffer_view(v, l, device, "v"),
             buffer_view(out, l, device, "out"), opt, stream);
    return ffi::Error::Success();
  } catch (const Error& e) {
    const std::string msg = std::string("splat: ") + e.what();
    if (e.code() == ErrorCode::InvalidArgument) return ffi::Error::InvalidArgument(msg);
    if (e.code() == ErrorCode::Unsupported) return ffi::Error(ffi::ErrorCode::kUnimplemented, msg);
    return ffi::Error::Internal(msg);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("splat: ") + e.what());
  }
}

ffi::Error attention_host(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::Result<ffi::AnyBuffer> out,
                          int64_t plan_id, int64_t layout, float scale) {
  return run(-1, nullptr, q, k, v, *out, plan_id, layout, scale);
}

ffi::Error attention_device(void* stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                            ffi::Result<ffi::AnyBuffer> out, int64_t plan_id, int64_t layout, float scale) {
  return run(device, stream, q, k, v, *out, plan_id, layout, scale);
}

}  // namespace
}  // namespace splat::py

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionHost, splat::py::attention_host,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plan_id")
                                  .Attr<int64_t>("layout")
                                  .Attr<float>("scale"));

// Not marked command-buffer compatible: a plan's first launch at a new B*H may grow its workspace, which
// synchronises (see cuda.hpp), and must not happen inside a CUDA graph capture.
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionDevice, splat::py::attention_device,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<void*>>()
                                  .Ctx<ffi::DeviceOrdinal>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plan_id")
                                  .Attr<int64_t>("layout")
                                  .Attr<float>("scale"));

void splat::py::bind_xla(nanobind::module_& m) {
  namespace nb = nanobind;
  m.attr("has_xla_ffi") = true;
  nb::dict targets;
  targets["cpu"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionHost));
#if SPLAT_WITH_CUDA
  targets["CUDA"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionDevice));
#endif
  m.attr("xla_attention_targets") = targets;  // FFI handler capsules by platform (jax.ffi.register_ffi_target)
}

#else

void splat::py::bind_xla(nanobind::module_& m) {
  m.attr("has_xla_ffi") = false;
}

#endif
