"""Geometry for context parallelism: shards, the pattern as a tree, reaches, translated specs and block masks.

Pure Python and NumPy (no torch): the planner (_cp_plan), the communication model (_cp_model) and the tests use it.
Positions are global sequence positions 0 <= i, j < N; an interval is a half-open pair (lo, hi).
"""

import math
import re

import numpy as np

from . import _core
from ._api import dense_mask
from ._plans import MASK_PREFIX

INF = math.inf
SHARDINGS = ("contiguous", "zigzag")

# Kinds whose membership depends on i - j only (a band moved with its rows is the same band).
SHIFT_INVARIANT = {"dense", "causal", "window", "causal_window", "dilated", "causal_dilated", "strided"}
# Kinds whose membership depends on absolute positions through a threshold g (i < g, j < g): translating the
# coordinates by lo turns g into g - lo.
THRESHOLD = {"sink", "global", "longformer"}
# Kinds evaluated from splat's own dense mask (no closed form here): random blocks, explicit masks.
OPAQUE = {"bigbird", "mask"}


# ---- shards ----

def split_sizes(n, parts):
    """Sizes of `parts` contiguous pieces of n: the first n % parts pieces hold one row more (as numpy.array_split)."""
    base, extra = divmod(n, parts)
    return [base + (1 if p < extra else 0) for p in range(parts)]


def _bounds(sizes):
    out, lo = [], 0
    for s in sizes:
        out.append((lo, lo + s))
        lo += s
    return out


def shard_segments(n, world, sharding="contiguous"):
    """Per rank, the position intervals it holds, in the order of its local rows (adjacent ones merged).

    contiguous: rank r holds piece r of split_sizes(n, world). zigzag: the sequence is cut into 2*world pieces of
    split_sizes(n, 2*world) and rank r holds pieces r and 2*world-1-r (a causal pattern's work is then balanced).
    """
    if sharding not in SHARDINGS:
        raise ValueError(f"splat: sharding must be one of {SHARDINGS}, got {sharding!r}")
    if world < 1:
        raise ValueError(f"splat: world size must be at least 1, got {world}")
    if sharding == "contiguous":
        return [[iv] if iv[1] > iv[0] else [] for iv in _bounds(split_sizes(n, world))]
    pieces = _bounds(split_sizes(n, 2 * world))
    return [merge_intervals([pieces[r], pieces[2 * world - 1 - r]]) for r in range(world)]


