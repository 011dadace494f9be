"""Context-parallel forward and backward of one rank: messages from _cp_comm, tasks from _cp_plan, local splat ops.

Tensors here are [B, H, n, D] (the caller turns 'bnhd' views around). Partial results of the same queries over
different keys merge through their log-sum-exp; the backward of a partial uses the merged out and lse (so every
partial's P = exp(S - lse) is its share of the true softmax) and the gradient of a received key row is sent back to
its owner, which adds it to its dk / dv.
"""

import torch

from . import _cp_geometry as geo
from ._plans import _masks as registered_masks, register_mask


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


class KeyStore:
    """Key and value rows by global position: own segments (views of k, v) and received intervals."""

    def __init__(self, segments, k, v):
        self.pieces = []  # (lo, hi, k rows, v rows, own)
        off = 0
        for lo, hi in segments:
            self.pieces.append((lo, hi, k[..., off:off + hi - lo, :], v[..., off:off + hi - lo, :], True))
            off += hi - lo

    def add(self, ivs, kv):
        off = 0
        for lo, hi in ivs:
            self.pieces.append((lo, hi, kv[0, ..., off:off + hi - lo, :], kv[1, ..., off:off + hi - lo, :], False))
            off += hi - lo
        self.pieces.sort(key=lambda p: p[0])

    def has(self, ivs):
        return not geo.subtract(ivs, [(p[0], p[1]) for p in self.pieces])

    def _parts(self, ivs):
        for lo, hi in ivs:
            for idx, (p0, p1, *_rest) in enumerate(self.pieces):
                a, b = max(lo, p0), min(hi, p1)
                if a < b:
                    yield idx, a - p0, b - p0

    def rows(self, ivs):
        ks, vs = [], []
        for idx, a, b in self._parts(ivs):
            ks.append(self.pieces[idx][2][..., a:b, :])
            vs.append(self.pieces[idx][3][..., a:b, :])
        return (ks[0], vs[0]) if len(ks) == 1 else (torch.cat(ks, -2), torch.cat(vs, -2))

    def grads(self, dk, dv):
        """A GradStore over the same pieces: own rows accumulate into dk / dv, received rows into buffers."""
        return GradStore(self, dk, dv)


class GradStore:
    def __init__(self, store, dk, dv):
        self.store, self.bufs = store, []
        off = 0
        for lo, hi, k, _v, own in store.pieces:
            if own:
                self.bufs.append((dk[..., off:off + hi - lo, :], dv[..., off:off + hi - lo, :]))
                off += hi - lo
            else:
                self.bufs.append((torch.zeros(k.shape, dtype=dk.dtype, device=dk.device),
                                  torch.zeros(k.shape, dtype=dk.dtype, device=dk.device)))

    def add(self, ivs, gk, gv):
        off = 0
        for idx, a, b in self.store._parts(ivs):
            self.bufs[idx][0][..., a:b, :] += gk[..., off:off + b - a, :]
            self.bufs[idx][1][..., a:b, :] += gv[..., off:off + b - a, :]
            off += b - a

    def received(self, ivs, dtype):
        """The gradient of received rows ivs as one [2, B, Hk, rows, D] message."""
        gk, gv = [], []
        for idx, a, b in self.store._parts(ivs):
            gk.append(self.bufs[idx][0][..., a:b, :])
            gv.append(self.bufs[idx][1][..., a:b, :])
        return torch.stack([torch.cat(gk, -2), torch.cat(gv, -2)]).to(dtype)


def local_slices(segments, ivs):
    """(local row start, local row end, offset in ivs' concatenation) for position intervals inside own rows."""
    out, seg_off, off = [], [], 0
    for lo, hi in segments:
        seg_off.append((lo, hi, off))
        off += hi - lo
    pos = 0
    for lo, hi in ivs:
        for s0, s1, so in seg_off:
            a, b = max(lo, s0), min(hi, s1)
            if a < b:
                out.append((so + a - s0, so + b - s0, pos + a - lo))
        pos += hi - lo
    return out


def gather_rows(x, segments, ivs):
    parts = [x[..., a:b, :] for a, b, _ in local_slices(segments, ivs)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, -2)


