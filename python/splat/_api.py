"""splat.attention / splat.flurka: one entry point for NumPy, PyTorch, JAX and CuPy arrays.

Arrays cross into C++ through DLPack without copies; outputs are allocated by the array's own framework.
PyTorch and JAX arrays are forwarded to splat.torch / splat.jax (custom op and XLA FFI call).
"""

import math

import numpy as np

from . import _core
from ._dispatch import check_dtypes, check_threads, device_index, dtype_name, framework, size_arg, sizes
from ._plans import MASK_PREFIX, cached_plan, mask_bits, pattern_name


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
        if not isinstance(plan, _core.Plan):
            raise TypeError(f"splat: plan must be a splat.Plan or a pattern string, got {type(plan).__name__} "
                            "(give a mask array as pattern=)")
        if pattern is not None:
            raise ValueError("splat: give either a plan or pattern=, not both")
        return plan
    n, d = sizes(shape, layout)
    return cached_plan(pattern_name(pattern, n), n, d, dtype, device)


def check_out(out, q, fw):
    """out must be a writable array of q's framework, dtype and shape (C++ checks its memory against the inputs)."""
    if framework(out) != fw:
        raise TypeError(f"splat: out must be a {fw} array like q, got {type(out).__module__}.{type(out).__name__}")
    if fw == "numpy" and not out.flags.writeable:
        raise ValueError("splat: out is read-only")
    if tuple(out.shape) != tuple(q.shape):
        raise ValueError(f"splat: out has shape {tuple(out.shape)} but q has {tuple(q.shape)}")


def _elements(x):
    n = getattr(x, "size", None)  # NumPy, JAX, CuPy: an int; torch: a method (numel() is the count)
    return x.numel() if callable(n) else int(n) if n is not None else math.prod(int(s) for s in x.shape)


def empty_call(q, k, v):
    """True for a call with no elements (B = 0 or N = 0): the result is empty, as SDPA's."""
    sizes_ = [_elements(x) for x in (q, k, v)]
    if all(sizes_):
        return False
    if any(sizes_) or any(len(x.shape) != len(q.shape) for x in (k, v)):
        raise ValueError(f"splat: q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)}: either all are "
                         "empty or none is")
    return True


def attention(q, k, v, plan=None, *, pattern=None, scale=None, layout="bhnd", out=None, threads=0):
    """Sparse attention out = softmax(scale * q k^T restricted to the pattern) v.

    q: [B, H, N, D] (layout='bhnd', default) or [B, N, H, D] (layout='bnhd'); any strides with D contiguous.
    k, v: like q with H_kv heads (H % H_kv == 0: grouped-query attention). scale: default 1/sqrt(D).
    plan: from splat.plan(...), or give pattern= (a spec string or a boolean [N, N] mask array) and the plan is
    built once and cached (by content: a rewritten mask file or a changed mask array gets a new plan).
    dtypes: float32, float16, bfloat16 (NumPy: ml_dtypes) and, on the CPU, float64; all arrays share one.
    Returns a new array of q's framework, dtype and device (or writes `out` for NumPy/CuPy).
    """
    fw = framework(q)
    threads = check_threads(threads)
    if fw == "torch":
        from . import torch as splat_torch
        return splat_torch.attention(q, k, v, plan, pattern=pattern, scale=scale, layout=layout, out=out)
    if fw == "jax":
        from . import jax as splat_jax
        if out is not None:
            raise ValueError("splat: JAX arrays are immutable; out= is not supported for them")
        return splat_jax.attention(q, k, v, plan, pattern=pattern, scale=scale, layout=layout)
    for name, x in (("k", k), ("v", v)):
        if framework(x) != fw:
            raise TypeError(f"splat: q is a {fw} array but {name} is {type(x).__module__}.{type(x).__name__}")
    check_dtypes(q=q, k=k, v=v, out=out)
    if out is not None:
        check_out(out, q, fw)
    s = 0.0 if scale is None else float(scale)
    if fw == "numpy":
        if out is None:
            out = np.empty_like(q)
        if empty_call(q, k, v):
            return out
        qs, dt = _numpy_storage(q)
        p = resolve_plan(plan, pattern, q.shape, layout, dtype_name(q.dtype), -1)
        _core.attention(p, qs, _numpy_storage(k)[0], _numpy_storage(v)[0], _numpy_storage(out)[0], s, layout, dt,
                        0, threads)
        return out
    import cupy  # fw == "cupy"
    if out is None:
        out = cupy.empty_like(q)
    if empty_call(q, k, v):
        return out
    p = resolve_plan(plan, pattern, q.shape, layout, dtype_name(q.dtype), int(q.device.id))
    n, d = sizes(q.shape, layout)
    nbytes = _core.workspace_bytes(p, q.size // (n * d), 1, int(q.device.id))
    with q.device:  # multi-pass plans: a workspace from CuPy's stream-ordered pool, on q's device
        ws = cupy.empty(nbytes, dtype=cupy.uint8) if nbytes else None
        _core.attention(p, q, k, v, out, s, layout, "", cupy.cuda.get_current_stream().ptr, 0,
                        ws.data.ptr if ws is not None else 0, nbytes)
    return out


def reference(q, k, v, pattern, *, scale=None, layout="bhnd"):
    """Dense masked reference (float64 accumulation, C++ oracle) for NumPy arrays of one dtype (float64 too).
    pattern: a spec string or a boolean [N, N] mask array."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"splat: the reference takes NumPy arrays; {name} is {type(x).__name__}")
    check_dtypes(q=q, k=k, v=v)
    out = np.empty_like(q)
    if empty_call(q, k, v):
        return out
    qs, dt = _numpy_storage(q)
    n, _ = sizes(q.shape, layout)
    name = pattern_name(pattern, n)
    spec = mask_bits(name) if name.startswith(MASK_PREFIX) else name
    _core.reference(spec, qs, _numpy_storage(k)[0], _numpy_storage(v)[0], _numpy_storage(out)[0],
                    0.0 if scale is None else float(scale), layout, dt)
    return out


def dense_mask(pattern, n):
    """The pattern as an n x n uint8 NumPy mask (1 = query i attends key j)."""
    n = size_arg(n, "n")
    name = pattern_name(pattern, n)
    return mask_bits(name).copy() if name.startswith(MASK_PREFIX) else _core.dense_mask(name, n)


def cuda_available():
    """(usable, reason) for splat's CUDA backend."""
    return _core.cuda_status()


def describe_device(device):
    return "cpu" if device_index(device) < 0 else f"cuda:{device_index(device)}"
