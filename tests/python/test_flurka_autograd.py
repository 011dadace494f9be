"""FLuRKA gradients through PyTorch autograd and JAX (CPU): gradcheck in float64, float32 gradients against a
float64 autograd of the plain formula (err(splat) <= k * err(naive float32 autograd) + atol), opcheck, a
training layer, and jax.grad under jit and vmap."""

import math

import numpy as np
import pytest

import splat

torch = pytest.importorskip("torch")
import splat.torch as st  # noqa: E402

if not splat._core.has_flurka:
    pytest.skip("built without FLuRKA", allow_module_level=True)

METHODS = ["flurka-favor", "flurka-elu", "flurka-relu", "linformer", "performer-favor", "performer-relu", "linear"]
CAUSAL = ["flurka-favor", "flurka-elu", "flurka-relu"]
PROJ = {"flurka-favor", "flurka-elu", "flurka-relu", "linformer"}
FMAP = {"flurka-favor": "favor", "flurka-elu": "elu", "flurka-relu": "relu", "linformer": None,
        "performer-favor": "favor", "performer-relu": "relu", "linear": "elu"}


# ---- the plain formula in torch (the user's baseline; float64 autograd of it is the oracle) ----

def _heads(x):
    return x if x.dim() == 2 else x[None]  # [H, r, c] broadcasts over [B, H, ...]


def phi(x, fmap, w):
    if fmap == "elu":
        return torch.nn.functional.elu(x) + 1
    s = x.shape[-1] ** -0.25
    xw = (s * x) @ _heads(w)
    m = w.shape[-1]
    if fmap == "favor":
        return torch.exp(xw - 0.5 * ((s * x) ** 2).sum(-1, keepdim=True)) / math.sqrt(m)
    return torch.relu(xw) / math.sqrt(m)


def plain(method, q, k, v, E, F, W):
    if method in PROJ:
        k, v = _heads(E) @ k, _heads(F) @ v
    fmap = FMAP[method]
    if fmap is None:
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
    pq, pk = phi(q, fmap, W), phi(k, fmap, W)
    return (pq @ (pk.transpose(-1, -2) @ v)) / (pq @ pk.sum(-2).unsqueeze(-1))


def plain_causal(method, q, k, v, E, F, W):
    n, d = q.shape[-2], q.shape[-1]
    c = E.shape[-1]
    fmap = FMAP[method]
    outs, S, z = [], None, None
    for c0 in range(0, n, c):
        c1 = min(n, c0 + c)
        qc, kc, vc = q[..., c0:c1, :], k[..., c0:c1, :], v[..., c0:c1, :]
        sc = torch.exp(qc @ kc.transpose(-1, -2) / math.sqrt(d))
        sc = sc * torch.tril(torch.ones(c1 - c0, c1 - c0, dtype=q.dtype))
        num, den = sc @ vc, sc.sum(-1, keepdim=True)
        if S is not None:
            pq = phi(qc, fmap, W)
            num, den = num + pq @ S, den + pq @ z
        outs.append(num / den)
        if c1 - c0 == c:
            pk = phi(_heads(E) @ kc, fmap, W)
            s_new, z_new = pk.transpose(-1, -2) @ (_heads(F) @ vc), pk.sum(-2).unsqueeze(-1)
            S, z = (s_new, z_new) if S is None else (S + s_new, z + z_new)
    return torch.cat(outs, -2)


