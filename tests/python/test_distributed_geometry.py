"""The geometry the context-parallel planner takes from splat's ACSR and its transpose (splat._core.Geometry),
against the dense mask: per row the hull of its keys and its reach, per key the hull of its queries, random
rectangles (counts, hulls, masks), grids of them; every family, compositions, explicit masks, odd N. No torch."""

import numpy as np
import pytest

import splat
from splat import _core
from splat import _cp_geometry as geo
from splat import _cp_plan as cpp

PATTERNS = ["dense", "causal", "window:w=5", "causal_window:w=7", "dilated:w=4,d=3", "causal_dilated:w=3,d=2",
            "strided:s=8", "fixed:l=16,c=4", "fixed:l=8,c=2", "blocked:b=16", "global:g=3", "sink:g=2",
            "longformer:w=4,g=2", "bigbird:b=8,w=1,g=1,r=2", "bigbird:b=5,w=2,g=2,r=3,seed=4",
            "causal_window:w=8+sink:g=4&causal", "(window:w=3+sink:g=2)&causal", "fixed:l=16,c=4&window:w=9",
            "bigbird:b=5,w=1,g=1,r=2&causal_window:w=20", "strided:s=5&causal+global:g=2",
            "dilated:w=3,d=4+window:w=2", "window:w=60", "sink:g=50&causal"]


def _explicit(n, seed):
    rng = np.random.default_rng(seed)
    m = rng.random((n, n)) < 0.15
    m[:, :2] = True  # two global columns
    m[5] = False      # an empty row
    return m


def _cases():
    for n in (45, 37):
        for p in PATTERNS:
            yield p, n, splat.dense_mask(p, n).astype(bool), _core.Geometry(p, n)
        m = _explicit(n, n)
        yield "explicit", n, m, _core.Geometry(m.astype(np.uint8), n)


CASES = list(_cases())


def _hull(x):
    return None if x.size == 0 else (int(x.min()), int(x.max()) + 1)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-n{c[1]}" for c in CASES])
def test_every_row_and_key(case):
    p, n, full, g = case
    assert g.n == n and g.nnz == full.sum(), p
    for i in range(n):  # per row: the keys it uses and its reach
        js = np.flatnonzero(full[i])
        assert g.key_span(i, i + 1, 0, n) == _hull(js), (p, i)
        assert g.reach(i, i + 1, 0, n) == (None if js.size == 0 else (int((i - js).max()), int((js - i).max())))
        assert g.count(i, i + 1, 0, n) == js.size
    for j in range(n):  # per key, from the transpose: the queries that use it
        assert g.query_span(j, j + 1, 0, n) == _hull(np.flatnonzero(full[:, j])), (p, j)
    # prefixes of rows and keys: what the split into global rows, gathered columns and band reads
    for h in range(0, n, 4):
        for gc in range(0, n, 4):
            i, j = np.nonzero(full[h:, gc:])
            i, j = i + h, j + gc
            want = None if i.size == 0 else (int((i - j).max()), int((j - i).max()))
            assert g.reach(h, n, gc, n) == want, (p, h, gc)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-n{c[1]}" for c in CASES])
def test_rectangles_and_grids(case):
    p, n, full, g = case
    rng = np.random.default_rng(n + len(p))
    for _ in range(60):
        r0, r1 = sorted(int(x) for x in rng.integers(0, n + 1, 2))
        k0, k1 = sorted(int(x) for x in rng.integers(0, n + 1, 2))
        sub = full[r0:r1, k0:k1]
        i, j = np.nonzero(sub)
        assert g.count(r0, r1, k0, k1) == sub.sum(), (p, r0, r1, k0, k1)
        assert (g.mask(r0, r1, k0, k1).astype(bool) == sub).all(), (p, r0, r1, k0, k1)
        assert g.key_span(r0, r1, k0, k1) == _hull(j + k0), (p, r0, r1, k0, k1)
        assert g.query_span(k0, k1, r0, r1) == _hull(i + r0), (p, r0, r1, k0, k1)
    for _ in range(4):
        cuts = sorted({0, n} | {int(x) for x in rng.integers(0, n + 1, 7)})
        xs, ys, cs = g.grid(cuts, cuts)
        got = {(x, y): c for x, y, c in zip(xs.tolist(), ys.tolist(), cs.tolist())}
        want = {(x, y): int(full[cuts[x]:cuts[x + 1], cuts[y]:cuts[y + 1]].sum())
                for x in range(len(cuts) - 1) for y in range(len(cuts) - 1)}
        assert got == {k: v for k, v in want.items() if v}, p


def test_bad_rectangles_are_errors():
    g = _core.Geometry("window:w=2", 10)
    with pytest.raises(ValueError, match="rectangle"):
        g.count(0, 11, 0, 10)
    with pytest.raises(ValueError, match="rectangle"):
        g.key_span(5, 4, 0, 10)
    with pytest.raises(ValueError, match="sorted"):
        g.grid([0, 5, 3, 10], [0, 10])
    with pytest.raises(ValueError):
        _core.Geometry(np.zeros((4, 5), np.uint8), 4)


def test_large_n_needs_no_dense_scan():
    """10M tokens: the split of longformer and a ring grid of 1024 shards come from the segments alone."""
    n = 10485760
    g = _core.Geometry("longformer:w=512,g=64", n)
    assert g.row_cuts() == [0, 64, n] and g.row_cuts(True) == [0, 64, n]
    assert g.reach(64, n, 64, n) == (512, 512) and g.key_span(64, 1000, 64, n) == (64, 1512)
    cuts = [r * n // 1024 for r in range(1025)]
    xs, ys, _ = _core.Geometry("window:w=512", n).grid(cuts, cuts)
    assert len(xs) == 1024 + 2 * 1023 and (np.abs(xs - ys) <= 1).all()


def test_translated_specs_match_splat():
    """The one use of the pattern tree: the pattern on [lo, n) in coordinates that start at 0."""
    n = 45
    for p in PATTERNS:
        node, full = geo.parse(p), splat.dense_mask(p, n).astype(bool)
        if geo.translatable(node):
            for lo in (1, 7, 30):
                s = geo.translate(node, lo, n - lo)
                got = splat.dense_mask(s, n - lo).astype(bool) if s else np.zeros((n - lo,) * 2, dtype=bool)
                assert (got == full[lo:, lo:]).all(), (p, lo, s)


def test_split_found_from_the_geometry():
    """Global rows and gathered columns end where the ACSR and its transpose say; bands keep their reach."""
    segs = geo.shard_segments(4096, 8)
    g = geo.core("longformer:w=64,g=16", 4096)
    assert cpp.decompose(g, 4096, segs)[:2] == (16, 16)
    g = geo.core("causal_window:w=32+sink:g=4", 4096)
    assert cpp.decompose(g, 4096, segs)[:2] == (0, 4)
    p = cpp.plans("causal_window:w=32+sink:g=4", 4096, 8)
    assert all(r.reach == ((32, 0) if r.rank else (0, 0)) and r.strategy == "halo" for r in p)
