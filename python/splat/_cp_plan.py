"""The context-parallel planner: from (pattern, N, world, sharding) to every rank's tasks and messages.

Pure Python (no torch, no communication): every rank builds the same plans for all ranks, so the sends of one rank
are exactly the receives of another without any handshake. Two strategies:

halo   the pattern has a finite reach (blocked, or anything intersected with a band: its blocks go by their masks),
       or it is a union of terms that are each a shift-invariant band of finite reach (window, causal_window,
       dilated, intersections with causal, ...) or a threshold term (sink:g, global:g, longformer:w,g, possibly
       intersected with shift-invariant parts). A query segment [a, b) then needs the keys [a - left, b + right)
       (its band buffer: own rows plus halos from neighbours), the threshold columns j < g outside that buffer
       (gathered), and rows i < g of global terms attend every key (computed against each rank's keys and merged
       by log-sum-exp at their owner).
ring   anything else (random blocks, masks, strided, fixed, causal, dense, ...): a query segment meets every key
       segment of every rank; pairs without nonzeros are skipped (no compute, no message).

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
    node: tuple = None        # mask: the pattern and N its block comes from (built on first use: every rank
    n: int = 0                # plans every rank, but builds only its own tasks' masks)
    mask_name: str = None     # its registered name (set on first use)

    @property
    def nq(self):
        return geo.total(self.qpos)

    def mask(self):
        """bool [m, m]: the block's mask in the top-left corner."""
        mask = np.zeros((self.m, self.m), dtype=bool)
        mask[:self.nq, :geo.total(self.kpos)] = _pos_block(self.node, self.n, self.qpos, self.kpos)
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
    reach: tuple = (0, 0)
    g_col: int = 0
    g_row: int = 0

    @property
    def wasted_rows(self):
        return sum(t.wasted() for t in self.tasks) + sum(t.wasted() for t in self.partial_tasks)


def _union_terms(node):
    """The pattern as a union of terms, distributing one '&' over a '+' ((A+B)&C = A&C + B&C)."""
    if node[0] == "+":
        return [t for c in node[1] for t in _union_terms(c)]
    if node[0] == "&":
        sums = [c for c in node[1] if c[0] == "+"]
        if len(sums) == 1:
            rest = [c for c in node[1] if c is not sums[0]]
            return [t for c in sums[0][1] for t in _union_terms(("&", [c] + rest))]
    return [node]


def _flat_and(node):
    return [p for c in node[1] for p in _flat_and(c)] if node[0] == "&" else [node]


def halo_form(node):
    """(left, right, g_col, g_row) when the pattern fits the halo strategy, else None."""
    lr = geo.reach(node)
    if geo.INF not in lr and not geo.translatable(node):  # e.g. blocked, fixed & window, mask & window: banded,
        return lr[0], lr[1], 0, 0                          # but its blocks need their masks
    terms = _union_terms(node)
    left = right = g_col = g_row = 0
    for t in terms:
        if geo.shift_invariant(t):
            lr = geo.reach(t)
            if geo.INF in lr:
                return None
            left, right = max(left, lr[0]), max(right, lr[1])
            continue
        parts = _flat_and(t)
        th = [p for p in parts if p[0] in geo.THRESHOLD]
        if len(th) != 1 or not all(geo.shift_invariant(p) for p in parts if p is not th[0]):
            return None
        leaf, g = th[0], geo.threshold(th[0])
        if leaf[0] == "longformer":  # its window part is a band
            w = leaf[1].get("w", 0)
            left, right = max(left, w), max(right, w)
        g_col = max(g_col, g)
        if leaf[0] in ("global", "longformer"):
            g_row = max(g_row, g)
    return left, right, g_col, g_row


def _pos_block(node, n, qpos, kpos):
    return geo.block(node, n, geo.positions(qpos), geo.positions(kpos))


def _combine(kinds):
    return kinds[0] if len(set(kinds)) == 1 else "mixed"


