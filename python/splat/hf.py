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
rows are read, no mask is built (a call without attention_mask gets one of ones over the tokens seen, so a
StaticCache's unwritten rows stay unread). Where decode does not apply (explicit mask patterns, more than 64 queries, a
bidirectional model, right padding during decoding, head dims the CUDA decode lacks) the step uses PyTorch SDPA
with the pattern's rows as the mask.

Sliding-window layers (Mistral's sliding_window, Qwen2/Qwen3's use_sliding_window, Gemma2/Gemma3's
"sliding_attention" layers): the layer's window W (the sliding_window transformers hands the attention function,
else the module's, else config.sliding_window for a "sliding_attention" entry of config.layer_types) is intersected
with the pattern as causal_window:w=W-1 (transformers' query i sees keys i-W < j <= i). The mask hook recognises
transformers' sliding_window_causal_mask_function and hands the 2-D padding mask from position 0 (no 4-D mask); any
other combination still becomes a 4-D mask, which a sliding layer refuses (ValueError). The sliding caches
(DynamicSlidingWindowLayer, StaticSlidingWindowLayer) keep only the last W-1 or W tokens, in position order: their
row 0 is the mask column kv_offset. Rows whose first tokens were dropped read the cache from row 0 with positions
counted from there, exact for patterns whose rows depend on i - j only (causal, windows, dilated, strided and their
unions / intersections); other patterns (sinks, blocks, ...) take SDPA with each query's keys from the decode row
program at its true position (a [B, 1, T, N_k] mask). Bidirectional sliding windows, attention logit soft-capping
(Gemma2's attn_logit_softcapping: set it to None) and sink logits raise ValueError.
"""

import functools
import re

import torch
from transformers import AttentionInterface
from transformers.masking_utils import (ALL_MASK_ATTENTION_FUNCTIONS, and_masks, bidirectional_mask_function,
                                        causal_mask_function, flash_attention_mask, sdpa_mask, sliding_window_overlay)

from . import _core
from . import torch as splat_torch
from ._torch_serving import decode as _splat_decode  # = splat.torch.decode
from ._api import dense_mask
from ._dispatch import causal_pattern, intersect
from ._plans import content_key
from ._serving import decode_plan

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


def _layer_window(module, kwargs):
    """The layer's sliding window W (query i sees keys i-W < j <= i, transformers' sliding_window_overlay) or None:
    the sliding_window transformers hands the attention function (as its FlashAttention integration reads it), else
    the module's, else config.sliding_window for a layer whose config.layer_types entry is "sliding_attention"."""
    if "sliding_window" in kwargs:
        w = kwargs["sliding_window"]
    elif hasattr(module, "sliding_window"):
        w = module.sliding_window
    else:
        config, layer = getattr(module, "config", None), getattr(module, "layer_idx", None)
        types = getattr(config, "layer_types", None)
        sliding = types is not None and layer is not None and layer < len(types) and types[layer] == "sliding_attention"
        w = getattr(config, "sliding_window", None) if sliding else None
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, int) or w < 1:
        raise ValueError(f"splat: a layer's sliding_window must be a positive int, got {w!r}")
    return w


def _window_pattern(w):
    """transformers' sliding window W as a splat pattern: keys j with 0 <= i - j <= W - 1."""
    return f"causal_window:w={w - 1}"


_AND_CODE = and_masks(causal_mask_function).__code__
_OVERLAY_CODE = sliding_window_overlay(1).__code__


def _free_variable(fn, name):
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or cells is None or name not in code.co_freevars:
        return None
    return cells[code.co_freevars.index(name)].cell_contents


