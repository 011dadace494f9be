"""The context-parallel planner: from (pattern, N, world, sharding) to every rank's tasks and messages.

Pure Python (no torch, no communication): every rank builds the same plans for all ranks, so the sends of one rank
are exactly the receives of another without any handshake. Every geometric decision comes from the pattern's ACSR
and its transpose (splat._core.Geometry, through _cp_geometry.core): which keys a row block uses, which rows use a
halo, which blocks are empty or full, the blocks' masks. Two strategies:

halo   the pattern is split into global rows [0, g_row) (computed against each rank's keys and merged by
       log-sum-exp at their owner), gathered columns [0, g_col) and a band: a query segment [a, b) then needs the
       keys its rows use beyond the columns, [lo, hi) (its band buffer: own rows plus halos from neighbours, the
       hull the ACSR gives), and the columns outside that buffer. (g_row, g_col) are chosen among the row bounds of
       the ACSR's segments and of its transpose's (where global rows and global columns end) as the split whose
       halos move the fewest rows.
       Gathered columns and global query rows that several ranks read are broadcast by their owner (one
       collective) rather than sent to each reader; their gradients come back through one reduce.
ring   a query segment meets every key segment of every rank; pairs without nonzeros are skipped (no compute,
       no message).
strategy="auto" takes the halo when it moves fewer rows than the ring (ties: the ring, which does no extra work).

The pattern tree (_cp_geometry.parse) is used only to write translated specs: a band task on a buffer [lo, hi) runs
the pattern shifted to start at lo, which keeps splat's affine fast path (a mask would cost the buffer's area).

A Task computes queries x keys as one square splat call on an "extended" buffer of m rows: the queries at rows
[q_off, q_off + nq), the keys at rows [k_off, k_off + nk); the rest of the buffer is zero and its outputs are
discarded (wasted rows, counted in RankPlan.wasted_rows; docs/DISTRIBUTED.md says what each kind costs).
"""

import bisect
import functools
from dataclasses import dataclass, field

import numpy as np

from . import _cp_geometry as geo


@dataclass
class Task:
    kind: str                 # "translate" (spec over a contiguous buffer), "dense" (every pair), "mask"
    qpos: list                # query position intervals (concatenated in order)
    kpos: list                # key position intervals (concatenated in order)
    m: int                    # extended buffer rows
    q_off: int
    k_off: int
    spec: str = None          # translate / dense
    owner: int = -1           # global-row partials: the rank that owns the query rows
    pattern: str = None       # mask: the pattern and N its block comes from (built on first use: every rank
    n: int = 0                # plans every rank, but builds only its own tasks' masks)
    mask_name: str = None     # its registered name (set on first use)

    @property
    def nq(self):
        return geo.total(self.qpos)

    def mask(self):
        """bool [m, m]: the block's mask in the top-left corner."""
        mask = np.zeros((self.m, self.m), dtype=bool)
        mask[:self.nq, :geo.total(self.kpos)] = geo.block(geo.core(self.pattern, self.n), self.qpos, self.kpos)
        return mask

    def wasted(self):
        return self.m - self.nq


@dataclass
class RankPlan:
    rank: int
    world: int
    n: int
    strategy: str
    segments: list                                  # own position intervals, in local row order
    tasks: list = field(default_factory=list)       # own queries
    recv: dict = field(default_factory=dict)        # src -> key intervals received (forward)
    send: dict = field(default_factory=dict)        # dst -> own key intervals sent (forward)
    override: list = field(default_factory=list)    # own rows replaced by the global-row reduction
    grow_q_send: list = field(default_factory=list)  # helpers that get our global query rows
    grow_q: list = field(default_factory=list)      # our global query rows (position intervals)
    partial_tasks: list = field(default_factory=list)  # global rows of an owner x our keys
    bcast: list = field(default_factory=list)       # (owner, interval): gathered columns broadcast to the group
                                                    # (the same list on every rank; gradients reduced back)
    grow_bcast: list = field(default_factory=list)  # (owner, rows): global query rows broadcast to the group
                                                    # (likewise; their dq partials reduced back)
    reach: tuple = (0, 0)
    g_col: int = 0
    g_row: int = 0

    @property
    def wasted_rows(self):
        return sum(t.wasted() for t in self.tasks) + sum(t.wasted() for t in self.partial_tasks)