def _quick(node, n, qpos, kpos):
    """The exact class of the block when the geometry gives it cheaply ('empty', 'full', 'mixed'), else None."""
    kind = node[0]
    if kind in "+&":
        kinds = [_quick(c, n, qpos, kpos) for c in node[1]]
        absorbing, neutral = ("full", "empty") if kind == "+" else ("empty", "full")
        if absorbing in kinds:
            return absorbing
        rest = [k for k in kinds if k != neutral]
        if not rest:
            return neutral
        return rest[0] if len(rest) == 1 else None  # two partial operands: only their block knows
    if geo.shift_invariant(node):  # by the range of i - j of each pair of intervals
        out = []
        for a, b in qpos:
            for c, d in kpos:
                hit = geo.block(node, n, np.arange(a - (d - 1), b - c), np.zeros(1, dtype=np.int64))[:, 0]
                out.append("empty" if not hit.any() else "full" if hit.all() else "mixed")
        return _combine(out)
    qlo, qhi, klo, khi = qpos[0][0], qpos[-1][1], kpos[0][0], kpos[-1][1]
    g = node[1].get("g", 0)
    if kind == "sink":
        return "full" if khi <= g else "empty" if klo >= g else None
    if kind in ("global", "longformer"):
        if qhi <= g or khi <= g:
            return "full"
        if qlo >= g and klo >= g:
            return "empty" if kind == "global" else _quick(("window", {"w": node[1]["w"]}, ""), n, qpos, kpos)
    return None


def _classify(node, n, qpos, kpos):
    """'empty', 'full' or 'mixed' for queries qpos x keys kpos (sorted intervals): from the geometry where it
    tells, else from the block's mask."""
    kind = _quick(node, n, qpos, kpos)
    if kind is not None:
        return kind
    hit = _pos_block(node, n, qpos, kpos)
    return "empty" if not hit.any() else "full" if hit.all() else "mixed"


def _translate_task(node, n, rows, buf):
    m = buf[1] - buf[0]
    spec = geo.translate(node, buf[0], m)
    if spec is None:
        return None
    return Task("translate", [rows], [buf], m, rows[0] - buf[0], 0, spec=spec)


def _keys_task(node, n, qpos, kpos, kind, owner=-1):
    """Queries x keys at other positions, both from row 0 of a square buffer of max(nq, nk) rows. 'full' blocks:
    sink:g=nk when nk < nq (no waste), global:g=nq when nk > nq (the nk - nq zero rows each touch nq keys), dense
    when equal; 'mixed' blocks: their mask in the top-left corner (empty rows cost nothing)."""
    nq, nk = geo.total(qpos), geo.total(kpos)
    m = max(nq, nk)
    if kind == "full":
        spec = "dense" if nq == nk else f"sink:g={nk}" if nk < nq else f"global:g={nq}"
        return Task("dense", qpos, kpos, m, 0, 0, spec=spec, owner=owner)
    return Task("mask", qpos, kpos, m, 0, 0, owner=owner, node=node, n=n)