def make(method, dtype, b=2, h=2, n=11, nq=None, d=8, kk=4, m=6, per_head=False, causal_chunk=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    nq = n if nq is None else nq
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v = rnd(b, h, nq, d), 0.7 * rnd(b, h, n, d), rnd(b, h, n, d)
    pre = (h,) if per_head else ()
    cols = causal_chunk or n
    E = F = W = None
    if method in PROJ:
        E, F = rnd(*pre, kk, cols) / math.sqrt(cols), rnd(*pre, kk, cols) / math.sqrt(cols)
    if FMAP[method] in ("favor", "relu"):
        W = rnd(*pre, d, m)
    cast = lambda x: None if x is None else x.to(dtype)  # noqa: E731
    return [cast(x) for x in (q, k, v, E, F, W)]


def leaves(xs, with_w=False):
    return [None if x is None else x.detach().requires_grad_(i < 5 or with_w) for i, x in enumerate(xs)]


def grads(fn, xs, dout):
    ins = leaves(xs)
    out = fn(*ins)
    diff = [x for x in ins[:5] if x is not None]
    return out, torch.autograd.grad(out, diff, dout)


def rel(a, b):
    return (torch.linalg.vector_norm(a.double() - b) / max(torch.linalg.vector_norm(b).item(), 1e-30)).item()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_head", [False, True])
def test_gradcheck_float64(method, per_head):
    xs = leaves(make(method, torch.float64, b=1, n=7, nq=5, d=4, kk=3, m=5, per_head=per_head))
    diff = [x for x in xs[:5] if x is not None]

    def f(*d):
        it = iter(d)
        full = [next(it) if x is not None else None for x in xs[:5]] + [xs[5]]
        return st.flurka(*full, method=method)
    assert torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", CAUSAL)
def test_gradcheck_float64_causal(method):
    xs = leaves(make(method, torch.float64, b=1, n=10, d=4, kk=2, m=5, causal_chunk=3))
    diff = [x for x in xs[:5]]
    assert torch.autograd.gradcheck(lambda *d: st.flurka(*d, xs[5], method=method, causal=True), diff, eps=1e-6,
                                    atol=1e-6)


@pytest.mark.parametrize("method,causal", [(m, False) for m in METHODS] + [(m, True) for m in CAUSAL])
@pytest.mark.parametrize("per_head", [False, True])
def test_float32_grads_vs_float64_formula(method, per_head, causal):
    chunk = 4 if causal else 0
    x64 = make(method, torch.float64, n=13, nq=None if causal else 9, d=16, kk=3, m=12, per_head=per_head,
               causal_chunk=chunk, seed=3)
    x32 = [None if x is None else x.float() for x in x64]
    dout = torch.randn(x64[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref_fn = (lambda *a: plain_causal(method, *a)) if causal else (lambda *a: plain(method, *a))
    ours_fn = lambda *a: st.flurka(*a, method=method, causal=causal)  # noqa: E731
    _, g_ref = grads(ref_fn, x64, dout)
    _, g_naive = grads(ref_fn, x32, dout.float())
    out, g_ours = grads(ours_fn, x32, dout.float())
    assert out.dtype == torch.float32
    for name, a, n_, r in zip("qkvEF", g_ours, g_naive, g_ref):
        assert torch.isfinite(a).all(), name
        assert rel(a, r) <= 4 * rel(n_, r) + 2e-5, (name, rel(a, r), rel(n_, r))


@pytest.mark.parametrize("method,causal", [("flurka-favor", False), ("linear", False), ("flurka-elu", True)])
def test_eager_path_equals_the_registered_op(method, causal, monkeypatch):
    # Eager autograd skips the dispatcher (splat.torch._EagerFlurka): outputs and gradients bitwise those of
    # splat::flurka and its autograd formula.
    x = [None if t is None else t.float() for t in make(method, torch.float64, n=13, d=16, kk=3, m=12,
                                                        causal_chunk=4 if causal else 0, seed=5)]
    dout = torch.randn(x[0].shape, generator=torch.Generator().manual_seed(6))
    fn = lambda *a: st.flurka(*a, method=method, causal=causal)  # noqa: E731
    assert st._plain_eager(*[t for t in x if t is not None])
    eager = grads(fn, x, dout)
    monkeypatch.setattr(st, "_plain_eager", lambda *ts: False)
    ops = grads(fn, x, dout)
    assert torch.equal(eager[0], ops[0])
    for name, a, b in zip("qkvEF", eager[1], ops[1]):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), name


def test_w_requires_no_grad():
    q, k, v, E, F, W = leaves(make("flurka-favor", torch.float32), with_w=True)
    with pytest.raises(ValueError, match="W"):
        st.flurka(q, k, v, E, F, W)
    st.flurka(q, k, v, E, F, W.detach()).sum().backward()  # a fixed W is fine
    assert E.grad is not None and torch.isfinite(E.grad).all()


@pytest.mark.parametrize("method", ["flurka-favor", "linformer", "performer-relu", "linear"])
def test_opcheck(method):
    xs = leaves(make(method, torch.float32, n=9, d=8))
    torch.library.opcheck(torch.ops.splat.flurka.default, (*xs, method, False, "bhnd"))
    dout = torch.randn(xs[0].shape)
    plain_xs = [None if x is None else x.detach() for x in xs]
    torch.library.opcheck(torch.ops.splat.flurka_backward.default, (dout, *plain_xs, method, False, "bhnd"))


def test_opcheck_causal():
    xs = leaves(make("flurka-elu", torch.float32, n=10, d=8, causal_chunk=4))
    torch.library.opcheck(torch.ops.splat.flurka.default, (*xs, "flurka-elu", True, "bhnd"))


def test_compile_fullgraph_forward_backward():
    xs = leaves(make("flurka-favor", torch.float32, n=12, d=8))
    f = torch.compile(lambda *a: st.flurka(*a, method="flurka-favor").square().sum(), fullgraph=True,
                      backend="aot_eager")
    f(*xs).backward()
    eager = leaves([x.detach() if x is not None else None for x in xs])
    st.flurka(*eager, method="flurka-favor").square().sum().backward()
    for a, b in zip(xs[:5], eager[:5]):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("method,causal", [("flurka-favor", False), ("linformer", False), ("flurka-elu", True)])
def test_layer_trains(method, causal):
    torch.manual_seed(0)
    n, e = 16, 16
    layer = st.FLuRKAAttention(e, 2, n, 4, method=method, causal=causal, chunk=4 if causal else None,
                               num_features=8)
    x = torch.randn(4, n, e)
    target = torch.roll(x, 1, dims=1) * 0.5  # something attention can learn
    E0, F0 = layer.E.detach().clone(), layer.F.detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert not torch.equal(layer.E.detach(), E0) and not torch.equal(layer.F.detach(), F0)


# ---- JAX ----

def _jax():
    jax = pytest.importorskip("jax")
    if not getattr(splat._core, "xla_flurka_backward_targets", None):
        pytest.skip("built without the XLA FFI handlers")
    return jax


def jnp_plain(method, q, k, v, E, F, W):
    import jax.numpy as jnp
    hd = lambda x: x if x.ndim == 2 else x[None]  # noqa: E731
    if method in PROJ:
        k, v = hd(E) @ k, hd(F) @ v
    fmap = FMAP[method]
    if fmap is None:
        import jax
        return jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]), -1) @ v

    def ph(x):
        if fmap == "elu":
            return jnp.where(x > 0, x + 1, jnp.exp(jnp.minimum(x, 0)))
        s = x.shape[-1] ** -0.25
        xw = (s * x) @ hd(W)
        if fmap == "favor":
            return jnp.exp(xw - 0.5 * jnp.sum((s * x) ** 2, -1, keepdims=True)) / math.sqrt(W.shape[-1])
        return jnp.maximum(xw, 0) / math.sqrt(W.shape[-1])
    pq, pk = ph(q), ph(k)
    return (pq @ (jnp.swapaxes(pk, -1, -2) @ v)) / (pq @ jnp.sum(pk, -2)[..., None])


