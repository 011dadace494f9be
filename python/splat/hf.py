"""Hugging Face transformers integration: splat as an attention implementation.

    import splat.hf                      # registers attn_implementation="splat"
    config.splat_pattern = "causal_window:w=256+sink:g=4&causal"   # or a list, one pattern per layer
    model = AutoModelForCausalLM.from_config(config, attn_implementation="splat")

The pattern replaces the structural part of the model's mask (causal, sliding window). A causal model (the
attention module's is_causal, as transformers' SDPA integration reads it) never sees the future whatever the
pattern says: its pattern is intersected with causal. Padding (attention_mask zeros) is applied: right padding
as per-row key lengths, left padding by moving each row's real tokens to position 0 (where transformers' position
ids start them) and back. Pattern positions therefore count from each row's first real token. Masks that are not
plain padding (holes inside a row, packed sequences, custom 4-D masks) raise ValueError; no mask is ever ignored.
Prefill (query length == key length) runs the sparse kernel. Cached decoding steps (fewer queries than keys, up to 64
of them: DynamicCache, and StaticCache whose padding mask is shorter than the cache) run splat.torch.decode on the
cache as it is (left padding as per-row cache starts, the valid length from the mask): only each query's pattern
rows are read, no mask is built. Where decode does not apply (explicit mask patterns, more than 64 queries, a
bidirectional model, right padding during decoding, head dims the CUDA decode lacks) the step uses PyTorch SDPA
with the pattern's rows as the mask.
"""

import torch
from transformers import AttentionInterface
from transformers.masking_utils import (ALL_MASK_ATTENTION_FUNCTIONS, bidirectional_mask_function,
                                        causal_mask_function, flash_attention_mask, sdpa_mask)

from . import torch as splat_torch
from ._torch_serving import decode as _splat_decode  # = splat.torch.decode
from ._api import dense_mask
from ._dispatch import causal_pattern
from ._plans import content_key

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


def _is_causal(module, kwargs):
    causal = kwargs.get("is_causal")
    return bool(getattr(module, "is_causal", True) if causal is None else causal)


def _mask_interface(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=causal_mask_function,
                    attention_mask=None, **kwargs):
    """transformers' mask hook for "splat": the 2-D padding mask ([B, kv_length] bool, None without padding) for
    plain causal or bidirectional models (the pattern is the structure); anything else (packed sequences, sliding
    windows, extra mask functions) as transformers' full 4-D boolean mask, which attention_forward then accepts
    only if it is padding + causal."""
    if mask_function is causal_mask_function or mask_function is bidirectional_mask_function:
        return flash_attention_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function,
                                    attention_mask)
    kwargs.pop("allow_is_causal_skip", None)
    kwargs.pop("allow_is_bidirectional_skip", None)
    return sdpa_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask,
                     allow_is_causal_skip=False, **kwargs)


def _keys_from_4d(mask, b, nq, nk, causal):
    """Real keys [B, Nk] of a 4-D mask (bool, or additive with 0 = attend) if it is padding (+ causal); else raises."""
    if mask.dtype == torch.bool:
        allowed = mask
    else:
        allowed = mask == 0
        if not torch.all(allowed | (mask <= torch.finfo(mask.dtype).min / 2)):
            raise ValueError("splat: a float attention mask must hold only 0 and large negative values")
    if allowed.dim() != 4 or allowed.shape[-2:] != (nq, nk) or allowed.shape[0] not in (1, b):
        raise ValueError(f"splat: attention mask of shape {tuple(mask.shape)} does not fit [B, 1, {nq}, {nk}]")
    if allowed.shape[1] != 1 and not torch.equal(allowed, allowed[:, :1].expand_as(allowed)):
        raise ValueError("splat: per-head attention masks are not supported")
    allowed = allowed[:, 0].expand(b, nq, nk)
    keys = allowed[:, -1] if causal else allowed.any(dim=1)  # causal: the last query sees every real key
    expected = keys[:, None, :].expand(b, nq, nk)
    if causal:
        expected = expected & torch.ones(nq, nk, dtype=torch.bool, device=mask.device).tril(nk - nq)
    real_rows = keys[:, nk - nq:]  # rows of padded queries are free (transformers may unmask them)
    if not torch.equal(allowed[real_rows], expected[real_rows]):
        raise ValueError("splat: the attention mask is not a padding mask (+ causal); splat applies padding and the "
                         "pattern only (holes, packed sequences or custom masks are not supported)")
    return keys


def _padding(attention_mask, b, nq, nk, causal):
    """(first real key [B], real key count [B]) or None when every key is real. Raises for non-padding masks."""
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dim() == 4:
        keys = _keys_from_4d(m, b, nq, nk, causal)
    elif m.dim() == 2 and m.shape[0] == b and m.shape[1] <= nk:
        if m.dtype != torch.bool and not torch.all((m == 0) | (m == 1)):
            raise ValueError("splat: a 2-D attention mask must hold 0/1 (or booleans)")
        keys = m.bool()
        if m.shape[1] < nk:  # a StaticCache: the rows past the mask are not written yet
            keys = torch.nn.functional.pad(keys, (0, nk - m.shape[1]), value=False)
    else:
        raise ValueError(f"splat: attention mask of shape {tuple(m.shape)} fits neither [B, Nk] nor [B, 1, Nq, Nk]")
    if bool(keys.all()):
        return None
    count = keys.sum(dim=1)
    first = torch.where(count > 0, keys.to(torch.int32).argmax(dim=1), torch.zeros_like(count))
    pos = torch.arange(nk, device=keys.device)
    contiguous = (pos >= first[:, None]) & (pos < (first + count)[:, None])
    if not torch.equal(keys, contiguous):
        raise ValueError("splat: the attention mask has holes inside a row; splat supports left or right padding")
    return first, count


