"""Serving: decode against a KV cache (contiguous or paged) and packed variable-length attention, for NumPy arrays
(PyTorch tensors go to splat.torch.decode / splat.torch.varlen_attention, JAX arrays to XLA FFI calls that work under
jax.jit).

    out = splat.decode(q, k_cache, v_cache, cache_seqlens, pattern="causal_window:w=4096+sink:g=4")
    out = splat.varlen_attention(q, k, v, cu_seqlens, max_seqlen, pattern="causal")

Decode: q holds the T newest positions of each sequence ([B, H, T, D], layout='bhnd'; [B, T, H, D] with
layout='bnhd'), already appended to the cache; cache_seqlens (int32 [B]) counts each sequence's tokens in the cache
(the new ones included). Query t of sequence b is position cache_seqlens[b] - T + t and attends its row of
pattern & causal. Contiguous cache: [B, H_kv, capacity, D] ('bnhd': [B, capacity, H_kv, D]). Paged cache (block_table
int32 [B, max_pages]): [pages, H_kv, P, D] ('bnhd': [pages, P, H_kv, D], vLLM's layout); token j of sequence b is row
j % P of page block_table[b, j // P]. cache_starts (int32 [B], optional): sequence b's position 0 is cache row
cache_starts[b] (left-padded batches). One decode plan per (pattern, D, dtype) serves every length.
"""

import threading

import numpy as np

from . import _core
from ._api import _numpy_storage
from ._dispatch import check_dtypes, check_threads, dtype_name, framework, size_arg
from ._plans import content_key

_decode_plans = {}
_varlen_plans = {}
_lock = threading.Lock()


def _cached(cache, key, build):
    """cache[key], built once under the lock on first use (concurrent first calls build one plan)."""
    p = cache.get(key)
    if p is None:
        with _lock:
            p = cache.get(key)
            if p is None:
                p = cache[key] = build()
    return p


def decode_plan(pattern, head_dim, dtype="float32"):
    """The decode plan of `pattern` (a spec string; & causal is implied) for head_dim and dtype, cached."""
    if not isinstance(pattern, str):
        if hasattr(pattern, "shape"):  # as the C++ side says for mask: specs
            raise NotImplementedError("splat: decode: an explicit mask has rows for its own N only, not at every "
                                      "position; use the forward (attention over the whole sequence)")
        raise TypeError(f"splat: decode takes a pattern spec string, got {type(pattern).__name__}")
    key = (content_key(pattern), int(head_dim), dtype_name(dtype))
    return _cached(_decode_plans, key, lambda: _core.make_decode_plan(pattern, key[1], key[2]))


def varlen_plans(pattern):
    """The forward plans of `pattern` by sequence length (built on first use of each length), cached."""
    if not isinstance(pattern, str):
        raise TypeError("splat: varlen_attention takes a pattern spec string")
    return _cached(_varlen_plans, content_key(pattern), lambda: _core.make_varlen_plans(pattern))


def head_dim_of(q):
    if len(q.shape) != 4:
        raise ValueError(f"splat: decode needs q of rank 4 ([B, H, T, D] or [B, T, H, D]), got shape {tuple(q.shape)}")
    return int(q.shape[-1])


def lse_shape(q, layout):
    """[B, H, T] for q in either layout."""
    return (q.shape[0], q.shape[2], q.shape[1]) if layout == "bnhd" else tuple(q.shape[:3])


def _int32(x, name):
    if x is None:
        return None
    a = np.ascontiguousarray(x)
    if a.dtype != np.int32:
        raise ValueError(f"splat: {name} must be int32, got {a.dtype}")
    return a


def decode(q, k_cache, v_cache, cache_seqlens, pattern=None, block_table=None, scale=None, *, cache_starts=None,
           layout="bhnd", return_lse=False, threads=0, reference=False):
    """Decode attention of the T newest positions against a KV cache (see the module docstring).

    Returns out like q (and lse float32 [B, H, T], natural log, -inf for rows without keys, with return_lse=True).
    reference=True runs the float64 oracle (each key tested against the pattern's definition).
    """
    if framework(q) == "jax":
        from ._jax_serving import decode as jax_decode
        return jax_decode(q, k_cache, v_cache, cache_seqlens, pattern, block_table, scale, cache_starts=cache_starts,
                          layout=layout, return_lse=return_lse)
    if framework(q) == "torch":
        from ._torch_serving import decode as torch_decode  # = splat.torch.decode
        return torch_decode(q, k_cache, v_cache, cache_seqlens, pattern=pattern, block_table=block_table, scale=scale,
                            cache_starts=cache_starts, layout=layout, return_lse=return_lse)
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"splat: decode takes NumPy or PyTorch arrays; {name} is {type(x).__name__}")
    if pattern is None:
        raise ValueError("splat: decode needs pattern= (e.g. 'causal_window:w=4096+sink:g=4')")
    check_dtypes(q=q, k_cache=k_cache, v_cache=v_cache)
    threads = check_threads(threads)
    plan = decode_plan(pattern, head_dim_of(q), q.dtype)
    out = np.empty_like(q)
    lse = np.empty(lse_shape(q, layout), dtype=np.float32) if return_lse else None
    (qs, dt), ks, vs = _numpy_storage(q), _numpy_storage(k_cache)[0], _numpy_storage(v_cache)[0]
    _core.decode(plan, qs, ks, vs, _int32(cache_seqlens, "cache_seqlens"), _int32(block_table, "block_table"),
                 _int32(cache_starts, "cache_starts"), _numpy_storage(out)[0], lse,
                 0.0 if scale is None else float(scale), layout, dt, threads, bool(reference))
    return (out, lse) if return_lse else out


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, pattern=None, scale=None, *, return_lse=False, threads=0,
                     reference=False):
    """Attention over sequences packed along one token axis: q [total, H, D], k, v [total, H_kv, D]; sequence b is
    tokens cu_seqlens[b] .. cu_seqlens[b+1]-1 (int32 [B+1]) and sees `pattern` at its own length (position 0 at its
    first token). Returns out like q (and lse float32 [H, total] with return_lse=True)."""
    if framework(q) == "jax":
        from ._jax_serving import varlen_attention as jax_varlen
        return jax_varlen(q, k, v, cu_seqlens, max_seqlen, pattern, scale, return_lse=return_lse)
    if framework(q) == "torch":
        from ._torch_serving import varlen_attention as torch_varlen  # = splat.torch.varlen_attention
        return torch_varlen(q, k, v, cu_seqlens, max_seqlen, pattern=pattern, scale=scale, return_lse=return_lse)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"splat: varlen_attention takes NumPy or PyTorch arrays; {name} is {type(x).__name__}")
    if pattern is None:
        raise ValueError("splat: varlen_attention needs pattern=")
    check_dtypes(q=q, k=k, v=v)
    threads = check_threads(threads)
    max_seqlen = size_arg(max_seqlen, "max_seqlen")
    out = np.empty_like(q)
    lse = np.empty((q.shape[-2], q.shape[0]), dtype=np.float32) if return_lse and q.ndim == 3 else None
    (qs, dt), ks, vs = _numpy_storage(q), _numpy_storage(k)[0], _numpy_storage(v)[0]
    _core.varlen_attention(varlen_plans(pattern), qs, ks, vs, _int32(cu_seqlens, "cu_seqlens"), max_seqlen,
                           _numpy_storage(out)[0], lse, 0.0 if scale is None else float(scale), dt, threads,
                           bool(reference))
    return (out, lse) if return_lse else out
