"""Context parallelism: sparse attention over a sequence sharded across the ranks of a torch.distributed group.

    import splat.distributed as sd
    q_loc = sd.shard(q, rank, world, sharding="contiguous")          # [B, H, n_r, D]: this rank's rows
    out_loc = sd.attention(q_loc, k_loc, v_loc, pattern="window:w=512", seq_len=N)   # differentiable

Every rank passes its own rows (shard_segments(N, world, sharding)[rank], concatenated in that order) and the
same pattern, N and sharding. The pattern's geometry (its ACSR and transpose) decides what travels: banded patterns exchange halos with
neighbours only, sink / global columns are gathered, global rows are reduced at their owner, everything else
falls back to a ring-like exchange that skips (query shard, key shard) pairs without nonzeros. See
docs/DISTRIBUTED.md. torch.distributed is imported on first use only (import splat never needs it).
"""

import torch

from . import _cp_comm as comm
from . import _cp_geometry as geo
from . import _cp_plan as cpp
from . import _cp_ring as ring
from ._cp_model import busiest_rank_bytes, comm_bytes, scaling_table
from ._cp_run import KeyStore, _acc_dtype, finish, gather_rows, local_slices, merge, run_task, task_backward
from ._plans import pattern_name

__all__ = ["attention", "shard", "shard_segments", "shard_sizes", "comm_bytes", "comm_stats", "reset_comm_stats",
           "scaling_table", "busiest_rank_bytes", "plans"]

comm_stats, reset_comm_stats = comm.comm_stats, comm.reset_comm_stats
shard_segments = geo.shard_segments
plans = cpp.plans


def shard_sizes(n, world, sharding="contiguous"):
    """Rows held by each rank."""
    return [geo.total(s) for s in geo.shard_segments(n, world, sharding)]


def shard(x, rank, world, sharding="contiguous", dim=-2):
    """This rank's rows of a full-sequence tensor x (along dim), in local order."""
    n = x.shape[dim]
    parts = [x.narrow(dim, lo, hi - lo) for lo, hi in geo.shard_segments(n, world, sharding)[rank]]
    if not parts:  # fewer rows than ranks: this one holds none
        return x.narrow(dim, 0, 0)
    return torch.cat(parts, dim) if len(parts) != 1 else parts[0]


def _check(q, k, v, layout):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"splat: {name} must be a torch.Tensor")
        if t.dim() != 4:
            raise ValueError(f"splat: {name} must be 4-D ([B, H, n, D] or [B, n, H, D]), got shape {tuple(t.shape)}")
    if layout not in ("bhnd", "bnhd"):
        raise ValueError(f"splat: layout must be 'bhnd' or 'bnhd', got {layout!r}")
    if k.shape != v.shape or k.dtype != q.dtype or v.dtype != q.dtype or k.device != q.device or v.device != q.device:
        raise ValueError("splat: k and v must have one shape, and q, k, v one dtype and device")


def attention(q, k, v, pattern, *, seq_len, group=None, sharding="contiguous", strategy="auto", overlap=True,
              scale=None, layout="bhnd", return_lse=False):
    """Sequence-sharded attention: this rank's query rows against all keys the pattern gives them.

    q [B, H, n_r, D], k, v [B, Hk, n_r, D] (layout 'bhnd'; 'bnhd' is [B, n_r, H, D]); Hk divides H (GQA). n_r is
    shard_sizes(seq_len, world, sharding)[rank]; pattern is a spec string or a boolean [N, N] mask (the same on
    every rank). sharding: 'contiguous' (rank r holds rows [r*N/world...] of split_sizes) or 'zigzag' (pieces r and
    2*world-1-r of 2*world: balances causal work). strategy: 'auto' (the halo where it moves fewer rows than the
    ring, by the pattern's ACSR geometry), 'halo' or 'ring' (forced; both work for any pattern). overlap=True: the
    shard's own keys are one call that runs while the halos travel, each halo a reach-sized block (no wasted
    rows); False: one call per segment over [halo | shard | halo] (its halo rows are computed and dropped).
    Differentiable (dq, dk, dv; the backward sends halo gradients back to their owners). return_lse: also the
    float32 row log-sum-exp [B, H, n_r]. Inputs are checked on each rank: a rank that raises leaves the others
    waiting for its messages, as with any collective.
    """
    _check(q, k, v, layout)
    d = comm.dist()
    if not d.is_initialized():
        raise RuntimeError("splat: torch.distributed is not initialised (call init_process_group first)")
    world, rank = d.get_world_size(group), d.get_rank(group)
    n = int(seq_len)
    spec = pattern_name(pattern, n)
    ps = cpp.plans(spec, n, world, sharding, strategy, overlap)
    if layout == "bnhd":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    nl = geo.total(ps[rank].segments)
    if q.shape[2] != nl or k.shape[2] != nl:
        raise ValueError(f"splat: rank {rank} holds {nl} of {n} rows with sharding={sharding!r}, "
                         f"got q with {q.shape[2]} and k with {k.shape[2]}")
    if q.shape[1] % k.shape[1] or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError("splat: q [B, H, n, D] and k [B, Hk, n, D] need equal B and D, and Hk dividing H")
    out, lse = _CPAttention.apply(q, k, v, ps[rank], scale, group)
    if layout == "bnhd":
        out = out.transpose(1, 2)
    return (out, lse) if return_lse else out


