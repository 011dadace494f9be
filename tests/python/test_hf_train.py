"""Training a transformers model through attn_implementation="splat": the parameter gradients of a tiny random
Llama equal those of transformers' eager attention given the pattern's mask, and optimizer steps lower the loss."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import splat  # noqa: E402
from test_hf import tiny_llama  # noqa: E402  (also registers the eager-with-pattern-mask reference)

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if CUDA else []))
@pytest.mark.parametrize("pattern", ["causal_window:w=8", "causal_window:w=6+sink:g=2"])
def test_tiny_llama_gradients_match_eager(device, pattern):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    ours = tiny_llama("splat", pattern, dtype, device).train()
    ref = tiny_llama("splat_test_eager_mask", pattern, dtype, device).train()
    ids = torch.randint(0, 97, (2, 48), generator=torch.Generator().manual_seed(3)).to(device)
    la, ga = loss_and_grads(ours, ids)
    lb, gb = loss_and_grads(ref, ids)
    assert abs(la - lb) <= (1e-5 if dtype == torch.float32 else 2e-2) * max(1.0, abs(lb))
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        a, b = ga[name].float(), gb[name].float()
        scale = float(b.abs().max()) or 1.0
        tol = 1e-4 if dtype == torch.float32 else 6e-2
        assert float((a - b).abs().max()) <= tol * scale, name


def test_tiny_llama_trains():
    model = tiny_llama("splat", "causal_window:w=8", torch.float32, "cpu").train()
    ids = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(4))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