def _translate_task(node, rows, buf):
    m = buf[1] - buf[0]
    spec = geo.translate(node, buf[0], m)
    if spec is None:
        return None
    return Task("translate", [rows], [buf], m, rows[0] - buf[0], 0, spec=spec)


def _keys_task(spec, n, qpos, kpos, kind, owner=-1):
    """Queries x keys at other positions, both from row 0 of a square buffer of max(nq, nk) rows. 'full' blocks:
    sink:g=nk when nk < nq (no waste), global:g=nq when nk > nq (the nk - nq zero rows each touch nq keys), dense
    when equal; 'mixed' blocks: their mask in the top-left corner (empty rows cost nothing)."""
    nq, nk = geo.total(qpos), geo.total(kpos)
    m = max(nq, nk)
    if qpos == kpos == [(0, n)] and kind != "full":  # the whole sequence (one rank): the pattern itself, no mask
        return Task("translate", qpos, kpos, n, 0, 0, spec=spec, owner=owner)
    if kind == "full":
        kspec = "dense" if nq == nk else f"sink:g={nk}" if nk < nq else f"global:g={nq}"
        return Task("dense", qpos, kpos, m, 0, 0, spec=kspec, owner=owner)
    return Task("mask", qpos, kpos, m, 0, 0, owner=owner, pattern=spec, n=n)


def band(g, n, seg, h, gc):
    """(lo, hi, left rows, right rows) of a query segment [a, b): the keys [lo, hi) its band rows (those >= h)
    use beyond the gathered columns [0, gc) (a hull from the ACSR, widened to the segment), and the rows that use
    the left halo [lo, a) and the right halo [b, hi) (hulls from the transpose; None without a halo)."""
    a, b = seg
    r0 = max(a, h)
    span = g.key_span(r0, b, min(gc, n), n) if r0 < b and gc < n else None
    lo, hi = (min(a, span[0]), max(b, span[1])) if span else (a, b)
    lrows = g.query_span(lo, a, r0, b) if lo < a else None
    rrows = g.query_span(b, hi, r0, b) if hi > b else None
    return lo, hi, lrows, rrows


def _segment_tasks(g, spec, node, n, seg, h, gc, overlap, trans):
    """Tasks covering the rows of seg once, with every key the pattern gives them.

    overlap=False (translatable patterns): one translate task on the band buffer [lo, hi) (its halo rows are
    computed and discarded: wasted rows). Otherwise the shard's own keys (a translate task on [a, b), or the own
    block by its mask; no waste, runs while the halos travel), then each halo as its own block (the rows that use
    it x its keys, by its exact class), merged by log-sum-exp. Gathered columns outside a row group's keys come
    last."""
    a, b = seg
    lo, hi, lrows, rrows = band(g, n, seg, h, gc)
    tasks = []
    if trans and (not overlap or (lo == a and hi == b)):
        task = _translate_task(node, seg, (lo, hi))
        tasks, groups = ([task] if task is not None else []), [((a, b), [(lo, hi)])]
    else:
        if trans:
            task = _translate_task(node, seg, seg)
            tasks = [task] if task is not None else []
        else:
            kind = geo.classify(g, [seg], [seg])
            tasks = [_keys_task(spec, n, [seg], [seg], kind)] if kind != "empty" else []
        for rows, keys in ((lrows, (lo, a)), (rrows, (b, hi))):
            if rows is not None:
                kind = geo.classify(g, [rows], [keys])
                if kind != "empty":
                    tasks.append(_keys_task(spec, n, [rows], [keys], kind))
        cuts = sorted({a, b} | set(lrows or ()) | set(rrows or ()))
        groups = []
        for x, y in zip(cuts, cuts[1:]):
            keys = ([(a, b)] + ([(lo, a)] if lrows and lrows[0] <= x and y <= lrows[1] else [])
                    + ([(b, hi)] if rrows and rrows[0] <= x and y <= rrows[1] else []))
            groups.append(((x, y), keys))
    for (x, y), keys in groups:  # gathered columns outside the group's keys (rows < h: the global reduction)
        rows, cols = (max(x, h), y), geo.subtract([(0, min(gc, n))], keys)
        kind = geo.classify(g, [rows], cols) if cols and rows[0] < rows[1] else "empty"
        if kind != "empty":
            tasks.append(_keys_task(spec, n, [rows], cols, kind))
    return tasks