def _rows(pattern, nk, device):
    """The pattern's dense [nk, nk] boolean mask (cached per pattern content and size)."""
    key = (content_key(pattern), nk, str(device))
    m = _row_masks.get(key)
    if m is None:
        if len(_row_masks) > 64:
            _row_masks.clear()
        m = torch.from_numpy(dense_mask(pattern, nk).astype(bool)).to(device)
        _row_masks[key] = m
    return m


_MAX_DECODE_QUERIES = 64  # splat.torch.decode's T limit


def _decode_splat(query, key, value, pattern, pad, scaling, mask_width):
    """The newest nq tokens against the cache with splat.torch.decode -> [B, nq, H, D], or None where it does not
    apply. Positions count from each row's first real key (cache_starts); the real keys end with the queries."""
    b, nq, nk = query.shape[0], query.shape[-2], key.shape[-2]
    if nq > _MAX_DECODE_QUERIES or query.device.type not in ("cpu", "cuda"):
        return None
    if pad is None:
        lengths = torch.full((b,), mask_width, dtype=torch.int32, device=query.device)
        starts = None
    else:
        first, count = pad
        if not bool((first + count == mask_width).all()):  # right padding while decoding: keys after the queries
            return None
        lengths, starts = count.to(torch.int32), first.to(torch.int32)
    try:
        # validate=False: the lengths and starts come from the checked padding mask and fit the cache by construction
        # (on CUDA the check would synchronise every layer)
        out = _splat_decode(query, key, value, lengths, pattern=pattern, scale=scaling, cache_starts=starts,
                            validate=False)
    except NotImplementedError:  # e.g. an explicit mask pattern (no rows at every position), a CUDA head dim of 32
        return None
    return out.transpose(1, 2)


def _decode(query, key, value, pattern, pad, scaling):
    """Queries [nk - nq, nk) against a KV cache with SDPA: each row's pattern rows, shifted to its first real token."""
    b, nq, nk = query.shape[0], query.shape[-2], key.shape[-2]
    full = _rows(pattern, nk, query.device)
    if pad is None:
        mask = full[nk - nq:][None, None]
    else:
        first, count = pad
        i = torch.arange(nk - nq, nk, device=query.device)[None, :] - first[:, None]  # row positions per batch row
        j = torch.arange(nk, device=query.device)[None, :] - first[:, None]
        real = (j >= 0) & (j < count[:, None])
        mask = full[i.clamp(0, nk - 1)[:, :, None], j.clamp(0, nk - 1)[:, None, :]] & real[:, None, :]
        mask = mask & (i >= 0)[:, :, None]
        mask = mask[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=query.shape[1] != key.shape[1])
    out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0)  # rows without keys (padded queries): 0, not NaN
    return out.transpose(1, 2).contiguous()


def _shift(x, first, sign):
    """Rolls each batch row of x [B, H, N, D] along N by -first (sign=1) or back (sign=-1)."""
    n = x.shape[-2]
    idx = (torch.arange(n, device=x.device)[None, :] + sign * first[:, None]) % n
    return x.gather(2, idx[:, None, :, None].expand(x.shape[0], x.shape[1], n, x.shape[3]))


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: query [B, H, Nq, D], key/value [B, H_kv, Nk, D] -> ([B, Nq, H, D], None)."""
    if dropout and module.training:
        raise ValueError("splat: attention dropout is not supported; set attention_dropout=0")
    causal = _is_causal(module, kwargs)
    pattern = _pattern_of(module)
    if causal:
        pattern = causal_pattern(pattern)
    b, nq, nk = query.shape[0], query.shape[-2], key.shape[-2]
    pad = _padding(attention_mask, b, nq, nk, causal)
    if nq != nk:  # decoding against a KV cache
        width = attention_mask.shape[-1] if attention_mask is not None and attention_mask.dim() == 2 else nk
        out = _decode_splat(query, key, value, pattern, pad, scaling, width) if causal else None
        if out is None:
            out = _decode(query, key, value, pattern, pad, scaling)
        return out, None
    if pad is None:
        return _prefill(query, key, value, pattern, scaling, None).contiguous(), None
    first, count = pad
    shifted = bool((first > 0).any())
    if shifted:  # left padding: real tokens to position 0, where the pattern (and the position ids) start them
        query, key, value = (_shift(x, first, 1) for x in (query, key, value))
    out = _prefill(query, key, value, pattern, scaling, None if causal else count)
    if shifted:
        out = _shift(out.transpose(1, 2), first, -1).transpose(1, 2)
    return out.contiguous(), None


def _prefill(query, key, value, pattern, scaling, key_lengths):
    """The sparse kernel -> [B, N, H, D]. key_lengths [B] (right padding) is needed only without causality: a causal
    row never reaches the padding at the end of its row."""
    if key_lengths is not None:
        out = splat_torch.attention(query, key, value, pattern=pattern, scale=scaling,
                                    key_lengths=key_lengths.to(torch.int32))
        return out.transpose(1, 2)
    if splat_torch._needs_op(query, key, value):
        out = splat_torch.attention(query, key, value, pattern=pattern, scale=scaling)
        return out.transpose(1, 2)
    b, h, n, d = query.shape
    out = torch.empty((b, n, h, d), dtype=query.dtype, device=query.device)  # written in place: no copy after
    splat_torch.attention(query, key, value, pattern=pattern, scale=scaling, out=out.transpose(1, 2))
    return out


def register(name="splat"):
    """Registers attention_forward as attn_implementation=name, and its mask hook (done on import as "splat")."""
    AttentionInterface.register(name, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, _mask_interface)


register()
