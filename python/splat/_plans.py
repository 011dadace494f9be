"""Plan construction, the plan cache of the one-shot API, and in-memory masks.

Plans are cached by what the pattern means, never by a file name alone: a spec that reads mask files is keyed by
the files' contents, and an in-memory mask by a hash of its bits (it travels as a short name, MASK_PREFIX + hash,
so string-only paths such as the torch op carry it too).
"""

import collections
import hashlib
import os
import re
import threading

import numpy as np

from . import _core
from ._dispatch import check_cuda_dtype, device_index, dtype_name, framework, size_arg

MASK_PREFIX = "mask-array:"
# The spec language's mask atom: mask:"PATH" (with \" and \\ escaped) or mask:PATH up to '+', '&' or ')'.
_MASK_PATHS = re.compile(r'mask:\s*(?:"((?:[^"\\]|\\.)*)"|([^+&)]*))')
_MAX_MASKS = 16  # in-memory masks kept for plans of other (D, dtype, device); plans stay cached regardless

_cache = {}
_masks = collections.OrderedDict()  # name -> uint8 [N, N] host mask (C-contiguous)
_file_keys = {}  # (spec, stat identities of its mask files) -> pattern_key
_lock = threading.RLock()  # reentrant: a build under it looks up its mask


def plan(pattern, seq_len, head_dim, dtype="float32", device="cpu"):
    """Analyse `pattern` (a spec string or a boolean [N, N] mask array) for sequences of `seq_len` and build the
    backend plan (CUDA: NVRTC compile).

    The plan can be reused by every call with the same N, D, dtype and device:
    ``splat.attention(q, k, v, plan)``.
    """
    n, d = size_arg(seq_len, "seq_len"), size_arg(head_dim, "head_dim")
    dt, dev = dtype_name(dtype), device_index(device)
    check_cuda_dtype(dt, dev)
    name = pattern_name(pattern, n)
    if name.startswith(MASK_PREFIX):
        return _build(name, n, d, dt, dev)
    return _core.make_plan(name, n, d, dt, dev)


def pattern_name(pattern, n=None):
    """A spec string for `pattern`: strings pass through; a mask array is registered and named by its hash."""
    if isinstance(pattern, str):
        return pattern
    if pattern is None:
        raise ValueError("splat: attention needs a plan or pattern= (e.g. pattern='window:w=128')")
    return register_mask(pattern, n)


def register_mask(mask, n=None):
    """Registers a boolean mask ([N, N]; [1, 1, N, N] broadcast dims are squeezed) and returns its name."""
    bits = host_mask(mask, n)
    name = f"{MASK_PREFIX}{bits.shape[0]}:{hashlib.blake2b(bits.data, digest_size=16).hexdigest()}"
    with _lock:
        _masks[name] = bits
        _masks.move_to_end(name)
        while len(_masks) > _MAX_MASKS:
            _masks.popitem(last=False)
    return name


def host_mask(mask, n=None):
    """A mask of any framework as C-contiguous uint8 [N, N] on the host (1 = attend).

    Boolean masks as they are; float masks only if additive with values 0 (attend) and -inf (masked), as SDPA's.
    Per-head or per-batch masks (a leading dim > 1) are refused: one pattern serves every batch row and head.
    """
    try:
        fw = framework(mask)
    except TypeError:
        raise TypeError(f"splat: a pattern is a spec string or a boolean mask array, got {type(mask).__name__}") from None
    if fw == "torch":
        m = mask.detach().cpu().numpy()
    elif fw == "cupy":
        m = mask.get()
    else:
        try:
            m = np.asarray(mask)
        except Exception as e:  # a JAX tracer: the plan is built while tracing, from concrete values only
            raise ValueError(f"splat: a mask must be a concrete array (not traced inside jit): {e}") from None
    if m.ndim < 2 or any(s != 1 for s in m.shape[:-2]):
        raise ValueError(f"splat: a mask must be [N, N] (or [1, 1, N, N]), got shape {tuple(m.shape)}; per-batch or "
                         "per-head masks are not supported")
    m = m.reshape(m.shape[-2:])
    if m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"splat: a mask must be square and non-empty, got shape {tuple(m.shape)}")
    if n is not None and m.shape[0] != n:
        raise ValueError(f"splat: the mask is {m.shape[0]} x {m.shape[1]} but the sequence length is {n}")
    if m.dtype == np.bool_:
        bits = m
    elif m.dtype.kind == "f" or m.dtype.name == "bfloat16":
        f = m.astype(np.float32)
        bits = f == 0
        if not np.all(bits | (f == -np.inf)):
            raise ValueError("splat: a float mask must be additive with only 0 (attend) and -inf (masked) values; "
                             "give a boolean mask otherwise")
    else:
        raise ValueError(f"splat: a mask must be boolean (True = attend), got dtype {m.dtype}")
    return np.ascontiguousarray(bits, dtype=np.uint8)


def mask_bits(name):
    """The uint8 [N, N] mask of a registered name (a spec otherwise: its dense mask is the caller's business)."""
    with _lock:
        bits = _masks.get(name)
    if bits is None:
        raise ValueError(f"splat: unknown in-memory mask {name!r} (pass the mask array again)")
    return bits


def content_key(spec):
    """What a spec means, for caches: the spec itself unless it reads mask files; then the C++ pattern_key (masks
    by content), memoised per (spec, the files' stat identities) so that repeated calls do not re-read the files."""
    if "mask:" not in spec or spec.startswith(MASK_PREFIX):
        return spec
    stats = tuple(_stat_identity(p) for p in _mask_paths(spec))
    if not stats or None in stats:  # a path we cannot stat: let C++ read (and report) every time
        return _core.pattern_key(spec)
    ident = (spec, stats)
    key = _file_keys.get(ident)
    if key is None:
        key = _core.pattern_key(spec)
        if len(_file_keys) > 256:
            _file_keys.clear()
        _file_keys[ident] = key
    return key


def _mask_paths(spec):
    for quoted, plain in _MASK_PATHS.findall(spec):
        yield re.sub(r"\\(.)", r"\1", quoted) if quoted else plain.strip()


def _stat_identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def cached_plan(pattern, seq_len, head_dim, dtype, device):
    """The plan for (pattern, N, D, dtype, device), built on first use. dtype/device already canonical."""
    key = (content_key(pattern), seq_len, head_dim, dtype, device)
    p = _cache.get(key)
    if p is None:
        with _lock:  # one build per key even with concurrent first calls
            p = _cache.get(key)
            if p is None:
                p = _build(pattern, seq_len, head_dim, dtype, device)
                _cache[key] = p
    return p


def _build(pattern, seq_len, head_dim, dtype, device):
    check_cuda_dtype(dtype, device)
    if pattern.startswith(MASK_PREFIX):
        bits = mask_bits(pattern)
        if bits.shape[0] != seq_len:
            raise ValueError(f"splat: the mask is {bits.shape[0]} x {bits.shape[0]} but the sequence length is "
                             f"{seq_len}")
        return _core.make_mask_plan(bits, pattern, head_dim, dtype, device)
    return _core.make_plan(pattern, seq_len, head_dim, dtype, device)


def clear_plan_cache():
    """Drops the cached plans of the one-shot API (plans registered with XLA stay alive)."""
    with _lock:
        _cache.clear()


def plan_cache_size():
    return len(_cache)
