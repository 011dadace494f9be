"""splat.attention / splat.flurka: one entry point for NumPy, PyTorch, JAX and CuPy arrays.

Arrays cross into C++ through DLPack without copies; outputs are allocated by the array's own framework.
PyTorch and JAX arrays are forwarded to splat.torch / splat.jax (custom op and XLA FFI call).
"""

import numpy as np

from . import _core
from ._dispatch import device_index, dtype_name, framework, sizes
from ._plans import cached_plan


def _numpy_storage(x):
    """(array the C++ side can read, dtype override). NumPy has no DLPack bfloat16: pass its bits."""
    if x.dtype.name == "bfloat16":  # ml_dtypes.bfloat16
        return x.view(np.uint16), "bf16"
    return x, ""


def resolve_plan(plan, pattern, shape, layout, dtype, device):
    """The plan to use: an explicit one, or the cached plan for (pattern, N, D, dtype, device)."""
    if isinstance(plan, str):  # splat.attention(q, k, v, "window:w=16") reads naturally
        plan, pattern = None, plan if pattern is None else pattern
    if plan is not None:
        if pattern is not None:
            raise ValueError("splat: give either a plan or pattern=, not both")
        return plan
    if pattern is None:
        raise ValueError("splat: attention needs a plan or pattern= (e.g. pattern='window:w=128')")
    if not isinstance(pattern, str):
        raise TypeError(f"splat: pattern must be a string, got {type(pattern).__name__}")
    n, d = sizes(shape, layout)
    return cached_plan(pattern, n, d, dtype, device)


def attention(q, k, v, plan=None, *, pattern=None, scale=None, layout="bhnd", out=None, threads=0):
    """Sparse attention out = softmax(scale * q k^T restricted to the pattern) v.

    q: [B, H, N, D] (layout='bhnd', default) or [B, N, H, D] (layout='bnhd'); any strides with D contiguous.
    k, v: like q with H_kv heads (H % H_kv == 0: grouped-query attention). scale: default 1/sqrt(D).
    plan: from splat.plan(...), or give pattern= and the plan is built once and cached.
    Returns a new array of q's framework, dtype and device (or writes `out` for NumPy/CuPy).
    """
    fw = framework(q)
    if fw == "torch":
        from . import torch as splat_torch
        return splat_torch.attention(q, k, v, plan, pattern=pattern, scale=scale, layout=layout, out=out)
    if fw == "jax":
        from . import jax as splat_jax
        if out is not None:
            raise ValueError("splat: JAX arrays are immutable; out= is not supported for them")
        return splat_jax.attention(q, k, v, plan, pattern=pattern, scale=scale, layout=layout)
    s = 0.0 if scale is None else float(scale)
    if fw == "numpy":
        qs, dt = _numpy_storage(q)
        p = resolve_plan(plan, pattern, q.shape, layout, dtype_name(q.dtype), -1)
        if out is None:
            out = np.empty_like(q)
        _core.attention(p, qs, _numpy_storage(k)[0], _numpy_storage(v)[0], _numpy_storage(out)[0], s, layout, dt,
                        0, int(threads))
        return out
    import cupy  # fw == "cupy"
    p = resolve_plan(plan, pattern, q.shape, layout, dtype_name(q.dtype), int(q.device.id))
    if out is None:
        out = cupy.empty_like(q)
    n, d = sizes(q.shape, layout)
    nbytes = _core.workspace_bytes(p, q.size // (n * d), 1, int(q.device.id))
    with q.device:  # multi-pass plans: a workspace from CuPy's stream-ordered pool, on q's device
        ws = cupy.empty(nbytes, dtype=cupy.uint8) if nbytes else None
        _core.attention(p, q, k, v, out, s, layout, "", cupy.cuda.get_current_stream().ptr, 0,
                        ws.data.ptr if ws is not None else 0, nbytes)
    return out


def reference(q, k, v, pattern, *, scale=None, layout="bhnd"):
    """Dense masked reference (float64 accumulation, C++ oracle) for NumPy arrays."""
    qs, dt = _numpy_storage(q)
    out = np.empty_like(q)
    _core.reference(pattern, qs, _numpy_storage(k)[0], _numpy_storage(v)[0], _numpy_storage(out)[0],
                    0.0 if scale is None else float(scale), layout, dt)
    return out


def dense_mask(pattern, n):
    """The pattern as an n x n uint8 NumPy mask (1 = query i attends key j)."""
    return _core.dense_mask(pattern, int(n))


def cuda_available():
    """(usable, reason) for splat's CUDA backend."""
    return _core.cuda_status()


def describe_device(device):
    return "cpu" if device_index(device) < 0 else f"cuda:{device_index(device)}"
