"""Serving benchmark on one CUDA device (docs/BENCHMARKS-serving.md): one decode step of splat.torch.decode against a
KV cache, contiguous and paged, against the floor (bytes of the KV rows the pattern touches / the copy bandwidth
measured here), dense decode with SDPA on the same cache, and flex decoding with the pattern's block mask.

    python3 bench/bench_serving.py --out results.jsonl [--batches 1 8 64] [--lengths 4096 32768 131072]

bf16, D = 128, H = 32, H_kv = 8, T = 1; CUDA events, medians. Each timed call runs inside a CUDA graph of --reps
calls (device time, no host overhead); "eager" is the same loop without the graph (what a Python caller sees).
splat runs the kernel SPLAT_DECODE_KERNEL selects (run_serving_gpu.sh: split), and "first kernel" the simple one.
Then (--hf-contexts) greedy generate() tokens/s of a random Llama with splat vs SDPA.
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


def with_env_ms(fn, reps, name, value):
    """The same call with one environment variable set (SPLAT_DECODE_KERNEL=simple: the first kernel, one CTA per
    sequence and kv head, no split; SPLAT_DECODE_DPL=8: the split kernel with 8 dims per lane)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        return median_ms(fn, reps, graph=True)
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


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


def hf_generate(contexts, new_tokens, emit, pattern="causal_window:w=4096+sink:g=4"):
    """Greedy generate() of a random Llama (config only) after a prompt of each context length: tokens/s of the
    decode steps with attn_implementation="splat" (prefill + decode through splat) and "sdpa" (dense)."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    import splat.hf  # noqa: F401  (registers "splat")
    for impl in ("splat", "sdpa"):
        cfg = LlamaConfig(vocab_size=1024, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                          num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=max(contexts) + 64)
        cfg.splat_pattern = pattern
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=impl).to("cuda", torch.bfloat16).eval()
        for n in contexts:
            ids = torch.randint(0, 1024, (1, n), device="cuda")
            with torch.no_grad():
                model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up (kernels)
                torch.cuda.synchronize()
                times = []
                for steps in (1, new_tokens + 1):  # prefill + 1 token, prefill + new_tokens + 1: the difference
                    t = time.time()
                    model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
                    torch.cuda.synchronize()
                    times.append(time.time() - t)
            r = {"kind": "hf_generate", "impl": impl, "pattern": pattern if impl == "splat" else "dense",
                 "context": n, "tokens_per_s": new_tokens / (times[1] - times[0]), "prefill_s": times[0]}
            emit(r)
        del model
        torch.cuda.empty_cache()


def print_tables(path):
    """The markdown tables of docs/BENCHMARKS-serving.md from a results file."""
    rows = [json.loads(line) for line in open(path)]
    bw = next(r["bytes_per_s"] for r in rows if r["kind"] == "bandwidth")
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s\n")

    def f(x):
        return f"{x:.4f}" if isinstance(x, float) and x < 0.1 else f"{x:.3f}" if isinstance(x, float) else "-"

    for pattern in dict.fromkeys(r["pattern"] for r in rows if r["kind"] == "decode"):
        print(f"`{pattern}` (ms per step; ratios to the floor)\n")
        print("| B | L | keys | floor | splat | x floor | paged | paged/contig | 8 dims/lane (contig / paged) "
              "| first kernel | eager (Python) | SDPA dense | flex |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["kind"] != "decode" or r["pattern"] != pattern:
                continue
            sdpa = r["sdpa_dense_ms"]
            print(f"| {r['B']} | {r['L'] // 1024}k | {r['keys']} | {f(r['floor_ms'])} | {f(r['splat_ms'])} | "
                  f"{r['splat_ms'] / r['floor_ms']:.2f} | {f(r['splat_paged_ms'])} | "
                  f"{r['splat_paged_ms'] / r['splat_ms']:.2f} | "
                  f"{f(r.get('splat_dpl8_ms'))} / {f(r.get('splat_paged_dpl8_ms'))} | {f(r['splat_first_kernel_ms'])} | "
                  f"{f(r['splat_eager_ms'])} | {f(sdpa) if isinstance(sdpa, float) else 'error'} | "
                  f"{f(r.get('flex_ms')) if 'flex_ms' in r else ('error' if 'flex_error' in r else '-')} |")
        print()
    hf = [r for r in rows if r["kind"] == "hf_generate" and "impl" in r]
    if hf:
        print("| impl | pattern | context | tokens/s | prefill + 1 token (s) |\n|---|---|---|---|---|")
        for r in hf:
            print(f"| {r['impl']} | {r['pattern']} | {r['context']} | {r['tokens_per_s']:.1f} | {r['prefill_s']:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-serving.jsonl")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768, 131072])
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    ap.add_argument("--page", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--flex-batches", type=int, nargs="*", default=[8], help="batches that also run flex decoding")
    ap.add_argument("--flex-budget-s", type=float, default=30.0, help="stop compiling flex kernels past this")
    ap.add_argument("--budget-s", type=float, default=70.0, help="stop starting new configurations past this")
    ap.add_argument("--hf-contexts", type=int, nargs="*", default=[4096, 32768])
    ap.add_argument("--hf-tokens", type=int, default=32)
    ap.add_argument("--hf-start-before-s", type=float, default=90.0, help="skip the HF part when started later")
    ap.add_argument("--table", metavar="RESULTS", help="print the markdown tables of a results file and exit")
    args = ap.parse_args()
    if args.table:
        return print_tables(args.table)
    H, Hkv, D, dt = 32, 8, 128, torch.bfloat16
    t0 = time.time()
    bw = copy_bandwidth()
    dev = torch.cuda.get_device_name()
    print(f"device {dev}; copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    out = open(args.out, "w")

    def emit(r):  # written as produced: a run cut short keeps what it measured
        out.write(json.dumps(r) + "\n")
        out.flush()
        print(json.dumps(r), flush=True)

    emit({"kind": "bandwidth", "device": dev, "bytes_per_s": bw})
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
            try:
                sdpa = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                                 args.reps, graph=True)
            except Exception as e:  # noqa: BLE001 (recorded, not fatal)
                sdpa = f"{type(e).__name__}: {str(e)[:200]}"
                torch.cuda.empty_cache()
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
                     "splat_first_kernel_ms": with_env_ms(contig, args.reps, "SPLAT_DECODE_KERNEL", "simple"),
                     "splat_dpl8_ms": with_env_ms(contig, args.reps, "SPLAT_DECODE_DPL", "8"),
                     "splat_paged_dpl8_ms": with_env_ms(paged, args.reps, "SPLAT_DECODE_DPL", "8"),
                     "paged_vs_contiguous_maxdiff": err}
                if B in args.flex_batches and flex_spent < args.flex_budget_s:
                    ts = time.time()
                    try:
                        fx = flex_decoder(pattern, B, H, Hkv, L)
                        r["flex_ms"] = median_ms(lambda: fx(q, k, v), args.reps)
                    except Exception as e:  # noqa: BLE001 (recorded, not fatal)
                        r["flex_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    flex_spent += time.time() - ts
                emit(r)
            del k, v, pool_k, pool_v
            torch.cuda.empty_cache()
    if args.hf_contexts and time.time() - t0 < args.hf_start_before_s:
        try:
            hf_generate(args.hf_contexts, args.hf_tokens, emit)
        except Exception as e:  # noqa: BLE001 (recorded, not fatal)
            emit({"kind": "hf_generate", "error": f"{type(e).__name__}: {str(e)[:300]}"})
    out.close()
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