class _CPAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan, scale, group):
        with torch.no_grad():
            if plan.strategy == "ring":  # streamed: whole key shards are neither kept nor all held at once
                (out, lse, own), store, gq = ring.forward(plan, q, k, v, scale, group), None, None
            else:
                out, lse, store, gq, own = _forward(plan, q, k, v, scale, group)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale, ctx.group, ctx.store, ctx.gq, ctx.own = plan, scale, group, store, gq, own
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        with torch.no_grad():
            if ctx.plan.strategy == "ring":
                dq, dk, dv = ring.backward(ctx.plan, q, k, v, out, lse, dout, ctx.own, ctx.scale, ctx.group)
            else:
                dq, dk, dv = _backward(ctx.plan, q, k, v, out, lse, dout, ctx.store, ctx.gq, ctx.own, ctx.scale,
                                       ctx.group)
        ctx.store = ctx.gq = ctx.own = None
        return dq, dk, dv, None, None, None


def _queries(task, plan, q, gq):
    return gather_rows(q, plan.segments, task.qpos) if task.owner in (-1, plan.rank) else gq[task.owner]


def _sources(plan, task):
    """The messages a task reads: source ranks, and ("b", i) for broadcast i of the gathered columns."""
    return ([src for src, ivs in sorted(plan.recv.items()) if geo.intersect(ivs, task.kpos)]
            + [("b", i) for i, (o, iv) in enumerate(plan.bcast) if o != plan.rank and geo.intersect([iv], task.kpos)])


def _row_broadcasts(plan, xs, shapes, dtypes, group, phase):
    """The global rows' broadcasts (rows of each x in xs, [B, H, n, D] -> [B, H, rows, D]; shapes (B, H, D)), started
    on every rank in the plan's order: {owner: ([buffers], [requests])}."""
    out = {}
    for o, ng in plan.grow_bcast:
        bufs, reqs = [], []
        for x, shape, dtype in zip(xs, shapes, dtypes):
            if o == plan.rank:
                buf = gather_rows(x, plan.segments, plan.grow_q).contiguous()
            else:  # poisoned until it arrives
                buf = torch.full(shape[:2] + (ng,) + shape[2:], float("nan"), dtype=dtype, device=x.device)
            bufs.append(buf)
            reqs.append(comm.broadcast(buf, o, group, phase, o == plan.rank))
        out[o] = (bufs, reqs)
    return out


def _broadcasts(plan, store, b, hk, d, k, group):
    """The gathered columns' broadcasts, started on every rank in the plan's order: {("b", i): (buffer, request)}."""
    out = {}
    for i, (o, (lo, hi)) in enumerate(plan.bcast):
        if o == plan.rank:
            buf = torch.stack(store.rows([(lo, hi)])).contiguous()
        else:  # poisoned until it arrives
            buf = torch.full((2, b, hk, hi - lo, d), float("nan"), dtype=k.dtype, device=k.device)
        out[("b", i)] = (buf, comm.broadcast(buf, o, group, "forward", o == plan.rank))
    return out