@pytest.mark.parametrize("method", METHODS)
def test_jax_grad_jit(method):
    jax = _jax()
    import jax.numpy as jnp
    import splat.jax as sj
    # m = 16 features: a relu row with every feature 0 (den = 0, where the plain formula is 0/0) is unlikely
    xs = [None if x is None else jnp.asarray(x.numpy()) for x in make(method, torch.float32, n=12, d=8, m=16, seed=5)]
    q, k, v, E, F, W = xs
    dout = jnp.asarray(np.random.default_rng(6).standard_normal(q.shape), jnp.float32)
    argn = (0, 1, 2, 3, 4) if method in PROJ else (0, 1, 2)

    def loss(fn):
        return lambda q, k, v, E, F: jnp.sum(fn(q, k, v, E, F) * dout)
    with jax.default_device(jax.devices("cpu")[0]):
        ours = jax.jit(jax.grad(loss(lambda q, k, v, E, F: sj.flurka(q, k, v, E, F, W, method=method)), argn))(
            q, k, v, E, F)
        x64 = [None if x is None else np.asarray(x, np.float64) for x in xs]
        ref = jax.grad(loss(lambda q, k, v, E, F: jnp_plain(method, q, k, v, E, F, W)), argn)(q, k, v, E, F)
    # float64 oracle through torch (JAX runs in float32 here)
    t = leaves([None if x is None else torch.from_numpy(x) for x in x64])
    out = plain(method, *t)
    g64 = torch.autograd.grad(out, [x for x in t[:5] if x is not None], torch.from_numpy(np.asarray(dout, np.float64)))
    for a, n_, r in zip(ours, ref, g64):
        a, n_ = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(n_))
        assert rel(a, r) <= 4 * rel(n_, r) + 2e-5, (rel(a, r), rel(n_, r))