def merge_intervals(ivs):
    """Sorted union of intervals (empty ones dropped, touching ones joined)."""
    out = []
    for lo, hi in sorted(iv for iv in ivs if iv[1] > iv[0]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def intersect(ivs_a, ivs_b):
    out = []
    for a0, a1 in ivs_a:
        for b0, b1 in ivs_b:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo < hi:
                out.append((lo, hi))
    return merge_intervals(out)


def subtract(ivs_a, ivs_b):
    out = []
    for a0, a1 in ivs_a:
        cur = a0
        for b0, b1 in merge_intervals(ivs_b):
            if b1 <= cur or b0 >= a1:
                continue
            if b0 > cur:
                out.append((cur, b0))
            cur = max(cur, b1)
        if cur < a1:
            out.append((cur, a1))
    return out


def total(ivs):
    return sum(hi - lo for lo, hi in ivs)


def positions(ivs):
    return np.concatenate([np.arange(lo, hi) for lo, hi in ivs]) if ivs else np.zeros(0, dtype=np.int64)


# ---- the pattern as a tree: ("+", [children]), ("&", [children]) or (kind, {param: int}, text) ----

_LEAF = re.compile(r'\s*([a-z_]+(?:-[a-z]+)?):?')


def parse(spec):
    """The tree of a spec string (canonicalised by splat first; in-memory mask names stay opaque leaves)."""
    if not isinstance(spec, str):
        raise TypeError(f"splat: a pattern is a spec string or a boolean mask, got {type(spec).__name__}")
    text = spec if spec.startswith(MASK_PREFIX) else _core.canonical_pattern(spec)
    node, pos = _parse_union(text, 0)
    if pos != len(text):
        raise ValueError(f"splat: cannot read pattern {text!r} at position {pos}")
    return node


def _parse_union(s, pos):
    kids = []
    while True:
        node, pos = _parse_inter(s, pos)
        kids.append(node)
        if pos < len(s) and s[pos] == "+":
            pos += 1
            continue
        return (kids[0] if len(kids) == 1 else ("+", kids)), pos


def _parse_inter(s, pos):
    kids = []
    while True:
        node, pos = _parse_atom(s, pos)
        kids.append(node)
        if pos < len(s) and s[pos] == "&":
            pos += 1
            continue
        return (kids[0] if len(kids) == 1 else ("&", kids)), pos


def _parse_atom(s, pos):
    if s[pos] == "(":
        node, pos = _parse_union(s, pos + 1)
        if pos >= len(s) or s[pos] != ")":
            raise ValueError(f"splat: unbalanced parenthesis in pattern {s!r}")
        return node, pos + 1
    if s.startswith(MASK_PREFIX, pos) or s.startswith("mask:", pos):
        end = pos
        if s.startswith('mask:"', pos):  # quoted path with \" and \\ escapes
            end = pos + 6
            while s[end] != '"':
                end += 2 if s[end] == "\\" else 1
            end += 1
        else:
            while end < len(s) and s[end] not in "+&)":
                end += 1
        return ("mask", {}, s[pos:end]), end
    m = _LEAF.match(s, pos)
    if not m:
        raise ValueError(f"splat: cannot read pattern {s!r} at position {pos}")
    kind, end = m.group(1), m.end()
    params = {}
    while end < len(s) and s[end] not in "+&)":
        stop = end
        while stop < len(s) and s[stop] not in "+&),":
            stop += 1
        key, _, val = s[end:stop].partition("=")
        params[key.strip()] = int(val)
        end = stop + 1 if stop < len(s) and s[stop] == "," else stop
    return (kind, params, s[pos:end]), end


def leaves(node):
    if node[0] in "+&":
        for c in node[1]:
            yield from leaves(c)
    else:
        yield node


def shift_invariant(node):
    return all(leaf[0] in SHIFT_INVARIANT for leaf in leaves(node))


def translatable(node):
    return all(leaf[0] in SHIFT_INVARIANT or leaf[0] in THRESHOLD for leaf in leaves(node))


def reach(node):
    """(left, right): every attended pair has i - j <= left and j - i <= right (math.inf when unbounded)."""
    kind = node[0]
    if kind in "+&":
        rs = [reach(c) for c in node[1]]
        f = max if kind == "+" else min
        return f(r[0] for r in rs), f(r[1] for r in rs)
    p = node[1]
    table = {"window": (p.get("w", 0), p.get("w", 0)), "causal_window": (p.get("w", 0), 0),
             "dilated": (p.get("w", 0) * p.get("d", 1),) * 2, "causal_dilated": (p.get("w", 0) * p.get("d", 1), 0),
             "causal": (INF, 0), "blocked": (p.get("b", 1) - 1,) * 2}
    return table.get(kind, (INF, INF))


def threshold(node):
    """The threshold g of a sink/global/longformer leaf."""
    return node[1].get("g", 0)


def translate(node, lo, m):
    """A spec for the pattern on positions [lo, lo + m) in coordinates that start at 0, or None if it is empty
    there. Only for translatable trees (shift-invariant leaves stay, thresholds g become clamp(g - lo, 0, m))."""
    kind = node[0]
    if kind in "+&":
        parts = [translate(c, lo, m) for c in node[1]]
        if kind == "+":
            parts = [p for p in parts if p is not None]
            if not parts:
                return None
        elif any(p is None for p in parts):
            return None
        return parts[0] if len(parts) == 1 else ("+" if kind == "+" else "&").join(f"({p})" for p in parts)
    if kind in SHIFT_INVARIANT:
        return node[2]
    g = min(max(threshold(node) - lo, 0), m)
    if kind == "longformer":
        return f"longformer:w={node[1].get('w', 0)},g={g}" if g else f"window:w={node[1].get('w', 0)}"
    if g == 0:
        return None
    return "dense" if g >= m else f"{kind}:g={g}"


# ---- block masks: which (query, key) pairs of position sets attend ----

_dense_cache = {}


def _opaque_mask(text, n):
    key = (text, n)
    if key not in _dense_cache:
        if len(_dense_cache) > 8:
            _dense_cache.clear()
        _dense_cache[key] = dense_mask(text, n).astype(bool)
    return _dense_cache[key]


def block(node, n, rows, cols):
    """Boolean [len(rows), len(cols)]: query rows[a] attends key cols[b] (rows, cols: int arrays of positions)."""
    i, j = np.asarray(rows, dtype=np.int64)[:, None], np.asarray(cols, dtype=np.int64)[None, :]
    return np.broadcast_to(_contains(node, n, i, j), (i.shape[0], j.shape[1]))


def _contains(node, n, i, j):
    kind = node[0]
    if kind == "+":
        out = np.zeros((1, 1), dtype=bool)
        for c in node[1]:
            out = out | _contains(c, n, i, j)
        return out
    if kind == "&":
        out = np.ones((1, 1), dtype=bool)
        for c in node[1]:
            out = out & _contains(c, n, i, j)
        return out
    p, diff = node[1], i - j
    if kind == "dense":
        return np.ones((1, 1), dtype=bool)
    if kind == "causal":
        return diff >= 0
    if kind == "window":
        return np.abs(diff) <= p["w"]
    if kind == "causal_window":
        return (diff >= 0) & (diff <= p["w"])
    if kind == "dilated":
        return (np.abs(diff) <= p["w"] * p["d"]) & (diff % p["d"] == 0)
    if kind == "causal_dilated":
        return (diff >= 0) & (diff <= p["w"] * p["d"]) & (diff % p["d"] == 0)
    if kind == "strided":
        return (np.abs(diff) < p["s"]) | (diff % p["s"] == 0)
    if kind == "fixed":
        return (i // p["l"] == j // p["l"]) | (j % p["l"] >= p["l"] - p["c"])
    if kind == "blocked":
        return i // p["b"] == j // p["b"]
    if kind == "global":
        return (i < p["g"]) | (j < p["g"])
    if kind == "sink":
        return np.broadcast_to(j < p["g"], np.broadcast_shapes(i.shape, j.shape))
    if kind == "longformer":
        return (np.abs(diff) <= p["w"]) | (i < p["g"]) | (j < p["g"])
    if kind in OPAQUE:
        return _opaque_mask(node[2], n)[i, j]
    raise ValueError(f"splat: the distributed planner does not know pattern kind {kind!r}")
