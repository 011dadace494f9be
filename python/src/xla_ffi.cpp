// XLA FFI handlers for jax.ffi.ffi_call: splat attention on CPU and CUDA buffers. The plan (and its NVRTC
// kernels) is built in Python at trace time and passed by registry id, so the handler only launches.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings.hpp"
#include "plans.hpp"
#include "splat/error.hpp"

#if SPLAT_WITH_XLA_FFI
#include "xla_common.hpp"

namespace ffi = xla::ffi;

namespace splat::py {
namespace {

// ws: a second result buffer sized at trace time (workspace_bytes; under vmap it grows with the batch like
// q does), so every execution has its own workspace for multi-pass plans and none shares the plan's buffer.
ffi::Error run(int device, void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
               ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> ws, int64_t plan_id, int64_t layout,
               float scale) {
  PlanHandle* plan = find_plan(plan_id);
  if (!plan) return ffi::Error::InvalidArgument("splat: unknown plan id " + std::to_string(plan_id));
  return xla::guarded([&] {
    const int l = int(layout);
    AttentionOptions opt;
    opt.scale = scale;
    run_plan(*plan, xla::buffer_view(q, l, device, "q"), xla::buffer_view(k, l, device, "k"),
             xla::buffer_view(v, l, device, "v"), xla::buffer_view(*out, l, device, "out"), opt, stream,
             ws->untyped_data(), ws->size_bytes());  // run_plan checks the size
  });
}

template <bool OnDevice>
auto binding() {
  return xla::bind_buffers<OnDevice, 3, 2>()
      .template Attr<int64_t>("plan_id")
      .template Attr<int64_t>("layout")
      .template Attr<float>("scale");
}

using Attention = xla::Entry<&run>;

}  // namespace
}  // namespace splat::py

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionHost, splat::py::Attention::host, splat::py::binding<false>());
// Not marked command-buffer compatible: the first call of a plan on a device may compile its kernels.
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionDevice, splat::py::Attention::device, splat::py::binding<true>());

void splat::py::bind_xla(nanobind::module_& m) {
  namespace nb = nanobind;
  m.attr("has_xla_ffi") = true;
  nb::dict targets;
  targets["cpu"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionHost));
#if SPLAT_WITH_CUDA
  targets["CUDA"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionDevice));
#endif
  m.attr("xla_attention_targets") = targets;  // FFI handler capsules by platform (jax.ffi.register_ffi_target)
  bind_xla_flurka(m);
}

#else

void splat::py::bind_xla(nanobind::module_& m) {
  m.attr("has_xla_ffi") = false;
}

#endif
