#include "arrays.hpp"

#include <utility>
#include <vector>

#include "plans.hpp"
#include "splat/error.hpp"

namespace splat::py {

int parse_layout(const std::string& s) {
  if (s == "bhnd") return 0;
  if (s == "bnhd") return 1;
  fail(ErrorCode::InvalidArgument, "layout must be 'bhnd' ([B, H, N, D]) or 'bnhd' ([B, N, H, D]), got '" + s + "'");
}

DType array_dtype(const nb::dlpack::dtype& t, const std::string& dtype_override, const char* name) {
  const std::string who(name);
  require(t.lanes == 1, who + ": vector dtypes are not supported");
  if (!dtype_override.empty()) {
    const DType d = parse_dtype(dtype_override);
    if (t.code == uint8_t(nb::dlpack::dtype_code::UInt)) {  // bits carrier (NumPy bf16 viewed as uint16)
      require(t.bits == dtype_size(d) * 8,
              who + ": element size " + std::to_string(t.bits) + " bits does not match " + dtype_name(d));
      return d;
    }
    const DType own = array_dtype(t, "", name);
    require(own == d, who + ": dtype " + dtype_name(own) + " differs from " + dtype_name(d) + " (the other arrays')");
    return d;
  }
  if (t.code == uint8_t(nb::dlpack::dtype_code::Float) && t.bits == 64) return DType::F64;
  if (t.code == uint8_t(nb::dlpack::dtype_code::Float) && t.bits == 32) return DType::F32;
  if (t.code == uint8_t(nb::dlpack::dtype_code::Float) && t.bits == 16) return DType::F16;
  if (t.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && t.bits == 16) return DType::BF16;
  fail(ErrorCode::InvalidArgument, who + ": unsupported dtype (code " + std::to_string(t.code) + ", " +
                                       std::to_string(t.bits) +
                                       " bits); expected float32, float16, bfloat16 or float64");
}

int array_device(int device_type, int device_id, const char* name) {
  if (device_type == nb::device::cpu::value || device_type == nb::device::cuda_host::value) return -1;
  if (device_type == nb::device::cuda::value || device_type == nb::device::cuda_managed::value) return device_id;
  fail(ErrorCode::InvalidArgument,
       std::string(name) + ": unsupported device type " + std::to_string(device_type) + " (expected CPU or CUDA)");
}

namespace {
// [first byte, one past the last byte] a view can touch; empty views touch nothing.
std::pair<uintptr_t, uintptr_t> byte_range(const TensorView& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.data);
  int64_t lo = 0, hi = 0;
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] == 0) return {base, base};
    const int64_t span = (t.shape[i] - 1) * t.stride[i];
    (span < 0 ? lo : hi) += span;
  }
  const auto size = int64_t(dtype_size(t.dtype));
  return {base + uintptr_t(lo * size), base + uintptr_t((hi + 1) * size)};
}
}  // namespace

void check_disjoint(const TensorView& out, const TensorView& in, const char* out_name, const char* in_name) {
  if (out.device != in.device) return;
  const auto a = byte_range(out), b = byte_range(in);
  require(a.first >= a.second || b.first >= b.second || a.second <= b.first || b.second <= a.first,
          std::string(out_name) + " shares memory with " + in_name + ": pass a separate output array");
}

template <class Array>
TensorView array_view(const Array& a, int layout, const std::string& dtype_override, const char* name) {
  const int nd = int(a.ndim());
  std::vector<int64_t> shape(size_t(nd > 0 ? nd : 1)), strides(size_t(nd > 0 ? nd : 1));
  for (int i = 0; i < nd; ++i) shape[size_t(i)] = int64_t(a.shape(size_t(i))), strides[size_t(i)] = a.stride(size_t(i));
  const DType dt = array_dtype(a.dtype(), dtype_override, name);
  const int dev = array_device(a.device_type(), a.device_id(), name);
  return make_view(const_cast<void*>(static_cast<const void*>(a.data())), dt, nd, shape.data(), strides.data(), layout,
                   dev, name);
}

template TensorView array_view<InArray>(const InArray&, int, const std::string&, const char*);
template TensorView array_view<OutArray>(const OutArray&, int, const std::string&, const char*);

}  // namespace splat::py
