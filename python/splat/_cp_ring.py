"""The ring fallback, streamed: key shards travel one step at a time, so a rank holds at most two received shards.

Step s: rank r receives the shard of rank r - s (if it has tasks on it) and sends its own to rank r + s (if that
rank has tasks on it); every rank takes the steps in the same order, so the sends of one are the receives of the
other. The next step's messages are started before the current step's tasks run (they travel while it
computes), and a shard is dropped once its tasks ran. The backward takes the same steps: it fetches each shard
again, runs the backward of that shard's tasks, and returns their key gradients to the shard's owner in the same
step's second message (the owner adds them to its dk / dv). The bytes are those of the plan's messages
(_cp_model.comm_bytes): each shard once in the forward, once more and its gradients in the backward.
"""

import torch

from . import _cp_comm as comm
from . import _cp_geometry as geo
from ._cp_run import KeyStore, _acc_dtype, finish, gather_rows, local_slices, merge, run_task, task_backward


def _source(plan, task):
    """The rank whose shard a task reads (its own rank for its own keys)."""
    for src, ivs in plan.recv.items():
        if geo.intersect(ivs, task.kpos):
            return src
    return plan.rank


def _steps(plan):
    """Per step s: (source rank or None, destination rank or None, the tasks on the source's shard)."""
    world, r = plan.world, plan.rank
    by_src = {}
    for t in plan.tasks:
        by_src.setdefault(_source(plan, t), []).append(t)
    out = []
    for s in range(world):
        src, dst = (r - s) % world, (r + s) % world
        out.append((src if s and src in plan.recv else None, dst if s and dst in plan.send else None,
                    by_src.get(src if s else r, [])))
    return out


def _fetch(plan, step, store, shape, k, group, phase):
    """Starts step's key exchange: (batch, receive buffer or None)."""
    src, dst, _ = step
    batch, buf = comm.Batch(group, phase), None
    if dst is not None:
        batch.send(torch.stack(store.rows(plan.send[dst])), dst, comm.KV)
    if src is not None:
        b, hk, d = shape
        buf = batch.recv((2, b, hk, geo.total(plan.recv[src]), d), k.dtype, k.device, src, comm.KV)[0]
    return batch.start(), buf


def forward(plan, q, k, v, scale, group):
    """(out, lse, each task's lse) of this rank's queries."""
    b, h, nl, d = q.shape
    own_store = KeyStore(plan.segments, k, v)
    acc = _acc_dtype(q.dtype)
    o_acc = torch.full((b, h, nl, d), float("nan"), dtype=acc, device=q.device)  # every row is written below
    l_acc = torch.full((b, h, nl), float("-inf"), dtype=torch.float64, device=q.device)
    own = {}
    steps = _steps(plan)
    pending = _fetch(plan, steps[0], own_store, (b, k.shape[1], d), k, group, "forward")
    for s, step in enumerate(steps):
        batch, buf = pending
        pending = _fetch(plan, steps[s + 1], own_store, (b, k.shape[1], d), k, group, "forward") \
            if s + 1 < len(steps) else None
        batch.wait()
        store = own_store
        if buf is not None:
            store = KeyStore(plan.segments, k, v)
            store.add(plan.recv[step[0]], buf)
        for t in step[2]:
            o, lse = run_task(t, gather_rows(q, plan.segments, t.qpos), store, q, k, scale)
            own[id(t)] = lse
            merge(o_acc, l_acc, local_slices(plan.segments, t.qpos), o, lse)
    finish(o_acc, l_acc)
    return o_acc.to(q.dtype), l_acc.to(torch.float32), own


def backward(plan, q, k, v, out, lse, dout, own, scale, group):
    """dq, dk, dv of this rank's rows."""
    b, h, nl, d = q.shape
    hk, acc = k.shape[1], _acc_dtype(q.dtype)
    dq = torch.zeros((b, h, nl, d), dtype=acc, device=q.device)
    dk = torch.zeros((b, hk, nl, d), dtype=acc, device=q.device)
    dv = torch.zeros_like(dk)
    own_store = KeyStore(plan.segments, k, v)
    dout, lse1 = dout.contiguous(), lse[..., None]

    def rows(x, ivs):
        return gather_rows(x, plan.segments, ivs)

    steps, returning = _steps(plan), None
    pending = _fetch(plan, steps[0], own_store, (b, hk, d), k, group, "backward")
    for s, step in enumerate(steps):
        batch, buf = pending
        pending = _fetch(plan, steps[s + 1], own_store, (b, hk, d), k, group, "backward") \
            if s + 1 < len(steps) else None
        batch.wait()
        src, dst, tasks = step
        if buf is None:
            store, grads = own_store, own_store.grads(dk, dv)
        else:
            store = KeyStore(plan.segments, k, v)
            store.add(plan.recv[src], buf)
            grads = store.grads(dk, dv)
        for t in tasks:
            gdq, gdk, gdv = task_backward(t, rows(q, t.qpos), store, q, k, rows(dout, t.qpos), rows(out, t.qpos),
                                          rows(lse1, t.qpos)[..., 0], own[id(t)], scale)
            for a, bb, off in local_slices(plan.segments, t.qpos):
                dq[..., a:bb, :] += gdq[..., off:off + bb - a, :]
            grads.add(t.kpos, gdk, gdv)
        # the gradients of the shard we read go back to its owner; ours come from the rank that read ours
        back = comm.Batch(group, "backward")
        if src is not None:
            back.send(grads.received(plan.recv[src], k.dtype), src, comm.DKV)
        got = back.recv((2, b, hk, geo.total(plan.send[dst]), d), k.dtype, k.device, dst, comm.DKV)[0] \
            if dst is not None else None
        _returned(plan, returning, dk, dv)  # the previous step's gradients had this step's time to travel
        returning = (back.start(), dst, got)
    _returned(plan, returning, dk, dv)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _returned(plan, returning, dk, dv):
    if returning is None:
        return
    back, dst, got = returning
    back.wait()
    if got is not None:
        for a, bb, off in local_slices(plan.segments, plan.send[dst]):
            dk[..., a:bb, :] += got[0, ..., off:off + bb - a, :]
            dv[..., a:bb, :] += got[1, ..., off:off + bb - a, :]
