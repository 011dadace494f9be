#!/usr/bin/env python3
"""Plot `splat flurka-quality` output: relative error vs exact attention as k (or m) grows.

    build/bin/splat flurka-quality --seq-len 1024 --heads 2 --head-dim 64 > q.txt
    python3 bench/plot_flurka_quality.py q.txt docs/flurka_quality.png      # needs matplotlib
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parse(path):
    rows = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("method",) or cells[0].startswith("-"):
            continue
        method, k, m = cells[0], cells[1], cells[2]
        size = int(k if k != "-" else m)
        rows.setdefault(method, []).append((size, *map(float, cells[3:])))
    return rows


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rows = parse(src)
    title = open(src).readline().strip()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for col, name in enumerate(["random", "low-rank keys", "clustered keys"]):
        ax = axes[col]
        for method, pts in sorted(rows.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1 + col] for p in pts], marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("k (projected methods) or m (feature methods)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative error vs exact softmax attention")
    axes[2].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(dst + ".tmp.png", dpi=110)
    import os

    os.replace(dst + ".tmp.png", dst)


if __name__ == "__main__":
    main()
