"""Plan construction and the plan cache for the one-shot API."""

import threading

from . import _core
from ._dispatch import device_index, dtype_name

_cache = {}
_lock = threading.Lock()


def plan(pattern, seq_len, head_dim, dtype="float32", device="cpu"):
    """Analyse `pattern` for sequences of `seq_len` and build the backend plan (CUDA: NVRTC compile).

    The plan can be reused by every call with the same N, D, dtype and device:
    ``splat.attention(q, k, v, plan)``.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"splat: pattern must be a string, got {type(pattern).__name__}")
    return _core.make_plan(pattern, int(seq_len), int(head_dim), dtype_name(dtype), device_index(device))


def cached_plan(pattern, seq_len, head_dim, dtype, device):
    """The plan for (pattern, N, D, dtype, device), built on first use. dtype/device already canonical."""
    key = (pattern, seq_len, head_dim, dtype, device)
    p = _cache.get(key)
    if p is None:
        with _lock:  # one build per key even with concurrent first calls
            p = _cache.get(key)
            if p is None:
                p = _core.make_plan(pattern, seq_len, head_dim, dtype, device)
                _cache[key] = p
    return p


def clear_plan_cache():
    """Drops the cached plans of the one-shot API (plans registered with XLA stay alive)."""
    with _lock:
        _cache.clear()


def plan_cache_size():
    return len(_cache)
