"""splat.varlen_attention / splat.torch.varlen_attention: packed sequences of mixed lengths (0, 1 ... N) against the
float64 reference of each sequence on its own (the pattern at its length, position 0 at its first token)."""

import os

import numpy as np
import pytest

import splat
from conftest import ATOL, check_close, np_dtype

LENGTHS = [1, 7, 0, 33, 64, 2, 19]


def packed(rng, lengths, H=4, Hkv=2, D=16, dtype=np.float32):
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(cu[-1])
    q = rng.standard_normal((total, H, D)).astype(dtype)
    k, v = (rng.standard_normal((total, Hkv, D)).astype(dtype) for _ in range(2))
    return q, k, v, cu


def check_per_sequence(out, q, k, v, cu, pattern, dtype_name):
    for b in range(len(cu) - 1):
        s, e = int(cu[b]), int(cu[b + 1])
        if s == e:
            continue
        # [n, H, D] is the 'bnhd' layout of one batch row
        check_close(out[None, s:e], q[None, s:e], k[None, s:e], v[None, s:e], splat.dense_mask(pattern, e - s),
                    dtype_name, layout="bnhd")


@pytest.mark.parametrize("pattern", ["dense", "causal", "window:w=5", "causal_window:w=8+sink:g=4",
                                     "bigbird:b=8,w=1,g=1,r=2"])
def test_numpy_varlen_matches_each_sequence(rng, pattern):
    q, k, v, cu = packed(rng, LENGTHS)
    out, lse = splat.varlen_attention(q, k, v, cu, max(LENGTHS), pattern=pattern, return_lse=True)
    check_per_sequence(out, q, k, v, cu, pattern, "f32")
    ref = splat.varlen_attention(q, k, v, cu, max(LENGTHS), pattern=pattern, reference=True)
    check_per_sequence(ref, q, k, v, cu, pattern, "f32")
    assert lse.shape == (4, q.shape[0]) and np.isfinite(lse).all()


def test_bf16(rng):
    q, k, v, cu = packed(rng, LENGTHS, dtype=np_dtype("bf16"))
    out = splat.varlen_attention(q, k, v, cu, 64, pattern="strided:s=8&causal")
    check_per_sequence(out, q, k, v, cu, "strided:s=8&causal", "bf16")


def test_errors(rng):
    q, k, v, cu = packed(rng, [3, 4])
    with pytest.raises(ValueError, match="max_seqlen"):
        splat.varlen_attention(q, k, v, cu, 3, pattern="causal")
    with pytest.raises(ValueError, match="cu_seqlens"):
        splat.varlen_attention(q, k, v, np.array([0, 3, 6], np.int32), 4, pattern="causal")
    with pytest.raises(ValueError, match="int32"):
        splat.varlen_attention(q, k, v, cu.astype(np.int64), 4, pattern="causal")


torch = pytest.importorskip("torch")
import splat.torch  # noqa: E402,F401


def test_torch_varlen_matches_and_compiles(rng):
    q, k, v, cu = packed(rng, LENGTHS)
    args = [torch.from_numpy(x) for x in (q, k, v, cu)]
    out = splat.torch.varlen_attention(*args, 64, pattern="causal")
    check_per_sequence(out.numpy(), q, k, v, cu, "causal", "f32")
    fn = torch.compile(lambda *a: splat.torch.varlen_attention(*a, 64, pattern="causal"), fullgraph=True)
    torch.testing.assert_close(fn(*args), out)
    torch.library.opcheck(torch.ops.splat.varlen_attention.default, (*args, 64, "causal", 0.0))


def test_jax_varlen_under_jit(rng):
    jax = pytest.importorskip("jax")
    q, k, v, cu = packed(rng, LENGTHS)
    fn = jax.jit(lambda q, k, v, cu: splat.varlen_attention(q, k, v, cu, 64, pattern="causal_window:w=8"))
    with jax.default_device(jax.devices("cpu")[0]):  # the JAX varlen attention is CPU-only
        out = fn(q, k, v, cu)
    check_per_sequence(np.asarray(out), q, k, v, cu, "causal_window:w=8", "f32")


CUDA = torch.cuda.is_available() and splat.cuda_available()
cuda_only = pytest.mark.skipif(not CUDA, reason="no CUDA device (or splat built without CUDA)")
CUDA_LENGTHS = [1, 300, 0, 129, 64, 517, 2, 77]


# (Every family is checked on the GPU by tests/cpp/test_cuda_varlen.cpp; these cover the Python routes. The later
# tests reuse the first pattern, dtype and head dim, so they find its kernels compiled.)
SERVING = "causal_window:w=100+sink:g=4&causal"


@cuda_only
@pytest.mark.parametrize("pattern,dtype_name", [(SERVING, "bf16"), ("strided:s=16", "f16"),
                                                ("bigbird:b=64,w=1,g=2,r=3,seed=1", "bf16")])
