"""Geometry for context parallelism: shards, intervals, the pattern as a tree (for translated specs) and the
pattern's ACSR geometry (reaches, halos, block classes and masks, from splat._core.Geometry).

Pure Python and NumPy (no torch): the planner (_cp_plan), the communication model (_cp_model) and the tests use it.
Positions are global sequence positions 0 <= i, j < N; an interval is a half-open pair (lo, hi).
"""

import re

import numpy as np

from . import _core
from ._plans import MASK_PREFIX, mask_bits

SHARDINGS = ("contiguous", "zigzag")

# The tree is kept for one thing only: a spec for the pattern on a shard in the shard's own coordinates (translate),
# so that the local calls keep splat's affine fast path. Every geometric question (reaches, halos, empty and full
# blocks, block masks) goes to the pattern's ACSR and its transpose (core() below, splat._core.Geometry).
# Kinds whose membership depends on i - j only (a band moved with its rows is the same band).
SHIFT_INVARIANT = {"dense", "causal", "window", "causal_window", "dilated", "causal_dilated", "strided"}
# Kinds whose membership depends on absolute positions through a threshold g (i < g, j < g): translating the
# coordinates by lo turns g into g - lo.
THRESHOLD = {"sink", "global", "longformer"}


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


def translatable(node):
    return all(leaf[0] in SHIFT_INVARIANT or leaf[0] in THRESHOLD for leaf in leaves(node))


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


# ---- the pattern's geometry, from its ACSR and transpose ----

_geometry_cache = {}


def core(spec, n):
    """splat._core.Geometry of a spec (or of a registered in-memory mask's name) at length n, cached."""
    key = (spec, n)
    g = _geometry_cache.get(key)
    if g is None:
        if len(_geometry_cache) > 32:
            _geometry_cache.clear()
        g = _core.Geometry(mask_bits(spec) if spec.startswith(MASK_PREFIX) else spec, n)
        _geometry_cache[key] = g
    return g


def count(g, qpos, kpos):
    """Attended pairs of queries qpos x keys kpos (position intervals)."""
    return sum(g.count(a, b, c, d) for a, b in qpos for c, d in kpos)


def classify(g, qpos, kpos):
    """'empty', 'full' or 'mixed' for queries qpos x keys kpos."""
    nnz = count(g, qpos, kpos)
    return "empty" if nnz == 0 else "full" if nnz == total(qpos) * total(kpos) else "mixed"


def block(g, qpos, kpos):
    """Boolean [total(qpos), total(kpos)]: the block's mask, assembled from the rectangles' masks."""
    rows = [np.concatenate([g.mask(a, b, c, d) for c, d in kpos], axis=1) if kpos else np.zeros((b - a, 0), np.uint8)
            for a, b in qpos]
    return (np.concatenate(rows, axis=0) if rows else np.zeros((0, total(kpos)), np.uint8)).astype(bool)