def _sliding_window_of(mask_function):
    """W if mask_function is transformers' sliding_window_causal_mask_function(W) (the and_masks of
    sliding_window_overlay(W) and causal_mask_function, either order), else None (any other combination)."""
    if getattr(mask_function, "__code__", None) is not _AND_CODE:
        return None
    parts = _free_variable(mask_function, "mask_functions")
    if not isinstance(parts, tuple) or len(parts) != 2 or not any(f is causal_mask_function for f in parts):
        return None
    overlay = parts[1] if parts[0] is causal_mask_function else parts[0]
    if getattr(overlay, "__code__", None) is not _OVERLAY_CODE:
        return None
    w = _free_variable(overlay, "sliding_window")
    return w if isinstance(w, int) and not isinstance(w, bool) and w >= 1 else None


def _sliding_padding_mask(kv_length, kv_offset, attention_mask, window, config):
    """The 2-D padding mask of a sliding-window layer: every column from position 0 on ([B, kv_offset + kv_length],
    or shorter for a StaticCache not yet filled), so that attention_forward knows each row's first real token even
    after a sliding cache dropped it (the keys are then the last columns). None without padding or offset."""
    configured = getattr(config, "sliding_window", None)
    if configured is not None and configured != window:
        raise ValueError(f"splat: a sliding-window mask of window {window} in a model configured with {configured}")
    width = kv_offset + kv_length
    if attention_mask is None:  # (_mask_interface made one where the keys are not positions 0 ... kv_length - 1)
        return None
    if attention_mask.dim() != 2:
        raise ValueError(f"splat: a padding mask must be [B, N], got shape {tuple(attention_mask.shape)}")
    if kv_offset and attention_mask.shape[1] != width:
        raise ValueError(f"splat: the padding mask has {attention_mask.shape[1]} columns; the sliding cache holds "
                         f"positions {kv_offset} ... {width - 1}")
    mask = attention_mask[:, :width]
    if kv_offset == 0 and mask.shape[1] == kv_length and bool(mask.all()):
        return None
    return mask


def _mask_interface(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=causal_mask_function,
                    attention_mask=None, **kwargs):
    """transformers' mask hook for "splat": the 2-D padding mask ([B, kv_length] bool, None without padding) for
    plain causal or bidirectional models (the pattern is the structure); for sliding-window causal layers the 2-D
    padding mask from position 0 (see _sliding_padding_mask; the window comes from the layer); anything else (packed
    sequences, chunked attention, extra mask functions) as transformers' full 4-D boolean mask, which
    attention_forward then accepts only if it is padding + causal (+ the layer's window)."""
    if attention_mask is None and (kv_offset or int(q_offset) + q_length < kv_length):
        # No padding, but the keys start past position 0 (a sliding cache) or are not all written yet (a StaticCache):
        # a mask of ones over the tokens seen says where the real keys are.
        attention_mask = torch.ones(batch_size, int(q_offset) + q_length, dtype=torch.bool, device=kwargs.get("device"))
    if mask_function is causal_mask_function or mask_function is bidirectional_mask_function:
        return flash_attention_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function,
                                    attention_mask)
    window = _sliding_window_of(mask_function)
    if window is not None:
        return _sliding_padding_mask(kv_length, kv_offset, attention_mask, window, kwargs.get("config"))
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


