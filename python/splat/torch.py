"""PyTorch integration: torch.library ops, an SDPA-style drop-in, and nn.Module layers.

    import splat.torch
    out = splat.torch.attention(q, k, v, pattern="dilated:w=256,d=4")        # q, k, v: [B, H, N, D]
    out = splat.torch.scaled_dot_product_attention(q, k, v, is_causal=True, pattern="window:w=128")

The ops torch.ops.splat.attention / torch.ops.splat.flurka have fake implementations (torch.compile traces
them without graph breaks), launch on the current CUDA stream without synchronising or allocating outside
PyTorch's allocator (CUDA-graph capturable once the plan exists: run one call before capturing).
torch.ops.splat.attention_fwd returns (out, lse) and its autograd formula calls torch.ops.splat.attention_bwd
(the fused backward: dq, dk, dv from q, k, v, out, lse and dout; nothing nnz-sized is saved);
torch.ops.splat.flurka's is torch.ops.splat.flurka_backward (dq, dk, dv, dE, dF; W is a fixed feature matrix).
"""

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.dlpack import to_dlpack as _to_dlpack

from . import _core
from ._api import check_out, dense_mask, empty_call, resolve_plan
from ._dispatch import causal_pattern, check_dtypes, sizes
from ._plans import pattern_name, register_mask
from ._flurka import check_matrices, workspace_bytes
from ._flurka_causal_torch import causal_flurka_grads

__all__ = ["attention", "flurka", "FlurkaDecoder", "scaled_dot_product_attention", "SparseAttention",
           "FLuRKAAttention"]

_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64"}
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)



def _dtype(t):
    try:
        return _DTYPES[t.dtype]
    except KeyError:
        raise ValueError(f"splat: unsupported dtype {t.dtype} (expected float32, float16, bfloat16 or float64)") from None


def _stream(t):
    # The raw current stream: no Python stream objects, no synchronisation (safe during graph capture).
    return _raw_stream(t.get_device()) if t.is_cuda else 0


def _dl(t):
    # torch's C exporter: unlike Tensor.__dlpack__ it never records events between streams, and it does
    # not refuse tensors that require grad (only the op's autograd formula matters for those).
    return _to_dlpack(t)


def _workspace(nbytes, device):
    return torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None


def _ptr(ws):
    return (ws.data_ptr(), ws.numel()) if ws is not None else (0, 0)


