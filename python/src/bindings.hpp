// Optional parts of splat._core, each in its own file; each sets a has_* attribute on the module.
#pragma once
#include <nanobind/nanobind.h>

namespace splat::py {
void bind_xla(nanobind::module_& m);           // XLA FFI handler capsules (when built against jax's headers)
void bind_flurka(nanobind::module_& m);        // FLuRKA (when include/splat/flurka.hpp exists)
void bind_xla_flurka(nanobind::module_& m);    // FLuRKA XLA FFI handlers (both of the above)
void bind_backward(nanobind::module_& m);      // training: forward with lse, backward
void bind_decode(nanobind::module_& m);        // serving: decode against a KV cache, packed varlen attention
void bind_xla_decode(nanobind::module_& m);    // their XLA FFI handlers (empty dicts without XLA FFI)
void bind_xla_backward(nanobind::module_& m);  // their XLA FFI handlers (empty dicts without XLA FFI)
void bind_recommend(nanobind::module_& m);     // the cost models' method choice (splat.recommend)
}  // namespace splat::py
