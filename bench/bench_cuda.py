#!/usr/bin/env python3
"""CUDA benchmark of splat's sparse attention against FlexAttention and dense SDPA (one command on the GPU machine).

For the suite (N=4096 with B=4, H=16; N=16384 with B=1, H=16; D=64 and 128; bf16): median time (CUDA events,
warm-up, many repetitions) of splat (through the C++ harness splat_cuda_bench), torch.compile'd flex_attention
with create_block_mask(BLOCK_SIZE=128), and dense SDPA (cuDNN and flash backends); effective TFLOP/s =
4*nnz*D*B*H/time; speedups; splat's plan time and cold/warm JIT times.

  python3 bench/bench_cuda.py --harness build-cuda/src/jit/splat_cuda_bench [--sizes 4096,16384] [--dims 64,128]

--binding: splat through its PyTorch binding (splat.torch.attention on a prebuilt splat.plan), timed in the same
process as Flex and cuDNN, all interleaved in --rounds rounds (the median of the rounds' medians is reported);
--variants adds splat rows planned under other environment settings (e.g. "SPLAT_CUDA_TMA=0": the cp.async
kernels). --only / --specs / --batch select patterns and the batch.
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
    ap.add_argument("--binding", action="store_true", help="time splat through splat.torch in this process")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="", help="comma list of KEY=VAL;KEY=VAL splat variants (--binding)")
    ap.add_argument("--only", default="", help="comma list of suite pattern names")
    ap.add_argument("--specs", default="", help="name=spec,... instead of the suite (--binding)")
    ap.add_argument("--batch", type=int, default=0)
    args = ap.parse_args()
    if args.binding:
        return binding_main(args)
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


def suite_of(n):
    """The suite's specs at N (src/io/suite.cpp)."""
    s = max(int(n ** 0.5), 1)
    while (s + 1) * (s + 1) <= n:
        s += 1
    while s * s > n:
        s -= 1
    w16, w8 = max(n // 16, 1), max(n // 8, 1)
    return [("window", f"window:w={w16}"), ("causal_window", f"causal_window:w={w8}"),
            ("dilated", f"dilated:w={w16},d=4"), ("strided", f"strided:s={s}"), ("blocked", f"blocked:b={w8}"),
            ("longformer", f"longformer:w={w16},g=32"), ("bigbird", "bigbird:b=64,w=1,g=2,r=3,seed=1")]


def suite_rows(args):
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        if args.specs:
            entries = [tuple(x.split("=", 1)) for x in args.specs.split(",")]
        else:
            entries = suite_of(n)
        for name, spec in entries:
            if args.only and name not in args.only.split(","):
                continue
            for D in (int(x) for x in args.dims.split(",")):
                B = args.batch or (4 if n <= 4096 else 1)
                rows.append({"pattern": name, "spec": spec, "n": n, "B": B, "H": 16, "D": D})
    return rows


def with_env(var, on):
    for kv in filter(None, var.split(";")):
        k, _, v = kv.partition("=")
        if on:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)


def binding_main(args):
    """splat (binding), its variants, Flex and cuDNN dense in one process, interleaved rounds."""
    import splat
    import splat.torch as st
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    import torch._dynamo

    # One compile per (shape, mask_mod): the default recompile limit (8) falls back to eager Flex (30+ ms rows).
    torch._dynamo.config.cache_size_limit = 256
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
        torch._dynamo.config.accumulated_cache_size_limit = 4096
    flex = torch.compile(flex_attention, dynamic=False)
    variants = [""] + [v for v in args.variants.split(",") if v]
    out_rows = []
    for r in suite_rows(args):
        n, B, H, D, spec = r["n"], r["B"], r["H"], r["D"], r["spec"]
        torch.manual_seed(n + D)
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out = torch.empty_like(q)
        fns = {}
        nnz = None
        for var in variants:
            with_env(var, True)
            p = splat.plan(spec, seq_len=n, head_dim=D, dtype="bfloat16", device="cuda")
            st.attention(q, k, v, p, out=out)  # the CUDA plan exists now: the variant's kernels are fixed
            with_env(var, False)
            nnz = p.nnz
            fns["splat" + (":" + var if var else "")] = (lambda p=p: st.attention(q, k, v, p, out=out))
        torch.cuda.synchronize()
        ref = out.float().clone()
        mod = mask_mod_for(spec, n, "") if spec not in ("dense", "causal") else None
        if spec == "dense":
            mod = lambda b, h, qi, kv: qi >= 0  # noqa: E731
        if spec == "causal":
            mod = lambda b, h, qi, kv: qi >= kv  # noqa: E731
        if not args.no_flex:
            bm = create_block_mask(mod, None, None, n, n, device="cuda", BLOCK_SIZE=128)
            fns["flex"] = lambda: flex(q, k, v, block_mask=bm)
            r["max_diff_vs_flex"] = float((fns["flex"]().float() - ref).abs().max())
        causal = spec == "causal"

        def cudnn(causal=causal):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        fns["cudnn_dense"] = cudnn  # causal rows: cuDNN's causal attention
        cudnn()
        meds = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                meds[name].append(time_ms(fn, reps=args.reps))
        work = 4.0 * nnz * D * B * H
        r["nnz"] = nnz
        for name, ms in meds.items():
            ms.sort()
            r[name + "_ms"] = ms[len(ms) // 2]
            r[name + "_rounds"] = ms
            r[name + "_tflops"] = work / (r[name + "_ms"] * 1e-3) / 1e12
        if "flex_ms" in r:
            r["splat_vs_flex"] = r["flex_ms"] / r["splat_ms"]
        print(json.dumps(r), file=sys.stderr, flush=True)
        out_rows.append(r)
    names = []
    for r in out_rows:
        names += [k[:-3] for k in r if k.endswith("_ms") and k[:-3] not in names]
    lines = [f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; bf16; median of {args.rounds} "
             f"interleaved rounds of {args.reps}-rep medians (CUDA events)", "",
             "| pattern | N | B | D | " + " | ".join(f"{x} ms" for x in names) + " | splat TF/s | vs flex |",
             "|---|---|---|---|" + "---|" * len(names) + "---|---|"]
    for r in out_rows:
        lines.append(f"| {r['pattern']} | {r['n']} | {r['B']} | {r['D']} | " +
                     " | ".join(f"{r.get(x + '_ms', float('nan')):.3f}" for x in names) +
                     f" | {r['splat_tflops']:.0f} | {r.get('splat_vs_flex', float('nan')):.2f}x |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.splitext(args.out)[0] + ".jsonl", "w") as f:
            for r in out_rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
