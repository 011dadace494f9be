"""transformers integration: a tiny random Llama with attn_implementation="splat" against transformers' own
eager attention given the pattern's mask."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import splat  # noqa: E402
import splat.hf  # noqa: E402,F401  (registers "splat")
from transformers import AttentionInterface, AutoModelForCausalLM, LlamaConfig  # noqa: E402
from transformers.models.llama.modeling_llama import eager_attention_forward  # noqa: E402

CUDA = torch.cuda.is_available() and splat.cuda_available()[0]


def eager_with_pattern_mask(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    pattern = splat.hf._pattern_of(module)
    n = query.shape[-2]
    allowed = torch.from_numpy(splat.dense_mask(pattern, n).astype(bool)).to(query.device)
    additive = torch.zeros(n, n, dtype=query.dtype, device=query.device).masked_fill(~allowed, float("-inf"))
    return eager_attention_forward(module, query, key, value, additive[None, None], scaling=scaling, dropout=dropout)


AttentionInterface.register("splat_test_eager_mask", eager_with_pattern_mask)


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


def test_missing_pattern_is_a_value_error():
    model = tiny_llama("splat", None, torch.float32, "cpu")
    with pytest.raises(ValueError, match="splat_pattern"):
        with torch.no_grad():
            model(torch.zeros(1, 8, dtype=torch.long))