def _forward(plan, q, k, v, scale, group):
    b, h, nl, d = q.shape
    hk = k.shape[1]
    store = KeyStore(plan.segments, k, v)
    # one batch: key/value rows to and from the neighbours (or key shards), global query rows to the helpers
    first = comm.Batch(group, "forward")
    for dst, ivs in sorted(plan.send.items()):
        first.send(torch.stack(store.rows(ivs)), dst, comm.KV)
    got = {src: first.recv((2, b, hk, geo.total(ivs), d), k.dtype, k.device, src, comm.KV)
           for src, ivs in sorted(plan.recv.items())}
    by_bcast = {o for o, _ in plan.grow_bcast}
    if plan.grow_q_send and plan.rank not in by_bcast:
        qg = gather_rows(q, plan.segments, plan.grow_q)
        for hh in plan.grow_q_send:
            first.send(qg, hh, comm.GQ)
    gq = {t.owner: first.recv((b, h, t.nq, d), q.dtype, q.device, t.owner, comm.GQ)
          for t in plan.partial_tasks if t.owner != plan.rank and t.owner not in by_bcast}
    first.start()
    bc = _broadcasts(plan, store, b, hk, d, k, group)
    gb = _row_broadcasts(plan, [q], [(b, h, d)], [q.dtype], group, "forward")
    gq.update({o: (bufs[0], None) for o, (bufs, _) in gb.items()})
    acc = _acc_dtype(q.dtype)
    o_acc = torch.full((b, h, nl, d), float("nan"), dtype=acc, device=q.device)  # every row is written below
    l_acc = torch.full((b, h, nl), float("-inf"), dtype=torch.float64, device=q.device)
    arrived, own = set(), {}  # own: each task's lse (its backward needs it)

    def need(srcs):
        for src in srcs:
            if src in arrived:
                continue
            if src in bc:
                bc[src][1].wait()
                if plan.bcast[src[1]][0] != plan.rank:
                    store.add([plan.bcast[src[1]][1]], bc[src][0])
            else:
                first.wait(got[src][1])
                store.add(plan.recv[src], got[src][0])
            arrived.add(src)

    # tasks whose keys are all local first (they overlap the messages), then in the plan's order, each waiting
    # only for the messages it reads
    for t in sorted(plan.tasks, key=lambda t: bool(_sources(plan, t))):
        need(_sources(plan, t))
        o, lse = run_task(t, _queries(t, plan, q, {}), store, q, k, scale)
        own[id(t)] = lse
        merge(o_acc, l_acc, local_slices(plan.segments, t.qpos), o, lse)
    need(sorted(plan.recv) + list(bc))
    first.wait()
    for _, reqs in gb.values():
        for r in reqs:
            r.wait()
    gq = {owner: buf for owner, (buf, _) in gq.items()}
    # global rows: partials of every owner's rows against our keys, merged at the owner
    second, mine, pb = comm.Batch(group, "forward"), None, {}
    by_bcast = {o for o, _ in plan.grow_bcast}
    for t in plan.partial_tasks:
        o, lse = run_task(t, _queries(t, plan, q, gq), store, q, k, scale)
        own[id(t)] = lse
        if t.owner in by_bcast:
            pb[t.owner] = (o, lse)
        elif t.owner == plan.rank:
            mine = (o, lse)
        else:
            second.send(o, t.owner, comm.GO)
            second.send(lse, t.owner, comm.GL)
    ng = geo.total(plan.grow_q)
    parts = [(second.recv((b, h, ng, d), q.dtype, q.device, hh, comm.GO)[0],
              second.recv((b, h, ng), torch.float32, q.device, hh, comm.GL)[0])
             for hh in plan.grow_q_send if plan.rank not in by_bcast]
    second.start()
    reduced = {o: _lse_reduce(pb.get(o), o, n_o, (b, h, d), acc, q.device, group) for o, n_o in plan.grow_bcast}
    second.wait()
    if plan.override:
        if plan.rank in by_bcast:
            go, gl = reduced[plan.rank]
        else:
            go = torch.full((b, h, ng, d), float("nan"), dtype=acc, device=q.device)
            gl = torch.full((b, h, ng), float("-inf"), dtype=torch.float64, device=q.device)
            for o, lse in ([mine] if mine is not None else []) + parts:
                merge(go, gl, [(0, ng, 0)], o, lse)
        for a, bb, off in local_slices(plan.segments, plan.grow_q):
            o_acc[..., a:bb, :] = go[..., off:off + bb - a, :]
            l_acc[..., a:bb] = gl[..., off:off + bb - a]
    finish(o_acc, l_acc)
    return o_acc.to(q.dtype), l_acc.to(torch.float32), store, gq, own


