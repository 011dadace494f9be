"""transformers models with sliding-window layers (Mistral, Qwen2/Qwen3 with use_sliding_window, Gemma2/Gemma3 with
alternating sliding and full layers) through attn_implementation="splat": the layer's window as a splat pattern
(checked at every coordinate against transformers' own mask function), prefill logits, greedy batched left-padded
generate() with the sliding DynamicCache and StaticCache layers (which drop the tokens that left the window), a
training step, and the masks that still raise."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import splat  # noqa: E402
import splat.hf  # noqa: E402
from test_hf import reference_mask  # noqa: E402
from transformers import (AttentionInterface, AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig,  # noqa: E402
                          DynamicCache, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, StaticCache)
from transformers.masking_utils import (ALL_MASK_ATTENTION_FUNCTIONS, and_masks, causal_mask_function,  # noqa: E402
                                        chunked_causal_mask_function, or_masks, padding_mask_function, sdpa_mask,
                                        sliding_window_bidirectional_mask_function,
                                        sliding_window_causal_mask_function, sliding_window_overlay)
from transformers.models.llama.modeling_llama import eager_attention_forward  # noqa: E402

W = 6  # every prompt below is longer: the sliding caches drop tokens
COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256)
MODELS = {
    "mistral": (MistralConfig, dict(num_hidden_layers=2, sliding_window=W)),
    "qwen2": (Qwen2Config, dict(num_hidden_layers=3, use_sliding_window=True, sliding_window=W, max_window_layers=1)),
    "qwen3": (Qwen3Config, dict(num_hidden_layers=2, head_dim=16, use_sliding_window=True, sliding_window=W,
                                max_window_layers=1)),
    "gemma2": (Gemma2Config, dict(num_hidden_layers=2, head_dim=16, sliding_window=W, attn_logit_softcapping=None)),
    "gemma3": (Gemma3TextConfig, dict(num_hidden_layers=3, head_dim=16, sliding_window=W,
                                      layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
}


def tiny(name, impl, pattern="causal", **overrides):
    cls, kw = MODELS[name]
    config = cls(**{**COMMON, **kw, **overrides})
    config.splat_pattern = pattern
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl)  # random weights, no download
    assert model.config._attn_implementation == impl
    return model.eval()


def left_padded(lengths=(20, 13, 8), seed=1):
    n = max(lengths)
    ids = torch.randint(1, 97, (len(lengths), n), generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for r, m in enumerate(lengths):
        mask[r, n - m:] = 1
    return ids.masked_fill(mask == 0, 0), mask


def generate(model, ids, mask, **kw):
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, **kw)


@pytest.fixture
def no_masked_decode(monkeypatch):
    """Decode steps must go through splat.torch.decode: the SDPA fallbacks (which build masks) raise."""
    def refuse(*args, **kwargs):
        raise AssertionError("a decode step took the masked SDPA path")
    monkeypatch.setattr(splat.hf, "_decode", refuse)
    monkeypatch.setattr(splat.hf, "_decode_rows", refuse)


@pytest.mark.parametrize("w", [1, 2, 3, 6, 11])
def test_window_pattern_is_transformers_sliding_window_at_every_coordinate(w):
    n = 24
    fn = sliding_window_causal_mask_function(w)
    assert splat.hf._sliding_window_of(fn) == w
    assert splat.hf._sliding_window_of(and_masks(causal_mask_function, sliding_window_overlay(w))) == w
    ours = torch.from_numpy(splat.dense_mask(f"causal&{splat.hf._window_pattern(w)}", n).astype(bool))
    theirs = sdpa_mask(batch_size=1, q_length=n, kv_length=n, mask_function=fn, allow_is_causal_skip=False)[0, 0]
    assert torch.equal(ours, theirs)
    for q_offset, kv_offset in [(n - 1, 0), (n - 3, n - 3 - w + 1), (n - 1, n - w)]:  # decode-step geometries
        q, kv = n - q_offset, n - max(kv_offset, 0)
        theirs = sdpa_mask(batch_size=1, q_length=q, kv_length=kv, q_offset=q_offset, kv_offset=kv_offset,
                           mask_function=fn, allow_is_causal_skip=False)[0, 0]
        assert torch.equal(ours[q_offset:, kv_offset:], theirs)


def test_other_mask_functions_are_not_taken_for_a_sliding_window():
    pad = padding_mask_function(torch.ones(1, 8, dtype=torch.bool))
    for fn in [causal_mask_function, and_masks(sliding_window_causal_mask_function(4), pad),
               or_masks(sliding_window_causal_mask_function(4), causal_mask_function),
               and_masks(sliding_window_overlay(4), sliding_window_overlay(4)),
               chunked_causal_mask_function(4, torch.zeros(1, dtype=torch.long)),
               sliding_window_bidirectional_mask_function(4)]:
        assert splat.hf._sliding_window_of(fn) is None


@pytest.mark.parametrize("name", list(MODELS))
def test_prefill_logits_match_eager(name):
    ids, mask = left_padded()
    ours, eager = tiny(name, "splat"), tiny(name, "eager")
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = eager(ids, attention_mask=mask).logits
        eager.double()  # float64 reference: each row alone, unpadded (padded float64 eager rows turn NaN)
        ref = [eager(ids[r:r + 1, mask[r] == 1]).logits[0] for r in range(ids.shape[0])]
    real = mask.bool()  # padded queries are free in both
    err = max((a[r, real[r]] - ref[r]).abs().max().item() for r in range(len(ref)))
    naive = max((b[r, real[r]] - ref[r]).abs().max().item() for r in range(len(ref)))
    assert err <= 8 * naive + 1e-6, (err, naive)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", ["mistral", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_left_padded_batched_generate_equals_eager(name, cache, no_masked_decode):
    ids, mask = left_padded()
    kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
    a, b = generate(tiny(name, "splat"), ids, mask, **kw), generate(tiny(name, "eager"), ids, mask, **kw)
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)
    kept = [layer.keys.shape[-2] for layer in a.past_key_values.layers if layer.is_sliding]
    assert kept and max(kept) < a.sequences.shape[1]  # the sliding layers dropped tokens


@pytest.mark.skipif(not torch.cuda.is_available() or not splat.cuda_available()[0], reason="needs a CUDA device")
@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", ["mistral", "qwen2", "gemma3"])
def test_cuda_left_padded_generate_equals_eager(name, cache, no_masked_decode):
    """The same on the GPU: float16 (the CUDA forward has no float32), head dim 64; prefill through the CUDA forward,
    every decode step through the CUDA decode kernel on the sliding caches, against eager attention in float16."""
    over = dict(hidden_size=256, head_dim=64)
    ids, mask = (x.cuda() for x in left_padded())
    kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
    ours = tiny(name, "splat", **over).to("cuda", torch.float16)
    eager = tiny(name, "eager", **over).to("cuda", torch.float16)
    a, b = generate(ours, ids, mask, **kw), generate(eager, ids, mask, **kw)
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la.float(), lb.float(), atol=2e-2, rtol=2e-2)
    kept = [layer.keys.shape[-2] for layer in a.past_key_values.layers if layer.is_sliding]
    assert kept and max(kept) < a.sequences.shape[1]


def eager_with_window_mask(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention, no cache: pattern & causal & the layer's window, positions from each row's first token."""
    pattern = splat.hf._pattern_of(module)
    if kwargs.get("sliding_window") is not None:
        pattern = f"({pattern})&{splat.hf._window_pattern(kwargs['sliding_window'])}"
    allowed = reference_mask(pattern, attention_mask, query.shape[-2], key.shape[-2], query.device)
    additive = torch.zeros(allowed.shape, dtype=query.dtype).masked_fill(~allowed, float("-inf"))
    return eager_attention_forward(module, query, key, value, additive, scaling=scaling, dropout=dropout)


