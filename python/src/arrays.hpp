// DLPack arrays (nanobind ndarray: NumPy, PyTorch, JAX, CuPy, ...) to splat TensorViews, without copies.
#pragma once
#include <nanobind/ndarray.h>

#include <string>

#include "splat/tensor.hpp"

namespace splat::py {

namespace nb = nanobind;
using InArray = nb::ndarray<nb::ro>;  // read-only is fine for inputs
using OutArray = nb::ndarray<>;

// dtype_override: "" = from the array; "bf16"/... = the dtype the caller means: an unsigned-integer array of that
// element size is reinterpreted (NumPy has no DLPack bf16, so its bf16 arrays arrive as uint16 bits); a floating-point
// array must already have that dtype (a float16 array is never read as bf16).
DType array_dtype(const nb::dlpack::dtype& t, const std::string& dtype_override, const char* name);
int array_device(int device_type, int device_id, const char* name);  // -1 host, >= 0 CUDA ordinal
// "bhnd" -> 0 ([B, H, N, D]), "bnhd" -> 1 ([B, N, H, D]); anything else is an InvalidArgument error.
int parse_layout(const std::string& s);

// out must not share memory with an input (the kernels read inputs after writing parts of out): compares the byte
// ranges the two views span on the same device (conservative: interleaved views of one buffer are refused too).
void check_disjoint(const TensorView& out, const TensorView& in, const char* out_name, const char* in_name);

template <class Array>
TensorView array_view(const Array& a, int layout, const std::string& dtype_override, const char* name);

}  // namespace splat::py
