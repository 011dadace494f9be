"""PyTorch path: torch.library ops (opcheck, torch.compile, CUDA graphs), the SDPA drop-in, layers.
CPU always (where torch is installed); CUDA where torch sees a GPU and splat was built with CUDA."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import splat  # noqa: E402
import splat.torch as st  # noqa: E402
from conftest import PATTERNS, check_close, mask_of, run_or_skip  # noqa: E402
from flurka_ref import flurka as flurka_ref  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
TDT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def head_dim(device):
    return 32 if device == "cpu" else 64


def rand(gen, shape, device, dtype):
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def host(*ts):
    return [t.detach().float().cpu().numpy() for t in ts]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_patterns(gen, device, pattern, dtype, layout):
    n, d = (64, head_dim(device)) if device == "cpu" else (256, 64)
    shape = (2, 2, n, d) if layout == "bhnd" else (2, n, 2, d)
    q, k, v = (rand(gen, shape, device, TDT[dtype]) for _ in range(3))
    out = torch.full_like(q, float("nan"))
    with torch.no_grad():
        run_or_skip(lambda: st.attention(q, k, v, pattern=pattern, layout=layout, out=out))
    if device == "cuda":
        torch.cuda.synchronize()
    check_close(out.float().cpu().numpy(), *host(q, k, v), mask_of(pattern, n), dtype, layout=layout)


@pytest.mark.parametrize("device", DEVICES)
def test_gqa_strided_views_and_plan(gen, device):
    b, n, h, hk, d = 2, 128, 4, 2, head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    qkv = rand(gen, (b, n, (h + 2 * hk) * d), device, dt)
    q, k, v = qkv.split([h * d, hk * d, hk * d], dim=-1)
    q, k, v = q.view(b, n, h, d), k.view(b, n, hk, d), v.view(b, n, hk, d)
    plan = run_or_skip(lambda: splat.plan("dilated:w=8,d=4", seq_len=n, head_dim=d, dtype=dt, device=device))
    out = st.attention(q, k, v, plan, layout="bnhd")
    check_close(out.float().cpu().numpy(), *host(q, k, v), mask_of("dilated:w=8,d=4", n),
                "f32" if device == "cpu" else "bf16", layout="bnhd")


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(gen, device):
    d = head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v = (rand(gen, (1, 2, 64, d), device, dt) for _ in range(3))
    run_or_skip(lambda: st.attention(q, k, v, pattern="window:w=8"))
    torch.library.opcheck(torch.ops.splat.attention.default, (q, k, v, "window:w=8", 0.0, "bhnd"))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(gen, device):
    d = head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v = (rand(gen, (2, 2, 96, d), device, dt) for _ in range(3))

    def f(q, k, v):
        return st.attention(q * 2, k, v, pattern="strided:s=8").relu() + 1

    eager = run_or_skip(lambda: f(q, k, v))
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)(q, k, v)  # fullgraph: a graph break is an error
    torch.testing.assert_close(compiled, eager, atol=1e-2, rtol=1e-2)


def test_inference_op_has_a_backward(gen):
    # torch.ops.splat.attention saves no lse: its backward recomputes it; the gradients equal attention_fwd's.
    q, k, v = (rand(gen, (1, 2, 32, 16), "cpu", torch.float32).requires_grad_() for _ in range(3))
    dout = rand(gen, (1, 2, 32, 16), "cpu", torch.float32)
    a = torch.autograd.grad(torch.ops.splat.attention(q, k, v, "window:w=2", 0.0, "bhnd"), (q, k, v), dout)
    b = torch.autograd.grad(st.attention(q, k, v, pattern="window:w=2"), (q, k, v), dout)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("is_causal, pattern", [(True, None), (False, "window:w=5"), (True, "window:w=5+sink:g=2")])
def test_sdpa_drop_in(gen, device, is_causal, pattern):
    d = head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.float16
    q, k, v = (rand(gen, (2, 4, 80, d), device, dt) for _ in range(3))
    ours = run_or_skip(lambda: st.scaled_dot_product_attention(q, k, v, is_causal=is_causal, pattern=pattern))
    spec = "causal" if pattern is None else pattern
    mask = torch.from_numpy(mask_of(spec, 80).astype(bool)).to(device)
    if is_causal:
        mask &= torch.ones(80, 80, dtype=torch.bool, device=device).tril()
    theirs = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    torch.testing.assert_close(ours.float(), theirs, atol=2e-3 if dt == torch.float16 else 2e-5, rtol=0)


def test_sdpa_rejects_masks_and_dropout(gen):
    q = rand(gen, (1, 2, 16, 8), "cpu", torch.float32)
    with pytest.raises(ValueError):  # boolean [L, L] masks work (test_torch_inputs.py); per-head ones do not
        st.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(1, 2, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError):
        st.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError):
        st.attention(q, q, q, pattern="window:w=")
    with pytest.raises(ValueError):
        st.attention(q.double(), q, q, pattern="window:w=2")  # float64 alone works on the CPU; mixed dtypes do not


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_attention_module(gen, device):
    torch.manual_seed(0)
    d = head_dim(device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    m = st.SparseAttention(4 * d, 4, "causal_window:w=6", num_kv_heads=2).to(device=device, dtype=dt)
    x = rand(gen, (2, 50, 4 * d), device, dt)
    with torch.no_grad():
        y = run_or_skip(lambda: m(x))
        # The same layer by hand with SDPA and the dense mask.
        q, k, v = m.qkv(x).split([4 * d, 2 * d, 2 * d], dim=-1)
        q = q.view(2, 50, 4, d).transpose(1, 2)
        k = k.view(2, 50, 2, d).transpose(1, 2).repeat_interleave(2, dim=1)
        v = v.view(2, 50, 2, d).transpose(1, 2).repeat_interleave(2, dim=1)
        mask = torch.from_numpy(mask_of("causal_window:w=6", 50).astype(bool)).to(device)
        o = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        ref = m.proj(o.transpose(1, 2).reshape(2, 50, 4 * d).to(dt))
    torch.testing.assert_close(y.float(), ref.float(), atol=3e-2 if dt != torch.float32 else 1e-4, rtol=1e-2)


def test_flurka_op_and_module(gen):
    q, k, v = (rand(gen, (2, 2, 40, 16), "cpu", torch.float32) for _ in range(3))
    E, F = torch.randn(8, 40) / 7, torch.randn(8, 40) / 7
    W = torch.randn(16, 32)
    out = st.flurka(q, k, v, E, F, W, method="flurka-favor")
    ref = flurka_ref("flurka-favor", *host(q, k, v), E.numpy(), F.numpy(), W.numpy())
    np.testing.assert_allclose(out.numpy(), ref, rtol=2e-4, atol=2e-4)
    torch.library.opcheck(torch.ops.splat.flurka.default, (q, k, v, E, F, W, "flurka-favor", False, "bhnd"))

    layer = st.FLuRKAAttention(64, 4, seq_len=40, rank=8, num_features=32)
    x = torch.randn(2, 40, 64)
    with torch.no_grad():
        y1 = layer(x)
        layer.redraw_features(torch.Generator().manual_seed(1))
        y2 = layer(x)
    assert y1.shape == x.shape and not torch.isnan(y1).any()
    assert not torch.equal(y1, y2)  # new random features, new estimate
    compiled = torch.compile(layer, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), y2, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and splat built with CUDA")
def test_cuda_graph_capture(gen):
    q, k, v = (rand(gen, (2, 4, 256, 64), "cuda", torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        st.attention(q, k, v, pattern="dilated:w=16,d=4")  # builds the plan (NVRTC) before capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = st.attention(q, k, v, pattern="dilated:w=16,d=4")
        for _ in range(2):
            q.copy_(torch.randn_like(q))
            graph.replay()
            torch.cuda.synchronize()
            check_close(out.float().cpu().numpy(), *host(q, k, v), mask_of("dilated:w=16,d=4", 256), "bf16")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and splat built with CUDA")
def test_cuda_side_stream(gen):
    q, k, v = (rand(gen, (1, 2, 128, 64), "cuda", torch.float16) for _ in range(3))
    s = torch.cuda.Stream()
    with torch.no_grad(), torch.cuda.stream(s):
        out = st.attention(q, k, v, pattern="window:w=9")
    s.synchronize()
    check_close(out.float().cpu().numpy(), *host(q, k, v), mask_of("window:w=9", 128), "f16")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and splat built with CUDA")
def test_multi_pass_plan_on_two_streams_and_in_a_graph(gen):
    # strided runs in two passes merged through a workspace: each call takes its own from torch's allocator,
    # so one plan on two streams at once, and inside a CUDA graph (first call included), stays exact.
    pattern, n = "strided:s=16", 256
    ins = [[rand(gen, (2, 3, n, 64), "cuda", torch.bfloat16) for _ in range(3)] for _ in range(2)]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    torch.cuda.synchronize()
    outs = [None, None]
    with torch.no_grad():
        for _ in range(10):
            for i, s in enumerate(streams):
                with torch.cuda.stream(s):
                    outs[i] = st.attention(*ins[i], pattern=pattern)
    torch.cuda.synchronize()
    for i in range(2):
        check_close(outs[i].float().cpu().numpy(), *host(*ins[i]), mask_of(pattern, n), "bf16")
    p = splat.plan(pattern, n, 64, "bf16", "cuda")
    small = torch.empty(4, dtype=torch.uint8, device="cuda")
    q, k, v = ins[0]
    with pytest.raises(Exception, match="too small"):  # a raw workspace must declare enough bytes
        splat._core.attention(p, st._dl(q), st._dl(k), st._dl(v), st._dl(torch.empty_like(q)), 0.0, "bhnd", "",
                              st._stream(q), 0, small.data_ptr(), small.numel())
    q, k, v = (rand(gen, (1, 5, n, 64), "cuda", torch.bfloat16) for _ in range(3))  # a new B*H: no warm-up
    with torch.no_grad():
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = st.attention(q, k, v, pattern=pattern)
        graph.replay()
    torch.cuda.synchronize()
    check_close(out.float().cpu().numpy(), *host(q, k, v), mask_of(pattern, n), "bf16")


EXTRA_DIMS = [32, 96, 256]


@pytest.mark.skipif(not CUDA, reason="needs a GPU and splat's CUDA build")
@pytest.mark.parametrize("d", EXTRA_DIMS)
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("pattern", ["window:w=17", "causal", "dilated:w=8,d=3", "strided:s=11",
                                     "bigbird:b=32,w=1,g=1,r=2,seed=3"])
def test_cuda_extra_head_dims(gen, d, dtype, pattern):
    """Head dims 32, 96 and 256 on CUDA (the forward), both layouts."""
    n = 203
    for layout, shape in (("bhnd", (2, 2, n, d)), ("bnhd", (2, n, 2, d))):
        q, k, v = (rand(gen, shape, "cuda", TDT[dtype]) for _ in range(3))
        out = torch.full_like(q, float("nan"))
        with torch.no_grad():
            st.attention(q, k, v, pattern=pattern, layout=layout, out=out)
        torch.cuda.synchronize()
        check_close(out.float().cpu().numpy(), *host(q, k, v), mask_of(pattern, n), dtype, layout=layout)


@pytest.mark.skipif(not CUDA, reason="needs a GPU and splat's CUDA build")
@pytest.mark.parametrize("d", EXTRA_DIMS)
def test_cuda_extra_head_dims_refuse_the_backward(gen, d):
    """The backward takes D=64 and 128 only: one clear error, not a gradient; other head dims: one clear error."""
    bad = rand(gen, (1, 2, 64, d + 16), "cuda", torch.bfloat16)
    with pytest.raises(NotImplementedError, match="32, 64, 96, 128 or 256"):
        st.attention(bad, bad, bad, pattern="window:w=9")
    q, k, v = (rand(gen, (1, 2, 64, d), "cuda", torch.bfloat16).requires_grad_() for _ in range(3))
    out = st.attention(q, k, v, pattern="window:w=9")
    with pytest.raises(NotImplementedError, match="the backward takes 64 or 128"):
        out.float().sum().backward()


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cupy_interop(rng):
    cupy = pytest.importorskip("cupy")
    q, k, v = (cupy.asarray(rng.standard_normal((1, 2, 128, 64)).astype(np.float16)) for _ in range(3))
    out = run_or_skip(lambda: splat.attention(q, k, v, pattern="strided:s=16"))
    cupy.cuda.get_current_stream().synchronize()
    check_close(cupy.asnumpy(out), *(cupy.asnumpy(x) for x in (q, k, v)), mask_of("strided:s=16", 128), "f16")


def test_cuda_tensor_without_cuda_build_is_clean():
    if not torch.cuda.is_available() or splat.built_with_cuda:
        pytest.skip("needs a CUDA device and a CPU-only splat build")
    q = torch.randn(1, 1, 16, 64, device="cuda")
    with pytest.raises((NotImplementedError, RuntimeError)):
        st.attention(q, q, q, pattern="window:w=2")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and splat built with CUDA")
@pytest.mark.parametrize("method", ["flurka-favor", "flurka-elu", "linformer", "performer-relu"])
def test_flurka_cuda(gen, method):
    n, d = 256, 64
    q, k, v = (rand(gen, (2, 2, n, d), "cuda", torch.bfloat16) for _ in range(3))
    E, F = (rand(gen, (32, n), "cuda", torch.bfloat16) / 16 for _ in range(2))
    W = rand(gen, (d, 64), "cuda", torch.bfloat16)
    with torch.no_grad():
        out = run_or_skip(lambda: st.flurka(q, k, v, E, F, W, method=method))
    torch.cuda.synchronize()
    ref = flurka_ref(method, *host(q, k, v), *host(E, F, W))
    err = np.abs(out.float().cpu().numpy() - ref).max()
    assert err <= 3e-2 * max(1.0, np.abs(ref).max()), err
