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

ffi::Error forward(int device, void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse, ffi::Result<ffi::AnyBuffer> ws,
                   int64_t plan_id, int64_t layout, float scale) {
  PlanHandle* plan = find_plan(plan_id);
  if (!plan) return ffi::Error::InvalidArgument("splat: unknown plan id " + std::to_string(plan_id));
  return xla::guarded([&] {
    const int l = int(layout);
    AttentionOptions opt;
    opt.scale = scale;
    const TensorView tq = xla::buffer_view(q, l, device, "q");
    run_plan(*plan, tq, xla::buffer_view(k, l, device, "k"), xla::buffer_view(v, l, device, "v"),
             xla::buffer_view(*out, l, device, "out"), opt, stream, ws->untyped_data(), ws->size_bytes(),
             lse_of(*lse, tq));
  });
}

ffi::Error backward(int device, void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer out,
                    ffi::AnyBuffer lse, ffi::AnyBuffer dout, ffi::Result<ffi::AnyBuffer> dq,
                    ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> ws,
                    int64_t plan_id, int64_t layout, float scale, int64_t deterministic) {
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
    t.dq = xla::buffer_view(*dq, l, device, "dq");
    t.dk = xla::buffer_view(*dk, l, device, "dk");
    t.dv = xla::buffer_view(*dv, l, device, "dv");
    t.lse = lse_of(lse, t.q);
    AttentionOptions opt;
    opt.scale = scale;
    opt.deterministic = deterministic != 0;
    run_backward(*plan, t, opt, stream, ws->untyped_data(), ws->size_bytes());
  });
}

// forward: q, k, v -> out, lse, workspace; backward: q, k, v, out, lse, dout -> dq, dk, dv, workspace.
template <bool OnDevice>
auto forward_binding() {
  return xla::bind_buffers<OnDevice, 3, 3>()
      .template Attr<int64_t>("plan_id")
      .template Attr<int64_t>("layout")
      .template Attr<float>("scale");
}

template <bool OnDevice>
auto backward_binding() {
  return xla::bind_buffers<OnDevice, 6, 4>()
      .template Attr<int64_t>("plan_id")
      .template Attr<int64_t>("layout")
      .template Attr<float>("scale")
      .template Attr<int64_t>("deterministic");
}

using Forward = xla::Entry<&forward>;
using Backward = xla::Entry<&backward>;

}  // namespace
}  // namespace splat::py

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionLseHost, splat::py::Forward::host, splat::py::forward_binding<false>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionLseDevice, splat::py::Forward::device, splat::py::forward_binding<true>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionBwdHost, splat::py::Backward::host, splat::py::backward_binding<false>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatAttentionBwdDevice, splat::py::Backward::device,
                              splat::py::backward_binding<true>());

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
