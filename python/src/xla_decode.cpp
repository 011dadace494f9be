// XLA FFI handlers of the serving entry points: decode against a KV cache (CPU and CUDA) and packed varlen attention
// (CPU). Plans are registered at trace time and passed by id, as for the forward.
#include <nanobind/nanobind.h>
#include <nanobind/stl/shared_ptr.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

#if SPLAT_WITH_XLA_FFI
#include "xla_common.hpp"

namespace ffi = xla::ffi;

namespace splat::py {
namespace {

// Registered plans live until exit (an executable may run long after tracing).
std::mutex registry_mu;
std::vector<std::shared_ptr<const DecodePlan>> decode_plans;
std::vector<std::shared_ptr<VarlenPlans>> varlen_plans;

template <class T>
T* lookup(std::vector<std::shared_ptr<T>>& v, int64_t id) {
  std::lock_guard<std::mutex> lock(registry_mu);
  return id >= 0 && size_t(id) < v.size() ? v[size_t(id)].get() : nullptr;
}

// An int32 buffer's data, nullptr when it has no elements (an absent optional argument).
const int32_t* int32_buffer(const ffi::AnyBuffer& b, const char* name) {
  require(b.element_type() == ffi::DataType::S32, std::string(name) + ": must be int32");
  return b.element_count() ? static_cast<const int32_t*>(b.untyped_data()) : nullptr;
}

// Decode on the host (decode_cpu) or, with a device context, on the CUDA stream XLA gives (decode_cuda: the lengths
// and tables stay device arrays, read by the kernel). ws: a result buffer sized at trace time
// (_decode_workspace_bytes) for the split-KV partial states; on the host it is ignored.
ffi::Error decode_run(int device, void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                      ffi::AnyBuffer seqlens, ffi::AnyBuffer table, ffi::AnyBuffer starts,
                      ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse, ffi::Result<ffi::AnyBuffer> ws,
                      int64_t plan_id, int64_t layout, float scale) {
  const DecodePlan* plan = lookup(decode_plans, plan_id);
  if (!plan) return ffi::Error::InvalidArgument("splat: unknown decode plan id " + std::to_string(plan_id));
  return xla::guarded([&] {
    const int l = int(layout);
    const TensorView tq = xla::buffer_view(q, l, device, "q");
    KvCache c;
    c.k = xla::buffer_view(k, l, device, "k_cache"), c.v = xla::buffer_view(v, l, device, "v_cache");
    c.seqlens = int32_buffer(seqlens, "cache_seqlens");
    require(c.seqlens && int64_t(seqlens.element_count()) == tq.B(), "cache_seqlens: must hold B int32 lengths");
    c.block_table = int32_buffer(table, "block_table");
    if (c.block_table) {
      const auto dims = table.dimensions();
      require(dims.size() == 2 && dims[0] == tq.B(), "block_table: must be [B, max_pages]");
      c.max_pages = dims[1];
    }
    c.starts = int32_buffer(starts, "cache_starts");
    require(!c.starts || int64_t(starts.element_count()) == tq.B(), "cache_starts: must hold B int32 values");
    AttentionOptions opt;
    opt.scale = scale;
    const TensorView to = xla::buffer_view(*out, l, device, "out");
    auto* lp = static_cast<float*>(lse->untyped_data());
    if (device < 0) return decode_cpu(*plan, tq, c, to, opt, lp);
    DecodeCudaWorkspace w;
    w.data = ws->untyped_data(), w.bytes = ws->size_bytes();
    decode_cuda(*plan, tq, c, to, opt, stream, lp, w);
  });
}

template <bool OnDevice>
auto decode_binding() {
  return xla::bind_buffers<OnDevice, 6, 3>()
      .template Attr<int64_t>("plan_id")
      .template Attr<int64_t>("layout")
      .template Attr<float>("scale");
}

using Decode = xla::Entry<&decode_run>;

// The split-KV workspace decode_cuda takes for these shapes on `device`, from the shapes alone (trace time: no
// arrays yet; the views carry a placeholder 16-byte aligned address, as XLA's buffers are). 0 when no split pays.
size_t decode_workspace_for(const DecodePlan& plan, int64_t B, int64_t H, int64_t T, int64_t D, int64_t Hkv,
                            int64_t cache_b, int64_t cache_n, int64_t max_pages, int device) {
  alignas(16) static char placeholder[16];
  auto view = [&](int64_t b, int64_t h, int64_t n) {
    return contiguous_view(placeholder, plan.options.dtype, b, h, n, D, device);
  };
  const TensorView tq = view(B, H, T);
  KvCache c;
  c.k = c.v = view(cache_b, Hkv, cache_n);
  alignas(16) static const int32_t dummy[4] = {};
  c.seqlens = dummy;
  if (max_pages > 0) c.block_table = dummy, c.max_pages = max_pages;
  return decode_cuda_workspace_bytes(plan, tq, c);
}

ffi::Error varlen_host(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer cu,
                       ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse, int64_t plans_id,
                       int64_t max_seqlen, float scale) {
  VarlenPlans* plans = lookup(varlen_plans, plans_id);
  if (!plans) return ffi::Error::InvalidArgument("splat: unknown varlen plans id " + std::to_string(plans_id));
  return xla::guarded([&] {
    const Varlen batch{int32_buffer(cu, "cu_seqlens"), int64_t(cu.element_count()) - 1, max_seqlen};
    AttentionOptions opt;
    opt.scale = scale;
    attention_varlen_cpu(*plans, xla::buffer_view(q, 1, -1, "q"), xla::buffer_view(k, 1, -1, "k"),
                         xla::buffer_view(v, 1, -1, "v"), xla::buffer_view(*out, 1, -1, "out"), batch, opt,
                         static_cast<float*>(lse->untyped_data()));
  });
}

#if SPLAT_WITH_CUDA
// The packed plan depends on the lengths: cu_seqlens is copied to the host first (one synchronisation of XLA's
// stream per call), then one forward launch on that stream.
ffi::Error varlen_device(void* stream, int32_t ordinal, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                         ffi::AnyBuffer cu, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                         int64_t plans_id, int64_t max_seqlen, float scale) {
  VarlenPlans* plans = lookup(varlen_plans, plans_id);
  if (!plans) return ffi::Error::InvalidArgument("splat: unknown varlen plans id " + std::to_string(plans_id));
  return xla::guarded([&] {
    const int32_t* device_cu = int32_buffer(cu, "cu_seqlens");
    std::vector<int32_t> host(cu.element_count());
    varlen_offsets_to_host(device_cu, int64_t(host.size()), host.data(), stream, int(ordinal));
    const Varlen batch{host.empty() ? nullptr : host.data(), int64_t(host.size()) - 1, max_seqlen};
    AttentionOptions opt;
    opt.scale = scale;
    const int d = int(ordinal);
    attention_varlen_cuda(*plans, xla::buffer_view(q, 1, d, "q"), xla::buffer_view(k, 1, d, "k"),
                          xla::buffer_view(v, 1, d, "v"), xla::buffer_view(*out, 1, d, "out"), batch, opt, stream,
                          static_cast<float*>(lse->untyped_data()));
  });
}

auto varlen_device_binding() {
  return xla::bind_buffers<true, 4, 2>().Attr<int64_t>("plans_id").Attr<int64_t>("max_seqlen").Attr<float>("scale");
}
#endif

}  // namespace
}  // namespace splat::py

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatDecodeHost, splat::py::Decode::host, splat::py::decode_binding<false>());
// Not marked command-buffer compatible: the first call of a shape on a device may compile its kernels.
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatDecodeDevice, splat::py::Decode::device, splat::py::decode_binding<true>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatVarlenHost, splat::py::varlen_host,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("plans_id")
                                  .Attr<int64_t>("max_seqlen")
                                  .Attr<float>("scale"));

