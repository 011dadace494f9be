"""PyTorch ops of the serving entry points (see splat._serving for the layouts): torch.ops.splat.decode and
torch.ops.splat.varlen_attention, with fake implementations (torch.compile traces them without graph breaks).
Both are inference ops (no autograd formula). Exposed as splat.torch.decode / splat.torch.varlen_attention."""

from typing import Optional

import torch
from torch import Tensor
from torch.utils.dlpack import to_dlpack as _dl

from . import _core
from ._dispatch import check_dtypes, dtype_name
from ._serving import decode_plan, head_dim_of, lse_shape, varlen_plans

# (Self-contained: splat.torch imports this module at its end, and this one must not import splat.torch back.)


_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _dtype(t):
    return dtype_name(str(t.dtype))


def _index(t, name, q):
    if t is None:
        return None
    if not isinstance(t, Tensor) or t.dtype != torch.int32:
        raise ValueError(f"splat: {name} must be an int32 tensor")
    if t.device != q.device:
        raise ValueError(f"splat: {name} must be on q's device ({q.device}), got {t.device}")
    return t.contiguous()


def _decode_launch(q, k_cache, v_cache, cache_seqlens, block_table, cache_starts, pattern, scale, layout, lse):
    plan = decode_plan(pattern, head_dim_of(q), _dtype(q))
    out = torch.empty_like(q)

    def opt():  # a DLPack capsule is consumed by the call it is passed to: fresh ones for each call
        return [None if t is None else _dl(t) for t in (block_table, cache_starts)]

    ws = None
    if q.is_cuda:  # the split-KV workspace: shapes and capacity decide its size, never the lengths
        n = _core.decode_workspace_bytes(plan, _dl(q), _dl(k_cache), _dl(v_cache), _dl(cache_seqlens), *opt(), layout)
        ws = torch.empty(n, dtype=torch.uint8, device=q.device) if n else None
    stream = _raw_stream(q.get_device()) if q.is_cuda else 0  # the current stream, no synchronisation
    _core.decode(plan, _dl(q), _dl(k_cache), _dl(v_cache), _dl(cache_seqlens), *opt(), _dl(out),
                 None if lse is None else _dl(lse), scale, layout, "", 0, False, stream,
                 None if ws is None else _dl(ws))
    return out


def _check_indices_on_host(q, k_cache, cache_seqlens, block_table, cache_starts, layout):
    """Eager CUDA calls: the decode checks of lengths, starts and block table on host copies (one synchronisation).
    Skipped while a CUDA graph is being captured (the kernel then gives NaN rows for bad indices)."""
    if not q.is_cuda or torch.cuda.is_current_stream_capturing():
        return
    host = [None if t is None else t.cpu() for t in (cache_seqlens, block_table, cache_starts)]
    _core.check_decode_cache(_dl(k_cache), *[None if t is None else _dl(t) for t in host], layout, q.shape[0])


@torch.library.custom_op("splat::decode", mutates_args=())
def _decode_op(q: Tensor, k_cache: Tensor, v_cache: Tensor, cache_seqlens: Tensor, block_table: Optional[Tensor],
               cache_starts: Optional[Tensor], pattern: str, scale: float, layout: str) -> tuple[Tensor, Tensor]:
    lse = torch.empty(lse_shape(q, layout), dtype=torch.float32, device=q.device)
    out = _decode_launch(q, k_cache, v_cache, cache_seqlens, block_table, cache_starts, pattern, scale, layout, lse)
    return out, lse


@_decode_op.register_fake
def _(q, k_cache, v_cache, cache_seqlens, block_table, cache_starts, pattern, scale, layout):
    return torch.empty_like(q), q.new_empty(lse_shape(q, layout), dtype=torch.float32)


