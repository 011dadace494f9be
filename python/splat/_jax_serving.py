"""JAX versions of the serving entry points (CPU, XLA FFI custom calls; see splat._serving for the layouts):
decode against a KV cache and packed varlen attention, under jax.jit. Plans are built while tracing and reach the
handler by registry id. Inference only (no gradient). Reached through splat.decode / splat.varlen_attention."""

import jax
import jax.numpy as jnp
import numpy as np

from . import _core
from ._dispatch import dtype_name, layout_code
from ._serving import decode_plan, head_dim_of, lse_shape, varlen_plans

_DECODE, _VARLEN = "splat_decode", "splat_varlen_attention"
_registered = False
_ids = {}  # id(plan object) -> (plan, registry id): the plan objects are cached, so this stays small


def _register():
    global _registered
    if _registered:
        return
    if not _core.xla_decode_targets:
        raise NotImplementedError("splat: this build has no XLA FFI handlers (JAX was not importable when splat "
                                  "was built); reinstall splat with jax installed")
    for platform, capsule in _core.xla_decode_targets.items():
        jax.ffi.register_ffi_target(_DECODE, capsule, platform=platform)
    for platform, capsule in _core.xla_varlen_targets.items():
        jax.ffi.register_ffi_target(_VARLEN, capsule, platform=platform)
    _registered = True


def _plan_id(plan, register):
    entry = _ids.get(id(plan))
    if entry is None:
        entry = _ids[id(plan)] = (plan, register(plan))
    return entry[1]


def _int32(x):
    return jnp.zeros((0,), jnp.int32) if x is None else jnp.asarray(x, dtype=jnp.int32)


def decode(q, k_cache, v_cache, cache_seqlens, pattern, block_table=None, scale=None, *, cache_starts=None,
           layout="bhnd", return_lse=False):
    _register()
    plan = decode_plan(pattern, head_dim_of(q), dtype_name(q.dtype))
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(lse_shape(q, layout), jnp.float32))
    call = jax.ffi.ffi_call(_DECODE, results, vmap_method="sequential")
    out, lse = call(q, k_cache, v_cache, _int32(cache_seqlens), _int32(block_table), _int32(cache_starts),
                    plan_id=np.int64(_plan_id(plan, _core._register_decode_plan)),
                    layout=np.int64(layout_code(layout)), scale=np.float32(0.0 if scale is None else scale))
    return (out, lse) if return_lse else out


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, pattern, scale=None, *, return_lse=False):
    _register()
    if q.ndim != 3:
        raise ValueError(f"splat: varlen_attention takes packed [total, H, D] arrays, got q {tuple(q.shape)}")
    plans = varlen_plans(pattern)
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((q.shape[1], q.shape[0]), jnp.float32))
    call = jax.ffi.ffi_call(_VARLEN, results, vmap_method="sequential")
    out, lse = call(q, k, v, _int32(cu_seqlens), plans_id=np.int64(_plan_id(plans, _core._register_varlen_plans)),
                    max_seqlen=np.int64(max_seqlen), scale=np.float32(0.0 if scale is None else scale))
    return (out, lse) if return_lse else out
