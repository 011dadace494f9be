#!/usr/bin/env python3
"""Training benchmark: forward + backward of splat's sparse attention against FlexAttention, one process, one GPU.

Everything runs through the Python bindings in the same process: splat.torch.attention (autograd: the fused
forward with lse, then the fused backward) against torch.compile(flex_attention, dynamic=False) with
create_block_mask(..., BLOCK_SIZE=128) and closed-form mask_mods (bench_cuda.mask_mod_for), and cuDNN SDPA's dense
forward + backward for scale. For each suite pattern at N=4096 (B=4, H=16) and N=16384 (B=1, H=16), D=64 and 128,
bf16: the median time (CUDA events, warm-up; splat and Flex interleaved, `--rounds` rounds of `--reps`) of
  fwd+bwd:  out = attn(q, k, v); torch.autograd.grad(out, (q, k, v), dO)
  bwd:      torch.autograd.grad(out, (q, k, v), dO, retain_graph=True) on a saved forward
effective TF/s of the backward (2.5 x the forward's 4*nnz*D*B*H FLOPs), and the extra memory of fwd+bwd beyond
the inputs, dO, out and the three gradients (peak allocated minus those). The gradients of splat are checked
against Flex's (max abs difference, printed).

  python3 bench/bench_backward.py [--configs 16384x128,4096x64] [--patterns window,dilated] [--out results.md]
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import dense_count, mask_mod_for  # noqa: E402

import splat  # noqa: E402
import splat.torch as st  # noqa: E402


def suite(n):
    s = int(math.isqrt(n))
    return [f"window:w={n // 16}", f"causal_window:w={n // 8}", f"dilated:w={n // 16},d=4", f"strided:s={s}",
            f"blocked:b={n // 8}", f"longformer:w={n // 16},g=32", "bigbird:b=64,w=1,g=2,r=3,seed=1"]


def events_ms(fn, reps):
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def interleaved(fns, rounds, reps, warmup=5):
    """{name: median ms}, the candidates taking turns round by round (Flex moves up to 20% between runs)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k] += events_ms(fn, reps)
    return {k: median(v) for k, v in times.items()}


