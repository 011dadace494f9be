"""The communication model of context parallelism: bytes each rank sends per call, and a halo-vs-ring table.

comm_bytes() follows the plans (_cp_plan) message by message: it is what the implementation must send, and the
tests compare it with the bytes counted on the wire. scaling_table() is the closed form for large N and many
ranks (contiguous shards of N / R rows, no planning): halo exchange against ring attention.
"""

import math

from . import _cp_geometry as geo
from . import _cp_plan as cpp
from ._plans import pattern_name

_SIZES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "f64": 8, "f32": 4, "f16": 2, "bf16": 2}


def itemsize(dtype):
    if hasattr(dtype, "itemsize"):
        return int(dtype.itemsize)
    name = str(dtype).replace("torch.", "")
    if name not in _SIZES:
        raise ValueError(f"splat: unknown dtype {dtype!r}")
    return _SIZES[name]


def comm_bytes(pattern, seq_len, world, *, heads, head_dim, dtype, kv_heads=None, batch=1, sharding="contiguous",
               strategy="auto", overlap=True):
    """Per rank: {"strategy", "forward", "backward", "messages_forward", "messages_backward", "peers",
    "wasted_rows"}: bytes sent by one call of splat.distributed.attention (forward) and its backward.

    A key/value row costs 2 * batch * kv_heads * head_dim * itemsize bytes (k and v travel together, gradients
    likewise); a global query row batch * heads * head_dim * itemsize, its partial result as much plus 4 bytes
    of float32 lse per head, its backward message dout and out (twice that) plus the lse.
    """
    es, hk = itemsize(dtype), kv_heads or heads
    kv_row = 2 * batch * hk * head_dim * es
    q_row = batch * heads * head_dim * es
    l_row = batch * heads * 4
    ps = cpp.plans(pattern_name(pattern, seq_len), seq_len, world, sharding, strategy, overlap)
    out = []
    for p in ps:
        fwd = sum(geo.total(iv) for iv in p.send.values()) * kv_row
        bwd = sum(geo.total(iv) for iv in p.recv.values()) * kv_row
        mf, mb = len(p.send), len(p.recv)
        if p.strategy == "ring":  # the backward fetches the key shards again (they are not kept)
            bwd, mb = bwd + fwd, mb + len(p.send)
        ng = geo.total(p.grow_q)
        by_bcast = {o for o, _ in p.grow_bcast}
        if p.rank in by_bcast:  # one broadcast of the rows (forward), of dout and out, and of the lse (backward)
            fwd, bwd, mf, mb = fwd + ng * q_row, bwd + ng * (2 * q_row + l_row), mf + 1, mb + 2
        else:
            fwd += len(p.grow_q_send) * ng * q_row
            bwd += len(p.grow_q_send) * ng * (2 * q_row + l_row)
            mf += len(p.grow_q_send)
            mb += 2 * len(p.grow_q_send)
        acc = 8 if es == 8 else 4
        for o, n_o in p.grow_bcast:
            # forward: every rank's share of the partials' merge (lse maxima all-reduced, then weighted out and
            # weights reduced, in the accumulation dtype); backward: its share of the dq reduce
            fwd += n_o * batch * heads * acc * (head_dim + 2)
            mf += 2
            bwd += n_o * q_row // es * acc
            mb += 1
        for o, (lo, hi) in p.bcast:  # gathered columns: the owner's broadcast, everyone's reduce of gradients
            if o == p.rank:
                fwd += (hi - lo) * kv_row
                mf += 1
            bwd += (hi - lo) * kv_row
            mb += 1
        for t in p.partial_tasks:
            if t.owner != p.rank and t.owner not in by_bcast:
                fwd += t.nq * (q_row + l_row)
                bwd += t.nq * q_row
                mf += 2
                mb += 1
        out.append({"strategy": p.strategy, "forward": fwd, "backward": bwd, "messages_forward": mf,
                    "messages_backward": mb, "peers": sorted(set(p.send) | set(p.recv)),
                    "wasted_rows": p.wasted_rows})
    return out


# ---- closed form for the scaling table ----

FAMILIES = ("window", "causal_window", "dilated", "causal_window+sink", "longformer")


def busiest_rank_bytes(family, n, world, *, heads=16, kv_heads=None, head_dim=128, dtype="bfloat16", w=512, d=4,
                       g=64):
    """Forward bytes sent by the busiest rank, contiguous shards of ceil(N / R) rows, the reach within one
    neighbour shard (as comm_bytes counts them): (halo, skipping_ring, ring, halo_steps)."""
    es, hk = itemsize(dtype), kv_heads or heads
    kv_row, q_row = 2 * hk * head_dim * es, heads * head_dim * es
    s = math.ceil(n / world)
    if family == "window":
        halo, nbrs = 2 * w * kv_row, 2
    elif family == "causal_window":
        halo, nbrs = w * kv_row, 1
    elif family == "dilated":
        halo, nbrs = 2 * w * d * kv_row, 2
    elif family == "causal_window+sink":  # rank 0: its last w rows to rank 1, the g sink rows broadcast once
        halo, nbrs = (w + g) * kv_row, world - 1
    elif family == "longformer":  # rank 0: halo, global columns and global query rows broadcast once;
        # the others: their halos; everyone: its share of the merge of the global rows' partials (float32)
        merge = g * heads * 4 * (head_dim + 2)
        other = (2 if world > 2 else 1) * w * kv_row + (merge if world > 2 else g * (q_row + 4 * heads))
        halo, nbrs = max((w + g) * kv_row + g * q_row + (merge if world > 2 else 0), other), world - 1
    else:
        raise ValueError(f"splat: unknown family {family!r}")
    ring = (world - 1) * s * kv_row  # ring attention: the K/V shard visits every rank
    skipping = min(nbrs, world - 1) * s * kv_row  # a ring that skips empty pairs still sends whole shards
    steps = 1 if family in ("window", "causal_window", "dilated") else 2
    return halo, skipping, ring, steps


def scaling_table(ns=(1048576, 10485760), worlds=(64, 128, 256, 512, 1024), families=FAMILIES, link_gbs=50.0,
                  **kw):
    """One dict per (family, N, R): shard rows, busiest-rank forward bytes of the halo exchange, of a ring that
    skips empty pairs and of ring attention, and their transfer times at link_gbs GB/s per rank (no overlap,
    no latency). kw: heads, kv_heads, head_dim, dtype, w, d, g as in busiest_rank_bytes."""
    rows = []
    for fam in families:
        for n in ns:
            for r in worlds:
                halo, skip, ring, steps = busiest_rank_bytes(fam, n, r, **kw)
                rows.append({"family": fam, "n": n, "ranks": r, "shard": math.ceil(n / r), "halo": halo,
                             "skipping_ring": skip, "ring": ring, "ring_over_halo": ring / halo,
                             "halo_ms": halo / (link_gbs * 1e6), "ring_ms": ring / (link_gbs * 1e6),
                             "halo_steps": steps, "ring_steps": r - 1})
    return rows