def test_jax_grad_vmap_and_float64():
    jax = _jax()
    import jax.numpy as jnp
    import splat.jax as sj
    method = "flurka-favor"
    q, k, v, E, F, W = [jnp.asarray(x.numpy()) for x in make(method, torch.float32, b=1, n=10, d=8, seed=7)]
    qs = jnp.stack([q, 0.5 * q])

    def loss(fn):
        return lambda q, E: jnp.sum(jnp.sin(fn(q, E)))
    with jax.default_device(jax.devices("cpu")[0]):
        ours = jax.jit(jax.vmap(jax.grad(loss(lambda q, E: sj.flurka(q, k, v, E, F, W, method=method)), (0, 1)),
                                in_axes=(0, None)))(qs, E)
        ref = jax.vmap(jax.grad(loss(lambda q, E: jnp_plain(method, q, k, v, E, F, W)), (0, 1)),
                       in_axes=(0, None))(qs, E)
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
        with jax.enable_x64(True):
            x64 = [jnp.asarray(np.asarray(x), jnp.float64) for x in (q, k, v, E, F, W)]
            g = jax.grad(lambda q: jnp.sum(jnp.sin(sj.flurka(q, *x64[1:], method=method))))(x64[0])
            r = jax.grad(lambda q: jnp.sum(jnp.sin(jnp_plain(method, q, *x64[1:]))))(x64[0])
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-12)


def test_jax_grad_causal():
    jax = _jax()
    import jax.numpy as jnp
    import splat.jax as sj
    x64 = make("flurka-elu", torch.float64, b=1, n=10, d=8, kk=2, causal_chunk=4, seed=8)
    q, k, v, E, F, _ = [jnp.asarray(x.float().numpy()) for x in x64[:5]] + [None]
    with jax.default_device(jax.devices("cpu")[0]):
        g = jax.jit(jax.grad(lambda q, E: jnp.sum(sj.flurka(q, k, v, E, F, method="flurka-elu", causal=True) ** 2),
                             (0, 1)))(q, E)
    t = leaves(x64)
    out = plain_causal("flurka-elu", *t)
    ref = torch.autograd.grad((out ** 2).sum(), [t[0], t[3]])
    for a, r in zip(g, ref):
        assert rel(torch.from_numpy(np.array(a)), r) <= 1e-4


CUDA = torch.cuda.is_available() and splat.cuda_available()[0]


@pytest.mark.skipif(not CUDA, reason="no CUDA device (or a build without CUDA)")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout,per_head", [("bhnd", True), ("bnhd", False)])
def test_cuda_bf16_grads_vs_float64_formula(method, layout, per_head):
    # bf16 on the GPU (the tensor-core backward; flurka-relu the SIMT one) against the float64 formula on the CPU:
    # err(splat) <= 4 * err(bf16 autograd of the formula on the GPU) + atol, every gradient, sizes off every tile.
    x64 = make(method, torch.float64, b=2, h=3, n=301, nq=130, d=64, kk=40, m=72, per_head=per_head, seed=7)
    dout = torch.randn(x64[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    _, g_ref = grads(lambda *a: plain(method, *a), x64, dout)
    xb = [None if x is None else x.to("cuda", torch.bfloat16) for x in x64]
    _, g_naive = grads(lambda *a: plain(method, *a), xb, dout.to("cuda", torch.bfloat16))

    def to_layout(x):  # [B, H, N, D] -> the layout's order
        return x.transpose(1, 2).contiguous() if layout == "bnhd" else x

    def ours_fn(q, k, v, E, F, W):
        out = st.flurka(to_layout(q), to_layout(k), to_layout(v), E, F, W, method=method, layout=layout)
        return out.transpose(1, 2) if layout == "bnhd" else out

    out, g_ours = grads(ours_fn, xb, dout.to("cuda", torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.is_cuda
    for name, a, n_, r in zip("qkvEF", g_ours, g_naive, g_ref):
        assert torch.isfinite(a).all(), name
        assert rel(a.cpu(), r) <= 4 * rel(n_.cpu(), r) + 2e-3, (name, rel(a.cpu(), r), rel(n_.cpu(), r))
