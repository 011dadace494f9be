// Shared pieces of the XLA FFI handlers: buffer -> view conversion, splat::Error -> ffi::Error, and one host/device
// handler pair (with its binding) per call.
#pragma once
#if SPLAT_WITH_XLA_FFI
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "plans.hpp"
#include "splat/error.hpp"
#include "xla/ffi/api/ffi.h"

namespace splat::py::xla {

namespace ffi = ::xla::ffi;

inline std::optional<DType> to_dtype(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return DType::F32;
    case ffi::DataType::F16: return DType::F16;
    case ffi::DataType::BF16: return DType::BF16;
    case ffi::DataType::F64: return DType::F64;  // CPU only (the kernels say so)
    default: return std::nullopt;
  }
}

inline DType buffer_dtype(const ffi::AnyBuffer& b, const char* name) {
  const auto dt = to_dtype(b.element_type());
  require(dt.has_value(), std::string(name) + ": unsupported dtype (expected float32, float16, bfloat16 or float64)");
  return *dt;
}

// XLA buffers are dense row-major.
inline TensorView buffer_view(const ffi::AnyBuffer& b, int layout, int device, const char* name) {
  const auto dims = b.dimensions();
  const int nd = int(dims.size());
  std::vector<int64_t> shape(dims.begin(), dims.end()), strides(static_cast<size_t>(nd));
  int64_t s = 1;
  for (int i = nd - 1; i >= 0; --i) strides[size_t(i)] = s, s *= shape[size_t(i)];
  return make_view(b.untyped_data(), buffer_dtype(b, name), nd, shape.data(), strides.data(), layout, device, name);
}

// Runs fn, turning exceptions into FFI errors (JAX raises them as JaxRuntimeError with the message).
template <class F>
ffi::Error guarded(F&& fn) {
  try {
    fn();
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

// Host and device handlers of one call differ only in the device context (stream, ordinal) in front. Body is
// ffi::Error body(int device, void* stream, Args...), device -1 on the host; host() and device() are the
// handlers XLA_FFI_DEFINE_HANDLER_SYMBOL binds.
template <auto Body>
struct Entry;
template <class... Args, ffi::Error (*Body)(int, void*, Args...)>
struct Entry<Body> {
  static ffi::Error host(Args... a) { return Body(-1, nullptr, a...); }
  static ffi::Error device(void* stream, int32_t ordinal, Args... a) { return Body(int(ordinal), stream, a...); }
};

// The binding of such a handler: the device context when OnDevice, then Args buffer arguments and Rets >= 1 buffer
// results (attributes follow at the call site). Bindings only move through their own && methods (the move
// constructor is private), so every step returns the prvalue such a method makes.
template <int Args, int Rets, class B>
auto buffers(B&& b) {
  static_assert(Rets >= 1, "a handler returns at least one buffer");
  if constexpr (Args > 0)
    return buffers<Args - 1, Rets>(std::move(b).template Arg<ffi::AnyBuffer>());
  else if constexpr (Rets > 1)
    return buffers<0, Rets - 1>(std::move(b).template Ret<ffi::AnyBuffer>());
  else
    return std::move(b).template Ret<ffi::AnyBuffer>();
}
template <bool OnDevice, int Args, int Rets>
auto bind_buffers() {
  if constexpr (OnDevice)
    return buffers<Args, Rets>(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::DeviceOrdinal>());
  else
    return buffers<Args, Rets>(ffi::Ffi::Bind());
}

}  // namespace splat::py::xla
#endif