def _candidates(cuts, n, limit=6):
    """Split points worth trying: 0 and the smallest segment bounds of at most half the sequence."""
    return sorted({0} | {c for c in cuts if 0 < c <= n // 2}, key=int)[:limit]


def halo_rows(g, n, segs, h, gc):
    """Rows the halo split (global rows [0, h), gathered columns [0, gc)) moves, summed over ranks: every rank's
    halos and missing columns, plus the global rows' queries out and their partial results back."""
    total = 0
    for own in segs:
        need = []
        for seg in own:
            lo, hi, _, _ = band(g, n, seg, h, gc)
            need += [(lo, seg[0]), (seg[1], hi)]
        total += geo.total(geo.subtract(geo.merge_intervals(need + [(0, min(gc, n))]), own))
    owners = sum(1 for own in segs if geo.intersect(own, [(0, h)]))
    return total + 2 * min(h, n) * (len([s for s in segs if s]) - min(owners, 1))


def decompose(g, n, segs):
    """(g_row, g_col, rows moved): the split with the fewest rows moved (ties: fewer special rows)."""
    best = None
    for h in _candidates(g.row_cuts(False), n):
        for gc in _candidates(g.row_cuts(True), n):
            cost = (halo_rows(g, n, segs, h, gc), h + gc)
            if best is None or cost < best[2:]:
                best = (h, gc) + cost
    return best[0], best[1], best[2]


def _cells(g, n, segs):
    """{(query segment, key segment): attended pairs} for the non-empty pairs of every rank's segments."""
    cuts = sorted({0, n} | {x for own in segs for iv in own for x in iv})
    xs, ys, cs = g.grid(cuts, cuts)
    return {(cuts[x], cuts[y]): int(c) for x, y, c in zip(xs.tolist(), ys.tolist(), cs.tolist())}, cuts


def ring_rows(segs, cells, cuts):
    """Rows the ring that skips empty pairs moves, summed over ranks."""
    owner = {seg[0]: r for r, own in enumerate(segs) for seg in own}
    lens = {seg[0]: seg[1] - seg[0] for own in segs for seg in own}
    pairs = {(owner[q], k) for q, k in cells if owner[q] != owner[k]}
    return sum(lens[k] for _, k in pairs)


def _halo_plans(g, spec, node, n, world, segs, h, gc, overlap):
    trans = geo.translatable(node)
    plans = [RankPlan(r, world, n, "halo", segs[r], g_col=gc, g_row=h) for r in range(world)]
    for p in plans:
        left = right = 0
        for seg in p.segments:
            p.tasks += _segment_tasks(g, spec, node, n, seg, h, gc, overlap, trans)
            lo, hi, _, _ = band(g, n, seg, h, gc)
            left, right = max(left, seg[0] - lo), max(right, hi - seg[1])
        p.reach = (left, right)
        p.override = geo.intersect(p.segments, [(0, h)])
    # global rows: each owner's rows against every rank's keys, merged at the owner
    for o in plans:
        o.grow_q = o.override
        if not o.grow_q:
            continue
        for hp in plans:
            kind = geo.classify(g, o.grow_q, hp.segments) if hp.segments else "empty"
            if kind == "empty":
                continue
            hp.partial_tasks.append(_keys_task(spec, n, o.grow_q, hp.segments, kind, owner=o.rank))
            if hp.rank != o.rank:
                o.grow_q_send.append(hp.rank)
    # gathered columns that at least BCAST_MIN other ranks read: one broadcast per owner interval instead of one
    # message per reader (the owner sends them about once, whatever the number of ranks), gradients reduced back
    bcast = []
    for o in plans:
        for iv in geo.intersect(o.segments, [(0, min(gc, n))]):
            readers = [p.rank for p in plans if p.rank != o.rank and any(geo.intersect(t.kpos, [iv]) for t in p.tasks)]
            if len(readers) >= BCAST_MIN:
                bcast.append((o.rank, iv))
    grow = [(o.rank, geo.total(o.grow_q)) for o in plans if len(o.grow_q_send) >= BCAST_MIN]
    for p in plans:
        p.bcast, p.grow_bcast = bcast, grow
    return plans


BCAST_MIN = 2


def _ring_plans(g, spec, node, n, world, segs, cells):
    plans = [RankPlan(r, world, n, "ring", segs[r]) for r in range(world)]
    trans = geo.translatable(node)
    for p in plans:
        for seg in p.segments:
            # key shards in ring order (own first, then rank - 1, rank - 2, ...): the forward waits for each
            # source's message just before its tasks, so later messages travel while earlier shards compute
            for step in range(world):
                t = (p.rank - step) % world
                full, mixed = [], []
                for kseg in segs[t]:
                    nnz = cells.get((seg[0], kseg[0]), 0)
                    if kseg == seg and trans:
                        task = _translate_task(node, seg, seg) if nnz else None
                        if task is not None:
                            p.tasks.append(task)
                    elif nnz:
                        (full if nnz == (seg[1] - seg[0]) * (kseg[1] - kseg[0]) else mixed).append(kseg)
                if full:
                    p.tasks.append(_keys_task(spec, n, [seg], full, "full"))
                if mixed:
                    p.tasks.append(_keys_task(spec, n, [seg], mixed, "mixed"))
    return plans


def _add_messages(plans, segs):
    owners = sorted((lo, hi, r) for r, ss in enumerate(segs) for lo, hi in ss)
    ends = [hi for _, hi, _ in owners]
    for p in plans:
        have = p.segments + [iv for _, iv in p.bcast]
        need = geo.subtract(geo.merge_intervals([iv for t in p.tasks for iv in t.kpos]), have)
        got = {}
        for lo, hi in need:  # the owners of [lo, hi): segments from the first one ending after lo
            for s0, s1, src in owners[bisect.bisect_right(ends, lo):]:
                if s0 >= hi:
                    break
                got.setdefault(src, []).append((max(lo, s0), min(hi, s1)))
        for src, ivs in sorted(got.items()):
            p.recv[src] = geo.merge_intervals(ivs)
            plans[src].send[p.rank] = p.recv[src]


@functools.lru_cache(maxsize=64)
def _plans(spec, n, world, sharding, strategy, overlap):
    node, g = geo.parse(spec), geo.core(spec, n)
    segs = geo.shard_segments(n, world, sharding)
    h = gc = cells = None
    if strategy in ("auto", "halo"):
        h, gc, moved = decompose(g, n, segs)
    if strategy in ("auto", "ring"):
        cells, cuts = _cells(g, n, segs)
        if strategy == "auto" and moved >= ring_rows(segs, cells, cuts):
            strategy = "ring"
    plans = (_ring_plans(g, spec, node, n, world, segs, cells) if strategy == "ring"
             else _halo_plans(g, spec, node, n, world, segs, h, gc, overlap))
    _add_messages(plans, segs)
    return tuple(plans)


STRATEGIES = ("auto", "halo", "ring")


def plans(spec, n, world, sharding="contiguous", strategy="auto", overlap=True):
    """Every rank's RankPlan (cached; treat as read-only)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"splat: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if n < 1:
        raise ValueError(f"splat: seq_len must be at least 1, got {n}")
    return _plans(spec, int(n), int(world), sharding, strategy, bool(overlap))
