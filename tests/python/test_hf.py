"""transformers integration: a tiny random Llama with attn_implementation="splat" against transformers' own
eager attention given the pattern's mask."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import splat  # noqa: E402
import splat.hf  # noqa: E402,F401  (registers "splat")
from transformers import AttentionInterface, AutoModelForCausalLM, LlamaConfig  # noqa: E402
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask  # noqa: E402
from transformers.models.llama.modeling_llama import eager_attention_forward  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]


def reference_mask(pattern, keys, nq, nk, device, causal=True):
    """What a (causal) model with this pattern may attend to: pattern (& causal) in positions counted from each row's
    first real token, & the real keys. keys: [B, nk] bool (None: all real). Returns [B, 1, nq, nk] bool."""
    b = 1 if keys is None else keys.shape[0]
    allowed = torch.zeros(b, 1, nq, nk, dtype=torch.bool)
    full = splat.dense_mask(pattern, nk).astype(bool)
    if causal:
        full &= np.tri(nk, dtype=bool)
    for r in range(b):
        real = np.ones(nk, bool) if keys is None else keys[r].cpu().numpy().astype(bool)
        first = int(real.argmax()) if real.any() else 0
        for t in range(nq):
            i = nk - nq + t
            for j in range(nk):
                if real[i] and real[j] and i >= first and j >= first:
                    allowed[r, 0, t, j] = bool(full[i - first, j - first])
            if not allowed[r, 0, t].any():  # a padded query: any key keeps eager free of NaN (ignored)
                allowed[r, 0, t, i] = True
    return allowed.to(device)


def eager_with_pattern_mask(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    pattern = splat.hf._pattern_of(module)
    allowed = reference_mask(pattern, attention_mask, query.shape[-2], key.shape[-2], query.device, module.is_causal)
    additive = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(~allowed, float("-inf"))
    return eager_attention_forward(module, query, key, value, additive, scaling=scaling, dropout=dropout)


AttentionInterface.register("splat_test_eager_mask", eager_with_pattern_mask)
ALL_MASK_ATTENTION_FUNCTIONS.register("splat_test_eager_mask", flash_attention_mask)  # hands on the 2-D padding mask


def tiny_llama(impl, pattern, dtype, device):
    config = LlamaConfig(vocab_size=97, hidden_size=128 if device == "cpu" else 256, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512)
    config.splat_pattern = pattern
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl)  # random weights, no download
    assert model.config._attn_implementation == impl
    return model.to(device=device, dtype=dtype).eval()


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if CUDA else []))
@pytest.mark.parametrize("pattern", ["causal_window:w=8", ["causal", "causal_dilated:w=6,d=3+sink:g=2"]])
def test_tiny_llama_matches_eager_with_mask(device, pattern):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    ours = tiny_llama("splat", pattern, dtype, device)
    ref = tiny_llama("splat_test_eager_mask", pattern, dtype, device)
    ids = torch.randint(0, 97, (2, 64), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        a = ours(ids).logits.float()
        b = ref(ids).logits.float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_generate_with_kv_cache_matches_eager():
    ours = tiny_llama("splat", "causal_window:w=8", torch.float32, "cpu")
    ref = tiny_llama("splat_test_eager_mask", "causal_window:w=8", torch.float32, "cpu")
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = ours.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        b = ref.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)  # full recompute each step
    assert torch.equal(a, b)


SINK = "causal_window:w=8+sink:g=4"  # sink alone is j < 4 for every row: rows 0..2 would see the future


def test_sink_pattern_never_sees_the_future():
    model = tiny_llama("splat", SINK, torch.float32, "cpu")
    ids = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(3))
    other = ids.clone()
    other[0, 1:] = (ids[0, 1:] + 1) % 97  # only future tokens change
    with torch.no_grad():
        a, b = model(ids).logits, model(other).logits
    torch.testing.assert_close(a[0, 0], b[0, 0], atol=1e-5, rtol=0)


def test_sink_pattern_cached_and_uncached_generation_agree():
    model = tiny_llama("splat", SINK, torch.float32, "cpu")
    ids = torch.randint(0, 97, (2, 2), generator=torch.Generator().manual_seed(4))  # shorter than the sink
    kw = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        a = model.generate(ids, use_cache=True, **kw)
        b = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)


def padded_batch(side, n=40, lengths=(40, 29, 17)):
    ids = torch.randint(3, 97, (len(lengths), n), generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for r, length in enumerate(lengths):
        if side == "left":
            mask[r, n - length:] = 1
        else:
            mask[r, :length] = 1
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pattern", [SINK, "causal_dilated:w=6,d=3+sink:g=2"])
def test_padding_matches_eager_with_pattern_and_padding(side, pattern):
    ours = tiny_llama("splat", pattern, torch.float32, "cpu")
    ref = tiny_llama("splat_test_eager_mask", pattern, torch.float32, "cpu")
    ids, mask = padded_batch(side)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # position ids count from each row's first real token
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, position_ids=pos).logits
        b = ref(ids, attention_mask=mask, position_ids=pos).logits
        unpadded = ours(ids, position_ids=pos).logits
    assert not torch.isnan(a).any()
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-4, rtol=1e-4)
    if side == "left":  # the mask matters for these rows (causal rows never reach right padding)
        assert (a[real] - unpadded[real]).abs().max() > 1e-3


def test_batched_generate_with_left_padding_equals_unbatched():
    model = tiny_llama("splat", SINK, torch.float32, "cpu")
    ids, mask = padded_batch("left", n=20, lengths=(20, 13, 7))
    with torch.no_grad():
        batched = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
        for r in range(ids.shape[0]):
            row = ids[r:r + 1, mask[r].bool()]
            alone = model.generate(row, attention_mask=torch.ones_like(row), max_new_tokens=5, do_sample=False)
            assert torch.equal(batched[r, -5:], alone[0, -5:]), r


def test_masks_that_are_not_padding_raise():
    model = tiny_llama("splat", SINK, torch.float32, "cpu")
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(6))
    holes = torch.ones(2, 16, dtype=torch.long)
    holes[1, 5] = 0
    custom = torch.ones(2, 1, 16, 16, dtype=torch.bool).tril()
    custom[0, 0, 9, 3] = False  # a hole in a 4-D mask: neither padding nor causal
    with torch.no_grad():
        with pytest.raises(ValueError, match="holes"):
            model(ids, attention_mask=holes)
        with pytest.raises(ValueError, match="not a padding mask"):
            model(ids, attention_mask=custom)
        plain = torch.ones(2, 1, 16, 16, dtype=torch.bool).tril()  # a 4-D causal mask is fine
        torch.testing.assert_close(model(ids, attention_mask=plain).logits, model(ids).logits)


def test_missing_pattern_is_a_value_error():
    model = tiny_llama("splat", None, torch.float32, "cpu")
    with pytest.raises(ValueError, match="splat_pattern"):
        with torch.no_grad():
            model(torch.zeros(1, 8, dtype=torch.long))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_of_a_bidirectional_model(side):
    # Non-causal attention reaches the padding at the end of a row: key lengths keep it out.
    models = [tiny_llama(impl, "window:w=5+sink:g=2", torch.float32, "cpu") for impl in ("splat", "splat_test_eager_mask")]
    for model in models:
        model.config.is_causal = False  # transformers builds a bidirectional mask
        for m in model.modules():
            if hasattr(m, "is_causal"):
                m.is_causal = False
    ids, mask = padded_batch(side)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a, b = (m(ids, attention_mask=mask, position_ids=pos).logits for m in models)
    real = mask.bool()
    assert not torch.isnan(a).any()
    torch.testing.assert_close(a[real], b[real], atol=1e-4, rtol=1e-4)