def decode(q, k_cache, v_cache, cache_seqlens, pattern=None, block_table=None, scale=None, *, cache_starts=None,
           layout="bhnd", return_lse=False, validate=True):
    """Decode attention of the T newest positions of each sequence against its KV cache.

    q: [B, H, T, D] (layout='bhnd') or [B, T, H, D] ('bnhd'), T = 1 ... 64. k_cache, v_cache: contiguous
    [B, H_kv, capacity, D] ('bnhd': [B, capacity, H_kv, D]) or, with block_table (int32 [B, max_pages]), a page pool
    [pages, H_kv, P, D] ('bnhd': [pages, P, H_kv, D]). cache_seqlens: int32 [B], tokens per sequence including the T
    new ones; query t is position cache_seqlens[b] - T + t and attends its row of pattern & causal. cache_starts
    (int32 [B]): cache row of each sequence's position 0 (left padding). Returns out like q (and lse float32
    [B, H, T] with return_lse=True). Not differentiable.

    CUDA tensors run the split-KV kernel on the current stream. validate=True (eager calls outside CUDA graph
    capture) first checks the lengths, starts and block table on host copies (ValueError; one synchronisation);
    under torch.compile, during capture or with validate=False the kernel reads them as they are, and a sequence
    whose length or start does not fit the cache gets NaN outputs and lse, as do the rows that would read a page
    outside the pool (never a clamped, plausible answer).
    """
    if pattern is None or not isinstance(pattern, str):
        raise ValueError("splat: decode needs pattern= as a spec string (e.g. 'causal_window:w=4096+sink:g=4')")
    s = 0.0 if scale is None else float(scale)
    if not torch.compiler.is_compiling():  # eager checks (C++ checks again)
        check_dtypes(q=q, k_cache=k_cache, v_cache=v_cache)
        cache_seqlens = _index(cache_seqlens, "cache_seqlens", q)
        block_table = _index(block_table, "block_table", q)
        cache_starts = _index(cache_starts, "cache_starts", q)
        if validate:
            _check_indices_on_host(q, k_cache, cache_seqlens, block_table, cache_starts, layout)
    # Through the op when compiling, for lse, or when autograd would see the call (the op has no autograd formula:
    # backward through it raises instead of silently giving no gradient).
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k_cache, v_cache))
    if torch.compiler.is_compiling() or return_lse or grad:
        out, lse = torch.ops.splat.decode(q, k_cache, v_cache, cache_seqlens, block_table, cache_starts, pattern, s,
                                          layout)
        return (out, lse) if return_lse else out
    return _decode_launch(q, k_cache, v_cache, cache_seqlens, block_table, cache_starts, pattern, s, layout, None)


@torch.library.custom_op("splat::varlen_attention", mutates_args=())
def _varlen_op(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int, pattern: str,
               scale: float) -> tuple[Tensor, Tensor]:
    out = torch.empty_like(q)
    lse = torch.empty((q.shape[1], q.shape[0]), dtype=torch.float32, device=q.device)
    # The packed CUDA plan depends on the lengths, so they are read on the host: a device cu_seqlens costs one copy
    # (a synchronisation of the current stream) per call.
    cu = cu_seqlens.cpu() if cu_seqlens.is_cuda else cu_seqlens
    stream = _raw_stream(q.get_device()) if q.is_cuda else 0
    _core.varlen_attention(varlen_plans(pattern), _dl(q), _dl(k), _dl(v), _dl(cu), max_seqlen, _dl(out),
                           _dl(lse), scale, "", 0, False, stream)
    return out, lse


@_varlen_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, pattern, scale):
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, pattern=None, scale=None, *, return_lse=False):
    """Attention over sequences packed along one token axis (FlashAttention's varlen layout): q [total, H, D],
    k, v [total, H_kv, D], cu_seqlens int32 [B+1] (sequence b is tokens cu_seqlens[b] ... cu_seqlens[b+1]-1),
    max_seqlen >= every length. Each sequence sees `pattern` at its own length, position 0 at its first token.
    Returns out like q (and lse float32 [H, total] with return_lse=True). Not differentiable.

    CUDA tensors run one forward over the whole token axis with the block-diagonal plan of the batch's lengths, on
    the current stream; the plan is built on the first call with a length list and cached (a few per pattern).
    cu_seqlens may be on q's device (copied to the host once per call: one synchronisation) or on the CPU (none)."""
    if pattern is None or not isinstance(pattern, str):
        raise ValueError("splat: varlen_attention needs pattern= as a spec string")
    if not torch.compiler.is_compiling():
        check_dtypes(q=q, k=k, v=v)
        host_lengths = q.is_cuda and isinstance(cu_seqlens, Tensor) and cu_seqlens.device.type == "cpu"
        cu_seqlens = _index(cu_seqlens, "cu_seqlens", cu_seqlens if host_lengths else q)
        if q.dim() != 3:
            raise ValueError(f"splat: varlen_attention takes packed [total, H, D] arrays, got q {tuple(q.shape)}")
    out, lse = torch.ops.splat.varlen_attention(q, k, v, cu_seqlens, int(max_seqlen), pattern,
                                                0.0 if scale is None else float(scale))
    return (out, lse) if return_lse else out
