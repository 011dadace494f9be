"""splat.jax.decode on a CUDA JAX device (the XLA FFI CUDA handler, experimental: SPLAT_JAX_DECODE_CUDA=1) against
the float64 reference of the full sequence, under jax.jit, with the lengths and block table as device arrays:
contiguous and shuffled paged caches, GQA, T > 1, bf16 / f16 / f32, both head dims; one executable replayed with new
lengths. Skips without a CUDA JAX device."""

import os

import numpy as np
import pytest

from conftest import np_dtype
from test_decode import Case, check

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import splat.jax  # noqa: E402


def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


GPU = _gpu()
pytestmark = pytest.mark.skipif(GPU is None, reason="no CUDA JAX device")
if GPU is not None:  # the handler registers on first use, when this is read
    os.environ["SPLAT_JAX_DECODE_CUDA"] = "1"
JNP = {"bf16": jnp.bfloat16, "f16": jnp.float16, "f32": jnp.float32}


def _put(x, dtype=None):
    return jax.device_put(jnp.asarray(np.asarray(x, np.float32), dtype) if dtype is not None else x, GPU)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("D", [64, 128])
def test_jax_cuda_decode_contiguous_and_paged(rng, dtype, D):
    case = Case(rng, "causal_window:w=20+sink:g=4", [1, 37, 300, 2], T=3, H=8, Hkv=2, D=D, dtype=np_dtype(dtype))
    q, k, v = (_put(x, JNP[dtype]) for x in (case.q, case.k, case.v))
    lengths = _put(case.lengths)
    fn = jax.jit(lambda q, k, v, s: splat.jax.decode(q, k, v, s, case.pattern, return_lse=True))
    out, lse = fn(q, k, v, lengths)
    assert next(iter(out.devices())).platform == "gpu"
    check(np.asarray(out.astype(jnp.float32)), case, dtype)
    _, want_lse = splat.decode(np.asarray(case.q, np.float32), np.asarray(case.k, np.float32),
                               np.asarray(case.v, np.float32), case.lengths, pattern=case.pattern, return_lse=True)
    np.testing.assert_allclose(np.asarray(lse), want_lse, rtol=2e-5, atol=2e-5)
    pool_k, pool_v, table = case.paged(rng, 16)
    pfn = jax.jit(lambda q, k, v, s, t: splat.jax.decode(q, k, v, s, case.pattern, block_table=t))
    out = pfn(q, _put(pool_k, JNP[dtype]), _put(pool_v, JNP[dtype]), lengths, _put(table))
    check(np.asarray(out.astype(jnp.float32)), case, dtype)


def test_jax_cuda_decode_one_long_sequence_splits_and_reads_new_lengths(rng):
    """One sequence of 5000 keys (the split-KV launch and its workspace result), bnhd layout; the same compiled
    function then runs with other lengths (read on the device, no retrace)."""
    case = Case(rng, "causal_dilated:w=900,d=4+sink:g=4", [5000], T=1, H=8, Hkv=2, D=128, dtype=np_dtype("bf16"))
    q = _put(np.ascontiguousarray(np.swapaxes(np.asarray(case.q, np.float32), 1, 2)), jnp.bfloat16)
    k, v = (_put(np.ascontiguousarray(np.swapaxes(np.asarray(x, np.float32), 1, 2)), jnp.bfloat16)
            for x in (case.k, case.v))
    traces = []

    def step(q, k, v, s):
        traces.append(1)
        return splat.jax.decode(q, k, v, s, case.pattern, layout="bnhd")

    fn = jax.jit(step)
    out = fn(q, k, v, _put(case.lengths))
    check(np.swapaxes(np.asarray(out.astype(jnp.float32), np.float64), 1, 2), case, "bf16")
    shorter = np.array([1234], np.int32)
    out = fn(q, k, v, _put(shorter))
    assert len(traces) == 1
    case.lengths = shorter
    check(np.swapaxes(np.asarray(out.astype(jnp.float32), np.float64), 1, 2), case, "bf16")
