"""Shared helpers: a NumPy float64 dense reference, inputs, and the project's tolerance idiom
(err(ours) <= k * err(naive in the same dtype) + atol)."""

import zlib

import numpy as np
import pytest

import splat

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # NumPy bf16 needs ml_dtypes (JAX depends on it)
    BF16 = None

PATTERNS = [
    "dense",
    "causal",
    "window:w=5",
    "causal_window:w=7",
    "dilated:w=4,d=3",
    "causal_dilated:w=3,d=2",
    "strided:s=8",
    "fixed:l=16,c=4",
    "blocked:b=16",
    "global:g=3",
    "sink:g=2",
    "longformer:w=4,g=2",
    "bigbird:b=8,w=1,g=1,r=2",
    "causal_window:w=8+sink:g=4",
    "strided:s=8&causal",
]

ATOL = {"f32": 2e-6, "f16": 2e-3, "bf16": 1.6e-2}


def np_dtype(name):
    if name == "bf16":
        if BF16 is None:
            pytest.skip("bfloat16 NumPy arrays need ml_dtypes")
        return BF16
    return {"f32": np.float32, "f16": np.float16}[name]


def to_bhnd(x, layout):
    return x if layout == "bhnd" else np.swapaxes(x, -3, -2)


def reference(q, k, v, mask, scale=None, layout="bhnd"):
    """float64 masked softmax attention; q [B,H,N,D], k/v [B,Hkv,N,D]; returns q's layout, float64."""
    q, k, v = (to_bhnd(np.asarray(x, dtype=np.float64), layout) for x in (q, k, v))
    h, hk, d = q.shape[-3], k.shape[-3], q.shape[-1]
    if hk != h:  # grouped-query attention: query head i uses key/value head i // (h / hk)
        k = np.repeat(k, h // hk, axis=-3)
        v = np.repeat(v, h // hk, axis=-3)
    s = (q @ np.swapaxes(k, -1, -2)) * (1.0 / np.sqrt(d) if scale is None else scale)
    m = mask.astype(bool)
    s = np.where(m, s, -np.inf)
    smax = np.max(s, axis=-1, keepdims=True)
    smax = np.where(np.isfinite(smax), smax, 0.0)
    p = np.where(m, np.exp(s - smax), 0.0)
    den = p.sum(-1, keepdims=True)
    out = (p @ v) / np.where(den > 0, den, 1.0)
    return to_bhnd(out, layout)


def naive_same_dtype(q, k, v, mask, dtype, scale=None, layout="bhnd"):
    """Naive attention from inputs rounded to dtype, in float32, output rounded to dtype: the error a
    straightforward same-dtype implementation makes."""
    out = reference(*(np.asarray(x, np.float32) for x in (q, k, v)), mask, scale, layout).astype(np.float32)
    return out.astype(dtype).astype(np.float64)


def check_close(ours, q, k, v, mask, dtype_name, scale=None, layout="bhnd", k_factor=4.0):
    ours = np.asarray(ours).astype(np.float64)
    assert not np.isnan(ours).any(), "output has NaNs (unwritten entries?)"
    ref = reference(q, k, v, mask, scale, layout)
    naive = naive_same_dtype(q, k, v, mask, np.asarray(q).dtype, scale, layout)
    err = np.abs(ours - ref).max()
    bound = k_factor * np.abs(naive - ref).max() + ATOL[dtype_name]
    assert err <= bound, f"max error {err:.3g} > bound {bound:.3g}"


def random_qkv(rng, shape_q, shape_kv, dtype):
    return (rng.standard_normal(shape_q).astype(dtype), rng.standard_normal(shape_kv).astype(dtype),
            rng.standard_normal(shape_kv).astype(dtype))


@pytest.fixture
def rng(request):
    # Fresh inputs per test, reproducible per test id.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def mask_of(pattern, n):
    return splat.dense_mask(pattern, n)


def run_or_skip(fn):
    """Backends may not cover every (dtype, head_dim) (the CUDA kernels: bf16/f16, D in {64, 128}): that is a
    NotImplementedError naming the limit, never a crash; the test is skipped with that message."""
    try:
        return fn()
    except NotImplementedError as e:
        pytest.skip(f"unsupported by this backend: {e}")
