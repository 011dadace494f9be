"""JAX versions of the serving entry points (XLA FFI custom calls; see splat._serving for the layouts): decode against
a KV cache (CPU; CUDA experimental, SPLAT_JAX_DECODE_CUDA=1: on a GPU the lengths and tables stay device arrays) and
packed varlen attention (CPU), under jax.jit. Plans are built while tracing and reach the handler by registry id.
Inference only (no gradient). Reached through splat.decode / splat.varlen_attention."""

import os

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
        # The CUDA decode handler is experimental (not yet run on a GPU): opt in with SPLAT_JAX_DECODE_CUDA=1.
        if platform == "CUDA" and os.environ.get("SPLAT_JAX_DECODE_CUDA") != "1":
            continue
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


def _device_index(x):
    """(CUDA ordinal or -1, guessed): the array's device, or for tracers JAX's default device (a guess)."""
    try:
        return (lambda d: -1 if d.platform == "cpu" else int(d.id))(next(iter(x.devices()))), False
    except Exception:  # tracers: where jit will run unless the inputs are committed elsewhere
        dev = getattr(jax.config, "jax_default_device", None) or jax.devices()[0]
        if isinstance(dev, str):
            dev = jax.devices(dev)[0]
        return (-1 if dev.platform == "cpu" else int(dev.id)), True


def _decode_workspace(plan, q, k_cache, block_table, layout):
    """Bytes of the split-KV workspace (the call's third, discarded result: each execution owns one; the handler
    on the host ignores it). From the shapes and the device, never the lengths; 1 on the CPU."""
    dev, guessed = _device_index(q)
    if dev < 0:
        return 1
    bhnd = layout == "bhnd"
    B, H, T, D = q.shape if bhnd else (q.shape[0], q.shape[2], q.shape[1], q.shape[3])
    cb, hkv, cn = (k_cache.shape[0], k_cache.shape[1], k_cache.shape[2]) if bhnd else \
        (k_cache.shape[0], k_cache.shape[2], k_cache.shape[1])
    max_pages = 0 if block_table is None else int(np.shape(block_table)[1])
    try:
        return max(1, int(_core._decode_workspace_bytes(plan, B, H, T, D, hkv, cb, cn, max_pages, dev)))
    except (NotImplementedError, ValueError):
        if not guessed:
            raise
        return 1  # the guessed device cannot serve this call: the arrays may be on the CPU (else the handler says so)


def decode(q, k_cache, v_cache, cache_seqlens, pattern, block_table=None, scale=None, *, cache_starts=None,
           layout="bhnd", return_lse=False):
    _register()
    plan = decode_plan(pattern, head_dim_of(q), dtype_name(q.dtype))
    ws = _decode_workspace(plan, q, k_cache, block_table, layout) if q.ndim == 4 and k_cache.ndim == 4 else 1
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(lse_shape(q, layout), jnp.float32),
               jax.ShapeDtypeStruct((ws,), jnp.uint8))
    call = jax.ffi.ffi_call(_DECODE, results, vmap_method="sequential")
    out, lse, _ = call(q, k_cache, v_cache, _int32(cache_seqlens), _int32(block_table), _int32(cache_starts),
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