def _lse_reduce(part, owner, rows, bhd, acc, device, group):
    """The log-sum-exp merge of every rank's partial (out, lse) of an owner's global rows, at the owner, as two
    collectives: the row maxima of the lse (all-reduce), then the sums of exp(lse - max) * out and of
    exp(lse - max) (one reduce). A rank without a partial takes part with lse -inf. (out, lse) at the owner."""
    b, h, d = bhd
    lse = torch.full((b, h, rows), float("-inf"), dtype=acc, device=device) if part is None else part[1].to(acc)
    m, req = comm.all_reduce_max(lse.clone(), group, "forward")
    req.wait()
    w = torch.exp(lse - m).nan_to_num(0.0)  # 0 where this rank has no key for the row (or no rank has)
    o = torch.zeros((b, h, rows, d), dtype=acc, device=device) if part is None else part[0].to(acc)
    packed, req = comm.reduce_sum(torch.cat([o * w[..., None], w[..., None]], -1), owner, group, "forward")
    if dist_rank(group) != owner:
        return None
    req.wait()
    den = packed[..., d]
    out = torch.where(den[..., None] > 0, packed[..., :d] / den[..., None].clamp_min(1e-300), 0.0)
    return out, (m + torch.log(den)).double()


def dist_rank(group):
    return comm.dist().get_rank(group)


def _send_back(plan, grads, k, group):
    """Gradients of received key rows go back to their owners (summed there); ours come from our receivers."""
    b, hk, _, d = k.shape
    batch = comm.Batch(group, "backward")
    for src, ivs in sorted(plan.recv.items()):
        batch.send(grads.received(ivs, k.dtype), src, comm.DKV)
    back = {dst: batch.recv((2, b, hk, geo.total(ivs), d), k.dtype, k.device, dst, comm.DKV)[0]
            for dst, ivs in sorted(plan.send.items())}
    return batch.start(), back


