"""Serving benchmark on one CUDA device (docs/BENCHMARKS-serving.md): one decode step of splat.torch.decode against a
KV cache, contiguous and paged, against the floor (bytes of the KV rows the pattern touches / the copy bandwidth
measured here), dense decode with SDPA on the same cache, and flex decoding with the pattern's block mask.

    python3 bench/bench_serving.py --out results.jsonl [--batches 1 8 64] [--lengths 4096 32768 131072]

bf16, D = 128, H = 32, H_kv = 8, T = 1; CUDA events, medians. Each timed call runs inside a CUDA graph of --reps
calls (device time, no host overhead); "eager" is the same loop without the graph (what a Python caller sees).
"""

import argparse
import json
import os
import statistics
import time

import torch

import splat
import splat.torch
from splat._serving import decode_plan

PATTERNS = {  # pattern -> flex mask_mod at query position qpos
    "causal_window:w=4096+sink:g=4": lambda qpos, kv: (kv <= qpos) & ((qpos - kv <= 4096) | (kv < 4)),
    "causal_dilated:w=2048,d=4": lambda qpos, kv: (kv <= qpos) & (qpos - kv <= 2048 * 4) & ((qpos - kv) % 4 == 0),
}


def median_ms(fn, reps, warmup=3, graph=False):
    """Median time of one call of fn (ms) over 7 timed batches of `reps` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    run = fn
    if graph:
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            for _ in range(reps):
                fn()
        run = g.replay
    times = []
    for _ in range(7):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        if graph:
            run()
        else:
            for _ in range(reps):
                run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / reps)
    return statistics.median(times)


def first_kernel_ms(fn, reps):
    """The same call on the first decode kernel (one CTA per sequence and kv head, no split)."""
    before = os.environ.get("SPLAT_DECODE_KERNEL")
    os.environ["SPLAT_DECODE_KERNEL"] = "simple"
    try:
        return median_ms(fn, reps, graph=True)
    finally:
        if before is None:
            del os.environ["SPLAT_DECODE_KERNEL"]
        else:
            os.environ["SPLAT_DECODE_KERNEL"] = before


def copy_bandwidth():
    """Device copy bandwidth in bytes/s: (read + write bytes) / time of a 4 GiB copy."""
    x = torch.empty(2 << 30, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), 5)
    bw = 2 * x.numel() * x.element_size() / (ms * 1e-3)
    del x, y
    torch.cuda.empty_cache()
    return bw


def touched_keys(pattern, L):
    return len(decode_plan(pattern, 128, "bfloat16").row_keys(L - 1, L))


def flex_decoder(pattern, B, H, Hkv, L):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    mod = PATTERNS[pattern]
    qpos = L - 1

    def mask_mod(b, h, q_idx, kv_idx):
        return mod(q_idx + qpos, kv_idx)

    bm = create_block_mask(mask_mod, B=None, H=None, Q_LEN=1, KV_LEN=L, device="cuda")
    fn = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: fn(q, k, v, block_mask=bm, enable_gqa=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-serving.jsonl")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768, 131072])
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    ap.add_argument("--page", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--flex-batches", type=int, nargs="*", default=[8], help="batches that also run flex decoding")
    ap.add_argument("--flex-budget-s", type=float, default=60.0, help="stop compiling flex kernels past this")
    ap.add_argument("--budget-s", type=float, default=150.0, help="stop starting new configurations past this")
    args = ap.parse_args()
    H, Hkv, D, dt = 32, 8, 128, torch.bfloat16
    t0 = time.time()
    bw = copy_bandwidth()
    dev = torch.cuda.get_device_name()
    print(f"device {dev}; copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    rows = [{"kind": "bandwidth", "device": dev, "bytes_per_s": bw}]
    flex_spent = 0.0
    gen = torch.Generator(device="cuda").manual_seed(0)
    for B in args.batches:
        for L in args.lengths:
            if time.time() - t0 > args.budget_s:
                print(f"budget reached: B={B} L={L} and later not run", flush=True)
                break
            k = torch.empty(B, Hkv, L, D, dtype=dt, device="cuda").normal_(generator=gen)
            v = torch.empty_like(k).normal_(generator=gen)
            q = torch.empty(B, H, 1, D, dtype=dt, device="cuda").normal_(generator=gen)
            lengths = torch.full((B,), L, dtype=torch.int32, device="cuda")
            P = args.page
            pages = B * L // P
            # the same rows as a vLLM-style pool [pages, P, H_kv, D] with the pages in shuffled order
            perm = torch.randperm(pages, generator=torch.Generator().manual_seed(1)).to(device="cuda",
                                                                                         dtype=torch.int32)
            table = perm.view(B, L // P).contiguous()
            pool_k = torch.empty(pages, P, Hkv, D, dtype=dt, device="cuda")
            pool_v = torch.empty_like(pool_k)
            pool_k[perm.long()] = k.transpose(1, 2).reshape(pages, P, Hkv, D)
            pool_v[perm.long()] = v.transpose(1, 2).reshape(pages, P, Hkv, D)
            qn = q.transpose(1, 2).contiguous()  # [B, 1, H, D] for the bnhd layout
            sdpa = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                             args.reps, graph=True)
            for pattern in args.patterns:
                keys = touched_keys(pattern, L)
                floor_ms = B * Hkv * keys * D * 2 * 2 / bw * 1e3
                contig = lambda: splat.torch.decode(q, k, v, lengths, pattern=pattern, validate=False)  # noqa: E731
                paged = lambda: splat.torch.decode(qn, pool_k, pool_v, lengths, pattern=pattern,  # noqa: E731
                                                   block_table=table, layout="bnhd", validate=False)
                # the two layouts agree (same rows, the pages only moved)
                err = (contig().float() - paged().transpose(1, 2).float()).abs().max().item()
                r = {"kind": "decode", "pattern": pattern, "B": B, "L": L, "keys": keys, "floor_ms": floor_ms,
                     "splat_ms": median_ms(contig, args.reps, graph=True),
                     "splat_paged_ms": median_ms(paged, args.reps, graph=True),
                     "splat_eager_ms": median_ms(contig, args.reps), "sdpa_dense_ms": sdpa,
                     "splat_first_kernel_ms": first_kernel_ms(contig, args.reps),
                     "paged_vs_contiguous_maxdiff": err}
                if B in args.flex_batches and flex_spent < args.flex_budget_s:
                    ts = time.time()
                    try:
                        fx = flex_decoder(pattern, B, H, Hkv, L)
                        r["flex_ms"] = median_ms(lambda: fx(q, k, v), args.reps)
                    except Exception as e:  # noqa: BLE001 (recorded, not fatal)
                        r["flex_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    flex_spent += time.time() - ts
                rows.append(r)
                print(json.dumps(r), flush=True)
            del k, v, pool_k, pool_v
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
