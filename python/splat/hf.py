"""Hugging Face transformers integration: splat as an attention implementation.

    import splat.hf                      # registers attn_implementation="splat"
    config.splat_pattern = "causal_window:w=256+sink:g=4"   # or a list, one pattern per layer
    model = AutoModelForCausalLM.from_config(config, attn_implementation="splat")

The pattern replaces the model's mask (write causality into it); padding masks are not applied.
Prefill (query length == key length) runs the sparse kernel; cached decoding steps (fewer queries than
keys) use PyTorch SDPA with the pattern's last rows as the mask.
"""

import torch
from transformers import AttentionInterface

from . import _core
from . import torch as splat_torch

__all__ = ["register", "attention_forward"]

_row_masks = {}


def _pattern_of(module):
    config = getattr(module, "config", None)
    pattern = getattr(config, "splat_pattern", None)
    if pattern is None:
        raise ValueError('splat: set config.splat_pattern (e.g. "causal_window:w=256") to use attn_implementation="splat"')
    if isinstance(pattern, (list, tuple)):
        layer = getattr(module, "layer_idx", None)
        if layer is None or layer >= len(pattern):
            raise ValueError(f"splat: config.splat_pattern has {len(pattern)} entries; no pattern for layer {layer}")
        pattern = pattern[layer]
    return pattern


def _last_rows(pattern, nk, nq, device):
    """Rows [nk - nq, nk) of the pattern as a boolean [nq, nk] mask (cached per (pattern, nk, nq))."""
    key = (pattern, nk, nq, str(device))
    m = _row_masks.get(key)
    if m is None:
        if len(_row_masks) > 64:
            _row_masks.clear()
        m = torch.from_numpy(_core.dense_mask(pattern, nk)[nk - nq:]).to(device=device, dtype=torch.bool)
        _row_masks[key] = m
    return m


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: query [B, H, Nq, D], key/value [B, H_kv, Nk, D] -> ([B, Nq, H, D], None)."""
    if dropout and module.training:
        raise ValueError("splat: attention dropout is not supported; set attention_dropout=0")
    pattern = _pattern_of(module)
    nq, nk = query.shape[-2], key.shape[-2]
    if nq != nk:  # decoding against a KV cache
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=_last_rows(pattern, nk, nq, query.device), scale=scaling,
            enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2).contiguous(), None
    if splat_torch._needs_op(query, key, value):
        out = splat_torch.attention(query, key, value, pattern=pattern, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    b, h, n, d = query.shape
    out = torch.empty((b, n, h, d), dtype=query.dtype, device=query.device)  # written in place: no copy after
    splat_torch.attention(query, key, value, pattern=pattern, scale=scaling, out=out.transpose(1, 2))
    return out, None


def register(name="splat"):
    """Registers attention_forward as attn_implementation=name (done on import as "splat")."""
    AttentionInterface.register(name, attention_forward)


register()
