#include "splat/tensor.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include "splat/error.hpp"

namespace splat {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
  }
  return "?";
}

size_t dtype_size(DType t) { return t == DType::F64 ? 8 : t == DType::F32 ? 4 : 2; }

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32" || s == "fp32") return DType::F32;
  if (s == "f16" || s == "float16" || s == "fp16" || s == "half") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "f64" || s == "float64" || s == "fp64" || s == "double") return DType::F64;
  fail(ErrorCode::InvalidArgument, "unknown dtype '" + s + "' (expected f32, f16, bf16 or f64)");
}

TensorView contiguous_view(void* data, DType dtype, int64_t B, int64_t H, int64_t N, int64_t D, int device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.shape[0] = B, t.shape[1] = H, t.shape[2] = N, t.shape[3] = D;
  t.stride[3] = 1, t.stride[2] = D, t.stride[1] = N * D, t.stride[0] = H * N * D;
  return t;
}

namespace {
void check_view(const TensorView& t, const char* name) {
  for (int a = 0; a < 4; ++a)
    require(t.shape[a] > 0, std::string(name) + ": every dimension of [B, H, N, D] must be positive, got dim " +
                                std::to_string(a) + " = " + std::to_string(t.shape[a]));
  require(t.stride[3] == 1, std::string(name) + ": the head dimension D must be contiguous (stride 1), got stride " +
                                std::to_string(t.stride[3]));
  require(t.data != nullptr, std::string(name) + ": null data pointer");
  // Largest element offset must fit comfortably in int64 and in 32-bit row indices for N.
  const int64_t lim = std::numeric_limits<int64_t>::max() / 4;
  int64_t span = 0;
  for (int a = 0; a < 4; ++a) {
    require(t.stride[a] >= 0, std::string(name) + ": negative strides are not supported");
    require(t.stride[a] == 0 || t.shape[a] - 1 <= (lim - span) / std::max<int64_t>(t.stride[a], 1),
            std::string(name) + ": sizes too large: index arithmetic would overflow");
    span += (t.shape[a] - 1) * t.stride[a];
  }
  require(t.shape[2] < (int64_t(1) << 31), std::string(name) + ": sequence length must be below 2^31");
}
}  // namespace

void check_attention_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out) {
  check_view(q, "q");
  check_view(k, "k");
  check_view(v, "v");
  check_view(out, "out");
  require(k.dtype == q.dtype && v.dtype == q.dtype && out.dtype == q.dtype,
          std::string("q, k, v and out must have one dtype, got ") + dtype_name(q.dtype) + ", " + dtype_name(k.dtype) +
              ", " + dtype_name(v.dtype) + ", " + dtype_name(out.dtype));
  require(k.device == q.device && v.device == q.device && out.device == q.device,
          "q, k, v and out must live on the same device");
  for (int a : {0, 3})
    require(k.shape[a] == q.shape[a] && v.shape[a] == q.shape[a] && out.shape[a] == q.shape[a],
            std::string("shapes disagree in ") + (a == 0 ? "batch B" : "head dim D"));
  require(k.shape[2] == q.shape[2] && v.shape[2] == q.shape[2] && out.shape[2] == q.shape[2],
          "q, k, v and out must have the same sequence length N");
  require(k.shape[1] == v.shape[1], "k and v must have the same number of heads");
  require(out.shape[1] == q.shape[1], "out must have as many heads as q");
  require(q.shape[1] % k.shape[1] == 0, "query heads H=" + std::to_string(q.shape[1]) +
                                            " must be a multiple of key/value heads H_kv=" + std::to_string(k.shape[1]));
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) mant <<= 1, --exp;
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));  // inf / nan
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);                                     // overflow
  if (ax < 0x38800000u) {  // subnormal or zero in half: round via float arithmetic
    float a;
    std::memcpy(&a, &ax, 4);
    return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.0f)));  // 2^24
  }
  const uint32_t e = ((ax >> 23) - 127 + 15), m = ax & 0x7fffff;
  uint32_t h = (e << 10) | (m >> 13);
  const uint32_t rest = m & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return uint16_t(sign | h);
}

float bf16_to_float(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet nan
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

float load_element(const void* data, DType t, size_t index) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(data)[index];
    case DType::F16: return half_to_float(static_cast<const uint16_t*>(data)[index]);
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(data)[index]);
    case DType::F64: return float(static_cast<const double*>(data)[index]);
  }
  return 0.0f;
}

void store_element(void* data, DType t, size_t index, float value) {
  switch (t) {
    case DType::F32: static_cast<float*>(data)[index] = value; break;
    case DType::F16: static_cast<uint16_t*>(data)[index] = float_to_half(value); break;
    case DType::BF16: static_cast<uint16_t*>(data)[index] = float_to_bf16(value); break;
    case DType::F64: static_cast<double*>(data)[index] = double(value); break;
  }
}

double load_element_f64(const void* data, DType t, size_t index) {
  return t == DType::F64 ? static_cast<const double*>(data)[index] : double(load_element(data, t, index));
}

void store_element_f64(void* data, DType t, size_t index, double value) {
  if (t == DType::F64)
    static_cast<double*>(data)[index] = value;
  else
    store_element(data, t, index, float(value));
}

}  // namespace splat
