#!/usr/bin/env python3
"""FLuRKA forward and forward + backward through the Python bindings vs torch.compile of the plain bf16 formula.

One process, CUDA events, warm-up, medians, bf16. For (B, H, N, D) in {(4,16,4096,64), (1,16,16384,64),
(4,16,4096,128)}, k = m = 256, E, F per head [H, k, N], W per head [H, D, m], every method:
  splat:    out = splat.torch.flurka(q, k, v, E, F, W, method=...); out.backward(dO)
  baseline: the same formula written plainly in bf16 (E @ k and F @ v first, then the feature map; performer-style
            stabiliser for favor, detached as users write it; no float32 upcasts), compiled with
            torch.compile(dynamic=False) (the default mode), called the same way.
"forward" is the training forward (inputs require grad), so each side runs one compiled graph / one op for both
columns. Floors: max(bytes / copy bandwidth, FLOPs / bf16 GEMM rate) per call (the backward's floor added for
fwd+bwd), both ceilings measured in this process. Errors: ||x - ref|| / ||ref|| against the formula in float32
(eager) on the same inputs, for out and every gradient, for splat and for the baseline.
  python3 bench/bench_flurka.py --out DIR                   # the benchmark (needs the splat package)
  python3 bench/bench_flurka.py --precompile I/N            # fill the inductor cache with shard I of N (no splat)
  python3 bench/bench_flurka.py --device cpu --configs 1,2,256,32 --km 32   # smoke test of this script, no GPU
Also, per shape: cuDNN's dense SDPA (non-causal and causal, for scale), and flash-linear-attention's causal linear
attention (fla.ops.linear_attn chunk and fused_chunk, elu + 1 applied to q, k, normalised; its [B, N, H, D] layout
made outside the timing) against splat's linear (elu) method: fla has no non-causal linear-attention kernel. The
extra rows at k = 128, m = 256 (flurka-*, N = 16384) are those of issue 14's cuDNN target.
  python3 bench/bench_flurka.py --warm-fla                  # fill Triton's autotune cache for fla (no splat)
Writes DIR/bench_flurka.json and DIR/bench_flurka.md.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as Fn

CONFIGS = [(4, 16, 4096, 64), (1, 16, 16384, 64), (4, 16, 4096, 128)]
K = M = 256
EXTRA_K128 = [((1, 16, 16384, 64), m) for m in ("flurka-favor", "flurka-elu", "flurka-relu")]  # k = 128, m = 256
METHODS = ["flurka-favor", "flurka-elu", "flurka-relu", "linformer", "performer-favor", "performer-relu", "linear"]
BF = torch.bfloat16
DEV = "cuda"


def fmap_of(method):
    if method == "linformer":
        return None
    if method == "linear":
        return "elu"
    return method.split("-")[1]


def projected(method):
    return method.startswith("flurka") or method == "linformer"


# ---- the baseline: the formula as a user writes it (bf16 throughout; the float32 reference reuses it) ----
def phi(x, W, fm, is_query):
    if fm == "elu":
        return Fn.elu(x) + 1
    s = x.shape[-1] ** -0.25
    m = W.shape[-1]
    if fm == "relu":
        return torch.relu((x * s) @ W) * m ** -0.5
    xs = x * s
    logits = xs @ W - (xs * xs).sum(-1, keepdim=True) / 2
    # performer's stabiliser (a constant of the formula): per query row, per (batch, head) for the keys
    stab = logits.amax(-1, keepdim=True) if is_query else logits.amax(dim=(-2, -1), keepdim=True)
    return torch.exp(logits - stab.detach()) * m ** -0.5


def make_formula(method):
    fm = fmap_of(method)

    def formula(q, k, v, E, F, W):
        if projected(method):
            k, v = E @ k, F @ v  # [H, k, N] @ [B, H, N, D] -> [B, H, k, D]
        if fm is None:
            return torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1) @ v
        pq, pk = phi(q, W, fm, True), phi(k, W, fm, False)
        kv = pk.transpose(-2, -1) @ v
        z = pk.sum(dim=-2)
        return (pq @ kv) / (pq @ z.unsqueeze(-1))

    formula.__name__ = "formula_" + method.replace("-", "_")
    return formula


def inputs(cfg, method, seed=0, dtype=BF):
    B, H, N, D = cfg
    g = torch.Generator(device=DEV).manual_seed(seed)
    q, k, v, do = (torch.randn(B, H, N, D, device=DEV, generator=g).to(dtype) for _ in range(4))
    E = F = W = None
    if projected(method):
        E, F = (torch.randn(H, K, N, device=DEV, generator=g).div(math.sqrt(N)).to(dtype) for _ in range(2))
    if fmap_of(method) in ("favor", "relu"):
        W = torch.randn(H, D, M, device=DEV, generator=g).to(dtype)
    leaves = [q, k, v] + ([E, F] if E is not None else [])
    for t in leaves:
        t.requires_grad_(True)
    return (q, k, v, E, F, W), leaves, do


def median_ms(fn, repeats, warmup, before=None):
    for _ in range(warmup):
        if before:
            before()
        fn()
    if DEV == "cuda":
        torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        if before:
            before()
        if DEV != "cuda":  # smoke runs only
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def ceilings():
    n = 1 << 30 if DEV == "cuda" else 1 << 24
    x = torch.empty(n, dtype=torch.uint8, device=DEV)
    x.random_()
    y = torch.empty_like(x)
    t = median_ms(lambda: y.copy_(x), 10, 3)
    bw = 2 * n / (t * 1e-3)
    del x, y
    n = 8192 if DEV == "cuda" else 512
    a = torch.randn(n, n, device=DEV, dtype=BF)
    b = torch.randn(n, n, device=DEV, dtype=BF)
    t = median_ms(lambda: a @ b, 10, 3)
    return bw, 2 * n ** 3 / (t * 1e-3)


def cost(method, cfg):
    """(bytes, FLOPs) of the forward and of the backward: compulsory bf16 traffic, tensor-core FLOPs."""
    B, H, N, D = cfg
    fm, proj = fmap_of(method), projected(method)
    bhnd = B * H * N * D * 2
    mats = 2 * H * K * N * 2 if proj else 0
    w = H * D * M * 2 if fm in ("favor", "relu") else 0
    fwd_bytes = 4 * bhnd + mats + w  # q, k, v in; out
    bwd_bytes = 7 * bhnd + 2 * mats + w  # q, k, v, dO in; dq, dk, dv out; E, F in, dE, dF out
    m = D if fm == "elu" else M
    L = K if proj else N
    g = []  # (FLOPs, operands needing a gradient)
    if proj:
        g += [(2 * K * N * D, 2)] * 2
    if fm is None:
        g += [(2 * N * K * D, 2)] * 2
    else:
        if fm != "elu":
            g += [(2 * L * D * m, 1), (2 * N * D * m, 1)]  # feature logits (W fixed)
        g += [(2 * L * m * D, 2), (2 * N * m * D, 2), (2 * N * m, 2), (2 * L * m, 1)]
    f = sum(x for x, _ in g) * B * H
    fb = sum(x * n for x, n in g) * B * H
    return fwd_bytes, f, bwd_bytes, fb


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def run_pair(fn, args, leaves, do):
    for t in leaves:
        t.grad = None
    out = fn(*args)
    out.backward(do)
    return out.detach(), [t.grad.detach().clone() for t in leaves]


def jobs(methods=METHODS):
    """(shape, method, k) of every row: k = m = K, and the k = 128 rows."""
    out = [(c, m, K) for c in CONFIGS for m in methods]
    if K == 256:
        out += [(c, m, 128) for c, m in EXTRA_K128 if c in CONFIGS and m in methods]
    return out


def set_k(k):
    global K
    K = k


def precompile(shard, nshards):
    for i, (cfg, meth, k) in enumerate(jobs()):
        if i % nshards != shard:
            continue
        set_k(k)
        t0 = time.time()
        args, leaves, do = inputs(cfg, meth)
        fn = torch.compile(make_formula(meth), dynamic=False)
        run_pair(fn, args, leaves, do)
        if DEV == "cuda":
            torch.cuda.synchronize()
        print(f"precompiled {cfg} {meth} k={k} in {time.time() - t0:.1f}s", flush=True)


# ---- flash-linear-attention (causal linear attention) and cuDNN dense SDPA: the other baselines ----
def fla_kernels():
    """{name: fn(q, k, v) on [B, N, H, D]} or a reason string when fla cannot be imported."""
    try:
        from fla.ops.linear_attn import chunk_linear_attn, fused_chunk_linear_attn
    except Exception as e:  # noqa: BLE001 - any import failure only skips these rows
        return f"flash-linear-attention not importable: {type(e).__name__}: {e}"
    return {"fla-chunk": chunk_linear_attn, "fla-fused_chunk": fused_chunk_linear_attn}


def fla_call(kern, q, k, v):
    # elu + 1 as splat's linear method; fla normalises by phi(q) . cumsum(phi(k)) (its scale cancels)
    o, _ = kern(Fn.elu(q) + 1, Fn.elu(k) + 1, v, normalize=True)
    return o


def fla_inputs(cfg, seed=0):
    B, H, N, D = cfg
    g = torch.Generator(device=DEV).manual_seed(seed)
    q, k, v, do = (torch.randn(B, N, H, D, device=DEV, generator=g).to(BF) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    return q, k, v, do


def warm_fla():
    kerns = fla_kernels()
    if isinstance(kerns, str):
        print(kerns, flush=True)
        return
    for cfg in CONFIGS:
        for name, kern in kerns.items():
            t0 = time.time()
            q, k, v, do = fla_inputs(cfg)
            fla_call(kern, q, k, v).backward(do)
            torch.cuda.synchronize()
            print(f"fla warmed {cfg} {name} in {time.time() - t0:.1f}s", flush=True)


def causal_linear_reference(q, k, v):
    """Causal elu + 1 linear attention in float32 on [B, N, H, D], chunk by chunk (the reference for fla's rows)."""
    pq, pk = ((Fn.elu(x.float()) + 1).transpose(1, 2) for x in (q, k))
    vf = v.float().transpose(1, 2)
    B, H, N, D = pq.shape
    S = pq.new_zeros(B, H, D, vf.shape[-1])
    z = pq.new_zeros(B, H, D)
    out = torch.empty_like(vf)
    C = 256
    for c0 in range(0, N, C):
        qc, kc, vc = pq[:, :, c0:c0 + C], pk[:, :, c0:c0 + C], vf[:, :, c0:c0 + C]
        a = (qc @ kc.transpose(-2, -1)).tril()
        num = qc @ S + a @ vc
        den = qc @ z.unsqueeze(-1) + a.sum(-1, keepdim=True)
        out[:, :, c0:c0 + C] = num / den
        S = S + kc.transpose(-2, -1) @ vc
        z = z + kc.sum(-2)
    return out.transpose(1, 2)


def other_rows(cfg, bw, gemm, repeats, warmup, kerns):
    """cuDNN dense SDPA and fla's causal linear attention at one shape; printed and returned as dicts."""
    B, H, N, D = cfg
    rows = []
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v, do = (torch.randn(B, H, N, D, device=DEV, dtype=BF) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    for causal in (False, True):
        def sd():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return Fn.scaled_dot_product_attention(q, k, v, is_causal=causal)
        try:
            f = median_ms(sd, repeats, warmup)
            fb = median_ms(lambda: sd().backward(do), repeats, warmup)
        except RuntimeError as e:
            print(f"{cfg} cuDNN SDPA causal={causal} skipped: {e}", flush=True)
            continue
        rows.append(dict(B=B, H=H, N=N, D=D, kernel="cudnn-sdpa", causal=causal, fwd=f, fb=fb))
    del q, k, v, do
    if isinstance(kerns, str):
        return rows
    q, k, v, do = fla_inputs(cfg)
    ref = causal_linear_reference(q.detach(), k.detach(), v.detach())
    fbytes, fflops, bbytes, bflops = cost("linear", cfg)
    floor_f = max(fbytes / bw, fflops / gemm) * 1e3
    floor_fb = floor_f + max(bbytes / bw, bflops / gemm) * 1e3
    for name, kern in kerns.items():
        try:
            err = rel(fla_call(kern, q, k, v).detach(), ref)
            f = median_ms(lambda: fla_call(kern, q, k, v), repeats, warmup)
            fb = median_ms(lambda: fla_call(kern, q, k, v).backward(do), repeats, warmup)
        except Exception as e:  # noqa: BLE001 - a failing fla kernel skips its row, visibly
            print(f"{cfg} {name} skipped: {type(e).__name__}: {e}", flush=True)
            continue
        rows.append(dict(B=B, H=H, N=N, D=D, kernel=name, causal=True, fwd=f, fb=fb, floor_fwd=floor_f,
                         floor_fb=floor_fb, err_out=err))
    for r in rows:
        fl = f" floor {r['floor_fwd']:.3f} / {r['floor_fb']:.3f}, out err {r['err_out']:.1e}" if "floor_fwd" in r else ""
        print(f"{cfg} {r['kernel']:16s} causal={r['causal']!s:5s} fwd {r['fwd']:.3f} fwd+bwd {r['fb']:.3f}{fl}",
              flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precompile", default=None, help="I/N: compile shard I of N of the baselines and exit")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (not a benchmark)")
    ap.add_argument("--configs", default=None, help="B,H,N,D[;B,H,N,D...] instead of the three benchmark shapes")
    ap.add_argument("--km", type=int, default=None, help="k = m (default 256)")
    ap.add_argument("--warm-fla", action="store_true", help="run fla's kernels once per shape (autotune) and exit")
    ap.add_argument("--no-others", action="store_true", help="skip the cuDNN SDPA and fla rows")
    args = ap.parse_args()
    global DEV, K, M, CONFIGS
    DEV = args.device
    if args.km:
        K = M = args.km
    if args.configs:
        CONFIGS = [tuple(int(x) for x in c.split(",")) for c in args.configs.split(";")]
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):  # one formula per method and shape: never fall back to eager
            setattr(torch._dynamo.config, name, 1024)
    if args.precompile:
        i, n = (int(x) for x in args.precompile.split("/"))
        precompile(i, n)
        return
    if args.warm_fla:
        warm_fla()
        return
    import splat.torch as st

    dev = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (smoke test)"
    bw, gemm = ceilings()
    print(f"device {dev}; copy bandwidth {bw / 1e12:.2f} TB/s (read + write), bf16 GEMM {gemm / 1e12:.0f} TFLOP/s; "
          f"torch {torch.__version__}", flush=True)
    compiled = {}
    rows = []
    kerns = fla_kernels() if DEV == "cuda" and not args.no_others else "not run (--no-others or no GPU)"
    if isinstance(kerns, str):
        print(f"fla rows skipped: {kerns}", flush=True)
    others = []
    for cfg, meth, kk in jobs(args.methods.split(",")):
        set_k(kk)
        a, leaves, do = inputs(cfg, meth)
        q, k, v, E, F, W = a
        ours_fn = lambda *x: st.flurka(*x, method=meth)  # noqa: E731
        fn = compiled.setdefault(meth, torch.compile(make_formula(meth), dynamic=False))
        ours = lambda: ours_fn(q, k, v, E, F, W)  # noqa: E731
        base = lambda: fn(q, k, v, E, F, W)  # noqa: E731
        t0 = time.time()
        o_b, g_b = run_pair(fn, a, leaves, do)  # compiles (or loads) the baseline's graphs
        compile_s = time.time() - t0
        o_s, g_s = run_pair(ours_fn, a, leaves, do)
        # float32 reference of the same formula on the same (bf16) values
        a32 = [None if x is None else x.detach().float().requires_grad_(x.requires_grad) for x in a]
        l32 = [x for x in a32[:5] if x is not None]
        o_r, g_r = run_pair(make_formula(meth), a32, l32, do.float())
        names = ["out", "dq", "dk", "dv", "dE", "dF"][:1 + len(leaves)]
        err_s = {n: rel(x, y) for n, x, y in zip(names, [o_s] + g_s, [o_r] + g_r)}
        err_b = {n: rel(x, y) for n, x, y in zip(names, [o_b] + g_b, [o_r] + g_r)}
        del o_r, g_r, a32, l32

        def clear():
            for t in leaves:
                t.grad = None

        def fb(f):
            return lambda: f().backward(do)

        r = dict(B=cfg[0], H=cfg[1], N=cfg[2], D=cfg[3], k=K, m=M, method=meth, compile_s=compile_s)
        r["splat_fwd"] = median_ms(ours, args.repeats, args.warmup)
        r["base_fwd"] = median_ms(base, args.repeats, args.warmup)
        r["splat_fb"] = median_ms(fb(ours), args.repeats, args.warmup, clear)
        r["base_fb"] = median_ms(fb(base), args.repeats, args.warmup, clear)
        fbytes, fflops, bbytes, bflops = cost(meth, cfg)
        r["floor_fwd"] = max(fbytes / bw, fflops / gemm) * 1e3
        r["floor_fb"] = r["floor_fwd"] + max(bbytes / bw, bflops / gemm) * 1e3
        r["err_splat"], r["err_base"] = err_s, err_b
        rows.append(r)
        es = max(err_s.values())
        eb = max(err_b.values())
        print(f"{cfg} k={K} {meth:16s} fwd splat {r['splat_fwd']:.3f} base {r['base_fwd']:.3f} "
              f"({r['base_fwd'] / r['splat_fwd']:.2f}x) floor {r['floor_fwd']:.3f} "
              f"({r['splat_fwd'] / r['floor_fwd']:.1f}x) | fwd+bwd splat {r['splat_fb']:.3f} base "
              f"{r['base_fb']:.3f} ({r['base_fb'] / r['splat_fb']:.2f}x) floor {r['floor_fb']:.3f} "
              f"({r['splat_fb'] / r['floor_fb']:.1f}x) | max err splat {es:.2e} base {eb:.2e} | "
              f"compile {compile_s:.1f}s", flush=True)
        del a, leaves, do, q, k, v, E, F, W, o_b, g_b, o_s, g_s
        if DEV == "cuda":
            torch.cuda.empty_cache()
        if DEV == "cuda" and not args.no_others and meth == "linear" and kk == 256:
            others += other_rows(cfg, bw, gemm, args.repeats, args.warmup, kerns)
            torch.cuda.empty_cache()
    meta = dict(device=dev, bandwidth=bw, gemm=gemm, torch=torch.__version__,
                baseline="torch.compile(dynamic=False) of the plain bf16 formula (bench/bench_flurka.py make_formula)",
                fla=kerns if isinstance(kerns, str) else "fla.ops.linear_attn chunk_linear_attn, fused_chunk_linear_attn")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_flurka.json"), "w") as fh:
        json.dump(dict(meta=meta, rows=rows, others=others), fh, indent=1)
    with open(os.path.join(args.out, "bench_flurka.md"), "w") as fh:
        fh.write(f"Device: {dev}; copy bandwidth {bw / 1e12:.2f} TB/s, bf16 GEMM {gemm / 1e12:.0f} TFLOP/s\n\n")
        fh.write("| B,H,N,D | k | method | fwd splat ms | fwd compile ms | fwd speedup | fwd floor ms | fwd splat/floor | "
                 "fwd+bwd splat ms | fwd+bwd compile ms | fwd+bwd speedup | fwd+bwd floor ms | fwd+bwd splat/floor | "
                 "max rel err splat | max rel err compile |\n")
        fh.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            fh.write(f"| {r['B']},{r['H']},{r['N']},{r['D']} | {r['k']} | {r['method']} | {r['splat_fwd']:.3f} | "
                     f"{r['base_fwd']:.3f} | {r['base_fwd'] / r['splat_fwd']:.2f}x | {r['floor_fwd']:.3f} | "
                     f"{r['splat_fwd'] / r['floor_fwd']:.1f} | {r['splat_fb']:.3f} | {r['base_fb']:.3f} | "
                     f"{r['base_fb'] / r['splat_fb']:.2f}x | {r['floor_fb']:.3f} | {r['splat_fb'] / r['floor_fb']:.1f} | "
                     f"{max(r['err_splat'].values()):.1e} | {max(r['err_base'].values()):.1e} |\n")

        fh.write("\n| B,H,N,D | kernel | causal | fwd ms | fwd+bwd ms | floor fwd / fwd+bwd ms (linear's) | out err |\n")
        fh.write("|---|---|---|---|---|---|---|\n")
        for r in others:
            fl = f"{r['floor_fwd']:.3f} / {r['floor_fb']:.3f}" if "floor_fwd" in r else "-"
            er = f"{r['err_out']:.1e}" if "err_out" in r else "-"
            fh.write(f"| {r['B']},{r['H']},{r['N']},{r['D']} | {r['kernel']} | {r['causal']} | {r['fwd']:.3f} | "
                     f"{r['fb']:.3f} | {fl} | {er} |\n")


if __name__ == "__main__":
    sys.exit(main())
