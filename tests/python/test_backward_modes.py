"""The backward's deterministic= keyword (torch and JAX): the default is deterministic; deterministic=False reaches
the backward op (its own CUDA kernels on sm_90a, dQ by fp32 atomics) and gives the same gradients within the usual
tolerance against the float64 reference; on the CPU it changes nothing (bitwise). opcheck covers the op's new
argument, torch.compile(fullgraph) traces it."""

import numpy as np
import pytest

import splat
from conftest import mask_of, run_or_skip
from test_grad import check_grads, naive_torch_grads, rand, reference_grads

torch = pytest.importorskip("torch")
import splat.torch as st  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def grads_of(q, k, v, dout, pattern, **kw):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = run_or_skip(lambda: st.attention(q, k, v, pattern=pattern, **kw))
    return torch.autograd.grad(out, (q, k, v), dout)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", ["window:w=5", "strided:s=8", "longformer:w=4,g=2", "bigbird:b=8,w=1,g=1,r=2"])
def test_non_deterministic_grads_match_the_reference(gen, device, pattern):
    n, d = (48, 16) if device == "cpu" else (200, 64)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v, dout = (rand(gen, (2, 4, n, d), device, dt) for _ in range(4))
    k, v = k[:, :2].contiguous(), v[:, :2].contiguous()  # GQA: 4 query heads, 2 key/value heads
    fast = grads_of(q, k, v, dout, pattern, deterministic=False)
    mask = mask_of(pattern, n)
    ref = reference_grads(*(x.detach().double().cpu().numpy() for x in (q, k, v, dout)), mask)
    check_grads(fast, ref[1:4], naive_torch_grads(q, k, v, dout, mask, "bhnd"), "f32" if device == "cpu" else "bf16")
    default = grads_of(q, k, v, dout, pattern)
    if device == "cpu":  # the CPU backward is deterministic either way
        for a, b in zip(fast, default):
            assert torch.equal(a, b)
    else:  # the atomic-dQ kernels order their work differently: both modes must match the reference, not each other
        check_grads(default, ref[1:4], naive_torch_grads(q, k, v, dout, mask, "bhnd"), "bf16")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_default_stays_bitwise_deterministic_on_cuda(gen):
    q, k, v, dout = (rand(gen, (2, 4, 300, 64), "cuda", torch.bfloat16) for _ in range(4))
    a, b = grads_of(q, k, v, dout, "strided:s=17"), grads_of(q, k, v, dout, "strided:s=17")
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_opcheck_and_compile_with_the_keyword(gen):
    q, k, v, dout = (rand(gen, (1, 2, 24, 8), "cpu", torch.float32) for _ in range(4))
    out, lse = torch.ops.splat.attention_fwd(q, k, v, "window:w=4", 0.0, "bhnd", None, False)
    torch.library.opcheck(torch.ops.splat.attention_fwd.default, (q, k, v, "window:w=4", 0.0, "bhnd", None, False))
    torch.library.opcheck(torch.ops.splat.attention_bwd.default,
                          (dout, q, k, v, out, lse, "window:w=4", 0.0, "bhnd", None, False))

    def loss(q, k, v):
        return (st.attention(q, k, v, pattern="window:w=4", deterministic=False) * dout).sum()

    qs, ks, vs = (x.clone().requires_grad_() for x in (q, k, v))
    got = torch.autograd.grad(torch.compile(loss, fullgraph=True)(qs, ks, vs), (qs, ks, vs))
    want = torch.autograd.grad(loss(qs, ks, vs), (qs, ks, vs))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)


def test_jax_keyword(rng):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import splat.jax as sj

    cpu = jax.devices("cpu")[0]  # float32 runs on the CPU backend only (the CUDA one takes bf16/f16)
    q, k, v = (jax.device_put(jnp.asarray(rng.standard_normal((2, 2, 32, 8)), jnp.float32), cpu) for _ in range(3))

    def loss(q, k, v, det):
        return jnp.sum(sj.attention(q, k, v, pattern="dilated:w=3,d=2", deterministic=det) ** 2)

    fast = jax.jit(jax.grad(lambda *a: loss(*a, False), argnums=(0, 1, 2)))(q, k, v)
    default = jax.jit(jax.grad(lambda *a: loss(*a, True), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(fast, default):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the CPU backward ignores the flag