def _padding(attention_mask, b, nq, nk, causal, window=None):
    """((first real column [B], real column count [B]) or None when every key is real, column of key row 0). A 2-D
    mask wider than the keys (a sliding layer's, from position 0) has them as its last nk columns. Raises for
    non-padding masks."""
    if attention_mask is None:
        return None, 0
    m, off = attention_mask, 0
    if m.dim() == 4:
        if window is not None:  # transformers builds one only for masks beyond padding + window (e.g. packing)
            raise ValueError("splat: a sliding-window layer takes the 2-D padding mask only; this 4-D mask (packed "
                             "sequences, custom or extra mask functions) is not supported")
        keys = _keys_from_4d(m, b, nq, nk, causal)
    elif m.dim() == 2 and m.shape[0] == b and (m.shape[1] <= nk or window is not None):
        if m.dtype != torch.bool and not torch.all((m == 0) | (m == 1)):
            raise ValueError("splat: a 2-D attention mask must hold 0/1 (or booleans)")
        keys = m.bool()
        if m.shape[1] < nk:  # a StaticCache: the rows past the mask are not written yet
            keys = torch.nn.functional.pad(keys, (0, nk - m.shape[1]), value=False)
        off = max(0, m.shape[1] - nk)  # a sliding cache: key row 0 is column off
    else:
        raise ValueError(f"splat: attention mask of shape {tuple(m.shape)} fits neither [B, Nk] nor [B, 1, Nq, Nk]")
    if bool(keys.all()):
        return None, off
    n = keys.shape[1]
    count = keys.sum(dim=1)
    first = torch.where(count > 0, keys.to(torch.int32).argmax(dim=1), torch.zeros_like(count))
    pos = torch.arange(n, device=keys.device)
    contiguous = (pos >= first[:, None]) & (pos < (first + count)[:, None])
    if not torch.equal(keys, contiguous):
        raise ValueError("splat: the attention mask has holes inside a row; splat supports left or right padding")
    return (first, count), off


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

# Pattern kinds whose rows depend on i - j only: on them a row may count positions from any token.
_SHIFT_INVARIANT = frozenset({"dense", "causal", "window", "causal_window", "dilated", "causal_dilated", "strided"})
_LEAF = re.compile(r"([a-z_]+)(?::[a-z]+=\d+(?:,[a-z]+=\d+)*)?")


@functools.lru_cache(maxsize=256)
def _shift_invariant(pattern):
    """Whether the spec's rows depend on i - j only (unions and intersections of _SHIFT_INVARIANT kinds)."""
    if "mask:" in pattern:
        return False
    leaves = re.split(r"[()+&]", _core.canonical_pattern(pattern))
    return all(not leaf.strip() or ((m := _LEAF.fullmatch(leaf.strip())) is not None and m.group(1) in _SHIFT_INVARIANT)
               for leaf in leaves)


def _cache_rows(pad, width, off, b, device):
    """(cache row of position 0 [B], tokens including the queries [B]), int32, for rows whose real tokens end with the
    queries (left padding); a start is negative where a sliding cache dropped the row's first tokens (key row 0 is
    mask column off). None for right padding (keys after the queries)."""
    if pad is None:
        return (torch.full((b,), -off, dtype=torch.int32, device=device),
                torch.full((b,), width, dtype=torch.int32, device=device))
    first, count = pad
    if not bool((first + count == width).all()):
        return None
    return (first - off).to(torch.int32), count.to(torch.int32)


def _past_dropped(starts, lengths, pattern, nq, nk, window):
    """Rows whose first tokens the sliding cache dropped (start < 0) read it from row 0 with positions counted from
    there: exact when the pattern (within the layer's window, which the cache holds whole) depends on i - j only.
    Returns (starts, lengths), or None where the positions matter (the caller then takes _decode_rows)."""
    if not bool((starts < 0).any()):
        return starts, lengths
    if nk - nq < window - 1:
        raise ValueError(f"splat: the sliding cache holds {nk - nq} keys before the {nq} queries; the window of "
                         f"{window} needs {window - 1}")
    if not _shift_invariant(pattern):
        return None
    drop = (-starts).clamp(min=0)
    return starts + drop, lengths - drop


def _decode_splat(query, key, value, pattern, pad, scaling, mask_width, off=0, window=None):
    """The newest nq tokens against the cache with splat.torch.decode -> [B, nq, H, D], or None where it does not
    apply. Positions count from each row's first real key (cache_starts); the real keys end with the queries. off > 0
    (a sliding cache, key row 0 = mask column off): see _past_dropped."""
    b, nq, nk = query.shape[0], query.shape[-2], key.shape[-2]
    if nq > _MAX_DECODE_QUERIES or query.device.type not in ("cpu", "cuda"):
        return None
    rows = _cache_rows(pad, mask_width, off, b, query.device)
    if rows is None:  # right padding while decoding
        return None
    starts, lengths = rows
    if off:
        rows = _past_dropped(starts, lengths, pattern, nq, nk, window)
        if rows is None:
            return None
        starts, lengths = rows
    elif pad is None:
        starts = None
    try:
        # validate=False: the lengths and starts come from the checked padding mask and fit the cache by construction
        # (on CUDA the check would synchronise every layer)
        out = _splat_decode(query, key, value, lengths, pattern=pattern, scale=scaling, cache_starts=starts,
                            validate=False)
    except NotImplementedError:  # e.g. an explicit mask pattern (no rows at every position), a CUDA head dim of 32
        return None
    return out.transpose(1, 2)


