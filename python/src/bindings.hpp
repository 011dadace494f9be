// Optional parts of splat._core, each in its own file; each sets a has_* attribute on the module.
#pragma once
#include <nanobind/nanobind.h>

namespace splat::py {
void bind_xla(nanobind::module_& m);     // XLA FFI handler capsules (when built against jax's headers)
void bind_flurka(nanobind::module_& m);  // FLuRKA (when include/splat/flurka.hpp exists)
}  // namespace splat::py
