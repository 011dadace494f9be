#!/usr/bin/env python3
"""Per-call host overhead of splat's PyTorch and JAX wrappers over a direct C++ launch with a cached plan.

The problem is tiny (the kernel takes a few microseconds), so back-to-back launches never fill the GPU's
queue and host time per call is what each layer costs. The baseline is the same launch looped in C++
(splat._core._bench_launch: no Python between calls); overhead = (per-call time of a wrapper) - baseline.

  python3 python/bench/overhead.py [--device cuda] [--iters 3000] [--json out.json] [--markdown out.md]
"""

import argparse
import json
import statistics
import time

import numpy as np

import splat


def per_call(fn, iters, sync, reps=5):
    """Median over reps of the mean host time per call (seconds), after a warm-up."""
    for _ in range(max(50, iters // 10)):
        fn()
    sync()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples)


def torch_rows(args, pattern, shape):
    import torch
    from torch.utils.dlpack import to_dlpack

    import splat.torch as st

    dev = args.device
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    q, k, v = (torch.randn(shape, device=dev, dtype=dt) for _ in range(3))
    out = torch.empty_like(q)
    b, h, n, d = shape
    plan = splat.plan(pattern, seq_len=n, head_dim=d, dtype=dt, device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    stream = torch.cuda.current_stream().cuda_stream if dev == "cuda" else 0
    rows = {}
    rows["C++ loop: run_plan (baseline)"] = splat._core._bench_launch(
        plan, to_dlpack(q), to_dlpack(k), to_dlpack(v), to_dlpack(out), args.iters, stream) if dev == "cuda" else \
        splat._core._bench_launch(plan, q.numpy(), k.numpy(), v.numpy(), out.numpy(), args.iters, 0)
    with torch.no_grad():
        rows["_core.attention(plan, DLPack capsules)"] = per_call(
            lambda: splat._core.attention(plan, to_dlpack(q), to_dlpack(k), to_dlpack(v), to_dlpack(out), 0.0,
                                          "bhnd", "", stream, 0), args.iters, sync)
        rows["splat.torch.attention(q, k, v, plan, out=out)"] = per_call(
            lambda: st.attention(q, k, v, plan, out=out), args.iters, sync)
        rows["splat.torch.attention(q, k, v, plan)"] = per_call(lambda: st.attention(q, k, v, plan), args.iters, sync)
        rows["splat.torch.attention(q, k, v, pattern=...)"] = per_call(
            lambda: st.attention(q, k, v, pattern=pattern), args.iters, sync)
        rows["splat.attention(q, k, v, pattern=...) (generic)"] = per_call(
            lambda: splat.attention(q, k, v, pattern=pattern), args.iters, sync)
        rows["torch.ops.splat.attention (custom op)"] = per_call(
            lambda: torch.ops.splat.attention(q, k, v, pattern, 0.0, "bhnd"), args.iters, sync)
        compiled = torch.compile(lambda q, k, v: st.attention(q, k, v, pattern=pattern), fullgraph=True)
        rows["torch.compile(fullgraph) around the op"] = per_call(lambda: compiled(q, k, v), args.iters, sync)
        rows["reference: torch SDPA (same shape, dense)"] = per_call(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), args.iters, sync)
        rows["reference: torch.empty_like(q)"] = per_call(lambda: torch.empty_like(q), args.iters, sync)
    return rows


def jax_rows(args, pattern, shape):
    import jax
    import jax.numpy as jnp

    import splat.jax as sj

    platform = "gpu" if args.device == "cuda" else "cpu"
    dev = jax.devices(platform)[0]
    dt = jnp.bfloat16 if platform == "gpu" else jnp.float32
    q, k, v = (jax.device_put(jnp.asarray(np.random.standard_normal(shape), dt), dev) for _ in range(3))
    with jax.default_device(dev):  # trace-time plans for this device
        f = jax.jit(lambda q, k, v: sj.attention(q, k, v, pattern=pattern))
        f(q, k, v)
    g = jax.jit(lambda q, k, v: q * 2)
    last = [None]

    def call(fn):
        def run():
            last[0] = fn(q, k, v)
        return run

    def sync():
        if last[0] is not None:
            last[0].block_until_ready()

    return {
        "jax.jit(splat.jax.attention)": per_call(call(f), args.iters, sync),
        "reference: jax.jit(lambda q: q * 2) (JAX dispatch floor)": per_call(call(g), args.iters, sync),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--pattern", default="window:w=16")
    ap.add_argument("--shape", default="1,1,128,64", help="B,H,N,D")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    rows = {}
    try:
        rows.update(torch_rows(args, args.pattern, shape))
    except ImportError as e:
        print("torch rows skipped:", e)
    try:
        rows.update(jax_rows(args, args.pattern, shape))
    except ImportError as e:
        print("jax rows skipped:", e)
    base = rows.get("C++ loop: run_plan (baseline)")
    lines = [f"device={args.device} pattern={args.pattern} shape(B,H,N,D)={shape} iters={args.iters}",
             "", "| call | us per call | overhead over C++ launch (us) |", "|---|---|---|"]
    for name, t in rows.items():
        over = "" if base is None or name.startswith(("C++", "reference")) else f"{(t - base) * 1e6:.1f}"
        lines.append(f"| {name} | {t * 1e6:.1f} | {over} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": args.device, "pattern": args.pattern, "shape": shape,
                       "seconds_per_call": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
