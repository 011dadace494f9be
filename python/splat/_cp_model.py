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
        ng = geo.total(p.grow_q)
        fwd += len(p.grow_q_send) * ng * q_row
        bwd += len(p.grow_q_send) * ng * (2 * q_row + l_row)
        mf += len(p.grow_q_send)
        mb += 2 * len(p.grow_q_send)
        for t in p.partial_tasks:
            if t.owner != p.rank:
                fwd += t.nq * (q_row + l_row)
                bwd += t.nq * q_row
                mf += 2
                mb += 1
        out.append({"strategy": p.strategy, "forward": fwd, "backward": bwd, "messages_forward": mf,
                    "messages_backward": mb, "peers": sorted(set(p.send) | set(p.recv)),
                    "wasted_rows": p.wasted_rows})
    return out


# ---- closed form for the scaling table ----

def halo_rows(family, w, d=1, g=0):
    """Key rows an interior rank sends per call (forward) for contiguous shards wider than the reach."""
    if family == "window":
        return 2 * w
    if family == "causal_window":
        return w
    if family == "dilated":
        return 2 * w * d
    if family == "causal_window+sink":
        return w + g  # the sink rows go from rank 0 to everyone: g per receiving rank (rank 0 sends g)
    if family == "longformer":
        return 2 * w
    raise ValueError(f"splat: no halo form for {family!r}")


def scaling_table(ns=(131072, 1048576, 10485760), worlds=(64, 128, 256, 512, 1024), *, heads=16, head_dim=128,
                  dtype="bfloat16", w=512, d=4, g=64, link_gbps=50.0):
    """Rows of (family, N, R, shard, halo bytes per rank, ring bytes per rank, ratio, halo ms, ring ms) for the
    forward pass: ring attention sends its K/V shard R-1 times (R-1 steps); the halo exchange sends the rows in
    the band's reach to the neighbours (one step). Times at link_gbps GB/s per rank, transfer only. The halo
    form holds while the reach fits one neighbour shard (w * d <= N / R); otherwise the halo spans several
    ranks and its bytes are still the reach, not the shard."""
    es = itemsize(dtype)
    kv_row = 2 * heads * head_dim * es
    rows = []
    for family in ("window", "causal_window", "dilated", "causal_window+sink", "longformer"):
        for n in ns:
            for r in worlds:
                shard = math.ceil(n / r)
                hr = halo_rows(family, w, d, g)
                halo = hr * kv_row
                if family == "causal_window+sink":
                    halo = max(w * kv_row, (r - 1) * g * kv_row)  # rank 0 sends the sink rows to all
                if family == "longformer":  # global rows: owner sends g query rows out, gets g partials back
                    halo += (r - 1) * g * heads * head_dim * es
                ring = (r - 1) * shard * kv_row
                rows.append((family, n, r, shard, halo, ring, ring / halo, halo / (link_gbps * 1e6),
                             ring / (link_gbps * 1e6)))
    return rows