def _backward(plan, q, k, v, out, lse, dout, store, gq, own, scale, group):
    b, h, nl, d = q.shape
    hk, acc = k.shape[1], _acc_dtype(q.dtype)
    dq = torch.zeros((b, h, nl, d), dtype=acc, device=q.device)
    dk = torch.zeros((b, hk, nl, d), dtype=acc, device=q.device)
    dv = torch.zeros_like(dk)
    grads = store.grads(dk, dv)
    dout = dout.contiguous()
    lse1 = lse[..., None]

    def rows(x, ivs):
        return gather_rows(x, plan.segments, ivs)

    # the owner's global rows travel to the helpers: dout and out (for delta), and lse
    first = comm.Batch(group, "backward")
    by_bcast = {o for o, _ in plan.grow_bcast}
    if plan.grow_q_send and plan.rank not in by_bcast:
        pair, lg = torch.stack([rows(dout, plan.grow_q), rows(out, plan.grow_q)]), rows(lse1, plan.grow_q)[..., 0]
        for hh in plan.grow_q_send:
            first.send(pair, hh, comm.GDO)
            first.send(lg, hh, comm.GDL)
    grecv = {t.owner: (first.recv((2, b, h, t.nq, d), q.dtype, q.device, t.owner, comm.GDO)[0],
                       first.recv((b, h, t.nq), torch.float32, q.device, t.owner, comm.GDL)[0])
             for t in plan.partial_tasks if t.owner != plan.rank and t.owner not in by_bcast}
    first.start()
    gb = _row_broadcasts(plan, [dout, out, lse1], [(b, h, d), (b, h, d), (b, h, 1)],
                         [q.dtype, q.dtype, torch.float32], group, "backward")
    # rows replaced by the global reduction take no gradient through the ordinary tasks
    d_reg = dout
    if plan.override:
        d_reg = dout.clone()
        for a, bb, _ in local_slices(plan.segments, plan.override):
            d_reg[..., a:bb, :] = 0
    # tasks that read received rows first: their key gradients go back while the local-only tasks run
    order = sorted(plan.tasks, key=lambda t: not _sources(plan, t))
    n_remote, returning = sum(1 for t in order if _sources(plan, t)), None
    for idx, t in enumerate(order + [None]):
        if idx == n_remote:
            returning = _send_back(plan, grads, k, group)
        if t is None:
            break
        gdq, gdk, gdv = task_backward(t, rows(q, t.qpos), store, q, k, rows(d_reg, t.qpos), rows(out, t.qpos),
                                      rows(lse1, t.qpos)[..., 0], own[id(t)], scale)
        for a, bb, off in local_slices(plan.segments, t.qpos):
            dq[..., a:bb, :] += gdq[..., off:off + bb - a, :]
        grads.add(t.kpos, gdk, gdv)
    first.wait()
    for o, (bufs, reqs) in gb.items():
        for r in reqs:
            r.wait()
        grecv[o] = (bufs[:2], bufs[2][..., 0])
    last, gdq_b = comm.Batch(group, "backward"), {}
    for t in plan.partial_tasks:
        if t.owner == plan.rank:
            dd, oo, ll = rows(dout, t.qpos), rows(out, t.qpos), rows(lse1, t.qpos)[..., 0]
        else:
            (dd, oo), ll = grecv[t.owner]
        gdq, gdk, gdv = task_backward(t, _queries(t, plan, q, gq), store, q, k, dd, oo, ll, own[id(t)], scale)
        grads.add(t.kpos, gdk, gdv)
        if t.owner == plan.rank:
            for a, bb, off in local_slices(plan.segments, t.qpos):
                dq[..., a:bb, :] += gdq[..., off:off + bb - a, :]
        elif t.owner in by_bcast:
            gdq_b[t.owner] = gdq.to(acc)
        else:
            last.send(gdq.to(q.dtype), t.owner, comm.GDQ)
    ng = geo.total(plan.grow_q)
    parts = [last.recv((b, h, ng, d), q.dtype, q.device, hh, comm.GDQ)[0] for hh in plan.grow_q_send
             if plan.rank not in by_bcast]
    last.start()
    # the broadcast global rows' dq partials: one reduce (in the accumulation dtype) per owner, in the plan's order
    for o, n_o in plan.grow_bcast:
        buf = gdq_b.get(o, torch.zeros((b, h, n_o, d), dtype=acc, device=q.device))
        buf, req = comm.reduce_sum(buf, o, group, "backward")
        if o == plan.rank:
            parts.append((buf, req))
    # the gathered columns' gradients: one reduce per broadcast, on every rank in the plan's order
    reduces = []
    for o, (lo, hi) in plan.bcast:
        buf = grads.received([(lo, hi)], k.dtype) if o != plan.rank else \
            torch.zeros((2, b, hk, hi - lo, d), dtype=k.dtype, device=k.device)
        reduces.append((o, (lo, hi)) + comm.reduce_sum(buf, o, group, "backward"))
    batch, back = returning
    batch.wait()
    for o, iv, buf, req in reduces:
        req.wait()
        if o == plan.rank:
            for a, bb, off in local_slices(plan.segments, [iv]):
                dk[..., a:bb, :] += buf[0, ..., off:off + bb - a, :]
                dv[..., a:bb, :] += buf[1, ..., off:off + bb - a, :]
    for dst, ivs in sorted(plan.send.items()):
        for a, bb, off in local_slices(plan.segments, ivs):
            dk[..., a:bb, :] += back[dst][0, ..., off:off + bb - a, :]
            dv[..., a:bb, :] += back[dst][1, ..., off:off + bb - a, :]
    last.wait()
    for p in parts:
        if isinstance(p, tuple):  # a reduce
            p[1].wait()
            p = p[0]
        for a, bb, off in local_slices(plan.segments, plan.grow_q):
            dq[..., a:bb, :] += p[..., off:off + bb - a, :]
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
