// DLPack arrays (nanobind ndarray: NumPy, PyTorch, JAX, CuPy, ...) to splat TensorViews, without copies.
#pragma once
#include <nanobind/ndarray.h>

#include <string>

#include "splat/tensor.hpp"

namespace splat::py {

namespace nb = nanobind;
using InArray = nb::ndarray<nb::ro>;  // read-only is fine for inputs
using OutArray = nb::ndarray<>;

// dtype_override: "" = from the array; "bf16"/... = reinterpret 16-bit storage (NumPy has no DLPack bf16).
DType array_dtype(const nb::dlpack::dtype& t, const std::string& dtype_override, const char* name);
int array_device(int device_type, int device_id, const char* name);  // -1 host, >= 0 CUDA ordinal
// "bhnd" -> 0 ([B, H, N, D]), "bnhd" -> 1 ([B, N, H, D]); anything else is an InvalidArgument error.
int parse_layout(const std::string& s);

template <class Array>
TensorView array_view(const Array& a, int layout, const std::string& dtype_override, const char* name);

}  // namespace splat::py
