"""transformers generation through splat.torch.decode: greedy, batched, left-padded generate() with a DynamicCache and
a StaticCache gives the tokens and logits of the eager model with the equivalent mask, and the decode steps never
fall back to the masked SDPA path."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import splat.hf  # noqa: E402
from test_hf import padded_batch, tiny_llama  # noqa: E402  (registers the eager reference "splat_test_eager_mask")

# (BigBird's random blocks depend on the length: decode draws them at each row's real length, the masked reference at
# the padded one, so it is left out here; tests/cpp/test_decode.cpp checks it against the full attention.)
PATTERNS = ["causal_window:w=8+sink:g=4", "causal_dilated:w=6,d=3+sink:g=2", "strided:s=5", "fixed:l=8,c=2"]


@pytest.fixture
def no_masked_decode(monkeypatch):
    """Decode steps must go through splat.torch.decode: the SDPA fallback (which builds a mask) raises."""
    def refuse(*args, **kwargs):
        raise AssertionError("a decode step built an N x N mask")
    monkeypatch.setattr(splat.hf, "_decode", refuse)


def generate(model, ids, mask, **kw):
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, **kw)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_left_padded_batched_generate_equals_eager(pattern, no_masked_decode):
    ours = tiny_llama("splat", pattern, torch.float32, "cpu")
    ref = tiny_llama("splat_test_eager_mask", pattern, torch.float32, "cpu")
    ids, mask = padded_batch("left", n=24, lengths=(24, 15, 9))
    a, b = generate(ours, ids, mask), generate(ref, ids, mask)
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)


def test_static_cache_generate_equals_dynamic(no_masked_decode):
    model = tiny_llama("splat", PATTERNS[0], torch.float32, "cpu")
    ids, mask = padded_batch("left", n=20, lengths=(20, 11))
    a = generate(model, ids, mask)
    b = generate(model, ids, mask, cache_implementation="static")
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)


def test_patterns_without_rows_at_every_position_use_the_masked_path(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "band.npy"
    np.save(path, np.tril(np.ones((8, 8), dtype=bool)))
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 8, 16)
    assert splat.hf._decode_splat(q, k, k, f"mask:{path}", None, None, 8) is None  # explicit masks: SDPA
    assert splat.hf._decode_splat(torch.randn(1, 2, 65, 16), k, k, "causal", None, None, 8) is None  # T > 64
    out = splat.hf._decode_splat(q, k, k, "causal", None, None, 8)
    torch.testing.assert_close(out, splat.hf._decode(q, k, k, "causal", None, None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("pattern", PATTERNS[:2])
def test_cuda_generate_equals_the_masked_path(pattern, monkeypatch):
    """On the GPU (float16, head dim 64; the CUDA forward has no float32): generate() with every decode step through
    the CUDA decode kernel gives the tokens and logits of the same model whose decode steps take the masked SDPA
    path (the prefill is the same splat forward in both)."""
    model = tiny_llama("splat", pattern, torch.float16, "cuda")
    ids, mask = padded_batch("left", n=24, lengths=(24, 15, 9))
    ids, mask = ids.cuda(), mask.cuda()
    calls, real = [], splat.hf._decode_splat

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(splat.hf, "_decode_splat", spy)
    a = generate(model, ids, mask)
    assert calls and all(calls)  # no decode step fell back
    monkeypatch.setattr(splat.hf, "_decode_splat", lambda *a: None)  # every step: the masked SDPA path
    b = generate(model, ids, mask)
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la.float(), lb.float(), atol=2e-2, rtol=2e-2)