def _decode_rows(query, key, value, pattern, pad, scaling, mask_width, off):
    """SDPA for the steps on a sliding cache (key row 0 = mask column off > 0) that splat.torch.decode does not take:
    each query's keys from the pattern's decode row program at its true position, as a [B, 1, nq, nk] mask."""
    b, nq, nk = query.shape[0], query.shape[-2], key.shape[-2]
    first, count = pad if pad is not None else (torch.zeros(b, dtype=torch.int64), torch.full((b,), mask_width))
    try:
        plan = decode_plan(pattern, query.shape[-1], "float32")  # the row program only (any head dim, dtype)
    except NotImplementedError as e:
        raise ValueError("splat: an explicit mask pattern cannot serve a sliding-window cache (it has rows for its "
                         "own N only)") from e
    mask = torch.zeros(b, nq, nk, dtype=torch.bool)
    for r in range(b):
        start, length = int(first[r]) - off, int(count[r])
        for t in range(nq):
            pos = nk - nq + t - start
            if 0 <= pos < length:  # else a padded query: no keys, output 0
                keys = torch.tensor(plan.row_keys(pos, length), dtype=torch.int64) + start
                if keys.numel() and int(keys[0]) < 0:
                    raise ValueError("splat: the pattern reads keys the sliding-window cache has dropped")
                mask[r, t, keys] = True
    mask = mask.to(query.device)[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=query.shape[1] != key.shape[1])
    out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0)
    return out.transpose(1, 2).contiguous()


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


_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias")  # logit soft-capping, sink logits, additive biases


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: query [B, H, Nq, D], key/value [B, H_kv, Nk, D] -> ([B, Nq, H, D], None)."""
    if dropout and module.training:
        raise ValueError("splat: attention dropout is not supported; set attention_dropout=0")
    for name in _UNSUPPORTED:
        if kwargs.get(name) is not None:
            raise ValueError(f"splat: attention with {name}= is not supported (e.g. set attn_logit_softcapping=None)"
                             if name == "softcap" else f"splat: attention with {name}= is not supported")
    causal = _is_causal(module, kwargs)
    pattern = _pattern_of(module)
    window = _layer_window(module, kwargs)
    if causal:
        pattern = causal_pattern(pattern)
    if window is not None:
        if not causal:
            raise ValueError("splat: bidirectional sliding-window attention is not supported")
        pattern = intersect(pattern, _window_pattern(window))
    b, nq, nk = query.shape[0], query.shape[-2], key.shape[-2]
    pad, off = _padding(attention_mask, b, nq, nk, causal, window)
    if nq != nk or off:  # decoding against a KV cache (off: a sliding cache that dropped tokens)
        width = attention_mask.shape[-1] if attention_mask is not None and attention_mask.dim() == 2 else nk
        out = _decode_splat(query, key, value, pattern, pad, scaling, width, off, window) if causal else None
        if out is None and off:  # SDPA on a sliding cache: pattern rows from row 0 where that is exact
            rows = _cache_rows(pad, width, off, b, query.device)
            rows = None if rows is None else _past_dropped(*rows, pattern, nq, nk, window)
            out = (_decode(query, key, value, pattern, rows, scaling) if rows is not None else
                   _decode_rows(query, key, value, pattern, pad, scaling, width, off))
        elif out is None:
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
