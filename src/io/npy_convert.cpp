// Turning .npy arrays into what splat consumes: explicit masks and [B, H, N, D] attention tensors.
#include <cstring>

#include "splat/error.hpp"
#include "splat/npy.hpp"

namespace splat {

namespace {
std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

template <typename T>
int64_t first_non_binary(const uint8_t* data, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, data + i * sizeof(T), sizeof(T));
    if (v != 0 && v != 1) return i;
  }
  return -1;
}
}  // namespace

MaskData mask_from_npy(const NpyArray& a, const std::string& path) {
  require(a.shape.size() == 2 && a.shape[0] == a.shape[1],
          path + ": a mask must be a square 2-D array (N, N), got shape " + shape_string(a.shape));
  require(a.shape[0] > 0, path + ": a mask must have N > 0");
  require(a.shape[0] < (int64_t(1) << 31), path + ": mask too large (N must be below 2^31)");
  const int64_t n = a.shape[0], count = n * n;
  int64_t bad = -1;
  switch (a.dtype) {
    case NpyDType::Bool:
    case NpyDType::U8: bad = first_non_binary<uint8_t>(a.data.data(), count); break;
    case NpyDType::I8: bad = first_non_binary<int8_t>(a.data.data(), count); break;
    case NpyDType::I32: bad = first_non_binary<int32_t>(a.data.data(), count); break;
    case NpyDType::I64: bad = first_non_binary<int64_t>(a.data.data(), count); break;
    default:
      fail(ErrorCode::InvalidArgument, path + ": a mask must be bool or integer 0/1, got dtype " + npy_descr(a.dtype));
  }
  require(bad < 0, path + ": mask values must be 0 or 1; entry (" + std::to_string(bad / n) + ", " +
                       std::to_string(bad % n) + ") is not");
  MaskData m;
  m.n = n;
  m.path = path;
  m.bits.resize(size_t(count));
  const size_t item = npy_item_size(a.dtype);
  // Values are 0/1, so the lowest (little-endian first) byte of each item is the value.
  for (int64_t i = 0; i < count; ++i) m.bits[size_t(i)] = a.data[size_t(i) * item];
  return m;
}

std::shared_ptr<const MaskData> load_mask_npy(const std::string& path) {
  return std::make_shared<const MaskData>(mask_from_npy(read_npy(path), path));
}

DType tensor_dtype(const NpyArray& a, const std::string& name) {
  if (a.dtype == NpyDType::F32) return DType::F32;
  if (a.dtype == NpyDType::F16) return DType::F16;
  if (a.dtype == NpyDType::F64) return DType::F64;
  fail(ErrorCode::InvalidArgument,
       name + ": attention tensors must be float32, float16 or float64, got dtype " + npy_descr(a.dtype));
}

TensorView npy_tensor_view(NpyArray& a, const std::string& name) {
  const DType t = tensor_dtype(a, name);
  require(a.shape.size() == 4, name + ": expected a 4-D array [B, H, N, D], got shape " + shape_string(a.shape));
  for (int64_t d : a.shape)
    require(d > 0, name + ": an empty array (every dimension must be positive), got shape " + shape_string(a.shape));
  return contiguous_view(a.data.data(), t, a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
}

NpyArray npy_from_tensor(const TensorView& t) {
  require(t.device < 0, "npy_from_tensor: tensor must be in host memory");
  require(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::F64,
          std::string("cannot write a ") + dtype_name(t.dtype) + " tensor to .npy (float32, float16 or float64 only)");
  NpyArray a;
  a.dtype = t.dtype == DType::F32 ? NpyDType::F32 : t.dtype == DType::F16 ? NpyDType::F16 : NpyDType::F64;
  a.shape = {t.B(), t.H(), t.N(), t.D()};
  const size_t item = dtype_size(t.dtype), row = size_t(t.D()) * item;
  a.data.resize(size_t(a.elements()) * item);
  uint8_t* dst = a.data.data();
  for (int64_t b = 0; b < t.B(); ++b)
    for (int64_t h = 0; h < t.H(); ++h)
      for (int64_t n = 0; n < t.N(); ++n, dst += row)
        std::memcpy(dst, static_cast<const uint8_t*>(t.data) + t.offset(b, h, n) * item, row);
  return a;
}

}  // namespace splat
