"""The torch formula of causal FLuRKA (splat._flurka_causal_torch, the backward of causal calls on CUDA) against
the float64 NumPy reference (forward) and splat's float64 CPU causal backward (gradients of q, k, v, E, F): N off
the chunk, one partial chunk, shared and per-head E / F / W, both layouts."""

import numpy as np
import pytest

import splat

torch = pytest.importorskip("torch")
if not splat._core.has_flurka:
    pytest.skip("built without FLuRKA", allow_module_level=True)
from flurka_ref import flurka_causal  # noqa: E402

from splat._flurka_causal_torch import causal_flurka, causal_flurka_grads  # noqa: E402


def make(method, b=2, h=3, n=70, d=16, c=16, r=6, m=12, per_head=True, seed=0):
    g = np.random.default_rng(seed)
    q, k, v = (torch.from_numpy(g.standard_normal((b, h, n, d))) for _ in range(3))
    pre = (h,) if per_head else ()
    E, F = (torch.from_numpy(g.standard_normal(pre + (r, c)) / np.sqrt(c)) for _ in range(2))
    W = torch.from_numpy(g.standard_normal(pre + (d, m))) if method != "flurka-elu" else None
    return q, k, v, E, F, W


@pytest.mark.parametrize("method", ["flurka-favor", "flurka-elu", "flurka-relu"])
@pytest.mark.parametrize("n,per_head", [(70, True), (64, False), (9, True)])
def test_formula_matches_reference_and_cpu_backward(method, n, per_head):
    import splat.torch as st
    q, k, v, E, F, W = make(method, n=n, per_head=per_head, seed=n)
    out = causal_flurka(q, k, v, E, F, W, method)
    ref = flurka_causal(method, q, k, v, E, F, None if W is None else W)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)
    dout = torch.randn(q.shape, dtype=torch.float64)
    for layout in ("bhnd", "bnhd"):
        tr = (lambda t: t.transpose(1, 2).contiguous()) if layout == "bnhd" else (lambda t: t)
        xs = [tr(t.detach()).clone().requires_grad_(True) for t in (q, k, v)] + [t.clone().requires_grad_(True) for t in (E, F)]
        st.flurka(*xs, W, method=method, causal=True, layout=layout).backward(tr(dout))
        ours = causal_flurka_grads(tr(dout), *[t.detach() for t in xs], W, method, layout)
        for name, a, x in zip("q k v E F".split(), ours, xs):
            assert a.shape == x.shape and a.dtype == x.dtype
            np.testing.assert_allclose(a.numpy(), x.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"d{name} {layout}")


def test_formula_refuses_other_methods():
    q, k, v, E, F, W = make("flurka-favor")
    with pytest.raises(ValueError, match="flurka-favor"):
        causal_flurka(q, k, v, E, F, W, "linear")