def _segment_tasks(node, n, seg, left, right, g_col, overlap):
    """Tasks covering the rows of seg once, with every key the pattern gives them.

    overlap=False: one translate task on the buffer [a - left, b + right) (its halo rows are computed and
    discarded: left + right wasted rows). overlap=True: the shard's own keys (a translate task on [a, b), no
    waste, runs while the halos travel), then each halo as its own block (the reach-sized rows x halo keys,
    by its exact mask), merged by log-sum-exp. Threshold columns outside a row group's keys come last."""
    a, b = seg
    lo, hi = max(0, a - left), min(n, b + right)
    if not geo.translatable(node):  # the shard's own block and each halo by their masks
        kind = _classify(node, n, [seg], [seg])
        tasks = [_keys_task(node, n, [seg], [seg], kind)] if kind != "empty" else []
        for rows, keys in (((a, min(b, a + left)), (lo, a)), ((max(a, b - right), b), (b, hi))):
            if keys[0] >= keys[1]:
                continue
            hit = _pos_block(node, n, [rows], [keys]).any(0)  # the reach bounds the halo; the mask trims it
            if hit.any():
                cols = np.flatnonzero(hit)
                keys = (keys[0] + int(cols[0]), keys[0] + int(cols[-1]) + 1)
                tasks.append(_keys_task(node, n, [rows], [keys], _classify(node, n, [rows], [keys])))
        return tasks  # no thresholds here (halo_form gives g_col = 0)
    if not overlap or (lo == a and hi == b):
        task = _translate_task(node, n, seg, (lo, hi))
        groups = [((a, b), [(lo, hi)])]
        tasks = [task] if task is not None else []
    else:
        task = _translate_task(node, n, seg, seg)
        tasks = [task] if task is not None else []
        lrows = (a, min(b, a + left)) if lo < a else None
        rrows = (max(a, b - right), b) if hi > b else None
        for rows, keys in ((lrows, (lo, a)), (rrows, (b, hi))):
            if rows is not None:
                kind = _classify(node, n, [rows], [keys])
                if kind != "empty":
                    tasks.append(_keys_task(node, n, [rows], [keys], kind))
        cuts = sorted({a, b} | ({lrows[1]} if lrows else set()) | ({rrows[0]} if rrows else set()))
        groups = []
        for x, y in zip(cuts, cuts[1:]):
            keys = [(a, b)] + ([(lo, a)] if lrows and y <= lrows[1] else []) + ([(b, hi)] if rrows and x >= rrows[0]
                                                                              else [])
            groups.append(((x, y), keys))
    for rows, keys in groups:  # threshold columns: every row attends them (or the block's mask says which)
        cols = geo.subtract([(0, min(g_col, n))], keys)
        kind = _classify(node, n, [rows], cols) if cols else "empty"
        if kind != "empty":
            tasks.append(_keys_task(node, n, [rows], cols, kind))
    return tasks


def _halo_plans(node, n, world, segs, form, overlap):
    left, right, g_col, g_row = form
    plans = [RankPlan(r, world, n, "halo", segs[r], reach=(left, right), g_col=g_col, g_row=g_row)
             for r in range(world)]
    for p in plans:
        for seg in p.segments:
            p.tasks += _segment_tasks(node, n, seg, left, right, g_col, overlap)
        p.override = geo.intersect(p.segments, [(0, g_row)])
    # global rows: each owner's rows against every rank's keys, merged at the owner
    for o in plans:
        o.grow_q = o.override
        if not o.grow_q:
            continue
        for h in plans:
            kind = _classify(node, n, o.grow_q, h.segments) if h.segments else "empty"
            if kind == "empty":
                continue
            h.partial_tasks.append(_keys_task(node, n, o.grow_q, h.segments, kind, owner=o.rank))
            if h.rank != o.rank:
                o.grow_q_send.append(h.rank)
    return plans


def _ring_plans(node, n, world, segs):
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
                    if kseg == seg and trans:
                        task = _translate_task(node, n, seg, seg)
                        if task is not None:
                            p.tasks.append(task)
                        continue
                    kind = _classify(node, n, [seg], [kseg])
                    if kind != "empty":
                        (full if kind == "full" else mixed).append(kseg)
                if full:
                    p.tasks.append(_keys_task(node, n, [seg], full, "full"))
                if mixed:
                    p.tasks.append(_keys_task(node, n, [seg], mixed, "mixed"))
    return plans


def _add_messages(plans, segs):
    owners = sorted((lo, hi, r) for r, ss in enumerate(segs) for lo, hi in ss)
    ends = [hi for _, hi, _ in owners]
    for p in plans:
        need = geo.subtract(geo.merge_intervals([iv for t in p.tasks for iv in t.kpos]), p.segments)
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
    node = geo.parse(spec)
    segs = geo.shard_segments(n, world, sharding)
    form = halo_form(node) if strategy in ("auto", "halo") else None
    if strategy == "halo" and form is None:
        raise ValueError(f"splat: pattern {spec!r} has no halo form (a union of finite bands and sink/global/"
                         "longformer terms); use strategy='auto' or 'ring'")
    plans = _halo_plans(node, n, world, segs, form, overlap) if form else _ring_plans(node, n, world, segs)
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
