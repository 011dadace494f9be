#!/usr/bin/env python3
"""Plot the --binding rows of bench/bench_cuda.py: effective TF/s on nnz of splat (default and the cp.async kernels),
FlexAttention, and cuDNN's dense attention (its own dense FLOPs), per pattern and shape.

    python3 bench/plot_cuda_tflops.py bench/results-cuda-h200-tma-python.jsonl docs/cuda_tflops_h200.png  # matplotlib
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(src) if line.startswith("{")]
    labels, series = [], {"splat": [], "splat, cp.async kernels": [], "FlexAttention": [], "cuDNN dense": []}
    for r in rows:
        labels.append(f"{r['pattern']}\nN={r['n']} D={r['D']}")
        dense_flops = 4.0 * r["n"] * r["n"] * r["D"] * r["B"] * r["H"]
        if r["pattern"] == "causal":
            dense_flops /= 2  # cuDNN's causal attention computes about half the scores
        series["splat"].append(r["splat_tflops"])
        series["splat, cp.async kernels"].append(r["splat:SPLAT_CUDA_TMA=0_tflops"])
        flex = r.get("flex_tflops")
        # Rows where Flex fell back to its eager implementation (recompile limit) are left out.
        series["FlexAttention"].append(flex if flex and r.get("flex_ms", 1e9) < 10 * r["splat_ms"] else float("nan"))
        cudnn_ms = r.get("cudnn_dense_ms", r.get("cudnn_dense_causal_ms"))  # causal rows: cuDNN causal
        series["cuDNN dense"].append(dense_flops / (cudnn_ms * 1e-3) / 1e12)
    fig, ax = plt.subplots(figsize=(14, 5))
    width = 0.2
    for i, (name, ys) in enumerate(series.items()):
        ax.bar([x + (i - 1.5) * width for x in range(len(labels))], ys, width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("TF/s (splat, Flex: on the pattern's nonzeros; cuDNN: dense)")
    ax.set_title("Forward attention on an H200, bf16, through PyTorch (bench_cuda.py --binding)")
    ax.set_ylim(0, 720)
    ax.legend(ncol=4, loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