def _launch(q, k, v, out, plan, pattern, scale, layout, lse=None, key_lengths=None):
    p = resolve_plan(plan, pattern, q.shape, layout, _dtype(q), q.get_device())
    ws = None
    if q.is_cuda:  # multi-pass plans merge through a workspace: from torch's stream-ordered allocator
        n, d = sizes(q.shape, layout)
        ws = _workspace(_core.workspace_bytes(p, q.numel() // (n * d), 1, q.get_device()), q.device)
    if lse is None and key_lengths is None:
        _core.attention(p, _dl(q), _dl(k), _dl(v), _dl(out), scale, layout, "", _stream(q), 0, *_ptr(ws))
    else:
        _core.attention_lse(p, _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse if lse is not None else _lse_like(q, layout)),
                            scale, layout, "", _stream(q), 0, *_ptr(ws),
                            None if key_lengths is None else _dl(key_lengths))


def _lse_like(q, layout):
    """The row log-sum-exp of q's rows: float32 [..., H, N] in both layouts."""
    if layout == "bnhd":
        shape = (*q.shape[:-3], q.shape[-2], q.shape[-3])
    else:
        shape = q.shape[:-1]
    return torch.empty(shape, dtype=torch.float32, device=q.device)


def _backward_launch(dout, q, k, v, out, lse, pattern, scale, layout, key_lengths, deterministic=True):
    p = resolve_plan(None, pattern, q.shape, layout, _dtype(q), q.get_device())
    if dout.stride(-1) != 1:  # e.g. the expanded ones of out.sum().backward()
        dout = dout.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    ws = None
    if q.is_cuda:
        n, d = sizes(q.shape, layout)
        ws = _workspace(_core.backward_workspace_bytes(p, q.numel() // (n * d), 1, q.get_device(), deterministic),
                        q.device)
    _core.attention_backward(p, _dl(q), _dl(k), _dl(v), _dl(out), _dl(dout), _dl(lse), _dl(dq), _dl(dk), _dl(dv),
                             scale, layout, "", _stream(q), 0, *_ptr(ws),
                             None if key_lengths is None else _dl(key_lengths), deterministic)
    return dq, dk, dv


def _needs_op(*ts):
    """Go through the registered op when compiling or when autograd must see the call."""
    if torch.compiler.is_compiling():
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


# ---- attention ops: forward (out, lse) and backward (dq, dk, dv); splat::attention returns out only ----

@torch.library.custom_op("splat::attention_fwd", mutates_args=())
def _attention_fwd_op(q: Tensor, k: Tensor, v: Tensor, pattern: str, scale: float, layout: str,
                      key_lengths: Optional[Tensor] = None, deterministic: bool = True) -> tuple[Tensor, Tensor]:
    # deterministic: only for the backward (the autograd formula passes it on to attention_bwd)
    out, lse = torch.empty_like(q), _lse_like(q, layout)
    _launch(q, k, v, out, None, pattern, scale, layout, lse=lse, key_lengths=key_lengths)
    return out, lse


@_attention_fwd_op.register_fake
def _(q, k, v, pattern, scale, layout, key_lengths=None, deterministic=True):
    return torch.empty_like(q), _lse_like(q, layout)


@torch.library.custom_op("splat::attention_bwd", mutates_args=())
def _attention_bwd_op(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, pattern: str,
                      scale: float, layout: str, key_lengths: Optional[Tensor] = None,
                      deterministic: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    return _backward_launch(dout, q, k, v, out, lse, pattern, scale, layout, key_lengths, deterministic)


@_attention_bwd_op.register_fake
def _(dout, q, k, v, out, lse, pattern, scale, layout, key_lengths=None, deterministic=True):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fwd_setup(ctx, inputs, output):
    q, k, v, pattern, scale, layout, key_lengths, *rest = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_lengths)
    ctx.pattern, ctx.scale, ctx.layout = pattern, scale, layout
    ctx.deterministic = bool(rest[0]) if rest else True
    ctx.num_inputs = len(inputs)
    ctx.mark_non_differentiable(lse)  # lse is returned for inspection; no gradient flows through it


def _fwd_backward(ctx, dout, dlse):
    q, k, v, out, lse, key_lengths = ctx.saved_tensors
    dq, dk, dv = torch.ops.splat.attention_bwd(dout, q, k, v, out, lse, ctx.pattern, ctx.scale, ctx.layout,
                                               key_lengths, ctx.deterministic)
    return (dq, dk, dv) + (None,) * (ctx.num_inputs - 3)


torch.library.register_autograd("splat::attention_fwd", _fwd_backward, setup_context=_fwd_setup)


class _EagerAttention(torch.autograd.Function):
    """The eager path of a differentiable call: the same launches as splat::attention_fwd / attention_bwd and
    their autograd formula, without the dispatcher's per-call wrapping of Python ops (host time of a small fwd+bwd
    on an H200 machine 752 -> 436 us: bench/profile_overhead.py). Only for plain tensors outside torch.compile,
    functorch and dispatch modes (_plain_eager); everything else goes through the registered ops."""

    @staticmethod
    def forward(ctx, q, k, v, pattern, scale, layout, key_lengths, deterministic):
        out, lse = torch.empty_like(q), _lse_like(q, layout)
        _launch(q, k, v, out, None, pattern, scale, layout, lse=lse, key_lengths=key_lengths)
        ctx.save_for_backward(q, k, v, out, lse, key_lengths)
        ctx.pattern, ctx.scale, ctx.layout, ctx.deterministic = pattern, scale, layout, deterministic
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, key_lengths = ctx.saved_tensors
        dq, dk, dv = _backward_launch(dout, q, k, v, out, lse, ctx.pattern, ctx.scale, ctx.layout, key_lengths,
                                      ctx.deterministic)
        return dq, dk, dv, None, None, None, None, None


_dispatch_stack_len = getattr(torch._C, "_len_torch_dispatch_stack", None)
_function_mode_on = getattr(torch._C, "_is_torch_function_mode_enabled", None)
_functorch_on = getattr(torch._C, "_are_functorch_transforms_active", None)


def _plain_eager(*ts):
    """True when a call can skip the registered ops: plain tensors, no tracing, no modes or transforms watching."""
    if torch.compiler.is_compiling():  # first: dynamo folds it and never traces the hooks below
        return False
    if None in (_dispatch_stack_len, _function_mode_on, _functorch_on):
        return False  # a torch without these hooks: always the ops
    if _dispatch_stack_len() or _function_mode_on() or _functorch_on():
        return False
    return all(t is None or type(t) is Tensor for t in ts)


@torch.library.custom_op("splat::attention", mutates_args=())
def _attention_op(q: Tensor, k: Tensor, v: Tensor, pattern: str, scale: float, layout: str) -> Tensor:
    out = torch.empty_like(q)
    _launch(q, k, v, out, None, pattern, scale, layout)
    return out


@_attention_op.register_fake
def _(q, k, v, pattern, scale, layout):
    return torch.empty_like(q)


def _attention_setup(ctx, inputs, output):
    q, k, v, pattern, scale, layout = inputs
    ctx.save_for_backward(q, k, v)
    ctx.pattern, ctx.scale, ctx.layout = pattern, scale, layout


def _attention_backward(ctx, dout):
    # The inference op saved no lse: recompute it (one more forward), then the same backward op.
    q, k, v = ctx.saved_tensors
    out, lse = torch.ops.splat.attention_fwd(q, k, v, ctx.pattern, ctx.scale, ctx.layout)
    dq, dk, dv = torch.ops.splat.attention_bwd(dout, q, k, v, out, lse, ctx.pattern, ctx.scale, ctx.layout)
    return dq, dk, dv, None, None, None


torch.library.register_autograd("splat::attention", _attention_backward, setup_context=_attention_setup)


def attention(q, k, v, plan=None, *, pattern=None, scale=None, layout="bhnd", out=None, return_lse=False,
              key_lengths=None, deterministic=True):
    """Sparse attention on tensors [B, H, N, D] (layout='bhnd') or [B, N, H, D] (layout='bnhd'); differentiable.

    Any strides with D contiguous (no copies); k, v may have fewer heads (GQA: their gradients sum over each
    group). plan: splat.plan(...) or a pattern string; pattern= builds and caches the plan. scale defaults to
    1/sqrt(D). return_lse=True also returns the row log-sum-exp (float32 [..., H, N], natural log, -inf for rows
    without keys; not differentiable). key_lengths: int32 [B] on q's device; batch row b attends only keys
    j < key_lengths[b] (right padding). deterministic=True (the default): the backward's gradients are bitwise
    identical run to run. deterministic=False allows a CUDA backward without the separate dQ pass (on sm_90a dQ is
    accumulated with fp32 atomics inside the dK/dV pass: dq's last bits vary from run to run, and the workspace
    grows by B*H*N*D floats); whether it is faster depends on the shape (docs/BENCHMARKS-backward.md). dk and dv,
    the CPU backward and the forward are unaffected.
    """
    s = 0.0 if scale is None else float(scale)
    if pattern is not None and not isinstance(pattern, str):  # a mask tensor: the op carries its name
        pattern = pattern_name(pattern, sizes(q.shape, layout)[0])
    if not torch.compiler.is_compiling():  # eager checks (the op's C++ side checks again; dynamo cannot trace these)
        check_dtypes(q=q, k=k, v=v, out=out)
        if out is not None:
            check_out(out, q, "torch")
        if empty_call(q, k, v):
            o = torch.empty_like(q) if out is None else out
            return (o, _lse_like(q, layout)) if return_lse else o
    if key_lengths is not None:
        if not isinstance(key_lengths, Tensor) or key_lengths.dtype != torch.int32 or key_lengths.device != q.device:
            raise ValueError("splat: key_lengths must be an int32 tensor on q's device")
        key_lengths = key_lengths.contiguous()
    if _needs_op(q, k, v):
        if out is not None:
            raise ValueError("splat: out= is not supported when autograd or torch.compile sees the call")
        pat = pattern if pattern is not None else (plan if isinstance(plan, str) else getattr(plan, "pattern", None))
        if pat is None:
            raise ValueError("splat: attention needs a plan or pattern=")
        if _plain_eager(q, k, v, key_lengths):
            o, lse = _EagerAttention.apply(q, k, v, pat, s, layout, key_lengths, bool(deterministic))
        elif deterministic:  # the op's schema default: the traced graph stays as it was
            o, lse = torch.ops.splat.attention_fwd(q, k, v, pat, s, layout, key_lengths)
        else:
            o, lse = torch.ops.splat.attention_fwd(q, k, v, pat, s, layout, key_lengths, False)
        return (o, lse) if return_lse else o
    if out is None:
        out = torch.empty_like(q)
    lse = _lse_like(q, layout) if return_lse else None
    _launch(q, k, v, out, plan, pattern, s, layout, lse=lse, key_lengths=key_lengths)
    return (out, lse) if return_lse else out


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, pattern=None):
    """torch.nn.functional.scaled_dot_product_attention's layout and arguments ([..., H, L, E]) plus pattern=.

    attn_mask: a boolean [L, L] mask (True = attend; [1, 1, L, L] too) or an additive float mask of 0 and -inf,
    analysed once and cached by content; per-batch or per-head masks raise. With pattern= as well the call
    attends where both allow. is_causal=True intersects the pattern with causal. Self-attention only (L == S).
    """
    if dropout_p:
        raise ValueError("splat: dropout_p must be 0 (attention dropout is not implemented)")
    if attn_mask is not None and is_causal:
        raise ValueError("splat: give attn_mask or is_causal=True, not both (as SDPA)")
    if query.dim() >= 3 and key.dim() >= 3 and query.shape[-3] != key.shape[-3] and not enable_gqa:
        raise ValueError("splat: query and key have different head counts; pass enable_gqa=True as with SDPA")
    if query.dim() >= 2 and key.dim() >= 2 and query.shape[-2] != key.shape[-2]:
        raise ValueError(f"splat: self-attention only: query length {query.shape[-2]} != key length {key.shape[-2]}")
    pat = pattern if pattern is not None else "dense"
    if attn_mask is not None:
        n = query.shape[-2]
        if n == 0:
            return attention(query, key, value, pattern="dense", scale=scale)
        name = register_mask(attn_mask, n)
        if pattern is not None:
            # the intersection as one mask: pattern & attn_mask
            name = register_mask(dense_mask(name, n) & dense_mask(pattern, n) > 0, n)
        pat = name
    elif is_causal:
        pat = causal_pattern(pattern)
    return attention(query, key, value, pattern=pat, scale=scale)


# ---- FLuRKA op ----

def _flurka_launch(q, k, v, out, E, F, W, method, causal, layout):
    dt = _dtype(q)
    ws = None
    if q.is_cuda:  # torch's allocator (graph safe; the causal path would otherwise cudaMalloc and synchronise)
        ws = torch.empty(workspace_bytes(method, q, k, E, W, layout, causal), dtype=torch.uint8, device=q.device)
    mats = [None if m is None else _dl(m.contiguous()) for m in (E, F, W)]
    _core.flurka(method, _dl(q), _dl(k), _dl(v), _dl(out), mats[0], mats[1], mats[2], causal, layout, dt,
                 _stream(q), None if ws is None else _dl(ws), 0)


@torch.library.custom_op("splat::flurka", mutates_args=())
def _flurka_op(q: Tensor, k: Tensor, v: Tensor, E: Optional[Tensor], F: Optional[Tensor], W: Optional[Tensor], method: str,
               causal: bool, layout: str) -> Tensor:
    out = torch.empty_like(q)
    _flurka_launch(q, k, v, out, E, F, W, method, causal, layout)
    return out


@_flurka_op.register_fake
def _(q, k, v, E, F, W, method, causal, layout):
    return torch.empty_like(q)


def _flurka_grad_launch(dout, q, k, v, E, F, W, method, causal, layout):
    """dq, dk, dv like q, k, v; dE, dF like E, F (empty for methods without projections)."""
    if causal and q.is_cuda:  # no causal CUDA backward kernel yet: torch autograd of the formula, on the device
        return causal_flurka_grads(dout, q, k, v, E, F, W, method, layout)
    proj = _core.flurka_uses(method)[0]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dE = torch.empty(E.shape, dtype=E.dtype, device=E.device) if proj else q.new_empty(0)
    dF = torch.empty(F.shape, dtype=F.dtype, device=F.device) if proj else q.new_empty(0)
    mats = [None if m is None else _dl(m.contiguous()) for m in (E, F, W)]
    # dout may be an expanded view (stride 0 along D, e.g. from out.sum()): the kernels need D contiguous.
    _core.flurka_backward(method, _dl(q), _dl(k), _dl(v), _dl(dout.contiguous()), _dl(dq), _dl(dk), _dl(dv),
                          mats[0], mats[1], mats[2], _dl(dE) if proj else None, _dl(dF) if proj else None, causal,
                          layout, _dtype(q), _stream(q), 0)
    return dq, dk, dv, dE, dF


@torch.library.custom_op("splat::flurka_backward", mutates_args=())
def _flurka_backward_op(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, E: Optional[Tensor], F: Optional[Tensor],
                        W: Optional[Tensor], method: str, causal: bool,
                        layout: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _flurka_grad_launch(dout, q, k, v, E, F, W, method, causal, layout)


@_flurka_backward_op.register_fake
def _(dout, q, k, v, E, F, W, method, causal, layout):
    proj = _core.flurka_uses(method)[0]
    dE = torch.empty(E.shape, dtype=E.dtype, device=E.device) if proj else q.new_empty(0)
    dF = torch.empty(F.shape, dtype=F.dtype, device=F.device) if proj else q.new_empty(0)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dE, dF


def _flurka_setup_context(ctx, inputs, output):
    q, k, v, E, F, W, method, causal, layout = inputs
    ctx.save_for_backward(q, k, v, E, F, W)  # out is recomputed: the saved state is the inputs only
    ctx.flurka_args = (method, causal, layout)


def _flurka_backward(ctx, grad):
    q, k, v, E, F, W = ctx.saved_tensors
    method, causal, layout = ctx.flurka_args
    if causal and q.is_cuda:  # autograd of the torch formula (needs autograd, so not inside the op)
        dq, dk, dv, dE, dF = causal_flurka_grads(grad, q, k, v, E, F, W, method, layout)
    else:
        dq, dk, dv, dE, dF = torch.ops.splat.flurka_backward(grad, q, k, v, E, F, W, method, causal, layout)
    proj = _core.flurka_uses(method)[0]
    # W is a fixed random feature matrix: no gradient (flurka() refuses a W that requires one).
    return dq, dk, dv, dE if proj else None, dF if proj else None, None, None, None, None


torch.library.register_autograd("splat::flurka", _flurka_backward, setup_context=_flurka_setup_context)


class _EagerFlurka(torch.autograd.Function):
    """splat::flurka and its autograd formula without the dispatcher's wrapping (as _EagerAttention)."""

    @staticmethod
    def forward(ctx, q, k, v, E, F, W, method, causal, layout):
        out = torch.empty_like(q)
        _flurka_launch(q, k, v, out, E, F, W, method, causal, layout)
        ctx.save_for_backward(q, k, v, E, F, W)
        ctx.flurka_args = (method, causal, layout)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, k, v, E, F, W = ctx.saved_tensors
        method, causal, layout = ctx.flurka_args
        dq, dk, dv, dE, dF = _flurka_grad_launch(grad, q, k, v, E, F, W, method, causal, layout)
        proj = _core.flurka_uses(method)[0]
        return dq, dk, dv, dE if proj else None, dF if proj else None, None, None, None, None


def flurka(q, k, v, E=None, F=None, W=None, method="flurka-favor", causal=False, *, layout="bhnd"):
    """FLuRKA attention on tensors; see splat.flurka. E, F, W are cast to q's dtype."""
    if not torch.compiler.is_compiling():  # the op checks again in C++; dynamo cannot trace this call
        check_matrices(method, E, F, W)
    if W is not None and W.requires_grad and torch.is_grad_enabled():
        raise ValueError("splat: W (the random features) gets no gradient in FLuRKA; pass W.detach() "
                         "(FLuRKAAttention keeps W as a buffer)")
    E, F, W = (None if m is None else m.to(q.dtype) for m in (E, F, W))
    if _needs_op(q, k, v, E, F, W):
        if _plain_eager(q, k, v, E, F, W):
            return _EagerFlurka.apply(q, k, v, E, F, W, method, bool(causal), layout)
        return torch.ops.splat.flurka(q, k, v, E, F, W, method, bool(causal), layout)
    out = torch.empty_like(q)
    _flurka_launch(q, k, v, out, E, F, W, method, bool(causal), layout)
    return out


class FlurkaDecoder:
    """Recurrent causal FLuRKA decoding on CUDA (flurka-* methods): one token of each of batch x heads sequences
    per step(), equal to the last row of the causal forward flurka(..., causal=True) over the tokens so far.

    E, F are the chunk projections [r, C] or [heads, r, C], W the features [D, m] or [heads, D, m] (flurka-favor,
    flurka-relu); they are copied to dtype (default E's) and kept. The state (O(m D + C D) per sequence, all
    sequences at one position) is a uint8 tensor of torch's allocator; step() and reset() only launch kernels on
    the current stream (no synchronisation, no allocation with out=), so a step can be captured in a CUDA graph
    and replayed. Experimental: fp32 arithmetic, one block per sequence.
    """

    def __init__(self, E, F, W=None, method="flurka-favor", *, batch, heads, head_dim, dtype=None):
        check_matrices(method, E, F, W)
        if not _core.flurka_uses(method)[0] or method == "linformer":
            raise ValueError(f"splat: the decode step is for the causal flurka-* methods, got {method!r}")
        if not E.is_cuda:
            raise ValueError("splat: FlurkaDecoder runs on CUDA (E, F, W on the device)")
        dt = dtype or E.dtype
        self.method, self.batch, self.heads, self.head_dim = method, int(batch), int(heads), int(head_dim)
        self.E, self.F = (m.detach().to(device=E.device, dtype=dt).contiguous() for m in (E, F))
        self.W = None if W is None else W.detach().to(device=E.device, dtype=dt).contiguous()
        self._dt = _dtype(self.E)
        nbytes = _core.flurka_decode_state_bytes(method, self.batch, self.heads, self.head_dim, *self._mats(),
                                                 self._dt)
        self.state = torch.empty(int(nbytes), dtype=torch.uint8, device=E.device)
        self.reset()

    def _mats(self):
        return _dl(self.E), _dl(self.F), None if self.W is None else _dl(self.W)

    def reset(self):
        """Empties the state (position 0) on the current stream."""
        _core.flurka_decode_reset(self.method, _dl(self.state), self.batch, self.heads, self.head_dim, *self._mats(),
                                  self._dt, _stream(self.state))

    def step(self, q, k, v, out=None, *, layout="bhnd"):
        """q, k, v: [batch, heads, 1, D] (layout="bnhd": [batch, 1, heads, D]) of the state's dtype; appends
        (k, v) and returns the causal output of q (written into out when given)."""
        if out is None:
            out = torch.empty_like(q)
        _core.flurka_decode_step(self.method, _dl(self.state), _dl(q), _dl(k), _dl(v), _dl(out), *self._mats(),
                                 layout, self._dt, _stream(q))
        return out


# ---- layers ----

class SparseAttention(nn.Module):
    """Multi-head self-attention restricted to a splat pattern. x [B, N, embed_dim] -> [B, N, embed_dim].

    num_kv_heads < num_heads gives grouped-query attention; causal=True intersects the pattern with causal (use it
    for decoders). Q, K, V are strided views of one projection
    ([B, N, H, D] layout): no transposes or copies before the kernel.
    """

    def __init__(self, embed_dim, num_heads, pattern, *, num_kv_heads=None, causal=False, bias=True, scale=None,
                 device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"splat: embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError("splat: num_heads must be a multiple of num_kv_heads")
        self.head_dim = embed_dim // num_heads
        # causal=True: a decoder layer never sees the future, whatever the pattern says (pattern & causal).
        self.causal = bool(causal)
        spec = causal_pattern(pattern) if self.causal else pattern
        self.pattern = _core.canonical_pattern(spec)  # bad patterns fail here, not at the first call
        self.scale = scale
        f = dict(device=device, dtype=dtype)
        self.qkv = nn.Linear(embed_dim, (num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=bias, **f)
        self.proj = nn.Linear(num_heads * self.head_dim, embed_dim, bias=bias, **f)

    def forward(self, x):
        b, n, _ = x.shape
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([h * d, hk * d, hk * d], dim=-1)
        o = attention(q.view(b, n, h, d), k.view(b, n, hk, d), v.view(b, n, hk, d), pattern=self.pattern,
                      scale=self.scale, layout="bnhd")
        return self.proj(o.reshape(b, n, h * d))

    def extra_repr(self):
        return (f"pattern='{self.pattern}', heads={self.num_heads}, kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, causal={self.causal}")


class FLuRKAAttention(nn.Module):
    """FLuRKA self-attention layer. x [B, seq_len, embed_dim] -> same shape.

    Owns learned projections E, F ([rank, seq_len], or [rank, chunk] when causal; per head with
    per_head=True) and random features W [head_dim, num_features] kept as a buffer: fixed by default,
    redrawn by redraw_features() (call it e.g. every few hundred steps).
    """

    def __init__(self, embed_dim, num_heads, seq_len, rank, *, num_features=None, method="flurka-favor",
                 causal=False, chunk=None, per_head=False, bias=True, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"splat: embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        self.num_heads, self.head_dim, self.seq_len = num_heads, embed_dim // num_heads, seq_len
        self.method, self.causal = method, bool(causal)
        needs_proj, needs_w = _core.flurka_uses(method)
        cols = (chunk or seq_len) if causal else seq_len
        if causal and chunk is None:
            raise ValueError("splat: causal FLuRKA needs chunk= (the chunk length C of E, F [rank, C])")
        f = dict(device=device, dtype=dtype)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **f)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias, **f)
        shape = (num_heads, rank, cols) if per_head else (rank, cols)
        if needs_proj:
            self.E = nn.Parameter(torch.randn(shape, **f) / math.sqrt(cols))
            self.F = nn.Parameter(torch.randn(shape, **f) / math.sqrt(cols))
        else:
            self.E = self.F = None
        self.num_features = num_features or self.head_dim
        if needs_w:
            wshape = (num_heads, self.head_dim, self.num_features) if per_head else (self.head_dim, self.num_features)
            self.register_buffer("W", torch.randn(wshape, **f))
        else:
            self.W = None

    @torch.no_grad()
    def redraw_features(self, generator=None):
        """Draws fresh Gaussian random features W (FAVOR+/ReLU maps); no-op for methods without W."""
        if self.W is not None:
            self.W.copy_(torch.randn(self.W.shape, generator=generator, device=self.W.device, dtype=self.W.dtype))

    def forward(self, x):
        b, n, e = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).split([e, e, e], dim=-1)
        o = flurka(q.view(b, n, h, d), k.view(b, n, h, d), v.view(b, n, h, d), self.E, self.F, self.W,
                   method=self.method, causal=self.causal, layout="bnhd")
        return self.proj(o.reshape(b, n, e))

    def extra_repr(self):
        return f"method='{self.method}', heads={self.num_heads}, head_dim={self.head_dim}, causal={self.causal}"


# ---- serving: decode against a KV cache, packed varlen attention (ops in splat._torch_serving) ----
from ._torch_serving import decode, varlen_attention  # noqa: E402

__all__ += ["decode", "varlen_attention"]
