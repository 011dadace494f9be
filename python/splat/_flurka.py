"""splat.flurka: FLuRKA (fused Linformer + Performer) attention and its parent methods."""

import numpy as np

from . import _core
from ._dispatch import check_dtypes, check_threads, framework


def flurka_methods():
    """Names accepted by method= (flurka-favor, flurka-elu, flurka-relu, linformer, performer-*, linear)."""
    _require()
    return list(_core.flurka_methods())


def _require():
    if not _core.has_flurka:
        raise NotImplementedError("splat: this build has no FLuRKA support (include/splat/flurka.hpp missing)")


def check_matrices(method, E, F, W):
    """ValueError when a method's E/F (projections) or W (random features) are missing."""
    needs_proj, needs_w = _core.flurka_uses(method)
    if needs_proj and (E is None or F is None):
        raise ValueError(f"splat: method {method!r} needs the projections E and F ([k, N] or [H, k, N])")
    if needs_w and W is None:
        raise ValueError(f"splat: method {method!r} needs the random features W ([D, m] or [H, D, m])")


def flurka(q, k, v, E=None, F=None, W=None, method="flurka-favor", causal=False, *, layout="bhnd", out=None,
           threads=0):
    """FLuRKA attention. q [B, H, Nq, D], k, v [B, H, N, D]; E, F [k, N] (or [H, k, N]); W [D, m] (or [H, D, m]).

    causal=True: E, F are chunk projections [r, C] (chunk C = E's columns); CPU or CUDA (bf16 on the tensor cores;
    torch's backward on CUDA is autograd of the formula, see docs/FLURKA.md).
    Returns a new array of q's framework (or writes `out` for NumPy).
    """
    _require()
    fw = framework(q)
    if fw == "torch":
        from . import torch as splat_torch
        return splat_torch.flurka(q, k, v, E, F, W, method=method, causal=causal, layout=layout)
    if fw == "jax":
        from . import jax as splat_jax
        return splat_jax.flurka(q, k, v, E, F, W, method=method, causal=causal, layout=layout)
    check_matrices(method, E, F, W)
    threads = check_threads(threads)
    check_dtypes(q=q, k=k, v=v, out=out, E=E, F=F, W=W)  # 16-bit bits must never be read as another dtype
    if fw == "numpy":
        def bits(x):
            return None if x is None else (x.view(np.uint16) if x.dtype.name == "bfloat16" else x)
        dt = "bf16" if q.dtype.name == "bfloat16" else ""
        if out is None:
            out = np.empty_like(q)
        _core.flurka(method, bits(q), bits(k), bits(v), bits(out), bits(E), bits(F), bits(W), bool(causal), layout,
                     dt, 0, None, threads)
        return out
    import cupy  # fw == "cupy"
    if out is None:
        out = cupy.empty_like(q)
    with q.device:  # the workspace and the stream of q's device
        ws = cupy.empty(workspace_bytes(method, q, k, E, W, layout, causal), dtype=cupy.uint8)
        _core.flurka(method, q, k, v, out, E, F, W, bool(causal), layout, "", cupy.cuda.get_current_stream().ptr, ws,
                     0)
    return out


def flurka_decoder(E, F, W=None, method="flurka-favor", *, batch, heads, head_dim, dtype=None):
    """Recurrent causal FLuRKA decoding (one token of batch x heads sequences per step; CUDA): for torch tensors a
    splat.torch.FlurkaDecoder (see there). Other frameworks: NotImplementedError (the CPU step is C++ only)."""
    _require()
    if framework(E) == "torch":
        from . import torch as splat_torch
        return splat_torch.FlurkaDecoder(E, F, W, method, batch=batch, heads=heads, head_dim=head_dim, dtype=dtype)
    raise NotImplementedError("splat: the FLuRKA decode step takes torch CUDA tensors (splat.torch.FlurkaDecoder)")


def workspace_bytes(method, q, k, E, W, layout, causal=False):
    """Device workspace for one CUDA call (allocated by the caller's framework: graph safe); causal: E, F are the
    chunk projections [r, C]."""
    if layout == "bhnd":
        b, h, nq, d = _fold(q.shape, 0)
        n = int(k.shape[-2])
    else:
        b, h, nq, d = _fold(q.shape, 1)
        n = int(k.shape[-3])
    kk = 0 if E is None else int(E.shape[-2])
    m = d if W is None else int(W.shape[-1])
    chunk = int(E.shape[-1]) if causal else 0
    return max(1, int(_core.flurka_workspace_bytes(method, b, h, nq, n, d, kk, m, chunk)))


def _fold(shape, layout):
    lead = 1
    for s in shape[:-3]:
        lead *= int(s)
    if layout == 0:
        return lead, int(shape[-3]), int(shape[-2]), int(shape[-1])
    return lead, int(shape[-2]), int(shape[-3]), int(shape[-1])
