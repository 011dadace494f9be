"""float64 NumPy FLuRKA reference: the formulas of include/splat/flurka.hpp evaluated literally."""

import numpy as np

FEATURE = {"flurka-favor": "favor", "flurka-elu": "elu", "flurka-relu": "relu", "linformer": None,
           "performer-favor": "favor", "performer-relu": "relu", "linear": "elu"}
PROJECTED = {"flurka-favor", "flurka-elu", "flurka-relu", "linformer"}


def phi(x, fmap, w):
    """x [..., n, D]; w [D, m] (or per head broadcastable [H, D, m])."""
    d = x.shape[-1]
    if fmap == "elu":
        return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0)))  # elu(x) + 1
    s = d ** -0.25
    m = w.shape[-1]
    xw = (s * x) @ w
    if fmap == "favor":
        return np.exp(xw - 0.5 * np.sum((s * x) ** 2, axis=-1, keepdims=True)) / np.sqrt(m)
    return np.maximum(xw, 0.0) / np.sqrt(m)


def _heads(m):
    """[k, N] -> [1, k, N] (shared); [H, k, N] stays; then broadcast over batch as [1, H, k, N]."""
    m = np.asarray(m, np.float64)
    return m[None, None] if m.ndim == 2 else m[None]


def kernel_attention(q, kk, vv, fmap, w):
    pq, pk = phi(q, fmap, w), phi(kk, fmap, w)
    num = pq @ (np.swapaxes(pk, -1, -2) @ vv)
    den = pq @ np.swapaxes(pk, -1, -2).sum(-1, keepdims=True)
    return np.where(den != 0, num / np.where(den != 0, den, 1.0), 0.0)


def flurka(method, q, k, v, E=None, F=None, W=None):
    """q [B,H,Nq,D], k, v [B,H,N,D] -> [B,H,Nq,D] float64."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    w = None if W is None else _heads(W)
    if method in PROJECTED:
        k = _heads(E) @ k
        v = _heads(F) @ v
    fmap = FEATURE[method]
    if fmap is None:  # linformer: softmax over the projected keys
        s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)) @ v
    return kernel_attention(q, k, v, fmap, w)


def flurka_causal(method, q, k, v, E, F, W=None):
    """Chunked causal FLuRKA: kernel state of earlier chunks + exact softmax within the chunk (one normaliser)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    e, f = _heads(E), _heads(F)
    w = None if W is None else _heads(W)
    fmap = FEATURE[method]
    b, h, n, d = q.shape
    c = e.shape[-1]
    out = np.zeros_like(q)
    s_acc, z_acc = 0.0, 0.0
    for c0 in range(0, n, c):
        c1 = min(n, c0 + c)
        qc, kc, vc = q[:, :, c0:c1], k[:, :, c0:c1], v[:, :, c0:c1]
        pq = phi(qc, fmap, w)
        scores = np.exp(qc @ np.swapaxes(kc, -1, -2) / np.sqrt(d))
        scores = scores * np.tril(np.ones((c1 - c0, c1 - c0)))
        num = scores @ vc + (pq @ s_acc if not np.isscalar(s_acc) else 0.0)
        den = scores.sum(-1, keepdims=True) + (pq @ z_acc if not np.isscalar(z_acc) else 0.0)
        out[:, :, c0:c1] = num / den
        if c1 - c0 == c:  # a full chunk joins the kernel state of later chunks
            pk = phi(e @ kc, fmap, w)
            vp = f @ vc
            s_acc = s_acc + np.swapaxes(pk, -1, -2) @ vp
            z_acc = z_acc + np.swapaxes(pk, -1, -2).sum(-1, keepdims=True)
    return out


def causal_inputs(method, b, h, n, d, c, r, m, per_head=True, seed=0):
    """Fresh float32 inputs of causal FLuRKA: q, k, v [b, h, n, d]; E, F chunk projections [(h,) r, c] of rows of
    unit norm on average; W [(h,) d, m] (None for flurka-elu, whose features are elu(x) + 1)."""
    g = np.random.default_rng(seed)
    q, k, v = (g.standard_normal((b, h, n, d)).astype(np.float32) for _ in range(3))
    pre = (h,) if per_head else ()
    E = (g.standard_normal(pre + (r, c)) / np.sqrt(c)).astype(np.float32)
    F = (g.standard_normal(pre + (r, c)) / np.sqrt(c)).astype(np.float32)
    W = g.standard_normal(pre + (d, m)).astype(np.float32) if method != "flurka-elu" else None
    return q, k, v, E, F, W


def rel(a, b):
    """Relative Frobenius error of a against the float64 b."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