def extra_memory(fwd, q, k, v, dO):
    """Peak bytes of one fwd+bwd beyond q, k, v, dO, out and the three gradients."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fwd(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), dO)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    kept = out.numel() * out.element_size() + sum(g.numel() * g.element_size() for g in grads)
    return peak - base - kept, grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="4096x64,4096x128,16384x64,16384x128", help="NxD list")
    ap.add_argument("--patterns", default="", help="comma-separated subset of the suite's names")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    import torch._dynamo
    import torch._functorch.config

    # The timed backward replays a saved forward (retain_graph=True), which compiled backwards with donated buffers
    # refuse; donation only saves memory, not time.
    torch._functorch.config.donated_buffer = False
    torch._dynamo.config.cache_size_limit = 256
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    flex = torch.compile(flex_attention, dynamic=False)
    only = {p for p in args.patterns.split(",") if p}
    rows = []
    partial = open(os.path.splitext(args.out)[0] + ".partial.jsonl", "w") if args.out else None
    for n, D in ((int(c.split("x")[0]), int(c.split("x")[1])) for c in args.configs.split(",")):
        B, H = (4, 16) if n <= 4096 else (1, 16)
        if True:
            torch.manual_seed(n + D)
            q, k, v, dO = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            for t in (q, k, v):
                t.requires_grad_(True)

            def cudnn(q, k, v):
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v)

            dense_fb = interleaved({"cudnn": lambda: torch.autograd.grad(cudnn(q, k, v), (q, k, v), dO)},
                                   args.rounds, args.reps)["cudnn"]
            o_dense = cudnn(q, k, v)
            dense_b = interleaved({"cudnn": lambda: torch.autograd.grad(o_dense, (q, k, v), dO, retain_graph=True)},
                                  args.rounds, args.reps)["cudnn"]
            del o_dense
            for spec in suite(n):
                name = spec.split(":")[0]
                if only and name not in only:
                    continue
                plan = splat.plan(spec, seq_len=n, head_dim=D, dtype="bfloat16", device="cuda")
                mod = mask_mod_for(spec, n, "")
                nnz_flex = dense_count(mod, n)
                bm = create_block_mask(mod, None, None, n, n, device="cuda", BLOCK_SIZE=128)

                def sp(q, k, v):
                    return st.attention(q, k, v, pattern=spec)

                def fx(q, k, v):
                    return flex(q, k, v, block_mask=bm)

                mem_s, g_s = extra_memory(sp, q, k, v, dO)
                mem_f, g_f = extra_memory(fx, q, k, v, dO)
                diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(g_s, g_f))
                del g_s, g_f
                fb = interleaved({"splat": lambda: torch.autograd.grad(sp(q, k, v), (q, k, v), dO),
                                  "flex": lambda: torch.autograd.grad(fx(q, k, v), (q, k, v), dO)},
                                 args.rounds, args.reps)
                o_s, o_f = sp(q, k, v), fx(q, k, v)
                bw = interleaved({"splat": lambda: torch.autograd.grad(o_s, (q, k, v), dO, retain_graph=True),
                                  "flex": lambda: torch.autograd.grad(o_f, (q, k, v), dO, retain_graph=True)},
                                 args.rounds, args.reps)
                del o_s, o_f
                bwd_flops = 2.5 * 4.0 * plan.nnz * D * B * H
                r = dict(pattern=spec, n=n, B=B, H=H, D=D, nnz=plan.nnz, nnz_match=nnz_flex == plan.nnz,
                         splat_fb_ms=fb["splat"], flex_fb_ms=fb["flex"], speedup_fb=fb["flex"] / fb["splat"],
                         splat_bwd_ms=bw["splat"], flex_bwd_ms=bw["flex"],
                         splat_bwd_tflops=bwd_flops / (bw["splat"] * 1e-3) / 1e12,
                         flex_bwd_tflops=bwd_flops / (bw["flex"] * 1e-3) / 1e12,
                         cudnn_dense_fb_ms=dense_fb, cudnn_dense_bwd_ms=dense_b,
                         cudnn_dense_bwd_tflops=2.5 * 4.0 * n * n * D * B * H / (dense_b * 1e-3) / 1e12,
                         splat_extra_mb=mem_s / 2**20, flex_extra_mb=mem_f / 2**20, grad_diff_vs_flex=diff)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
                if partial:  # a run cut short still leaves its rows
                    partial.write(json.dumps(r) + "\n")
                    partial.flush()

    lines = [f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; splat {splat.__version__}; bf16; "
             f"medians of {args.rounds} interleaved rounds x {args.reps} CUDA-event timings", "",
             "| pattern | N | D | splat fwd+bwd ms | flex fwd+bwd ms | vs flex | splat bwd ms | splat bwd TF/s |"
             " flex bwd ms | flex bwd TF/s | cuDNN dense fwd+bwd ms | cuDNN dense bwd TF/s | splat extra MB |"
             " flex extra MB | max grad diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pattern']} | {r['n']} | {r['D']} | {r['splat_fb_ms']:.3f} | {r['flex_fb_ms']:.3f} |"
                     f" {r['speedup_fb']:.2f}x | {r['splat_bwd_ms']:.3f} | {r['splat_bwd_tflops']:.0f} |"
                     f" {r['flex_bwd_ms']:.3f} | {r['flex_bwd_tflops']:.0f} | {r['cudnn_dense_fb_ms']:.3f} |"
                     f" {r['cudnn_dense_bwd_tflops']:.0f} | {r['splat_extra_mb']:.1f} | {r['flex_extra_mb']:.1f} |"
                     f" {r['grad_diff_vs_flex']:.3g} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
        with open(os.path.splitext(args.out)[0] + ".jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
