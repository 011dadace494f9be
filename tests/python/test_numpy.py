"""NumPy (CPU) path: every pattern, dtype and layout against the float64 dense reference."""

import os
import subprocess
import sys

import numpy as np
import pytest

import splat
from conftest import PATTERNS, check_close, mask_of, np_dtype, random_qkv


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_patterns_dtypes_layouts(rng, pattern, dtype, layout):
    b, h, n, d = 2, 2, 72, 16
    dt = np_dtype(dtype)
    shape = (b, h, n, d) if layout == "bhnd" else (b, n, h, d)
    q, k, v = random_qkv(rng, shape, shape, dt)
    out = np.full(shape, np.nan, dtype=dt)  # poisoned: every entry must be written
    splat.attention(q, k, v, pattern=pattern, layout=layout, out=out)
    check_close(out, q, k, v, mask_of(pattern, n), dtype, layout=layout)


@pytest.mark.parametrize("pattern", ["window:w=6", "strided:s=5", "bigbird:b=8,w=1,g=1,r=2"])
def test_grouped_query_heads_and_scale(rng, pattern):
    n, d = 64, 32
    q, k, v = random_qkv(rng, (1, 6, n, d), (1, 2, n, d), np.float32)
    out = splat.attention(q, k, v, pattern=pattern, scale=0.3)
    check_close(out, q, k, v, mask_of(pattern, n), "f32", scale=0.3)


def test_strided_views_without_copies(rng):
    # q, k, v as views into one [B, N, 3, H, D] buffer (as a fused QKV projection produces).
    b, n, h, d = 2, 40, 3, 8
    qkv = rng.standard_normal((b, n, 3, h, d)).astype(np.float32)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    assert not q.flags.c_contiguous
    out = splat.attention(q, k, v, pattern="causal_window:w=5", layout="bnhd")
    check_close(out, q, k, v, mask_of("causal_window:w=5", n), "f32", layout="bnhd")


def test_rank3_and_folded_batch_dims(rng):
    n, d = 48, 8
    q, k, v = random_qkv(rng, (3, n, d), (3, n, d), np.float32)  # [H, N, D]
    out = splat.attention(q, k, v, pattern="window:w=3")
    check_close(out, q, k, v, mask_of("window:w=3", n), "f32")
    q, k, v = random_qkv(rng, (2, 2, 3, n, d), (2, 2, 3, n, d), np.float32)  # [B1, B2, H, N, D]
    out = splat.attention(q, k, v, pattern="window:w=3")
    check_close(out, q, k, v, mask_of("window:w=3", n), "f32")


def test_plan_object_reuse(rng):
    n, d = 80, 16
    plan = splat.plan("dilated:w=4,d=4", seq_len=n, head_dim=d, dtype="float32", device="cpu")
    assert plan.seq_len == n and plan.head_dim == d and plan.device == -1 and plan.dtype == "f32"
    assert plan.nnz == int(mask_of("dilated:w=4,d=4", n).sum())
    assert plan.describe() and "dilated" in repr(plan)
    for _ in range(3):
        q, k, v = random_qkv(rng, (2, 2, n, d), (2, 2, n, d), np.float32)
        out = splat.attention(q, k, v, plan)
        check_close(out, q, k, v, mask_of("dilated:w=4,d=4", n), "f32")


def test_one_shot_caches_plans(rng):
    splat.clear_plan_cache()
    from splat._plans import plan_cache_size
    q, k, v = random_qkv(rng, (1, 1, 32, 8), (1, 1, 32, 8), np.float32)
    for _ in range(3):
        splat.attention(q, k, v, pattern="window:w=2")
    assert plan_cache_size() == 1
    splat.attention(q[:, :, :16], k[:, :, :16], v[:, :, :16], pattern="window:w=2")  # another N
    assert plan_cache_size() == 2


def test_matches_cpp_reference(rng):
    q, k, v = random_qkv(rng, (1, 2, 50, 8), (1, 2, 50, 8), np.float32)
    np.testing.assert_allclose(splat.attention(q, k, v, pattern="longformer:w=3,g=2"),
                               splat.reference(q, k, v, "longformer:w=3,g=2"), atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda q: splat.attention(q, q, q, pattern="window:w="), "window"),
    (lambda q: splat.attention(q, q, q, pattern="nosuchpattern:x=1"), None),
    (lambda q: splat.attention(q, q, q, pattern="window:w=2", layout="nhbd"), "layout"),
    (lambda q: splat.attention(q.astype(np.float64), q, q, pattern="window:w=2"), "dtype"),
    (lambda q: splat.attention(q, q[:, :1], q, pattern="window:w=2"), None),
    (lambda q: splat.attention(q, q[:, :, :8], q[:, :, :8], pattern="window:w=2"), None),
    (lambda q: splat.attention(q, q, q, splat.plan("window:w=2", seq_len=99, head_dim=8)), "seq_len"),
    (lambda q: splat.attention(q, q, q), "pattern"),
    (lambda q: splat.attention(q[0, 0], q[0, 0], q[0, 0], pattern="window:w=2"), r"\[B, H, N, D\]"),
    (lambda q: splat.plan("window:w=2", seq_len=0, head_dim=8), "seq_len"),
    (lambda q: splat.plan("window:w=2", seq_len=8, head_dim=8, dtype="int8"), "dtype"),
    (lambda q: splat.plan("window:w=2", seq_len=8, head_dim=8, device="tpu"), "device"),
    (lambda q: splat.attention(q, q, q, pattern="mask:/nonexistent/mask.npy"), None),
])
def test_bad_arguments_raise_value_error(call, match):
    q = np.ones((1, 2, 16, 8), np.float32)
    with pytest.raises(ValueError, match=match):
        call(q)


def test_cuda_plan_without_cuda_is_a_clean_error():
    if splat.cuda_available()[0]:
        pytest.skip("a CUDA device is present")
    with pytest.raises((NotImplementedError, RuntimeError)):
        splat.plan("window:w=2", seq_len=64, head_dim=64, dtype="bf16", device="cuda")


def test_unsupported_array_type():
    with pytest.raises(TypeError):
        splat.attention([[1.0]], [[1.0]], [[1.0]], pattern="dense")


def test_dense_mask_oracle():
    m = splat.dense_mask("causal_window:w=2", 6)
    assert m.shape == (6, 6) and m.dtype == np.uint8
    i, j = np.indices((6, 6))
    np.testing.assert_array_equal(m, ((i - j >= 0) & (i - j <= 2)).astype(np.uint8))


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "splat", "--help"], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(__file__))
    assert r.returncode == 0, r.stderr
    assert "inspect" in r.stdout + r.stderr
