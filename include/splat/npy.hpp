// NumPy .npy files (format versions 1, 2 and 3), C order, little-endian: float32 '<f4', float16 '<f2',
// float64 '<f8', bool '|b1', uint8 '|u1', int8 '|i1', int32 '<i4', int64 '<i8'. Everything else is refused with one
// splat::Error: Io for a file that is missing, unreadable, truncated or has a corrupt header,
// InvalidArgument for a well-formed file splat does not take (other dtype, fortran_order, wrong shape).
// Writes go to a temporary file in the target's directory and are renamed over it at the end, so a
// failed write leaves an existing file untouched.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "splat/pattern.hpp"
#include "splat/tensor.hpp"

namespace splat {

enum class NpyDType : uint8_t { F32, F16, Bool, U8, I8, I32, I64, F64 };
const char* npy_descr(NpyDType t);  // e.g. "<f4"
size_t npy_item_size(NpyDType t);

struct NpyHeader {
  NpyDType dtype = NpyDType::F32;
  std::vector<int64_t> shape;
  size_t data_offset = 0;  // bytes from the start of the file to the array data
  size_t data_bytes = 0;   // product(shape) * item size
};

struct NpyArray {
  NpyDType dtype = NpyDType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // C order, little-endian, data.size() == elements() * item size
  int64_t elements() const;
};

// Parses the magic, version and header dictionary from the first `size` bytes of a file.
// `name` is used in error messages. Throws Error(Io) on corruption, Error(InvalidArgument) on what
// splat does not support.
NpyHeader parse_npy_header(const uint8_t* bytes, size_t size, const std::string& name);
// Parses a complete .npy image in memory (the data must follow the header exactly, nothing after it).
NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name = "<memory>");
NpyArray read_npy(const std::string& path);

// The complete .npy image (version 1 header, or 2 when the header does not fit in 64 KiB).
std::vector<uint8_t> encode_npy(const NpyArray& a);
void write_npy(const std::string& path, const NpyArray& a);
// Writes bytes to path via a temporary file in the same directory + rename. Throws Error(Io).
// Only a regular file (or nothing) at path is replaced; a symlink to a regular file is written through
// (the link stays); a directory, device, FIFO, socket or a symlink to one (or to nothing) is refused.
void write_file_atomic(const std::string& path, const void* data, size_t size);
// The same refusals, checked up front (before a long computation whose result would be refused).
void check_output_target(const std::string& path);

// An explicit N x N attention mask: 2-D square, bool or integer dtype with values 0/1.
// This is what the pattern parser calls for `mask:PATH.npy`.
std::shared_ptr<const MaskData> load_mask_npy(const std::string& path);
MaskData mask_from_npy(const NpyArray& a, const std::string& path);

// Attention tensors [B, H, N, D] as float32/float16/float64 .npy arrays.
DType tensor_dtype(const NpyArray& a, const std::string& name);    // F32, F16 or F64, else InvalidArgument
TensorView npy_tensor_view(NpyArray& a, const std::string& name);  // requires 4-D, nonzero sizes
NpyArray npy_from_tensor(const TensorView& t);                     // copies a host tensor (F32/F16/F64)

}  // namespace splat
