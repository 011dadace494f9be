"""The attention of the language model, chosen by one string (the only thing that changes between runs).

    sdpa                          full softmax attention, torch.nn.functional.scaled_dot_product_attention
    sdpa:backend=flash            ... forcing one backend (cudnn, flash, efficient, math)
    splat:PATTERN                 splat.torch.attention with a pattern, e.g. splat:window:w=256,
                                  splat:(causal_window:w=512+sink:g=4)&causal
    flurka-favor:k=256,m=128      splat.torch.flurka; also flurka-elu (m = head_dim), flurka-relu,
    linformer:k=256               the parents linformer, performer (FAVOR+), performer-relu, linear
    performer:m=128

k is the Linformer rank (rows of E, F), m the number of random features. In the causal task the flurka-*
methods use splat's chunked causal form: c (chunk length, default 256) and r (rank per chunk, default 64).
Every module maps q, k, v [B, N, H, D] to [B, N, H, D].
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

SDPA_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
_METHODS = ("flurka-favor", "flurka-elu", "flurka-relu", "linformer", "performer", "performer-favor",
            "performer-relu", "linear")


def _params(text, allowed, spec):
    out = {}
    for item in filter(None, text.split(",")):
        key, eq, val = item.partition("=")
        if not eq or key not in allowed:
            raise ValueError(f"attention '{spec}': unknown parameter '{item}' (allowed: {', '.join(allowed)})")
        out[key] = val
    return out


class SdpaAttention(nn.Module):
    """Exact attention. backend=None lets PyTorch choose (on CUDA: cuDNN, flash or memory-efficient)."""

    def __init__(self, causal, backend=None):
        super().__init__()
        self.causal, self.backend = causal, backend

    def forward(self, q, k, v):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, N, D] views, D stays contiguous
        if self.backend is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            with sdpa_kernel(SDPA_BACKENDS[self.backend]):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return o.transpose(1, 2)

    def extra_repr(self):
        return f"causal={self.causal}, backend={self.backend or 'auto'}"


class SplatAttention(nn.Module):
    """Sparse attention over a splat pattern (the pattern itself says whether it is causal)."""

    def __init__(self, pattern, causal):
        super().__init__()
        import splat
        import splat.torch  # noqa: F401  (registers the ops)
        if causal:  # a causal LM must not see later tokens: check the pattern on a small prefix
            n = 512
            mask = torch.as_tensor(splat.dense_mask(pattern, n)).bool()
            if mask.triu(1).any():
                raise ValueError(f"pattern '{pattern}' lets tokens see later tokens; the causal task needs a "
                                 f"causal pattern (e.g. causal_window:w=512, or '({pattern})&causal')")
        self.pattern = pattern

    def forward(self, q, k, v):
        import splat.torch
        return splat.torch.attention(q, k, v, pattern=self.pattern, layout="bnhd")

    def extra_repr(self):
        return f"pattern='{self.pattern}'"


def pooling(rows, cols):
    """[rows, cols] mean pooling of consecutive tokens: an untrained projection that keeps K, V's scale
    (random Gaussian E, F change it; see docs/FLURKA.md, 'Quality')."""
    e = torch.zeros(rows, cols)
    edges = torch.linspace(0, cols, rows + 1).round().long()
    for r in range(rows):
        a, b = int(edges[r]), max(int(edges[r + 1]), int(edges[r]) + 1)
        e[r, a:b] = 1.0 / (b - a)
    return e


class FlurkaAttention(nn.Module):
    """FLuRKA or a parent through splat.torch.flurka. E, F are learned (shared by the heads, initialised
    as mean pooling); the random features W [D, m] are a fixed buffer drawn from seed."""

    def __init__(self, method, seq_len, head_dim, causal, k=256, m=128, c=256, r=64, seed=0):
        super().__init__()
        if method not in _METHODS:
            raise ValueError(f"unknown FLuRKA method '{method}' (one of {', '.join(_METHODS)})")
        if causal and not method.startswith("flurka"):
            raise ValueError(f"{method} has no causal form in splat; the causal task takes flurka-* methods")
        self.method, self.causal = method, causal
        needs_proj = method.startswith("flurka") or method == "linformer"
        needs_w = method.endswith("favor") or method.endswith("relu") or method == "performer"
        if needs_proj:
            rows, cols = (r, c) if causal else (min(k, seq_len), seq_len)
            self.E = nn.Parameter(pooling(rows, cols))
            self.F = nn.Parameter(pooling(rows, cols))
        else:
            self.E = self.F = None
        if needs_w:
            g = torch.Generator().manual_seed(seed)
            self.register_buffer("W", torch.randn(head_dim, m, generator=g))
        else:
            self.W = None

    def forward(self, q, k, v):
        import splat.torch
        return splat.torch.flurka(q, k, v, self.E, self.F, self.W, method=self.method, causal=self.causal,
                                  layout="bnhd")

    def extra_repr(self):
        shapes = ", ".join(f"{n}={list(t.shape)}" for n, t in (("E", self.E), ("W", self.W)) if t is not None)
        return f"method='{self.method}', causal={self.causal}, {shapes}"


def make_attention(spec, *, seq_len, head_dim, causal, seed=0):
    """The attention module that spec names (see the module docstring)."""
    name, _, rest = spec.partition(":")
    if name == "sdpa":
        backend = _params(rest, ("backend",), spec).get("backend")
        if backend is not None and backend not in SDPA_BACKENDS:
            raise ValueError(f"attention '{spec}': backend must be one of {', '.join(SDPA_BACKENDS)}")
        return SdpaAttention(causal, backend)
    if name == "splat":
        if not rest:
            raise ValueError("attention 'splat:PATTERN' needs a pattern, e.g. splat:window:w=256")
        return SplatAttention(rest, causal)
    if name in _METHODS:
        p = {key: int(val) for key, val in _params(rest, ("k", "m", "c", "r"), spec).items()}
        return FlurkaAttention(name, seq_len, head_dim, causal, seed=seed, **p)
    raise ValueError(f"unknown attention '{spec}' (sdpa, splat:PATTERN, or one of {', '.join(_METHODS)})")

