"""splat.flurka on NumPy (and JAX through its host callback) against the float64 formulas."""

import numpy as np
import pytest

import splat
from flurka_ref import PROJECTED, flurka, flurka_causal

if not splat._core.has_flurka:
    pytest.skip("built without FLuRKA", allow_module_level=True)

METHODS = ["flurka-favor", "flurka-elu", "flurka-relu", "linformer", "performer-favor", "performer-relu", "linear"]


def inputs(rng, method, b=2, h=2, nq=40, n=40, d=16, kproj=8, m=32, per_head=False):
    q = rng.standard_normal((b, h, nq, d)).astype(np.float32)
    k = (0.5 * rng.standard_normal((b, h, n, d))).astype(np.float32)
    v = rng.standard_normal((b, h, n, d)).astype(np.float32)
    pre = (h,) if per_head else ()
    E = F = W = None
    if method in PROJECTED:
        E = (rng.standard_normal(pre + (kproj, n)) / np.sqrt(n)).astype(np.float32)
        F = (rng.standard_normal(pre + (kproj, n)) / np.sqrt(n)).astype(np.float32)
    if "favor" in method or "relu" in method:
        W = rng.standard_normal(pre + (d, m)).astype(np.float32)
    return q, k, v, E, F, W


def assert_close(ours, ref, rtol=2e-4, atol=2e-4):
    ours = np.asarray(ours, np.float64)
    assert not np.isnan(ours).any()
    scale = max(1.0, np.abs(ref).max())
    assert np.abs(ours - ref).max() <= atol * scale + rtol * np.abs(ref).max(), np.abs(ours - ref).max()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_head", [False, True])
def test_methods(rng, method, per_head):
    q, k, v, E, F, W = inputs(rng, method, per_head=per_head)
    out = np.full_like(q, np.nan)
    splat.flurka(q, k, v, E, F, W, method=method, out=out)
    assert_close(out, flurka(method, q, k, v, E, F, W))


def test_bnhd_layout(rng):
    q, k, v, E, F, W = inputs(rng, "flurka-favor")
    t = [np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in (q, k, v)]
    out = splat.flurka(*t, E, F, W, layout="bnhd")
    assert_close(np.swapaxes(out, 1, 2), flurka("flurka-favor", q, k, v, E, F, W))


@pytest.mark.parametrize("method", ["flurka-favor", "flurka-elu"])
def test_causal(rng, method):
    b, h, n, d, c, r = 1, 2, 36, 16, 8, 4  # last chunk partial
    q, k, v, _, _, W = inputs(rng, method, b=b, h=h, nq=n, n=n, d=d)
    E = (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float32)
    F = (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float32)
    out = splat.flurka(q, k, v, E, F, W, method=method, causal=True)
    assert_close(out, flurka_causal(method, q, k, v, E, F, W), rtol=1e-3, atol=1e-3)


def test_errors(rng):
    q, k, v, E, F, W = inputs(rng, "flurka-favor")
    with pytest.raises(ValueError):
        splat.flurka(q, k, v, E, F, None)  # favor needs W
    with pytest.raises(ValueError):
        splat.flurka(q, k, v, None, F, W)  # projection needs E
    with pytest.raises(ValueError):
        splat.flurka(q, k, v, E, F, W, method="nosuchmethod")
    with pytest.raises(ValueError):
        splat.flurka(q, k, v, E[:, :5], F, W)  # E columns != N


def _jax_devices():
    try:
        import jax
    except ImportError:
        return []
    devs = ["cpu"]
    try:
        if jax.devices("gpu") and splat.cuda_available()[0]:
            devs.append("gpu")
    except RuntimeError:
        pass
    return devs


@pytest.mark.parametrize("device", _jax_devices())
@pytest.mark.parametrize("method", ["flurka-favor", "flurka-relu", "linformer", "performer-favor", "linear"])
def test_jax_ffi(rng, device, method):
    import jax
    import jax.numpy as jnp
    import splat.jax as sj
    d = 16 if device == "cpu" else 64
    q, k, v, E, F, W = inputs(rng, method, d=d, n=64, nq=64)
    dt = jnp.float32 if device == "cpu" else jnp.bfloat16
    dev = jax.devices(device)[0]
    put = (lambda x: None if x is None else jax.device_put(jnp.asarray(x, dt), dev))
    with jax.default_device(dev):
        out = jax.jit(lambda q, k, v: sj.flurka(q, k, v, put(E), put(F), put(W), method=method))(
            put(q), put(k), put(v))
    host = [None if x is None else np.asarray(put(x).astype(jnp.float32)) for x in (q, k, v, E, F, W)]
    ref = flurka(method, *host)
    if device == "cpu":
        assert_close(np.asarray(out), ref)
    else:
        err = np.abs(np.asarray(out.astype(jnp.float32)) - ref).max()
        assert err <= 3e-2 * max(1.0, np.abs(ref).max()), err


def test_jax_ffi_causal_vmap_and_grad(rng):
    jax = pytest.importorskip("jax")
    import splat.jax as sj
    q, k, v, _, _, W = inputs(rng, "flurka-favor", nq=36, n=36)
    E = (rng.standard_normal((4, 8)) / 3).astype(np.float32)
    F = (rng.standard_normal((4, 8)) / 3).astype(np.float32)
    with jax.default_device(jax.devices("cpu")[0]):
        out = jax.vmap(lambda q: sj.flurka(q, k, v, E, F, W, causal=True))(np.stack([q, 2 * q]))
        assert_close(np.asarray(out[1]), flurka_causal("flurka-favor", 2 * q, k, v, E, F, W), rtol=1e-3, atol=1e-3)
        g = jax.grad(lambda q: sj.flurka(q, k, v, E, F, W, causal=True).sum())(q)  # test_flurka_autograd checks values
        assert np.isfinite(np.asarray(g)).all()


def test_flurka_decoder_dispatch():
    # the decode step is CUDA-only (torch tensors); other frameworks and host tensors are refused clearly
    E = np.ones((4, 8), np.float32)
    with pytest.raises(NotImplementedError, match="FlurkaDecoder"):
        splat.flurka_decoder(E, E, None, "flurka-elu", batch=1, heads=1, head_dim=32)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="runs on CUDA"):
        splat.flurka_decoder(torch.ones(4, 8), torch.ones(4, 8), None, "flurka-elu", batch=1, heads=1, head_dim=32)
