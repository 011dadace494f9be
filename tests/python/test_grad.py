"""Training: gradients of splat attention through PyTorch autograd and JAX's custom_vjp, against a float64 NumPy
reference backward (fresh random inputs, NaN-poisoned gradient buffers where the API takes buffers, the tolerance
idiom err(ours) <= k * err(same-dtype naive) + atol); opcheck, gradcheck, torch.compile(fullgraph) of forward +
backward; layers that train."""

import numpy as np
import pytest

import splat
from conftest import ATOL, mask_of, run_or_skip, to_bhnd

torch = pytest.importorskip("torch")
import splat.torch as st  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
TDT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}

GRAD_PATTERNS = ["dense", "causal", "window:w=5", "causal_window:w=7", "dilated:w=4,d=3", "strided:s=8",
                 "blocked:b=16", "global:g=3", "sink:g=2", "longformer:w=4,g=2", "bigbird:b=8,w=1,g=1,r=2",
                 "causal_window:w=8+sink:g=4&causal", "strided:s=8&causal", "fixed:l=16,c=4&window:w=9"]


def reference_grads(q, k, v, dout, mask, scale=None, layout="bhnd", lengths=None):
    """float64 dense backward: (out, lse, dq, dk, dv) in the inputs' layout; GQA grads summed per group."""
    q, k, v, dout = (to_bhnd(np.asarray(x, dtype=np.float64), layout) for x in (q, k, v, dout))
    h, hk, d = q.shape[-3], k.shape[-3], q.shape[-1]
    g = h // hk
    kr, vr = np.repeat(k, g, axis=-3), np.repeat(v, g, axis=-3)
    sc = 1.0 / np.sqrt(d) if scale is None else scale
    m = np.broadcast_to(mask.astype(bool), q.shape[:-2] + mask.shape).copy()
    if lengths is not None:
        for b, n_b in enumerate(lengths):
            m[b, ..., :, n_b:] = False
    s = np.where(m, (q @ np.swapaxes(kr, -1, -2)) * sc, -np.inf)
    smax = np.max(s, axis=-1, keepdims=True)
    smax = np.where(np.isfinite(smax), smax, 0.0)
    e = np.where(m, np.exp(s - smax), 0.0)
    den = e.sum(-1, keepdims=True)
    p = e / np.where(den > 0, den, 1.0)
    lse = np.where(den[..., 0] > 0, np.log(np.where(den[..., 0] > 0, den[..., 0], 1.0)) + smax[..., 0], -np.inf)
    out = p @ vr
    dvr = np.swapaxes(p, -1, -2) @ dout
    dp = dout @ np.swapaxes(vr, -1, -2)
    ds = p * (dp - (dout * out).sum(-1, keepdims=True))
    dq = sc * ds @ kr
    dkr = sc * np.swapaxes(ds, -1, -2) @ q
    shp = dkr.shape[:-3] + (hk, g) + dkr.shape[-2:]
    dk, dv = dkr.reshape(shp).sum(-3), dvr.reshape(shp).sum(-3)
    return tuple(to_bhnd(x, layout) for x in (out, dq, dk, dv)) + (lse,)


