// Shared pieces of the XLA FFI handlers: buffer -> view conversion and splat::Error -> ffi::Error.
#pragma once
#if SPLAT_WITH_XLA_FFI
#include <optional>
#include <string>
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

}  // namespace splat::py::xla
#endif
