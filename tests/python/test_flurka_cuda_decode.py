"""splat.torch.FlurkaDecoder (the CUDA decode step) against the float64 causal formula: step t's output is the last
row of the causal forward over tokens 0..t; a CUDA-graph replay of one captured step equals the eager steps
bitwise. Skipped without a CUDA device."""

import numpy as np
import pytest

import splat

torch = pytest.importorskip("torch")
if not splat._core.has_flurka:
    pytest.skip("built without FLuRKA", allow_module_level=True)
from flurka_ref import causal_inputs, flurka_causal, rel  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]
pytestmark = pytest.mark.skipif(not CUDA, reason="no CUDA device (or a build without CUDA)")


def make(method, b=2, h=3, n=150, d=64, c=32, r=12, m=40, per_head=True, seed=0):
    return causal_inputs(method, b, h, n, d, c, r, m, per_head, seed)


def to_dev(xs, dtype):
    return [None if x is None else torch.from_numpy(x).to("cuda", dtype) for x in xs]


@pytest.mark.parametrize("method", ["flurka-favor", "flurka-elu", "flurka-relu"])
@pytest.mark.parametrize("d,dtype,per_head", [(32, torch.float32, True), (64, torch.bfloat16, False),
                                              (128, torch.float16, True)])
def test_decode_steps_equal_causal_rows(method, d, dtype, per_head):
    import splat.torch as st
    q, k, v, E, F, W = to_dev(make(method, d=d, per_head=per_head, seed=d), dtype)
    # the reference sees exactly the stored values the kernels see
    ref = flurka_causal(method, *[None if t is None else t.float().cpu().numpy() for t in (q, k, v, E, F, W)])
    dec = st.FlurkaDecoder(E, F, W, method, batch=q.shape[0], heads=q.shape[1], head_dim=d)
    out = torch.full_like(q, float("nan"))
    for t in range(q.shape[2]):  # N = 150: four flushes of C = 32 and a partial chunk
        dec.step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], out=out[:, :, t:t + 1])
    got = out.double().cpu().numpy()
    stored = torch.from_numpy(ref).to(dtype).double().numpy()
    assert not np.isnan(got).any()
    assert rel(got, ref) <= 2 * rel(stored, ref) + 1e-4
    dec.reset()  # empty again: the first token attends to itself only, out = v
    o = dec.step(q[:, :, :1], k[:, :, :1], v[:, :, :1])
    torch.testing.assert_close(o.float(), v[:, :, :1].float(), rtol=2e-2, atol=2e-2)


def test_decode_step_in_a_cuda_graph():
    import splat.torch as st
    method = "flurka-favor"
    q, k, v, E, F, W = to_dev(make(method, n=80, d=64, c=16, r=8, m=32, seed=5), torch.bfloat16)
    b, h, n, d = q.shape
    eager = st.FlurkaDecoder(E, F, W, method, batch=b, heads=h, head_dim=d)
    want = torch.stack([eager.step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1]) for t in range(n)], 2)
    dec = st.FlurkaDecoder(E, F, W, method, batch=b, heads=h, head_dim=d)
    sq, sk, sv = (torch.empty_like(x[:, :, :1]) for x in (q, k, v))
    so = torch.empty_like(sq)
    sq.copy_(q[:, :, :1]), sk.copy_(k[:, :, :1]), sv.copy_(v[:, :, :1])
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # one warm-up step outside the graph (token 0), then capture
        dec.step(sq, sk, sv, out=so)
    torch.cuda.current_stream().wait_stream(s)
    first = so.clone()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        dec.step(sq, sk, sv, out=so)
    got = [first]
    for t in range(1, n):  # capture launched nothing: replay t feeds token t
        sq.copy_(q[:, :, t:t + 1]), sk.copy_(k[:, :, t:t + 1]), sv.copy_(v[:, :, t:t + 1])
        g.replay()
        got.append(so.clone())
    torch.cuda.synchronize()
    assert torch.equal(torch.stack(got, 2).view(torch.int16), want.view(torch.int16))


def test_decode_bad_calls():
    import splat.torch as st
    q, k, v, E, F, W = to_dev(make("flurka-favor", n=4, d=48), torch.float32)
    with pytest.raises((ValueError, NotImplementedError), match="head dim"):
        st.FlurkaDecoder(E, F, W, "flurka-favor", batch=2, heads=3, head_dim=48)
    with pytest.raises(ValueError, match="needs the random features"):
        st.FlurkaDecoder(E, F, None, "flurka-favor", batch=2, heads=3, head_dim=48)
    with pytest.raises(ValueError, match="flurka-"):
        st.FlurkaDecoder(E, F, W, "linformer", batch=2, heads=3, head_dim=48)
    q, k, v, E, F, W = to_dev(make("flurka-elu", n=4, d=32), torch.float32)
    dec = st.FlurkaDecoder(E, F, W, "flurka-elu", batch=2, heads=3, head_dim=32)
    with pytest.raises(ValueError, match=r"\[B, H, 1, D\]"):
        dec.step(q[:, :, :2], k[:, :, :2], v[:, :, :2])
    with pytest.raises(ValueError, match="dtype"):
        dec.step(*(x[:, :, :1].half() for x in (q, k, v)))