def naive_torch_grads(q, k, v, dout, mask, layout, lengths=None):
    """Dense masked attention by autograd in the inputs' own dtype: the same-dtype naive error."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    tr = (lambda x: x) if layout == "bhnd" else (lambda x: x.transpose(-3, -2))
    qq, kk, vv = tr(q), tr(k), tr(v)
    g = qq.shape[-3] // kk.shape[-3]
    kk, vv = kk.repeat_interleave(g, dim=-3), vv.repeat_interleave(g, dim=-3)
    m = torch.from_numpy(mask.astype(bool)).to(q.device).expand(qq.shape[:-2] + mask.shape).clone()
    if lengths is not None:
        for b, n_b in enumerate(lengths):
            m[b, ..., :, n_b:] = False
    s = (qq @ kk.transpose(-1, -2)) * (qq.shape[-1] ** -0.5)
    s = s.masked_fill(~m, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    out = tr(p @ vv)
    out.backward(dout)
    return q.grad, k.grad, v.grad


def check_grads(ours, ref, naive, dtype, k_factor=4.0, names=("dq", "dk", "dv")):
    for name, a, r, nv in zip(names, ours, ref, naive):
        a = a.detach().double().cpu().numpy()
        assert not np.isnan(a).any(), f"{name} has NaNs"
        err = np.abs(a - r).max()
        bound = k_factor * np.abs(nv.detach().double().cpu().numpy() - r).max() + ATOL[dtype] * max(1.0, np.abs(r).max())
        assert err <= bound, f"{name}: max error {err:.3g} > bound {bound:.3g}"


def rand(gen, shape, device, dtype):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def head_dim(device):
    return 16 if device == "cpu" else 64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", GRAD_PATTERNS)
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_grads_every_pattern(gen, device, pattern, dtype):
    n, d = (48, head_dim(device)) if device == "cpu" else (200, 64)
    q, k, v, dout = (rand(gen, (2, 2, n, d), device, TDT[dtype]) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    out = run_or_skip(lambda: st.attention(q, k, v, pattern=pattern))
    grads = torch.autograd.grad(out, (q, k, v), dout)
    mask = mask_of(pattern, n)
    ref = reference_grads(*(x.detach().double().cpu().numpy() for x in (q, k, v, dout)), mask)
    naive = naive_torch_grads(q, k, v, dout, mask, "bhnd")
    check_grads((out,), (ref[0],), (torch.from_numpy(ref[0]),), dtype, names=("out",))
    check_grads(grads, ref[1:4], naive, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 17, 65])
def test_grads_gqa_bnhd_odd_n(gen, device, n):
    b, h, hk, d = 2, 4, 2, head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    qkv = rand(gen, (b, n, (h + 2 * hk) * d), device, dt).requires_grad_()
    q, k, v = qkv.split([h * d, hk * d, hk * d], dim=-1)
    q, k, v = q.view(b, n, h, d), k.view(b, n, hk, d), v.view(b, n, hk, d)  # strided views, [B, N, H, D]
    dout = rand(gen, (b, n, h, d), device, dt)
    pattern = "longformer:w=3,g=2"
    out = run_or_skip(lambda: st.attention(q, k, v, pattern=pattern, layout="bnhd"))
    grads = torch.autograd.grad(out, (q, k, v), dout)
    mask = mask_of(pattern, n)
    ref = reference_grads(*(x.detach().double().cpu().numpy() for x in (q, k, v, dout)), mask, layout="bnhd")
    naive = naive_torch_grads(q, k, v, dout, mask, "bnhd")
    check_grads(grads, ref[1:4], naive, "f32" if device == "cpu" else "bf16")


@pytest.mark.parametrize("device", DEVICES)
def test_empty_rows_and_columns_get_zero_grads(gen, device):
    n, d = 32, head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    # Rows i >= 6 see no key; keys j >= 4 are seen by no query.
    pattern = "sink:g=4&window:w=2"
    q, k, v, dout = (rand(gen, (1, 2, n, d), device, dt).requires_grad_() for _ in range(4))
    mask = mask_of(pattern, n)
    assert not mask[6:].any() and not mask[:, 4:].any()
    out, lse = run_or_skip(lambda: st.attention(q, k, v, pattern=pattern, return_lse=True))
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = reference_grads(*(x.detach().double().cpu().numpy() for x in (q, k, v, dout)), mask)
    np.testing.assert_allclose(lse.double().cpu().numpy(), ref[4], atol=1e-4 if dt == torch.float32 else 5e-2)
    check_grads(grads, ref[1:4], naive_torch_grads(q, k, v, dout, mask, "bhnd"), "f32" if device == "cpu" else "bf16")


@pytest.mark.parametrize("device", DEVICES)
def test_key_lengths_forward_and_backward(gen, device):
    n, d = 40, head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    lengths = [40, 23, 0]
    q, k, v, dout = (rand(gen, (3, 2, n, d), device, dt).requires_grad_() for _ in range(4))
    kl = torch.tensor(lengths, dtype=torch.int32, device=device)
    pattern = "window:w=6+global:g=2"
    out = run_or_skip(lambda: st.attention(q, k, v, pattern=pattern, key_lengths=kl))
    grads = torch.autograd.grad(out, (q, k, v), dout)
    mask = mask_of(pattern, n)
    ref = reference_grads(*(x.detach().double().cpu().numpy() for x in (q, k, v, dout)), mask, lengths=lengths)
    naive = naive_torch_grads(q, k, v, dout, mask, "bhnd", lengths=lengths)
    name = "f32" if device == "cpu" else "bf16"
    check_grads((out,), (ref[0],), (torch.from_numpy(ref[0]),), name, names=("out",))
    check_grads(grads, ref[1:4], naive, name)


@pytest.mark.parametrize("device", DEVICES)
def test_eager_path_equals_the_registered_ops(gen, device, monkeypatch):
    # Eager autograd skips the dispatcher (splat.torch._EagerAttention); the registered ops and their autograd
    # formula must give bitwise the same outputs and gradients (GQA, bnhd, key lengths, an odd N).
    n, d = 37, head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    q = rand(gen, (2, n, 4, d), device, dt).requires_grad_()
    k, v = (rand(gen, (2, n, 2, d), device, dt).requires_grad_() for _ in range(2))
    dout = rand(gen, (2, n, 4, d), device, dt)
    kl = torch.tensor([n, 20], dtype=torch.int32, device=device)

    def run():
        out, lse = st.attention(q, k, v, pattern="longformer:w=5,g=2", layout="bnhd", key_lengths=kl,
                                return_lse=True)
        return (out, lse) + torch.autograd.grad(out, (q, k, v), dout)

    assert st._plain_eager(q, k, v, kl)
    eager = run_or_skip(run)
    monkeypatch.setattr(st, "_plain_eager", lambda *ts: False)
    ops = run()
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), eager, ops):
        assert torch.equal(a, b), name


def test_dispatch_modes_see_the_registered_ops(gen):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    q, k, v = (rand(gen, (1, 2, 24, 16), "cpu", torch.float32).requires_grad_() for _ in range(3))
    with Seen() as seen:
        torch.autograd.grad(run_or_skip(lambda: st.attention(q, k, v, pattern="window:w=3")).sum(), (q, k, v))
    assert {"splat.attention_fwd", "splat.attention_bwd"} <= seen.ops, seen.ops


def test_gradcheck_float64_cpu(gen):
    q, k, v = (rand(gen, (1, 2, 12, 8), "cpu", torch.float64).requires_grad_() for _ in range(3))
    for pattern in ("window:w=2", "strided:s=4", "bigbird:b=4,w=0,g=1,r=1"):
        def f(q, k, v):
            return st.attention(q, k, v, pattern=pattern)

        assert run_or_skip(lambda: torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-7))


def test_opcheck_forward_and_backward_ops(gen):
    q, k, v = (rand(gen, (1, 2, 32, 16), "cpu", torch.float32).requires_grad_() for _ in range(3))
    run_or_skip(lambda: st.attention(q, k, v, pattern="window:w=4"))
    torch.library.opcheck(torch.ops.splat.attention_fwd.default, (q, k, v, "window:w=4", 0.0, "bhnd", None))
    torch.library.opcheck(torch.ops.splat.attention.default, (q, k, v, "dilated:w=2,d=3", 0.0, "bhnd"))
    out, lse = torch.ops.splat.attention_fwd(q.detach(), k.detach(), v.detach(), "window:w=4", 0.0, "bhnd")
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.splat.attention_bwd.default,
                          (dout, q.detach(), k.detach(), v.detach(), out, lse, "window:w=4", 0.0, "bhnd", None))


def test_compile_fullgraph_forward_backward(gen):
    q, k, v = (rand(gen, (1, 2, 64, 16), "cpu", torch.float32).requires_grad_() for _ in range(3))

    def loss(q, k, v):
        return (st.attention(q * 2, k, v, pattern="strided:s=8") ** 2).sum()

    eager = torch.autograd.grad(run_or_skip(lambda: loss(q, k, v)), (q, k, v))
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gradients_are_deterministic(gen):
    q, k, v, dout = (rand(gen, (2, 4, 96, 16), "cpu", torch.float32).requires_grad_() for _ in range(4))
    runs = [torch.autograd.grad(run_or_skip(lambda: st.attention(q, k, v, pattern="longformer:w=5,g=3")),
                                (q, k, v), dout) for _ in range(3)]
    for r in runs[1:]:
        for a, b in zip(r, runs[0]):
            assert torch.equal(a, b)


def test_sparse_attention_layer_trains(gen):
    torch.manual_seed(0)
    layer = st.SparseAttention(32, 4, "causal_window:w=4")
    x = torch.randn(2, 24, 32, generator=gen)
    target = torch.randn(2, 24, 32, generator=gen)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(run_or_skip(lambda: layer(x)), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


jax = pytest.importorskip("jax")


def test_jax_grad_under_jit_and_vmap(rng):
    with jax.default_device(jax.devices("cpu")[0]):  # float32 runs on the CPU backend (CUDA: f16/bf16 only)
        _jax_grad_under_jit_and_vmap(rng)


def _jax_grad_under_jit_and_vmap(rng):
    import jax.numpy as jnp
    import splat.jax as sj

    n, d, pattern = 24, 8, "dilated:w=3,d=2+global:g=1"
    q, k, v, w = (rng.standard_normal((2, 2, n, d)).astype(np.float32) for _ in range(4))
    mask = mask_of(pattern, n)

    def loss(q, k, v):
        return (sj.attention(q, k, v, pattern=pattern) * w).sum()

    got = run_or_skip(lambda: jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v))
    ref = reference_grads(q, k, v, w, mask)
    for a, r in zip(got, ref[1:4]):
        np.testing.assert_allclose(np.asarray(a), r, atol=2e-5, rtol=2e-4)
    # vmap over a leading axis, grad inside: the same per-example gradients.
    def loss_w(q, k, v, w):
        return (sj.attention(q, k, v, pattern=pattern) * w).sum()

    per = jax.vmap(jax.grad(loss_w, argnums=0))(q[:, None], k[:, None], v[:, None], w[:, None])
    np.testing.assert_allclose(np.asarray(per)[:, 0], ref[1], atol=2e-5, rtol=2e-4)
    # The dense masked reference through jax.grad agrees too.

    def dense(q, k, v):
        s = jnp.where(mask.astype(bool), q @ jnp.swapaxes(k, -1, -2) / np.sqrt(d), -jnp.inf)
        return (jax.nn.softmax(s, axis=-1) @ v * w).sum()

    for a, b in zip(got, jax.grad(dense, argnums=(0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=2e-4)