#if SPLAT_WITH_CUDA
XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatVarlenDevice, splat::py::varlen_device, splat::py::varlen_device_binding());
#endif

void splat::py::bind_xla_decode(nanobind::module_& m) {
  namespace nb = nanobind;
  using namespace nb::literals;
  using splat::py::decode_workspace_for;
  nb::dict decode, varlen;
  decode["cpu"] = nb::capsule(reinterpret_cast<void*>(&SplatDecodeHost));
#if SPLAT_WITH_CUDA
  decode["CUDA"] = nb::capsule(reinterpret_cast<void*>(&SplatDecodeDevice));
#endif
  varlen["cpu"] = nb::capsule(reinterpret_cast<void*>(&SplatVarlenHost));
#if SPLAT_WITH_CUDA
  // Opt-in while GPU-untested (the kernels are the torch route's, GPU-tested; this handler has not run on a GPU).
  if (const char* e = std::getenv("SPLAT_JAX_VARLEN_CUDA"); e && std::string(e) == "1")
    varlen["CUDA"] = nb::capsule(reinterpret_cast<void*>(&SplatVarlenDevice));
#endif
  m.attr("xla_decode_targets") = decode;
  m.attr("xla_varlen_targets") = varlen;
  m.def("_register_decode_plan", [](std::shared_ptr<DecodePlan> p) {
    std::lock_guard<std::mutex> lock(registry_mu);
    decode_plans.push_back(std::move(p));
    return int64_t(decode_plans.size() - 1);
  });
  m.def("_decode_workspace_bytes", &decode_workspace_for, "plan"_a, "B"_a, "H"_a, "T"_a, "D"_a, "Hkv"_a, "cache_b"_a,
        "cache_n"_a, "max_pages"_a, "device"_a,
        "Split-KV workspace bytes of a CUDA decode call from its shapes (the JAX handler's third result)");
  m.def("_register_varlen_plans", [](std::shared_ptr<VarlenPlans> p) {
    std::lock_guard<std::mutex> lock(registry_mu);
    varlen_plans.push_back(std::move(p));
    return int64_t(varlen_plans.size() - 1);
  });
}

#else

void splat::py::bind_xla_decode(nanobind::module_& m) {
  m.attr("xla_decode_targets") = nanobind::dict();
  m.attr("xla_varlen_targets") = nanobind::dict();
}

#endif