def test_torch_cuda_varlen_matches_each_sequence(rng, pattern, dtype_name):
    q, k, v, cu = packed(rng, CUDA_LENGTHS, H=8, Hkv=2, D=64 if dtype_name == "f16" else 128,
                         dtype=np_dtype(dtype_name))
    qkv_gpu = [torch.from_numpy(x.astype(np.float32)).cuda().to(getattr(torch, {"bf16": "bfloat16", "f16": "float16"}[
        dtype_name])) for x in (q, k, v)]
    cu_gpu = torch.from_numpy(cu).cuda()
    out, lse = splat.torch.varlen_attention(*qkv_gpu, cu_gpu, max(CUDA_LENGTHS), pattern=pattern, return_lse=True)
    assert out.shape == qkv_gpu[0].shape and out.dtype == qkv_gpu[0].dtype and lse.shape == (8, q.shape[0])
    check_per_sequence(out.float().cpu().numpy().astype(q.dtype), q, k, v, cu, pattern, dtype_name)
    # The same lse as the CPU path (float32 in, float64 reference per sequence there).
    _, lse_cpu = splat.varlen_attention(*(x.astype(np.float32) for x in (q, k, v)), cu, max(CUDA_LENGTHS),
                                        pattern=pattern, return_lse=True)
    np.testing.assert_allclose(lse.cpu().numpy(), lse_cpu, rtol=2e-3, atol=2e-3)
    # Host cu_seqlens: no copy, same answer; splat.varlen_attention routes CUDA tensors the same way.
    again = splat.varlen_attention(*qkv_gpu, torch.from_numpy(cu), max(CUDA_LENGTHS), pattern=pattern)
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def _jax_gpu():
    try:
        import jax
        return [d for d in jax.devices() if d.platform == "gpu"]
    except Exception:  # noqa: BLE001 (no JAX, or no GPU backend)
        return []


@pytest.mark.skipif(not CUDA or not _jax_gpu() or os.environ.get("SPLAT_JAX_VARLEN_CUDA") != "1",
                    reason="no CUDA device for JAX, or the JAX CUDA varlen target not enabled (SPLAT_JAX_VARLEN_CUDA=1)")
def test_jax_cuda_varlen_under_jit(rng):
    import jax
    import jax.numpy as jnp
    q, k, v, cu = packed(rng, CUDA_LENGTHS, H=4, Hkv=2, D=128)
    gpu = _jax_gpu()[0]
    args = [jax.device_put(jnp.asarray(x, jnp.bfloat16), gpu) for x in (q, k, v)] + [jax.device_put(cu, gpu)]
    fn = jax.jit(lambda q, k, v, cu: splat.varlen_attention(q, k, v, cu, 517, pattern=SERVING, return_lse=True))
    out, lse = fn(*args)
    assert out.dtype == jnp.bfloat16 and lse.shape == (4, q.shape[0])
    ref = [np.asarray(x.astype(jnp.float32)) for x in args[:3]]
    check_per_sequence(np.asarray(out.astype(jnp.float32)), *ref, cu, SERVING, "bf16")


@cuda_only
def test_torch_cuda_varlen_compiles_and_checks(rng):
    q, k, v, cu = packed(rng, [3, 0, 130, 64], H=4, Hkv=4, D=128)
    qkv_gpu = [torch.from_numpy(x).cuda().bfloat16() for x in (q, k, v)]
    cu_gpu = torch.from_numpy(cu).cuda()
    out = splat.torch.varlen_attention(*qkv_gpu, cu_gpu, 130, pattern=SERVING)
    fn = torch.compile(lambda *a: splat.torch.varlen_attention(*a, 130, pattern=SERVING), fullgraph=True)
    torch.testing.assert_close(fn(*qkv_gpu, cu_gpu), out)
    torch.library.opcheck(torch.ops.splat.varlen_attention.default, (*qkv_gpu, cu_gpu, 130, SERVING, 0.0))
    with pytest.raises(ValueError, match="max_seqlen"):
        splat.torch.varlen_attention(*qkv_gpu, cu_gpu, 100, pattern=SERVING)
    with pytest.raises(ValueError, match="cu_seqlens"):
        splat.torch.varlen_attention(*qkv_gpu, torch.tensor([0, 3, 3, 100, 190], dtype=torch.int32).cuda(), 130,
                                     pattern=SERVING)
    with pytest.raises(ValueError, match="int32"):
        splat.torch.varlen_attention(*qkv_gpu, cu_gpu.long(), 130, pattern=SERVING)


@cuda_only
def test_cuda_plan_times_and_cache(rng):
    plans = splat._serving.varlen_plans(SERVING)
    cu = np.concatenate([[0], np.cumsum(rng.integers(1, 400, 16))]).astype(np.int32)
    first = splat._core.varlen_plan_times(plans, cu, 400, "bf16", 128)
    again = splat._core.varlen_plan_times(plans, cu, 400, "bf16", 128)
    assert not first["cached"] and again["cached"] and first["tiles"] > 0 and first["total_ms"] > 0

