"""JAX path (XLA FFI custom call): eager, jit, vmap, the dot_product_attention drop-in; CPU always,
CUDA where JAX sees a GPU and splat was built with CUDA."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import splat  # noqa: E402
import splat.jax as sj  # noqa: E402
from conftest import PATTERNS, check_close, mask_of, random_qkv, run_or_skip  # noqa: E402


def _gpu_devices():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


DEVICES = ["cpu"] + (["gpu"] if _gpu_devices() and splat.cuda_available()[0] else [])
JDT = {"f32": jnp.float32, "f16": jnp.float16, "bf16": jnp.bfloat16}


@pytest.fixture
def on_cpu():
    """Arrays made from NumPy land on JAX's default device: pin it to the CPU where a test means the CPU."""
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def put(x, device, dtype):
    return jax.device_put(jnp.asarray(x, dtype), jax.devices(device)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_jit_patterns(rng, device, pattern, dtype, layout):
    if device == "gpu" and dtype == "f32":
        pytest.skip("the CUDA kernels take bf16/f16")
    n, d = 64, 32 if device == "cpu" else 64
    shape = (2, 2, n, d) if layout == "bhnd" else (2, n, 2, d)
    q, k, v = (put(x, device, JDT[dtype]) for x in random_qkv(rng, shape, shape, np.float32))
    f = jax.jit(lambda q, k, v: sj.attention(q, k, v, pattern=pattern, layout=layout))
    out = run_or_skip(lambda: f(q, k, v))
    assert out.dtype == q.dtype and out.shape == q.shape
    host = [np.asarray(x) for x in (q, k, v)]
    check_close(np.asarray(out.astype(jnp.float32)), *host, mask_of(pattern, n), dtype, layout=layout)


@pytest.mark.parametrize("device", DEVICES)
def test_eager_gqa_and_f16(rng, device):
    n, d = 48, 32 if device == "cpu" else 64
    q, k, v = random_qkv(rng, (1, 4, n, d), (1, 2, n, d), np.float32)
    q, k, v = (put(x, device, jnp.float16) for x in (q, k, v))
    out = sj.attention(q, k, v, pattern="strided:s=6", scale=0.2)
    check_close(np.asarray(out), *(np.asarray(x) for x in (q, k, v)), mask_of("strided:s=6", n), "f16", scale=0.2)


@pytest.mark.parametrize("device", DEVICES)
def test_vmap_over_batch(rng, device):
    n, d = 40, 32 if device == "cpu" else 64
    dt, name = (jnp.float32, "f32") if device == "cpu" else (jnp.bfloat16, "bf16")
    q, k, v = random_qkv(rng, (3, 2, 2, n, d), (3, 2, 2, n, d), np.float32)  # vmapped axis first
    q, k, v = (put(x, device, dt) for x in (q, k, v))
    f32 = [np.asarray(x.astype(jnp.float32)) for x in (q, k, v)]
    out = jax.jit(jax.vmap(lambda q, k, v: sj.attention(q, k, v, pattern="window:w=4")))(q, k, v)
    check_close(np.asarray(out.astype(jnp.float32)), *f32, mask_of("window:w=4", n), name)
    # Only q batched: k, v are broadcast to the batch.
    out = jax.vmap(lambda q: sj.attention(q, k[0], v[0], pattern="window:w=4"))(q)
    kk, vv = (np.broadcast_to(x[0], x.shape) for x in f32[1:])
    check_close(np.asarray(out.astype(jnp.float32)), f32[0], kk, vv, mask_of("window:w=4", n), name)


def test_plan_object_under_jit(rng, on_cpu):
    n, d = 32, 16
    plan = splat.plan("causal_dilated:w=4,d=2", seq_len=n, head_dim=d)
    q, k, v = random_qkv(rng, (1, 2, n, d), (1, 2, n, d), np.float32)
    out = jax.jit(lambda q, k, v: sj.attention(q, k, v, plan))(q, k, v)
    check_close(np.asarray(out), q, k, v, mask_of("causal_dilated:w=4,d=2", n), "f32")
    out = splat.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), plan)  # generic entry point
    check_close(np.asarray(out), q, k, v, mask_of("causal_dilated:w=4,d=2", n), "f32")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs, pattern", [(dict(is_causal=True), "causal"),
                                             (dict(local_window_size=(6, 6)), "window:w=6"),
                                             (dict(local_window_size=(5, 0), is_causal=True), "causal_window:w=5"),
                                             (dict(), "dense")])
def test_dot_product_attention_drop_in(rng, device, kwargs, pattern):
    d, dt, name = (16, jnp.float32, "f32") if device == "cpu" else (64, jnp.bfloat16, "bf16")
    q, k, v = (put(x, device, dt) for x in random_qkv(rng, (2, 50, 4, d), (2, 50, 2, d), np.float32))  # GQA
    ours = sj.dot_product_attention(q, k, v, **kwargs)
    f32 = [np.asarray(x.astype(jnp.float32)) for x in (q, k, v)]
    check_close(np.asarray(ours.astype(jnp.float32)), *f32, mask_of(pattern, 50), name, layout="bnhd")
    if device == "cpu":  # and JAX's own implementation agrees
        theirs = jax.nn.dot_product_attention(q, k, v, **kwargs)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=2e-5)


def test_dot_product_attention_pattern_equals_mask(rng, on_cpu):
    pattern = "longformer:w=3,g=2"
    q, k, v = random_qkv(rng, (2, 40, 2, 16), (2, 40, 2, 16), np.float32)
    ours = sj.dot_product_attention(q, k, v, pattern=pattern)
    mask = jnp.asarray(mask_of(pattern, 40).astype(bool))[None, None]
    theirs = jax.nn.dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=2e-5)


def test_errors(rng, on_cpu):
    q = jnp.ones((1, 2, 16, 8), jnp.float32)
    with pytest.raises(ValueError):
        sj.attention(q, q, q, pattern="window:w=")
    with pytest.raises(ValueError):
        sj.attention(q, q.astype(jnp.float16), q, pattern="window:w=2")
    with pytest.raises(ValueError):
        sj.dot_product_attention(q, q, q, mask=jnp.ones((16, 16), bool))
    g = jax.grad(lambda q: sj.attention(q, q, q, pattern="window:w=2").sum())(q)  # a backward exists (test_grad)
    assert np.isfinite(np.asarray(g)).all()
