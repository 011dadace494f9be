// XLA FFI handlers for training with jax.custom_vjp: a forward that also returns the row log-sum-exp, and the
// backward. Like the forward handlers, the plan is found by registry id; workspaces are extra results sized at
// trace time, so every execution owns its own.
#include <nanobind/nanobind.h>

#include "bindings.hpp"
#include "plans.hpp"
#include "splat/error.hpp"

#if SPLAT_WITH_XLA_FFI
#include "xla_common.hpp"

namespace ffi = xla::ffi;

namespace splat::py {
namespace {

float* lse_of(ffi::AnyBuffer& lse, const TensorView& q) {
  require(lse.element_type() == ffi::DataType::F32, "lse: must be float32");
  require(int64_t(lse.element_count()) == q.B() * q.H() * q.N(), "lse: must have B*H*N elements");
  return static_cast<float*>(lse.untyped_data());
}

ffi::Error forward(int device, void* stream, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
                   ffi::AnyBuffer& out, ffi::AnyBuffer& lse, ffi::AnyBuffer& ws, int64_t plan_id, int64_t layout,
                   float scale) {
  PlanHandle* plan = find_plan(plan_id);
  if (!plan) return ffi::Error::InvalidArgument("splat: unknown plan id " + std::to_string(plan_id));
  return xla::guarded([&] {
    const int l = int(layout);
    AttentionOptions opt;
    opt.scale = scale;
    const TensorView tq = xla::buffer_view(q, l, device, "q");
    run_plan(*plan, tq, xla::buffer_view(k, l, device, "k"), xla::buffer_view(v, l, device, "v"),
             xla::buffer_view(out, l, device, "out"), opt, stream, ws.untyped_data(), ws.size_bytes(), lse_of(lse, tq));
  });
}

ffi::Error backward(int device, void* stream, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
                    const ffi::AnyBuffer& out, const ffi::AnyBuffer& lse, const ffi::AnyBuffer& dout,
                    ffi::AnyBuffer& dq, ffi::AnyBuffer& dk, ffi::AnyBuffer& dv, ffi::AnyBuffer& ws, int64_t plan_id,
                    int64_t layout, float scale, int64_t deterministic) {
  PlanHandle* plan = find_plan(plan_id);
  if (!plan) return ffi::Error::InvalidArgument("splat: unknown plan id " + std::to_string(plan_id));
  return xla::guarded([&] {
    const int l = int(layout);
    BackwardTensors t;
    t.q = xla::buffer_view(q, l, device, "q");
    t.k = xla::buffer_view(k, l, device, "k");
    t.v = xla::buffer_view(v, l, device, "v");
    t.out = xla::buffer_view(out, l, device, "out");
    t.dout = xla::buffer_view(dout, l, device, "dout");
    t.dq = xla::buffer_view(dq, l, device, "dq");
    t.dk = xla::buffer_view(dk, l, device, "dk");
    t.dv = xla::buffer_view(dv, l, device, "dv");
    t.lse = lse_of(const_cast<ffi::AnyBuffer&>(lse), t.q);
    AttentionOptions opt;
    opt.scale = scale;
    opt.deterministic = deterministic != 0;
    run_backward(*plan, t, opt, stream, ws.untyped_data(), ws.size_bytes());
  });
}

ffi::Error forward_host(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::Result<ffi::AnyBuffer> out,
                        ffi::Result<ffi::AnyBuffer> lse, ffi::Result<ffi::AnyBuffer> ws, int64_t plan_id,
                        int64_t layout, float scale) {
  return forward(-1, nullptr, q, k, v, *out, *lse, *ws, plan_id, layout, scale);
}

ffi::Error forward_device(void* stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                          ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                          ffi::Result<ffi::AnyBuffer> ws, int64_t plan_id, int64_t layout, float scale) {
  return forward(device, stream, q, k, v, *out, *lse, *ws, plan_id, layout, scale);
}

ffi::Error backward_host(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer out, ffi::AnyBuffer lse,
                         ffi::AnyBuffer dout, ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                         ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> ws, int64_t plan_id,
                         int64_t layout, float scale, int64_t deterministic) {
  return backward(-1, nullptr, q, k, v, out, lse, dout, *dq, *dk, *dv, *ws, plan_id, layout, scale, deterministic);
}

ffi::Error backward_device(void* stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                           ffi::AnyBuffer out, ffi::AnyBuffer lse, ffi::AnyBuffer dout, ffi::Result<ffi::AnyBuffer> dq,
                           ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                           ffi::Result<ffi::AnyBuffer> ws, int64_t plan_id, int64_t layout, float scale,
                           int64_t deterministic) {
  return backward(device, stream, q, k, v, out, lse, dout, *dq, *dk, *dv, *ws, plan_id, layout, scale, deterministic);
}

}  // namespace
}  // namespace splat::py

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionLseHost, splat::py::forward_host,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plan_id")
                                  .Attr<int64_t>("layout")
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionLseDevice, splat::py::forward_device,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<void*>>()
                                  .Ctx<ffi::DeviceOrdinal>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plan_id")
                                  .Attr<int64_t>("layout")
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionBwdHost, splat::py::backward_host,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plan_id")
                                  .Attr<int64_t>("layout")
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionBwdDevice, splat::py::backward_device,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<void*>>()
                                  .Ctx<ffi::DeviceOrdinal>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plan_id")
                                  .Attr<int64_t>("layout")
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("deterministic"));

void splat::py::bind_xla_backward(nanobind::module_& m) {
  namespace nb = nanobind;
  nb::dict fwd, bwd;
  fwd["cpu"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionLseHost));
  bwd["cpu"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionBwdHost));
#if SPLAT_WITH_CUDA
  fwd["CUDA"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionLseDevice));
  bwd["CUDA"] = nb::capsule(reinterpret_cast<void*>(&SplatAttentionBwdDevice));
#endif
  m.attr("xla_attention_lse_targets") = fwd;  // forward + lse, by platform
  m.attr("xla_attention_bwd_targets") = bwd;  // backward, by platform
}

#else

void splat::py::bind_xla_backward(nanobind::module_& m) {
  namespace nb = nanobind;
  m.attr("xla_attention_lse_targets") = nb::dict();
  m.attr("xla_attention_bwd_targets") = nb::dict();
}

#endif
