"""Out of memory is a MemoryError in Python, never an abort of the interpreter (issue: robustness, item 12)."""

import subprocess
import sys
import textwrap

import pytest

resource = pytest.importorskip("resource")

CHILD = textwrap.dedent("""
    import resource, numpy as np, splat
    q = np.random.default_rng(0).standard_normal((1, 1, 2, 4_000_000)).astype(np.float32)
    resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))  # 2 GiB: the per-thread scratch cannot fit
    for run in (lambda: splat.attention(q, q, q, pattern="window:w=1", threads=2),):
        try:
            run()
            print("no error")
        except MemoryError as e:
            print("MemoryError", e)
""")


def test_out_of_memory_is_a_memory_error():
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-2000:]}"
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and all(l.startswith("MemoryError") for l in lines), r.stdout + r.stderr[-2000:]
