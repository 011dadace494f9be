#!/usr/bin/env python3
"""FLuRKA benchmark on the GPU machine (one command: bash bench/run_flurka_gpu.sh bench).

For (B, H, N, D) in {(4,16,4096,64), (1,16,16384,64), (4,16,4096,128)} and (k, m) in {(256,256), (128,256)}:
each method of splat (C++ harness flurka_bench, CUDA events) vs the same formula in PyTorch (eager and
torch.compile'd, dynamic shapes so each method compiles once) vs dense SDPA on the cuDNN backend, with the floor
max(bytes / copy bandwidth, FLOPs / bf16 GEMM rate) from ceilings measured at the start. Medians of --repeats.
Writes bench_flurka.json and bench_flurka.md into --out.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as Fn

CONFIGS = [(4, 16, 4096, 64), (1, 16, 16384, 64), (4, 16, 4096, 128)]
KM = [(256, 256), (128, 256)]
METHODS = ["flurka-favor", "flurka-elu", "flurka-relu", "linformer", "performer-favor", "performer-relu", "linear"]
BF = torch.bfloat16


def median_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def ceilings():
    n = 1 << 30
    x = torch.empty(n, dtype=torch.uint8, device="cuda")
    x.random_()
    y = torch.empty_like(x)
    t = median_ms(lambda: y.copy_(x), 10)
    bw = 2 * n / (t * 1e-3)
    del x, y
    a = torch.randn(8192, 8192, device="cuda", dtype=BF)
    b = torch.randn(8192, 8192, device="cuda", dtype=BF)
    t = median_ms(lambda: a @ b, 10)
    gemm = 2 * 8192 ** 3 / (t * 1e-3)
    return bw, gemm


# ---- the formulas of issue 4 in PyTorch (bf16 storage, feature maps in float32) ----
def phi_favor(x, W, query):
    D, m = x.shape[-1], W.shape[-1]
    xs = x * D ** -0.25
    lg = (xs @ W).float() - (xs.float() ** 2).sum(-1, keepdim=True) / 2
    # Constant shifts that cancel in the ratio: per query row, per (batch, head) for keys.
    lg = lg - (lg.amax(-1, keepdim=True) if query else lg.amax(dim=(-2, -1), keepdim=True))
    return (torch.exp(lg) / math.sqrt(m)).to(BF)


def phi_relu(x, W):
    D, m = x.shape[-1], W.shape[-1]
    return (torch.relu((x * D ** -0.25) @ W) / math.sqrt(m)).to(BF)


def phi_elu(x):
    return (Fn.elu(x.float()) + 1).to(BF)


def kernel_attention(pq, pk, v):
    kv = pk.transpose(-2, -1) @ v
    z = pk.float().sum(-2)
    num = (pq @ kv).float()
    den = pq.float() @ z.unsqueeze(-1)
    return torch.where(den > 0, num / den, torch.zeros_like(num)).to(BF)


def make_fn(method):
    fmap = method.split("-")[-1] if "-" in method else ("elu" if method == "linear" else None)

    def phi(x, W, query):
        if fmap == "favor":
            return phi_favor(x, W, query)
        if fmap == "relu":
            return phi_relu(x, W)
        return phi_elu(x)

    def fn(q, k, v, E, F, W):
        if method.startswith("flurka") or method == "linformer":
            k, v = E @ k, F @ v  # [H,k,N] @ [B,H,N,D] -> [B,H,k,D]
        if method == "linformer":
            s = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
            return (torch.softmax(s, -1).to(BF) @ v)
        return kernel_attention(phi(q, W, True), phi(k, W, False), v)

    return fn


def splat_times(harness, B, H, N, D, k, m, repeats):
    cmd = [harness, "--B", str(B), "--H", str(H), "--N", str(N), "--D", str(D), "--k", str(k), "--m", str(m),
           "--repeats", str(repeats)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("harness failed:", r.stderr[-2000:], file=sys.stderr)
        return {}
    return {j["method"]: j for j in (json.loads(line) for line in r.stdout.splitlines() if line.startswith("{"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-budget", type=float, default=300.0, help="seconds of torch.compile warm-up allowed")
    args = ap.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # One code object serves all methods: allow its recompilations (the default limit of 8 silently falls
    # back to eager, which would make "torch.compile" numbers eager ones).
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    dev = torch.cuda.get_device_name()
    bw, gemm = ceilings()
    print(f"device {dev}: copy bandwidth {bw / 1e12:.2f} TB/s (read + write), bf16 GEMM {gemm / 1e12:.0f} TFLOP/s",
          flush=True)
    compiled = {m: torch.compile(make_fn(m), dynamic=True) for m in METHODS}
    compile_used = 0.0
    rows = []
    for (B, H, N, D) in CONFIGS:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, kk, v = (torch.randn(B, H, N, D, device="cuda", dtype=BF, generator=g) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            try:
                dense = median_ms(lambda: Fn.scaled_dot_product_attention(q, kk, v), args.repeats)
            except Exception as e:  # noqa: BLE001
                print("cuDNN SDPA failed:", e, file=sys.stderr)
                dense = float("nan")
        for (k, m) in KM:
            E, F = (torch.randn(H, k, N, device="cuda", dtype=BF, generator=g) / math.sqrt(N) for _ in range(2))
            W = torch.randn(H, D, m, device="cuda", dtype=BF, generator=g)
            sp = splat_times(args.harness, B, H, N, D, k, m, args.repeats)
            for meth in METHODS:
                f = make_fn(meth)
                eager = median_ms(lambda: f(q, kk, v, E, F, W), max(5, args.repeats // 3))
                comp = float("nan")
                if not args.no_compile and compile_used < args.compile_budget:
                    t0 = time.time()
                    try:
                        c = compiled[meth]
                        c(q, kk, v, E, F, W)
                        torch.cuda.synchronize()
                        compile_used += time.time() - t0
                        comp = median_ms(lambda: c(q, kk, v, E, F, W), args.repeats)
                    except Exception as e:  # noqa: BLE001
                        compile_used += time.time() - t0
                        print(f"torch.compile {meth} failed: {e}", file=sys.stderr)
                s = sp.get(meth, {})
                ms = s.get("ms", float("nan"))
                floor = max(s.get("bytes", 0) / bw, s.get("flops", 0) / gemm) * 1e3 if s else float("nan")
                row = dict(B=B, H=H, N=N, D=D, k=k, m=m, method=meth, splat_ms=ms, eager_ms=eager, compile_ms=comp,
                           dense_cudnn_ms=dense, floor_ms=floor, predicted_ms=s.get("predicted_ms", float("nan")),
                           nonfinite=s.get("nonfinite", -1))
                rows.append(row)
                print(f"{B},{H},{N},{D} k={k} m={m} {meth:16s} splat {ms:8.4f} ms | eager {eager:8.3f} | compile "
                      f"{comp:8.3f} ({comp / ms:5.1f}x) | cuDNN dense {dense:7.3f} ({dense / ms:6.1f}x) | floor "
                      f"{floor:7.4f} ({ms / floor:4.2f}x) | predicted {row['predicted_ms']:7.4f}", flush=True)
            del E, F, W
        del q, kk, v
        torch.cuda.empty_cache()
    meta = dict(device=dev, bandwidth=bw, gemm=gemm, compile_seconds=compile_used)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_flurka.json"), "w") as fh:
        json.dump(dict(meta=meta, rows=rows), fh, indent=1)
    with open(os.path.join(args.out, "bench_flurka.md"), "w") as fh:
        fh.write(f"Device: {dev}; copy bandwidth {bw / 1e12:.2f} TB/s, bf16 GEMM {gemm / 1e12:.0f} TFLOP/s\n\n")
        fh.write("| B,H,N,D | k | m | method | splat ms | predicted ms | floor ms | splat/floor | torch eager ms | "
                 "torch.compile ms | vs compile | cuDNN dense ms | vs dense |\n")
        fh.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            fh.write(f"| {r['B']},{r['H']},{r['N']},{r['D']} | {r['k']} | {r['m']} | {r['method']} | "
                     f"{r['splat_ms']:.4f} | {r['predicted_ms']:.4f} | {r['floor_ms']:.4f} | "
                     f"{r['splat_ms'] / r['floor_ms']:.2f} | {r['eager_ms']:.3f} | {r['compile_ms']:.3f} | "
                     f"{r['compile_ms'] / r['splat_ms']:.1f}x | {r['dense_cudnn_ms']:.3f} | "
                     f"{r['dense_cudnn_ms'] / r['splat_ms']:.1f}x |\n")


if __name__ == "__main__":
    main()
