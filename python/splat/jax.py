"""JAX integration: splat attention as an XLA FFI custom call (CPU and CUDA), under jit and vmap.

    import splat.jax
    out = jax.jit(lambda q, k, v: splat.jax.attention(q, k, v, pattern="window:w=128"))(q, k, v)
    out = splat.jax.dot_product_attention(q, k, v, is_causal=True, pattern="window:w=128")   # [B, N, H, D]

The plan (analysis; on GPUs the NVRTC compilation) is built while tracing, in Python, and reaches the
handler as an integer attribute: the compiled executable only launches.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _core
from ._api import empty_call, resolve_plan
from ._dispatch import causal_pattern, dtype_name, intersect, layout_code, sizes
from ._flurka import check_matrices, workspace_bytes

__all__ = ["attention", "dot_product_attention", "flurka"]

_TARGET = "splat_attention"
_LSE_TARGET = "splat_attention_lse"
_BWD_TARGET = "splat_attention_bwd"
_registered = False


def _register():
    global _registered
    if _registered:
        return
    if not _core.has_xla_ffi:
        raise NotImplementedError("splat: this build has no XLA FFI handlers (JAX was not importable when splat "
                                  "was built); reinstall splat with jax installed")
    for platform, capsule in _core.xla_attention_targets.items():
        jax.ffi.register_ffi_target(_TARGET, capsule, platform=platform)
    for platform, capsule in _core.xla_attention_lse_targets.items():
        jax.ffi.register_ffi_target(_LSE_TARGET, capsule, platform=platform)
    for platform, capsule in _core.xla_attention_bwd_targets.items():
        jax.ffi.register_ffi_target(_BWD_TARGET, capsule, platform=platform)
    _registered = True


def _device_index(x):
    """(CUDA ordinal or -1, guessed): the array's device, or for tracers JAX's default device (a guess)."""
    try:
        dev = next(iter(x.devices()))  # concrete arrays
        guessed = False
    except Exception:  # tracers: where jit will run unless the inputs are committed elsewhere
        dev = getattr(jax.config, "jax_default_device", None) or jax.devices()[0]
        if isinstance(dev, str):
            dev = jax.devices(dev)[0]
        guessed = True
    return (-1 if dev.platform == "cpu" else int(dev.id)), guessed


def _plan_for(plan, pattern, q, layout):
    dev, guessed = _device_index(q)
    try:
        return resolve_plan(plan, pattern, q.shape, layout, dtype_name(q.dtype), dev)
    except NotImplementedError:
        if not guessed or dev < 0:
            raise
        # The guessed device cannot serve this call (e.g. f32 on the CUDA kernels); the arrays may well be on
        # the CPU. A host plan serves the CPU; on a GPU the handler reports the same limit when it runs.
        return resolve_plan(plan, pattern, q.shape, layout, dtype_name(q.dtype), -1)


def attention(q, k, v, plan=None, *, pattern=None, scale=None, layout="bhnd", deterministic=True):
    """Sparse attention. q [..., H, N, D] (layout='bhnd') or [..., N, H, D] ('bnhd'); k, v alike with
    H_kv heads (H % H_kv == 0). Leading dims are batch dims (vmap adds more). Works under jit and vmap.
    deterministic=True (the default): gradients bitwise identical run to run. deterministic=False allows a CUDA
    backward without the dQ pass (on sm_90a dQ from fp32 atomics inside the dK/dV pass; dq's last bits vary run to
    run); whether it is faster depends on the shape (docs/BENCHMARKS-backward.md).
    """
    _register()
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"splat: q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if empty_call(q, k, v):  # B = 0 or N = 0: an empty result, as jax.nn.dot_product_attention
        return jnp.zeros(q.shape, q.dtype)
    p = _plan_for(plan, pattern, q, layout)
    plan_id = p._register()
    _plans_by_id[plan_id] = p  # registered plans live until exit anyway; the backward needs its device
    return _call(q, k, v, plan_id, layout_code(layout), 0.0 if scale is None else float(scale),
                 _workspace_bytes(p, q, layout), bool(deterministic))


def _workspace_bytes(p, q, layout):
    # Multi-pass plans merge through a workspace: a second (discarded) result of the call, so each execution owns
    # one; under vmap it gains the mapped axis exactly as q does, so it stays large enough.
    if p.device < 0:  # a host plan (the arrays' device may only be a guess under tracing)
        return 1
    n, d = sizes(q.shape, layout)
    return max(1, int(_core.workspace_bytes(p, q.size // (n * d), 1, p.device)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _call(q, k, v, plan_id, layout, scale, nbytes, deterministic):
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((nbytes,), jnp.uint8))
    call = jax.ffi.ffi_call(_TARGET, results, vmap_method="broadcast_all")
    out, _ = call(q, k, v, plan_id=np.int64(plan_id), layout=np.int64(layout), scale=np.float32(scale))
    return out


def _lse_shape(q, layout):
    """The row log-sum-exp: float32 [..., H, N] in both layouts."""
    return (*q.shape[:-3], q.shape[-2], q.shape[-3]) if layout == 1 else q.shape[:-1]


def _call_fwd(q, k, v, plan_id, layout, scale, nbytes, deterministic):
    # Training forward: the same kernels, also writing lse; the residuals are q, k, v, out and lse (O(B*H*N) extra).
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(_lse_shape(q, layout), jnp.float32),
               jax.ShapeDtypeStruct((nbytes,), jnp.uint8))
    call = jax.ffi.ffi_call(_LSE_TARGET, results, vmap_method="broadcast_all")
    out, lse, _ = call(q, k, v, plan_id=np.int64(plan_id), layout=np.int64(layout), scale=np.float32(scale))
    return out, (q, k, v, out, lse)


def _call_bwd(plan_id, layout, scale, nbytes, deterministic, residuals, grad):
    q, k, v, out, lse = residuals
    p = _core_plan(plan_id)
    n, d = q.shape[-3 if layout == 1 else -2], q.shape[-1]
    bwd_bytes = 1 if p.device < 0 else max(1, int(_core.backward_workspace_bytes(p, q.size // (n * d), 1, p.device,
                                                                                   deterministic)))
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
               jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct((bwd_bytes,), jnp.uint8))
    call = jax.ffi.ffi_call(_BWD_TARGET, results, vmap_method="broadcast_all")
    dq, dk, dv, _ = call(q, k, v, out, lse, grad.astype(q.dtype), plan_id=np.int64(plan_id), layout=np.int64(layout),
                         scale=np.float32(scale), deterministic=np.int64(bool(deterministic)))
    return dq, dk, dv


_plans_by_id = {}


def _core_plan(plan_id):
    return _plans_by_id[plan_id]


_call.defvjp(_call_fwd, _call_bwd)


def _window_pattern(local_window_size):
    if isinstance(local_window_size, int):
        left = right = local_window_size
    else:
        left, right = local_window_size
    if left == right:
        return f"window:w={left}"
    if right == 0:
        return f"causal_window:w={left}"
    raise ValueError("splat: local_window_size must be symmetric (w, w) or causal (w, 0)")


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                          query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
                          implementation=None, pattern=None):
    """jax.nn.dot_product_attention's layout ([B, N, H, D] or [N, H, D]) and arguments, plus pattern=.

    mask: a concrete boolean [N, N] (or [1, 1, N, N]) mask, used as the pattern (with pattern= too: both must
    allow); per-batch or per-head masks and bias raise. is_causal and local_window_size intersect it as in JAX.
    """
    if bias is not None:
        raise ValueError("splat: bias is not supported; express the mask as pattern= or a boolean mask=")
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        raise ValueError("splat: sequence lengths (padding) are not supported")
    if implementation not in (None, "splat"):
        raise ValueError("splat: implementation must be None")
    pat = pattern
    if local_window_size is not None:
        pat = intersect(pat, _window_pattern(local_window_size))
    if is_causal:
        pat = causal_pattern(pat)
    if mask is not None:  # the mask and the spec meet as one in-memory mask
        from ._api import dense_mask
        from ._plans import register_mask
        n = int(query.shape[-3])
        pat = register_mask(mask, n) if pat is None else \
            register_mask(dense_mask(register_mask(mask, n), n) & dense_mask(pat, n) > 0, n)
    return attention(query, key, value, pattern=pat if pat is not None else "dense", scale=scale, layout="bnhd")


_FLURKA_TARGET = "splat_flurka"
_flurka_registered = False


_FLURKA_BWD_TARGET = "splat_flurka_backward"


def _register_flurka():
    global _flurka_registered
    if not _flurka_registered:
        for platform, capsule in _core.xla_flurka_targets.items():
            jax.ffi.register_ffi_target(_FLURKA_TARGET, capsule, platform=platform)
        for platform, capsule in getattr(_core, "xla_flurka_backward_targets", {}).items():
            jax.ffi.register_ffi_target(_FLURKA_BWD_TARGET, capsule, platform=platform)
        _flurka_registered = True


def flurka(q, k, v, E=None, F=None, W=None, method="flurka-favor", causal=False, *, layout="bhnd"):
    """FLuRKA as an XLA FFI call (CPU and CUDA): q [..., H, Nq, D], k, v [..., H, N, D] (layout 'bhnd') or
    [..., N, H, D] ('bnhd'); E, F [k, N] or [H, k, N]; W [D, m] or [H, D, m]. Works under jit; vmap runs
    the batch sequentially (E, F, W may differ per mapped element). causal=True: CPU or CUDA (no causal CUDA
    gradient in JAX).
    Differentiable (jax.grad, CPU) in q, k, v, E and F; W is a fixed random feature matrix (a constant:
    stop_gradient).
    """
    check_matrices(method, E, F, W)
    lc = layout_code(layout)
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    if not getattr(_core, "xla_flurka_targets", None):  # built without JAX's FFI headers
        return _flurka_callback(q, k, v, E, F, W, method, causal, layout)
    _register_flurka()
    mats = [jnp.zeros((0,), q.dtype) if m is None else jnp.asarray(m, q.dtype) for m in (E, F, W)]
    mats[2] = jax.lax.stop_gradient(mats[2])  # W: no gradient
    present = sum(1 << i for i, m in enumerate((E, F, W)) if m is not None)
    dev, _ = _device_index(q)
    nbytes = 1
    if dev >= 0:
        nbytes = workspace_bytes(method, q, k, E, W, layout, causal)
    return _flurka_call(q, k, v, *mats, method, lc, bool(causal), present, nbytes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def _flurka_call(q, k, v, e, f, w, method, layout, causal, present, nbytes):
    call = jax.ffi.ffi_call(_FLURKA_TARGET, (jax.ShapeDtypeStruct(q.shape, q.dtype),
                                             jax.ShapeDtypeStruct((nbytes,), jnp.uint8)),
                            vmap_method="sequential")
    out, _ = call(q, k, v, e, f, w, method=method, layout=np.int64(layout), causal=np.bool_(causal),
                  mats=np.int64(present))
    return out


def _flurka_fwd(q, k, v, e, f, w, method, layout, causal, present, nbytes):
    # Residuals: the inputs only (out and the O(B H (k + m) D) states are recomputed in the backward).
    return _flurka_call(q, k, v, e, f, w, method, layout, causal, present, nbytes), (q, k, v, e, f, w)


def _flurka_bwd(method, layout, causal, present, nbytes, residuals, grad):
    q, k, v, e, f, w = residuals
    if not getattr(_core, "xla_flurka_backward_targets", None):
        raise NotImplementedError("splat: this build has no FLuRKA backward FFI handler; reinstall splat")
    proj = _core.flurka_uses(method)[0]
    sds = jax.ShapeDtypeStruct
    call = jax.ffi.ffi_call(_FLURKA_BWD_TARGET, (sds(q.shape, q.dtype), sds(k.shape, k.dtype), sds(v.shape, v.dtype),
                                                 sds(e.shape if proj else (0,), e.dtype),
                                                 sds(f.shape if proj else (0,), f.dtype)),
                            vmap_method="sequential")
    dq, dk, dv, de, df = call(q, k, v, e, f, w, grad, method=method, layout=np.int64(layout),
                              causal=np.bool_(causal), mats=np.int64(present))
    if not proj:  # E, F unused (possibly absent: zero-size placeholders)
        de, df = jnp.zeros_like(e), jnp.zeros_like(f)
    return dq, dk, dv, de, df, jnp.zeros_like(w)  # W: a constant (stop_gradient in flurka)


_flurka_call.defvjp(_flurka_fwd, _flurka_bwd)


def _flurka_callback(q, k, v, E, F, W, method, causal, layout):
    """Fallback without FFI handlers: a host callback (device arrays travel through host memory)."""
    from ._flurka import flurka as host_flurka
    mats = [None if m is None else jnp.asarray(m, q.dtype) for m in (E, F, W)]

    def host(q, k, v, *m):
        it = iter(m)
        e, f, w = (None if x is None else np.asarray(next(it)) for x in mats)
        return host_flurka(np.asarray(q), np.asarray(k), np.asarray(v), e, f, w, method=method, causal=causal,
                           layout=layout)

    present = [m for m in mats if m is not None]
    return jax.pure_callback(host, jax.ShapeDtypeStruct(q.shape, q.dtype), q, k, v, *present,
                             vmap_method="sequential")


# ---- serving: decode against a KV cache, packed varlen attention (CPU; the handlers in splat._jax_serving) ----
from ._jax_serving import decode, varlen_attention  # noqa: E402

__all__ += ["decode", "varlen_attention"]
