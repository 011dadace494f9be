"""Causal FLuRKA through splat.torch (and splat.jax) on CUDA against the float64 causal formula: the forward on
splat's kernels (bf16: tensor cores), the torch backward by autograd of the formula; skipped without a CUDA device."""

import numpy as np
import pytest

import splat

torch = pytest.importorskip("torch")
if not splat._core.has_flurka:
    pytest.skip("built without FLuRKA", allow_module_level=True)
from flurka_ref import causal_inputs, flurka_causal, rel  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]
pytestmark = pytest.mark.skipif(not CUDA, reason="no CUDA device (or a build without CUDA)")


def make(method, b=2, h=3, n=300, d=64, c=64, r=24, m=40, per_head=True, seed=0):
    return causal_inputs(method, b, h, n, d, c, r, m, per_head, seed)


@pytest.mark.parametrize("method", ["flurka-favor", "flurka-elu", "flurka-relu"])
@pytest.mark.parametrize("d,per_head", [(32, True), (64, False), (128, True)])
def test_torch_causal_cuda_matches_float64(method, d, per_head):
    import splat.torch as st
    xs = make(method, d=d, per_head=per_head, seed=d)  # N = 300: four chunks of 64 and a partial one
    tb = [None if x is None else torch.from_numpy(x).to("cuda", torch.bfloat16) for x in xs]
    # the reference sees exactly the bf16 values the kernels see
    ref = flurka_causal(method, *[None if t is None else t.float().cpu().numpy() for t in tb])
    out = st.flurka(*tb, method=method, causal=True)
    assert out.is_cuda and out.dtype == torch.bfloat16
    got = out.float().cpu().numpy()
    stored = torch.from_numpy(ref).to(torch.bfloat16).double().numpy()
    assert not np.isnan(got).any()
    # bf16 storage runs on the tensor-core kernels: bf16 GEMM operands, the non-causal
    # CUDA tests' idiom
    assert rel(got, ref) <= 6 * rel(stored, ref) + 2e-3


def test_torch_causal_cuda_is_the_default_and_deterministic():
    # no opt-in: CUDA tensors stay on the device, and repeated calls agree bitwise (fixed-order kernels)
    import splat.torch as st
    tb = [None if x is None else torch.from_numpy(x).to("cuda", torch.bfloat16) for x in make("flurka-relu", n=200)]
    a = st.flurka(*tb, method="flurka-relu", causal=True)
    b = st.flurka(*tb, method="flurka-relu", causal=True)
    assert a.is_cuda and torch.equal(a.view(torch.int16), b.view(torch.int16))


@pytest.mark.parametrize("method", ["flurka-favor", "flurka-elu", "flurka-relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_causal_cuda_grads_match_float64(method, dtype):
    # the backward of a causal CUDA call is torch autograd of the formula on the device (splat._flurka_causal_torch)
    import splat.torch as st
    xs = make(method, n=300, d=64, per_head=dtype == torch.float32, seed=7)
    dev = [None if x is None else torch.from_numpy(x).to("cuda", dtype) for x in xs]
    dout = torch.randn(dev[0].shape, device="cuda").to(dtype)
    x64 = [None if t is None else t.double().cpu() for t in dev]
    leaves64 = [t.requires_grad_(True) for t in x64[:5]]
    st.flurka(*leaves64, x64[5], method=method, causal=True).backward(dout.double().cpu())
    leaves = [t.clone().requires_grad_(True) for t in dev[:5]]
    out = st.flurka(*leaves, dev[5], method=method, causal=True)
    out.backward(dout)
    for name, a, r in zip("q k v E F".split(), leaves, leaves64):
        g, ref = a.grad.double().cpu().numpy(), r.grad.numpy()
        assert a.grad.dtype == dtype and not np.isnan(g).any(), name
        stored = torch.from_numpy(ref).to(dtype).double().numpy()
        tol = 4 * rel(stored, ref) + 1e-4 if dtype == torch.float32 else 6 * rel(stored, ref) + 2e-3
        assert rel(g, ref) <= tol, f"d{name}: {rel(g, ref):.2e} > {tol:.2e}"


def test_jax_causal_cuda_forward():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("JAX has no GPU backend here")
    import splat.jax as sj
    if not getattr(splat._core, "xla_flurka_targets", None):
        pytest.skip("built without the XLA FFI handlers")
    xs = make("flurka-favor", d=64, seed=11)
    with jax.default_device(gpu):
        arrs = [None if x is None else jnp.asarray(x, jnp.bfloat16) for x in xs]
        out = sj.flurka(*arrs, method="flurka-favor", causal=True)
    assert next(iter(out.devices())).platform == "gpu"
    ref = flurka_causal("flurka-favor", *[None if a is None else np.asarray(a.astype(jnp.float32)) for a in arrs])
    stored = torch.from_numpy(ref).to(torch.bfloat16).double().numpy()
    got = np.asarray(out.astype(jnp.float32))
    assert rel(got, ref) <= 6 * rel(stored, ref) + 2e-3
