// Non-owning views of attention tensors [B, H, N, D] with arbitrary strides over B, H, N and
// contiguous D. The same views describe host and device memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace splat {

// F64: CPU only (computed in float64: the oracle's precision, for gradcheck and NumPy's default dtype).
enum class DType : uint8_t { F32, F16, BF16, F64 };
const char* dtype_name(DType t);
size_t dtype_size(DType t);
DType parse_dtype(const std::string& s);  // "f32"|"f16"|"bf16"|"f64" (also float32, float16, bfloat16, float64)

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t shape[4] = {0, 0, 0, 0};   // B, H, N, D
  int64_t stride[4] = {0, 0, 0, 1};  // in elements; stride[3] must be 1
  int device = -1;                   // -1: host; >= 0: CUDA device ordinal
  int64_t B() const { return shape[0]; }
  int64_t H() const { return shape[1]; }
  int64_t N() const { return shape[2]; }
  int64_t D() const { return shape[3]; }
  size_t offset(int64_t b, int64_t h, int64_t n) const {
    return size_t(b * stride[0] + h * stride[1] + n * stride[2]);
  }
};

// Contiguous [B,H,N,D] view over data.
TensorView contiguous_view(void* data, DType dtype, int64_t B, int64_t H, int64_t N, int64_t D, int device = -1);

// Checks q [B,H,N,D], k/v [B,Hkv,N,D], out like q; H % Hkv == 0; dtypes equal; D contiguous;
// sizes positive; index arithmetic cannot overflow. Throws Error(InvalidArgument) naming the problem.
void check_attention_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out);

// fp16 / bf16 <-> fp32 conversions (host side; round to nearest even).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
float load_element(const void* data, DType t, size_t index);
void store_element(void* data, DType t, size_t index, float value);
double load_element_f64(const void* data, DType t, size_t index);
void store_element_f64(void* data, DType t, size_t index, double value);

}  // namespace splat
