"""Causal FLuRKA (the chunked formula of include/splat/flurka.hpp) written in plain torch operations, for the
gradients of causal calls on CUDA tensors: splat has no causal CUDA backward kernel yet, so the backward recomputes
this formula with torch autograd on the device (float32 or wider; O(B H N (C + m)) memory, as eager attention
over the chunk plus the features of every row).

Per chunk c of C rows: exact softmax over the keys j <= i of the chunk, and the kernel state of the chunks before
it as m "history slots" in the same softmax (favor: logit log phi(q)_l + log z_l, value S_l / z_l) or the same
normaliser (relu, elu: weights phi(q)_l z_l). The stabilisers (favor's per-feature shift, the row maximum) are
constants of the formula, as in the C++ backward.
"""

import math

import torch
import torch.nn.functional as tnf

_MAP = {"flurka-favor": "favor", "flurka-elu": "elu", "flurka-relu": "relu"}


def _chunks(x, n_chunks, chunk):
    b, h, n, d = x.shape
    return tnf.pad(x, (0, 0, 0, n_chunks * chunk - n)).view(b, h, n_chunks, chunk, d)


def _stack(mat):
    """[r, C] -> broadcast as [1, 1, 1, r, C]; [H, r, C] -> [1, H, 1, r, C] (likewise W [D, m] / [H, D, m])."""
    return mat[None, None, None] if mat.dim() == 2 else mat[None, :, None]


def causal_flurka(q, k, v, E, F, W, method):
    """q, k, v [B, H, N, D] ("bhnd"); E, F [r, C] or [H, r, C]; W [D, m] or [H, D, m] (favor / relu)."""
    fmap = _MAP.get(method)
    if fmap is None:
        raise ValueError(f"splat: causal FLuRKA is defined for flurka-favor, flurka-elu, flurka-relu, got {method!r}")
    b, h, n, d = q.shape
    chunk = E.shape[-1]
    nc = -(-n // chunk)
    qc, kc, vc = (_chunks(x, nc, chunk) for x in (q, k, v))
    scores = qc @ kc.transpose(-1, -2) / math.sqrt(d)  # [B, H, nc, C, C]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    if nc == 1:  # one chunk: no history
        out = torch.softmax(scores, -1) @ vc
        return out.reshape(b, h, nc * chunk, d)[:, :, :n]
    s = d ** -0.25
    kp = _stack(E) @ kc[:, :, :-1]  # the full chunks a later chunk reads: [B, H, nc - 1, r, D]
    vp = _stack(F) @ vc[:, :, :-1]
    w = None if W is None else _stack(W)
    if fmap == "favor":
        lk = (s * kp) @ w - 0.5 * (s * kp).pow(2).sum(-1, keepdim=True)  # log phi(k') without the 1/sqrt(m)
        shift = lk.detach().amax(dim=(2, 3), keepdim=True)  # per (b, h, feature): a constant, cancels
        pk = torch.exp(lk - shift)
    elif fmap == "relu":
        pk = torch.relu((s * kp) @ w)
    else:
        pk = tnf.elu(kp) + 1
    # state after chunks 0 .. c, shifted by one: chunk c reads the chunks before it
    S = tnf.pad(torch.cumsum(pk.transpose(-1, -2) @ vp, 2), (0, 0, 0, 0, 1, 0))  # [B, H, nc, m, D]
    z = tnf.pad(torch.cumsum(pk.sum(-2), 2), (0, 0, 1, 0))  # [B, H, nc, m]
    if fmap == "favor":
        m = w.shape[-1]
        lq = (s * qc) @ w - 0.5 * (s * qc).pow(2).sum(-1, keepdim=True) - math.log(m)  # the two 1/sqrt(m)
        has = z > 0
        zs = torch.where(has, z, torch.ones_like(z))
        slot = torch.where(has, torch.log(zs), torch.full_like(zs, float("-inf"))) + shift.squeeze(3)
        p = torch.softmax(torch.cat([lq + slot[:, :, :, None, :], scores], -1), -1)
        out = p[..., :m] @ (S / zs[..., None]) + p[..., m:] @ vc
    else:
        pq = torch.relu((s * qc) @ w) / w.shape[-1] if fmap == "relu" else tnf.elu(qc) + 1
        hv, hz = pq @ S, pq @ z[..., None]  # history numerator [.., C, D] and weight [.., C, 1]
        mx = torch.maximum(scores.amax(-1, keepdim=True), torch.log(hz)).detach()
        es = torch.exp(scores - mx)
        g = torch.exp(-mx)
        out = (hv * g + es @ vc) / (hz * g + es.sum(-1, keepdim=True))
    return out.reshape(b, h, nc * chunk, d)[:, :, :n]


def causal_flurka_grads(dout, q, k, v, E, F, W, method, layout):
    """(dq, dk, dv, dE, dF) of sum(out * dout) through causal_flurka, computed in float32 (float64 stays)."""
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    xs = [t.detach().to(work).requires_grad_(True) for t in (q, k, v, E, F)]
    wf = None if W is None else W.detach().to(work)
    with torch.enable_grad():
        qq, kk, vv = xs[:3]
        if layout == "bnhd":
            qq, kk, vv = (t.transpose(1, 2) for t in (qq, kk, vv))
        out = causal_flurka(qq, kk, vv, xs[3], xs[4], wf, method)
        if layout == "bnhd":
            out = out.transpose(1, 2)
        grads = torch.autograd.grad(out, xs, dout.to(work), allow_unused=True)  # E, F unused with one chunk
    return tuple(torch.zeros_like(t) if g is None else g.to(t.dtype) for g, t in zip(grads, (q, k, v, E, F)))
