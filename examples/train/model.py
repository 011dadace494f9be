"""A small byte-level transformer language model whose attention is one argument.

    model = ByteLM(ModelConfig(seq_len=4096), attention="splat:window:w=256")
    logits = model(ids)                         # ids [B, N] int64 in [0, 257) -> [B, N, 257]

Pre-norm blocks (LayerNorm, rotary positions on q and k, GELU MLP), tied input/output embeddings.
Vocabulary: the 256 byte values plus one [MASK] id (256) for masked-LM pre-training.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attention import make_attention

VOCAB = 257
MASK_ID = 256


@dataclass
class ModelConfig:
    seq_len: int = 4096
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    mlp_ratio: int = 4
    causal: bool = False
    rope_base: float = 10000.0


def rotary_tables(seq_len, head_dim, base):
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None, :]  # [N, D/2]
    return ang.cos().float(), ang.sin().float()


def apply_rotary(x, cos, sin):
    """x [B, N, H, D]: rotates each (even, odd) pair of channels by its position's angle."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg, attention, layer):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, d // cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.attn = make_attention(attention, seq_len=cfg.seq_len, head_dim=self.head_dim, causal=cfg.causal,
                                   seed=layer)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))

    def forward(self, x, cos, sin):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.n_heads, self.head_dim).unbind(2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        o = self.attn(q, k, v.to(q.dtype))  # [B, N, H, D]
        x = x + self.proj(o.reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class ByteLM(nn.Module):
    def __init__(self, cfg, attention="sdpa"):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not a multiple of n_heads {cfg.n_heads}")
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, attention, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        cos, sin = rotary_tables(cfg.seq_len, cfg.d_model // cfg.n_heads, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def hidden(self, ids):
        n = ids.shape[1]
        if n != self.cfg.seq_len:  # Linformer-style projections are [k, seq_len]: one length per model
            raise ValueError(f"sequence length {n} != the model's seq_len {self.cfg.seq_len}")
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        return self.ln_f(x)

    def logits(self, h):
        return F.linear(h, self.embed.weight)  # tied embeddings

    def forward(self, ids):
        return self.logits(self.hidden(ids))

    def loss(self, ids, targets, select=None):
        """Mean cross-entropy (nats) over the scored positions: select [B, N] bool (masked-LM), or, with
        select=None, every position whose target is not -100."""
        h = self.hidden(ids)
        if select is not None:
            h, targets = h[select], targets[select]
        logits = self.logits(h).float()
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
