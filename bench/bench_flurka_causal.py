#!/usr/bin/env python3
"""Causal FLuRKA through the Python bindings vs torch.compile of the same chunked formula, and vs splat's
non-causal forward at k = 256 (the "within 2x of non-causal" target of issue 14).

One process, CUDA events, warm-up, medians, bf16, E, F per head [H, r, C], W per head [H, D, m]; for (B, H, N, D) in
{(4,16,4096,64), (1,16,16384,64), (4,16,4096,128)}, C = 256, r = 64, m = 256, the flurka-* methods:
  splat:    out = splat.torch.flurka(q, k, v, E, F, W, method=..., causal=True); out.backward(dO)
            (forward: splat's kernels; backward: torch autograd of the formula, splat/_flurka_causal_torch.py)
  baseline: torch.compile(dynamic=False) of splat._flurka_causal_torch.causal_flurka, the chunked formula in plain
            torch operations, on the same bf16 tensors.
Errors: ||x - ref|| / ||ref|| against the formula in float32 (eager) on the same values, out and every gradient.
  python3 bench/bench_flurka_causal.py --out DIR
  python3 bench/bench_flurka_causal.py --device cpu --configs 1,2,512,32 --chunk 64 --r 16 --m 32   # smoke test
Writes DIR/bench_flurka_causal.json and prints one line per row.
"""
import argparse
import json
import math
import os

import torch

import bench_flurka as bf

CONFIGS = [(4, 16, 4096, 64), (1, 16, 16384, 64), (4, 16, 4096, 128)]
METHODS = ["flurka-favor", "flurka-elu", "flurka-relu"]


def inputs(cfg, method, chunk, r, m, dev, seed=0):
    B, H, N, D = cfg
    g = torch.Generator(device=dev).manual_seed(seed)
    q, k, v, do = (torch.randn(B, H, N, D, device=dev, generator=g).to(torch.bfloat16) for _ in range(4))
    E, F = (torch.randn(H, r, chunk, device=dev, generator=g).div(math.sqrt(chunk)).to(torch.bfloat16)
            for _ in range(2))
    W = None if method == "flurka-elu" else torch.randn(H, D, m, device=dev, generator=g).to(torch.bfloat16)
    leaves = [q, k, v, E, F]
    for t in leaves:
        t.requires_grad_(True)
    return (q, k, v, E, F, W), leaves, do


def grads_of(fn, args, leaves, do):
    for t in leaves:
        t.grad = None
    out = fn(*args)
    out.backward(do)
    return out.detach(), [t.grad.detach().clone() for t in leaves]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (not a benchmark)")
    ap.add_argument("--configs", default=None, help="B,H,N,D[;B,H,N,D...] instead of the three benchmark shapes")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--r", type=int, default=64)
    ap.add_argument("--m", type=int, default=256)
    args = ap.parse_args()
    bf.DEV = args.device
    configs = [tuple(int(x) for x in c.split(",")) for c in args.configs.split(";")] if args.configs else CONFIGS
    import splat.torch as st
    from splat._flurka_causal_torch import causal_flurka

    dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke test)"
    print(f"device {dev}; torch {torch.__version__}; C = {args.chunk}, r = {args.r}, m = {args.m}", flush=True)
    rows = []
    for cfg in configs:
        for meth in args.methods.split(","):
            a, leaves, do = inputs(cfg, meth, args.chunk, args.r, args.m, args.device)
            ours = lambda *x: st.flurka(*x, method=meth, causal=True)  # noqa: E731
            base = torch.compile(lambda *x: causal_flurka(*x, meth), dynamic=False)
            o_s, g_s = grads_of(ours, a, leaves, do)
            o_b, g_b = grads_of(base, a, leaves, do)
            a32 = [None if x is None else x.detach().float().requires_grad_(x.requires_grad) for x in a]
            o_r, g_r = grads_of(lambda *x: causal_flurka(*x, meth), a32, a32[:5], do.float())
            names = ["out", "dq", "dk", "dv", "dE", "dF"]
            err_s = {n: bf.rel(x, y) for n, x, y in zip(names, [o_s] + g_s, [o_r] + g_r)}
            err_b = {n: bf.rel(x, y) for n, x, y in zip(names, [o_b] + g_b, [o_r] + g_r)}

            def clear():
                for t in leaves:
                    t.grad = None

            def fb(f):
                return lambda: f(*a).backward(do)

            # the non-causal forward at k = 256 on the same q, k, v (E, F [H, 256, N]) for the causal / non-causal ratio
            B, H, N, D = cfg
            g = torch.Generator(device=args.device).manual_seed(1)
            E2, F2 = (torch.randn(H, 256, N, device=args.device, generator=g).div(math.sqrt(N)).to(torch.bfloat16)
                      for _ in range(2))
            qkv = [t.detach() for t in a[:3]]
            W2 = None if a[5] is None else a[5]
            with torch.no_grad():
                r = dict(B=B, H=H, N=N, D=D, C=args.chunk, r=args.r, m=args.m, method=meth)
                r["splat_fwd"] = bf.median_ms(lambda: ours(*a), args.repeats, args.warmup)
                r["base_fwd"] = bf.median_ms(lambda: base(*a), args.repeats, args.warmup)
                r["noncausal_fwd"] = bf.median_ms(lambda: st.flurka(*qkv, E2, F2, W2, method=meth), args.repeats,
                                                  args.warmup)
            r["splat_fb"] = bf.median_ms(fb(ours), args.repeats, args.warmup, clear)
            r["base_fb"] = bf.median_ms(fb(base), args.repeats, args.warmup, clear)
            r["err_splat"], r["err_base"] = err_s, err_b
            rows.append(r)
            print(f"{cfg} {meth:13s} fwd splat {r['splat_fwd']:.3f} compile {r['base_fwd']:.3f} "
                  f"({r['base_fwd'] / r['splat_fwd']:.2f}x) non-causal {r['noncausal_fwd']:.3f} "
                  f"(causal/non-causal {r['splat_fwd'] / r['noncausal_fwd']:.2f}x) | fwd+bwd splat {r['splat_fb']:.3f} "
                  f"compile {r['base_fb']:.3f} ({r['base_fb'] / r['splat_fb']:.2f}x) | max err splat "
                  f"{max(err_s.values()):.2e} compile {max(err_b.values()):.2e}", flush=True)
            del a, leaves, do, o_s, g_s, o_b, g_b, o_r, g_r, a32
            if args.device == "cuda":
                torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    meta = dict(device=dev, torch=torch.__version__,
                baseline="torch.compile(dynamic=False) of splat._flurka_causal_torch.causal_flurka on the bf16 tensors")
    with open(os.path.join(args.out, "bench_flurka_causal.json"), "w") as fh:
        json.dump(dict(meta=meta, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