def _ext(task, qrows, store, q_like, kv_like):
    b, h, _, d = q_like.shape
    nq, m = qrows.shape[-2], task.m
    q_ext = qrows.new_zeros((b, h, m, d))
    q_ext[..., task.q_off:task.q_off + nq, :] = qrows
    kr, vr = store.rows(task.kpos)
    if task.k_off == 0 and kr.shape[-2] == m:
        return q_ext, kr, vr
    k_ext = kv_like.new_zeros((b, kv_like.shape[1], m, d))
    v_ext = kv_like.new_zeros((b, kv_like.shape[1], m, d))
    k_ext[..., task.k_off:task.k_off + kr.shape[-2], :] = kr
    v_ext[..., task.k_off:task.k_off + kr.shape[-2], :] = vr
    return q_ext, k_ext, v_ext


def _spec(task):
    # masks are registered once (hashing a reach-sized mask per call would cost more than the call)
    if task.spec is not None:
        return task.spec
    if task.mask_name is None or task.mask_name not in registered_masks:
        task.mask_name = register_mask(task.mask())
    return task.mask_name


def run_task(task, qrows, store, q_like, kv_like, scale):
    """(out, lse) of the task's queries: [B, H, nq, D] and float32 [B, H, nq]."""
    import splat.torch as st

    q_ext, k_ext, v_ext = _ext(task, qrows, store, q_like, kv_like)
    o, lse = st.attention(q_ext, k_ext, v_ext, pattern=_spec(task), scale=scale, return_lse=True)
    nq = qrows.shape[-2]
    return o[..., task.q_off:task.q_off + nq, :], lse[..., task.q_off:task.q_off + nq]


def task_backward(task, qrows, store, q_like, kv_like, dout, out, lse, own_lse, scale):
    """(dq of the queries, dk and dv of the task's keys) given the merged out and lse of its query rows and the
    task's own lse from the forward.

    The backward ops take the merged lse: then P = exp(S - lse) is the task's share of the merged softmax and the
    gradients are exactly the merged ones. The CPU float64 backward recomputes the lse from the task's own keys
    instead; there the task's softmax P' = exp(S - own_lse) equals P / c with c = exp(own_lse - lse) per row, so
    dout scaled by c gives the same gradients (not done for other dtypes: rounding the scaled dout to bf16 costs
    precision)."""
    import splat.torch  # noqa: F401  (registers torch.ops.splat.*)

    q_ext, k_ext, v_ext = _ext(task, qrows, store, q_like, kv_like)
    rows = slice(task.q_off, task.q_off + qrows.shape[-2])
    if dout.dtype == torch.float64:
        c = torch.exp(own_lse.double() - lse.double()).nan_to_num(0.0)  # 0 where the task gave the row no keys
        dout, lse = dout * c[..., None], own_lse
    o_ext, do_ext = torch.zeros_like(q_ext), torch.zeros_like(q_ext)
    o_ext[..., rows, :], do_ext[..., rows, :] = out, dout
    l_ext = torch.zeros(q_ext.shape[:-1], dtype=torch.float32, device=q_ext.device)
    l_ext[..., rows] = lse  # zero rows: q = 0 and lse = 0 keep P finite; dout = 0 makes their share zero
    dq, dk, dv = torch.ops.splat.attention_bwd(do_ext, q_ext, k_ext, v_ext, o_ext, l_ext, _spec(task),
                                               0.0 if scale is None else float(scale), "bhnd")
    nk = geo.total(task.kpos)
    keys = slice(task.k_off, task.k_off + nk)
    return dq[..., rows, :], dk[..., keys, :], dv[..., keys, :]


def merge(acc_o, acc_l, slices, o, lse):
    """acc_o[rows], acc_l[rows] <- the log-sum-exp merge of themselves and (o, lse) (lse -inf: no keys).

    acc_o may start poisoned (NaN): a row's first merge replaces it (weight 0 drops the old value)."""
    for a, b, off in slices:
        lo, lp = acc_l[..., a:b], lse[..., off:off + b - a].to(acc_l.dtype)
        new = torch.logaddexp(lo, lp)
        wa = torch.exp(lo - new).nan_to_num(0.0)[..., None]
        wb = torch.exp(lp - new).nan_to_num(0.0)[..., None]
        old = torch.where(wa > 0, acc_o[..., a:b, :] * wa, 0.0)
        acc_o[..., a:b, :] = old + o[..., off:off + b - a, :].to(acc_o.dtype) * wb
        acc_l[..., a:b] = new


def finish(acc_o, acc_l):
    """Rows without any key (lse -inf) give zeros, as splat's kernels do; NaN elsewhere would be a planner bug."""
    acc_o.masked_fill_(torch.isneginf(acc_l)[..., None], 0.0)
