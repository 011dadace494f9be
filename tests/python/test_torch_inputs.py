"""PyTorch and JAX inputs that used to give plausible wrong answers: in-memory masks (SDPA attn_mask, mask tensors as
patterns), causality of the drop-ins and layers, stale mask files, dtypes, aliasing and empty inputs. CPU only."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import splat  # noqa: E402
import splat.torch as st  # noqa: E402
from conftest import PATTERNS, check_close, mask_of  # noqa: E402
from splat._dispatch import causal_pattern  # noqa: E402


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def rand(gen, *shape, dtype=torch.float32):
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)


def host(*ts):
    return [t.detach().double().numpy() for t in ts]


# ---- item 2: pattern & causal is exact for every spec (unions, intersections, parentheses) ----

@pytest.mark.parametrize("pattern", PATTERNS + ["(window:w=3+sink:g=2)&strided:s=4", "sink:g=3&(causal+global:g=2)",
                                                "global:g=2+window:w=2&dilated:w=3,d=2", "((dense))"])
def test_causal_pattern_is_the_intersection(pattern):
    n = 37
    expected = mask_of(pattern, n).astype(bool) & np.tri(n, dtype=bool)
    np.testing.assert_array_equal(mask_of(causal_pattern(pattern), n).astype(bool), expected)


def test_sdpa_is_causal_with_a_sink_never_sees_the_future(gen):
    q, k, v = (rand(gen, 1, 2, 24, 16) for _ in range(3))
    a = st.scaled_dot_product_attention(q, k, v, is_causal=True, pattern="causal_window:w=4+sink:g=4")
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 1:], v2[:, :, 1:] = rand(gen, 1, 2, 23, 16), rand(gen, 1, 2, 23, 16)  # only the future of row 0
    b = st.scaled_dot_product_attention(q, k2, v2, is_causal=True, pattern="causal_window:w=4+sink:g=4")
    torch.testing.assert_close(a[:, :, 0], b[:, :, 0], atol=1e-6, rtol=0)


def test_sparse_attention_causal_layer(gen):
    torch.manual_seed(0)
    m = st.SparseAttention(64, 4, "window:w=3+sink:g=4", causal=True)
    assert m.causal and "causal" in m.pattern
    x = rand(gen, 2, 30, 64)
    y = x.clone()
    y[:, 10:] = rand(gen, 2, 20, 64)  # rows < 10 must not change
    with torch.no_grad():
        torch.testing.assert_close(m(x)[:, :10], m(y)[:, :10], atol=1e-6, rtol=0)


# ---- item 4: boolean (or 0/-inf) attn_mask in the SDPA drop-in and mask tensors as patterns ----

@pytest.mark.parametrize("form", ["bool", "bool4d", "additive"])
def test_sdpa_attn_mask(gen, form):
    n = 48
    q, k, v = (rand(gen, 2, 2, n, 16) for _ in range(3))
    allowed = torch.rand(n, n, generator=gen) < 0.3
    allowed |= torch.eye(n, dtype=torch.bool)
    mask = {"bool": allowed, "bool4d": allowed[None, None],
            "additive": torch.zeros(n, n).masked_fill(~allowed, float("-inf"))}[form]
    ours = st.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    theirs = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)
    both = st.scaled_dot_product_attention(q, k, v, attn_mask=mask, pattern="window:w=6")
    check_close(both, *host(q, k, v), allowed.numpy() & mask_of("window:w=6", n).astype(bool), "f32")


def test_sdpa_attn_mask_errors(gen):
    n = 16
    q = rand(gen, 2, 2, n, 8)
    with pytest.raises(ValueError, match="per-head|per-batch"):
        st.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(2, 1, n, n, dtype=torch.bool))
    with pytest.raises(ValueError, match="-inf"):
        st.scaled_dot_product_attention(q, q, q, attn_mask=torch.randn(n, n))  # a bias, not a mask
    with pytest.raises(ValueError, match="not both"):
        st.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(n, n, dtype=torch.bool), is_causal=True)


def test_mask_tensor_as_pattern_with_autograd(gen):
    n = 32
    allowed = torch.rand(n, n, generator=gen) < 0.4
    allowed |= torch.eye(n, dtype=torch.bool)
    q, k, v = (rand(gen, 1, 2, n, 8, dtype=torch.float64) for _ in range(3))
    out = st.attention(q, k, v, pattern=allowed)
    check_close(out, *host(q, k, v), allowed.numpy(), "f32")
    q.requires_grad_()
    st.attention(q, k, v, pattern=allowed).sum().backward()  # through the op: the mask travels by name
    assert q.grad is not None and torch.isfinite(q.grad).all()


# ---- item 3 through torch: a rewritten mask file is re-read ----

def test_rewritten_mask_file_through_torch(gen, tmp_path, rng):
    n = 24
    q, k, v = (rand(gen, 1, 1, n, 8) for _ in range(3))
    path = tmp_path / "m.npy"
    for _ in range(2):
        m = rng.random((n, n)) < 0.3
        m[np.arange(n), np.arange(n)] = True
        np.save(path, m)
        with torch.no_grad():
            check_close(st.attention(q, k, v, pattern=f"mask:{path}"), *host(q, k, v), m, "f32")
            check_close(st.scaled_dot_product_attention(q, k, v, pattern=f"mask:{path}"), *host(q, k, v), m, "f32")


# ---- items 5, 6 and the rough edges through torch ----

def test_torch_dtypes_aliasing_and_plans(gen):
    q, k, v = (rand(gen, 1, 2, 16, 8) for _ in range(3))
    with pytest.raises(ValueError, match="dtype"):
        st.attention(q.bfloat16(), k.half(), v.bfloat16(), pattern="window:w=2")
    with pytest.raises(ValueError, match="shares memory"):
        st.attention(q, k, v, pattern="strided:s=4", out=k)
    with pytest.raises(ValueError, match="shares memory"):  # the forward with key lengths / lse too
        st.attention(q, k, v, pattern="strided:s=4", out=v, key_lengths=torch.full((1,), 9, dtype=torch.int32))
    with pytest.raises(TypeError, match="splat.Plan"):
        st.attention(q, k, v, q)
    q64, k64, v64 = q.double(), k.double(), v.double()
    out = st.attention(q64, k64, v64, pattern="strided:s=4")
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), splat.reference(*host(q64, k64, v64), "strided:s=4"), atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 2, 16, 8), (1, 2, 0, 8)])
def test_torch_empty_inputs(shape):
    q = torch.ones(shape)
    assert st.attention(q, q, q, pattern="window:w=2").shape == shape
    assert st.scaled_dot_product_attention(q, q, q, is_causal=True).shape == shape
    assert torch.nn.functional.scaled_dot_product_attention(q, q, q).shape == shape  # what SDPA does


# ---- JAX: causality and masks of the dot_product_attention drop-in ----

def test_jax_drop_in_is_causal_and_masks(rng):
    jax = pytest.importorskip("jax")
    import splat.jax as sj
    n = 24
    q, k, v = (rng.standard_normal((1, n, 2, 16)).astype(np.float32) for _ in range(3))
    out = np.asarray(sj.dot_product_attention(q, k, v, is_causal=True, pattern="window:w=3+sink:g=4"))
    causal = mask_of("window:w=3+sink:g=4", n).astype(bool) & np.tri(n, dtype=bool)
    check_close(out, q, k, v, causal, "f32", layout="bnhd")
    allowed = rng.random((n, n)) < 0.3
    allowed[np.arange(n), np.arange(n)] = True
    out = np.asarray(sj.dot_product_attention(q, k, v, mask=jax.numpy.asarray(allowed), is_causal=True))
    check_close(out, q, k, v, allowed & np.tri(n, dtype=bool), "f32", layout="bnhd")
    assert np.asarray(sj.attention(np.ones((1, 2, 0, 8), np.float32), np.ones((1, 2, 0, 8), np.float32),
                                   np.ones((1, 2, 0, 8), np.float32), pattern="dense")).shape == (1, 2, 0, 8)


def test_causal_pattern_keeps_a_quoted_mask_path_whole(tmp_path, rng):
    n = 20
    m = rng.random((n, n)) < 0.5
    path = tmp_path / "a+b&c.npy"  # '+' and '&' inside a quoted path are not operators
    np.save(path, m)
    spec = f'mask:"{path}"'
    np.testing.assert_array_equal(mask_of(causal_pattern(spec), n).astype(bool), m & np.tri(n, dtype=bool))
