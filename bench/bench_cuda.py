#!/usr/bin/env python3
"""CUDA benchmark of splat's sparse attention against FlexAttention and dense SDPA (one command on the GPU machine).

For the suite (N=4096 with B=4, H=16; N=16384 with B=1, H=16; D=64 and 128; bf16): median time (CUDA events,
warm-up, many repetitions) of splat (through the C++ harness splat_cuda_bench), torch.compile'd flex_attention
with create_block_mask(BLOCK_SIZE=128), and dense SDPA (cuDNN and flash backends); effective TFLOP/s =
4*nnz*D*B*H/time; speedups; splat's plan time and cold/warm JIT times.

  python3 bench/bench_cuda.py --harness build-cuda/src/jit/splat_cuda_bench [--sizes 4096,16384] [--dims 64,128]
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F


def params(spec):
    name, _, rest = spec.partition(":")
    kv = dict(p.split("=") for p in rest.split(",") if p)
    return name, {k: int(v) for k, v in kv.items()}


def mask_mod_for(spec, n, mask_dir):
    """Closed-form mask_mods (exact pattern semantics); bigbird's random blocks come from splat's dense mask."""
    name, p = params(spec)
    if name == "window":
        w = p["w"]
        return lambda b, h, q, kv: (q - kv).abs() <= w
    if name == "causal_window":
        w = p["w"]
        return lambda b, h, q, kv: (q >= kv) & (q - kv <= w)
    if name == "dilated":
        w, d = p["w"], p["d"]
        return lambda b, h, q, kv: ((q - kv).abs() <= w * d) & ((q - kv) % d == 0)
    if name == "strided":
        s = p["s"]
        return lambda b, h, q, kv: ((q - kv).abs() < s) | ((q - kv) % s == 0)
    if name == "blocked":
        bb = p["b"]
        return lambda b, h, q, kv: (q // bb) == (kv // bb)
    if name == "longformer":
        w, g = p["w"], p["g"]
        return lambda b, h, q, kv: ((q - kv).abs() <= w) | (q < g) | (kv < g)
    if name == "bigbird":  # block band, global blocks and splitmix64 random blocks (splat's semantics)
        bb, w, g, r, seed = p["b"], p["w"], p["g"], p["r"], p.get("seed", 0)
        nb = (n + bb - 1) // bb
        M64 = (1 << 64) - 1

        def splitmix64(x):
            z = (x + 0x9E3779B97F4A7C15) & M64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            return z ^ (z >> 31)

        blocks = torch.zeros(nb, nb, dtype=torch.bool)
        for qb in range(nb):
            for kb in range(nb):
                blocks[qb, kb] = abs(qb - kb) <= w or qb < g or kb < g
            for t in range(r):
                blocks[qb, splitmix64(((seed << 32) + qb * r + t) & M64) % nb] = True
        Bm = blocks.to("cuda")
        return lambda b, h, q, kv: Bm[q // bb, kv // bb]
    raise ValueError(spec)


def dense_count(mod, n):
    q = torch.arange(n, device="cuda").view(n, 1)
    kv = torch.arange(n, device="cuda").view(1, n)
    z = torch.zeros((), dtype=torch.int64, device="cuda")
    return int(mod(z, z, q, kv).sum().item())


def time_ms(fn, warmup=10, reps=50):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", default="")
    ap.add_argument("--harness-jsonl", default="", help="reuse splat rows measured earlier by the harness")
    ap.add_argument("--sizes", default="4096,16384")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", default="")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()
    mask_dir = ""
    if args.harness_jsonl:
        rows = [json.loads(l) for l in open(args.harness_jsonl) if l.startswith("{")]
    else:
        cmd = [args.harness, "--sizes", args.sizes, "--dims", args.dims, "--reps", str(args.reps)]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(res.stderr)
        rows = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
        if res.returncode != 0:
            print(f"harness failed with {res.returncode}", file=sys.stderr)
    sizes = {int(x) for x in args.sizes.split(",")}
    dims = {int(x) for x in args.dims.split(",")}
    rows = [r for r in rows if r["n"] in sizes and r["D"] in dims]
    partial = open(os.path.splitext(args.out)[0] + ".partial.jsonl", "w") if args.out else None

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 256
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
        torch._dynamo.config.accumulated_cache_size_limit = 4096
    flex = torch.compile(flex_attention, dynamic=False)
    dense = {}
    for r in rows:
        n, B, H, D = r["n"], r["B"], r["H"], r["D"]
        torch.manual_seed(n + D)
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        if (n, D) not in dense:
            d = {}
            for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    with sdpa_kernel(be):
                        d[name] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps=args.reps)
                except Exception as e:  # a backend can be unavailable for a shape
                    print(f"sdpa {name}: {e}", file=sys.stderr)
                    d[name] = float("nan")
            dense[(n, D)] = d
        r["cudnn_ms"], r["flash_ms"] = dense[(n, D)]["cudnn"], dense[(n, D)]["flash"]
        if not args.no_flex:
            mod = mask_mod_for(r["spec"], n, mask_dir)
            cnt = dense_count(mod, n)
            if cnt != int(r["nnz"]):
                print(f"WARNING {r['spec']}: flex mask nnz {cnt} != splat nnz {int(r['nnz'])}", file=sys.stderr)
            bm = create_block_mask(mod, None, None, n, n, device="cuda", BLOCK_SIZE=128)
            r["flex_ms"] = time_ms(lambda: flex(q, k, v, block_mask=bm), reps=args.reps)
            r["flex_check"] = cnt == int(r["nnz"])
        else:
            r["flex_ms"] = float("nan")
        work = 4.0 * r["nnz"] * D * B * H
        r["flex_tflops"] = work / (r["flex_ms"] * 1e-3) / 1e12
        r["speedup_vs_flex"] = r["flex_ms"] / r["splat_ms"]
        r["speedup_vs_cudnn"] = r["cudnn_ms"] / r["splat_ms"]
        print(json.dumps(r), file=sys.stderr, flush=True)
        if partial:
            partial.write(json.dumps(r) + "\n")
            partial.flush()

    dev = torch.cuda.get_device_name()
    lines = [
        f"device: {dev}; torch {torch.__version__}; bf16; times are medians of {args.reps} CUDA-event timings",
        "",
        "| pattern | N | D | density | waste | splat ms | splat TF/s | flex ms | flex TF/s | vs flex | cuDNN dense ms |"
        " flash dense ms | vs cuDNN | plan ms | cold JIT ms | warm load ms | max err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pattern']} | {r['n']} | {r['D']} | {r['density']:.3f} | {r['waste']:.2f} | {r['splat_ms']:.3f} |"
            f" {r['tflops']:.0f} | {r['flex_ms']:.3f} | {r['flex_tflops']:.0f} | {r['speedup_vs_flex']:.2f}x |"
            f" {r['cudnn_ms']:.3f} | {r['flash_ms']:.3f} | {r['speedup_vs_cudnn']:.2f}x | {r['plan_total_ms']:.3f} |"
            f" {r['cold_jit_ms']:.0f} | {r['warm_load_ms']:.2f} | {r['max_err']:.4f} |"
        )
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
