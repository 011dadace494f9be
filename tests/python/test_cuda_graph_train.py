"""A whole training step (forward, backward, optimizer) of splat layers captured in one CUDA graph and replayed:
the replayed parameters must equal those of the same steps run eagerly. CUDA only (skips elsewhere)."""

import copy

import pytest

torch = pytest.importorskip("torch")

import splat  # noqa: E402
import splat.torch as st  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a CUDA device and splat built with CUDA")


class Tiny(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.inp = torch.nn.Linear(64, 128)
        self.attn = attn
        self.out = torch.nn.Linear(128, 64)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.attn(h))


def sparse(pattern):
    return Tiny(st.SparseAttention(128, 2, pattern, num_kv_heads=1))


def flurka(n):
    return Tiny(st.FLuRKAAttention(128, 2, n, 32, num_features=16, method="flurka-favor"))


def make_step(model, opt, x, target):
    def step():
        opt.zero_grad(set_to_none=False)  # grads keep their buffers: the graph writes into the same memory
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        return loss
    return step


@pytest.mark.parametrize("kind", ["strided:s=16", "(causal_window:w=24+sink:g=2)&causal", "bigbird:b=16,w=1,g=1,r=2",
                                  "flurka"])
def test_training_step_in_a_cuda_graph_equals_eager(kind):
    torch.manual_seed(0)
    n = 200  # not a multiple of any tile
    model = (flurka(n) if kind == "flurka" else sparse(kind)).cuda()
    twin = copy.deepcopy(model)
    x = torch.randn(2, n, 64, device="cuda")
    target = torch.randn(2, n, 64, device="cuda")
    # capturable=True: Adam's step count lives on the device, so a replay advances it
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    opt_twin = torch.optim.Adam(twin.parameters(), lr=1e-3, capturable=True)
    step = make_step(model, opt, x, target)
    eager = make_step(twin, opt_twin, x, target)

    side = torch.cuda.Stream()  # warm-up on a side stream (plans, kernels, optimizer state), as PyTorch asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            step()
            eager()
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.autocast("cuda", dtype=torch.bfloat16):
        captured_loss = step()
    losses = []
    for _ in range(5):
        graph.replay()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            expected = eager()
        losses.append((float(captured_loss), float(expected)))
    torch.cuda.synchronize()
    for got, want in losses:  # both are the loss before the step
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert losses[-1][0] < losses[0][0]  # the replayed steps train
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.isfinite(p).all(), name
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