def plain_padding(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
                  **kwargs):
    return attention_mask  # no cache here: [B, N], the keys' padding


AttentionInterface.register("splat_test_window_eager", eager_with_window_mask)
ALL_MASK_ATTENTION_FUNCTIONS.register("splat_test_window_eager", plain_padding)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_position_dependent_pattern_on_a_sliding_cache(cache, monkeypatch):
    """A sink pattern's rows depend on absolute positions: after the sliding cache dropped the first tokens, the decode
    steps take the row-program path at the true positions and equal the uncached reference."""
    pattern = "causal_window:w=3+sink:g=2+strided:s=4"
    ids, mask = left_padded((9, 7, 5))
    seen = []
    real = splat.hf._decode_rows
    monkeypatch.setattr(splat.hf, "_decode_rows", lambda *a: seen.append(1) or real(*a))
    kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
    a = generate(tiny("mistral", "splat", pattern), ids, mask, **kw)
    b = generate(tiny("mistral", "splat_test_window_eager", pattern), ids, mask, use_cache=False)
    assert seen  # the row-program path ran
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["mistral", "gemma3"])
def test_training_step_gradients_match_eager_and_loss_goes_down(name):
    ids = torch.randint(1, 97, (2, 24), generator=torch.Generator().manual_seed(3))
    grads = []
    for impl in ("splat", "eager"):
        model = tiny(name, impl).train()
        model(ids, labels=ids).loss.backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4, msg=k)
    model = tiny(name, "splat").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_static_cache_steps_without_attention_mask(name):
    """model(ids, past_key_values=StaticCache) without an attention_mask: the unwritten cache rows stay unread."""
    ids = torch.randint(1, 97, (1, 14), generator=torch.Generator().manual_seed(4))
    outs = []
    for impl in ("splat", "eager"):
        if name == "llama":
            config = LlamaConfig(**COMMON, num_hidden_layers=2)
            config.splat_pattern = "causal"
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval()
        else:
            model = tiny(name, impl)
        cache = StaticCache(config=model.config, max_cache_len=32)
        with torch.no_grad():
            outs.append(torch.cat([model(ids[:, a:b], past_key_values=cache, use_cache=True).logits
                                   for a, b in [(0, 4), (4, 5), (5, 9), (9, 10), (10, 14)]], dim=1))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def test_what_still_raises():
    ids = torch.randint(1, 97, (1, 16), generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="softcap"):  # Gemma2's default attention logit soft-capping
        tiny("gemma2", "splat", attn_logit_softcapping=50.0)(ids)
    with pytest.raises(ValueError, match="bidirectional sliding"):
        tiny("gemma3", "splat", use_bidirectional_attention=True)(ids)
    packed = torch.cat([torch.arange(8), torch.arange(8)])[None]  # two sequences in one row
    with pytest.raises(ValueError, match="sliding-window layer takes the 2-D padding mask only"):
        tiny("mistral", "splat")(ids, position_ids=packed, use_cache=False)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_chunks_longer_than_the_decode_limit_on_a_sliding_cache(cache):
    """Chunks of more than 64 queries against a sliding cache that dropped tokens (chunked prefill, a second turn)
    take SDPA on the pattern rows, counted from the cache's row 0."""
    ids = torch.randint(1, 97, (2, 150), generator=torch.Generator().manual_seed(6))
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[1, :9] = 0
    outs = []
    for impl in ("splat", "eager"):
        model = tiny("mistral", impl)
        c = DynamicCache(config=model.config) if cache == "dynamic" else StaticCache(config=model.config,
                                                                                      max_cache_len=160)
        with torch.no_grad():
            outs.append(torch.cat([model(ids[:, a:b], attention_mask=mask[:, :b], past_key_values=c,
                                         use_cache=True).logits
                                   for a, b in [(0, 70), (70, 71), (71, 140), (140, 150)]], dim=1))
    real = mask.bool()
    torch.testing.assert_close(outs[0][real], outs[1][real], atol=1e-4, rtol=1e-4)


def test_sliding_caches_that_cannot_be_served_raise(tmp_path):
    np = pytest.importorskip("numpy")
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 4, 16)  # 3 cached keys + 1 query, 6 tokens dropped before
    path = tmp_path / "causal.npy"
    np.save(path, np.tril(np.ones((16, 16), dtype=bool)))
    with pytest.raises(ValueError, match="explicit mask"):  # a mask has rows for its own N only
        splat.hf._decode_rows(q, k, k, f"mask:{path}&causal_window:w=2", None, None, 10, 6)
    starts, lengths = torch.tensor([-6], dtype=torch.int32), torch.tensor([10], dtype=torch.int32)
    with pytest.raises(ValueError, match="the window of 6 needs 5"):  # fewer cached keys than the window
        splat.hf._past_dropped(starts, lengths, "causal&causal_window:w=5", 1, 4, 6)
