"""Packed varlen prefill benchmark on one CUDA device (docs/BENCHMARKS-serving.md, Varlen): 64 sequences with lengths
drawn from 256..8192 (fixed seed), bf16, D = 128, H = 32, H_kv = 8, packed [total, H, D]. Per pattern:

  splat varlen   splat.torch.varlen_attention with host cu_seqlens (one launch, the batch's packed plan cached);
                 also with cu_seqlens on the device (one D2H copy per call: a synchronisation)
  splat padded   the same tokens as one right-padded batch [64, max_len, H, D] through splat.torch.attention with
                 key_lengths; and that time x (real work / padded work), work = attended (query, key) pairs: the
                 issue's "padded minus padding" figure
  flex           torch.compile(flex_attention) on the packed [1, H, total, D] with a document mask_mod (document ids
                 from cu_seqlens, the pattern's closed form inside each document, checked against splat.dense_mask);
                 create_block_mask(BLOCK_SIZE=128) is built outside the timed region

Times: CUDA events around --reps calls, after warm-up, --rounds interleaved rounds (each implementation once per
round), medians. Plan time: the packed plan of a new composition of the same lengths, and of a pattern object that
has not seen the lengths either (kernels already loaded). Prints a markdown table and writes jsonl rows naming the
device, command, commit and each baseline.

    python3 bench/bench_varlen.py --out results-varlen.jsonl [--patterns ...] [--no-flex] [--reps 3 --rounds 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import splat
import splat.torch
from splat import _core
from splat._serving import varlen_plans

# pattern -> closed form at (query position i, key position j) inside one sequence
PATTERNS = {
    "causal_window:w=4096+sink:g=4&causal": lambda i, j: (j <= i) & ((i - j <= 4096) | (j < 4)),
    "causal_dilated:w=2048,d=4": lambda i, j: (j <= i) & (i - j <= 2048 * 4) & ((i - j) % 4 == 0),
    "causal": lambda i, j: j <= i,
}


def commit():
    if os.environ.get("SPLAT_COMMIT"):
        return os.environ["SPLAT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def check_closed_form(pattern, n=8300):
    """The flex mask_mod's closed form against splat's own mask at one length past every window."""
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(n).view(1, -1)
    want = torch.from_numpy(splat.dense_mask(pattern, n).astype(bool))
    return bool(torch.equal(PATTERNS[pattern](i, j), want))


def timed_rounds(fns, reps, rounds, warmup=2):
    """{name: median ms of one call} over `rounds` interleaved rounds of `reps` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(reps):
                fn()
            b.record()
            b.synchronize()
            times[name].append(a.elapsed_time(b) / reps)
    return {name: statistics.median(t) for name, t in times.items()}


def flex_runner(pattern, cu, total, q, k, v):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    lengths = cu[1:] - cu[:-1]
    doc = torch.repeat_interleave(torch.arange(len(lengths), device="cuda", dtype=torch.int32), lengths.long())
    start = cu[:-1].to(torch.int32)
    form = PATTERNS[pattern]

    def mask_mod(b, h, q_idx, kv_idx):
        dq, dk = doc[q_idx], doc[kv_idx]
        return (dq == dk) & form(q_idx - start[dq], kv_idx - start[dk])

    t0 = time.time()
    mask = create_block_mask(mask_mod, None, None, total, total, device="cuda", BLOCK_SIZE=128, _compile=True)
    mask_s = time.time() - t0
    fn = torch.compile(flex_attention, dynamic=False)
    qf, kf, vf = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # [1, H, total, D] views of [total, H, D]
    return (lambda: fn(qf, kf, vf, block_mask=mask, enable_gqa=True)), mask_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-varlen.jsonl")
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--flex-patterns", nargs="*", default=None, help="patterns that also run flex (default: all)")
    ap.add_argument("--budget-s", type=float, default=600.0, help="stop starting new patterns past this")
    args = ap.parse_args()
    H, Hkv, D, dt = 32, 8, 128, torch.bfloat16
    t_start = time.time()
    device, sha = torch.cuda.get_device_name(), commit()
    command = " ".join([os.path.basename(sys.executable)] + sys.argv)
    lengths = np.random.default_rng(args.seed).integers(args.min_len, args.max_len + 1, args.seqs).astype(np.int32)
    cu_np = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total, max_len, B = int(cu_np[-1]), int(lengths.max()), args.seqs
    cu_host, cu_dev = torch.from_numpy(cu_np), torch.from_numpy(cu_np).cuda()
    print(f"device {device}; commit {sha}; {B} sequences, {total} tokens, max {max_len}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    q = torch.empty(total, H, D, dtype=dt, device="cuda").normal_(generator=gen)
    k = torch.empty(total, Hkv, D, dtype=dt, device="cuda").normal_(generator=gen)
    v = torch.empty(total, Hkv, D, dtype=dt, device="cuda").normal_(generator=gen)
    # the padded batch [B, max_len, H, D] (layout bnhd), zeros past each length, key_lengths = the lengths
    qp = torch.zeros(B, max_len, H, D, dtype=dt, device="cuda")
    kp = torch.zeros(B, max_len, Hkv, D, dtype=dt, device="cuda")
    vp = torch.zeros_like(kp)
    for b in range(B):
        s, n = int(cu_np[b]), int(lengths[b])
        qp[b, :n], kp[b, :n], vp[b, :n] = q[s:s + n], k[s:s + n], v[s:s + n]
    key_lengths = torch.from_numpy(lengths).cuda()
    out = open(args.out, "w")
    rows = []

    def emit(r):
        r.update(device=device, commit=sha, command=command)
        out.write(json.dumps(r) + "\n")
        out.flush()
        print(json.dumps(r), flush=True)
        rows.append(r)

    for pattern in args.patterns:
        if time.time() - t_start > args.budget_s:
            print(f"budget reached: {pattern} and later not run", flush=True)
            break
        plans = varlen_plans(pattern)
        r = {"kind": "varlen", "pattern": pattern, "seqs": B, "total": total, "max_len": max_len, "H": H, "Hkv": Hkv,
             "D": D, "dtype": "bf16", "lengths_seed": args.seed, "reps": args.reps, "rounds": args.rounds}
        # first call: analyses, packed plan and kernels (NVRTC or the disk cache)
        t0 = time.time()
        ours = splat.torch.varlen_attention(q, k, v, cu_host, max_len, pattern=pattern)
        torch.cuda.synchronize()
        r["first_call_s"] = time.time() - t0
        perm = np.random.default_rng(1).permutation(B)
        cu_new = np.concatenate([[0], np.cumsum(lengths[perm])]).astype(np.int32)
        r["plan_new_composition"] = _core.varlen_plan_times(plans, cu_new, max_len, "bf16", D)
        r["plan_new_lengths"] = _core.varlen_plan_times(_core.make_varlen_plans(pattern), cu_np, max_len, "bf16", D)
        padded = lambda: splat.torch.attention(qp, kp, vp, pattern=pattern, layout="bnhd",  # noqa: E731
                                               key_lengths=key_lengths)
        fns = {"splat_varlen": lambda: splat.torch.varlen_attention(q, k, v, cu_host, max_len, pattern=pattern),
               "splat_varlen_device_cu": lambda: splat.torch.varlen_attention(q, k, v, cu_dev, max_len,
                                                                              pattern=pattern),
               "splat_padded": padded}
        # the packed answer is the padded one on the real tokens
        po = padded()
        diff = max((ours[int(cu_np[b]):int(cu_np[b + 1])].float() - po[b, :int(lengths[b])].float()).abs().max().item()
                   for b in range(B))
        r["varlen_vs_padded_maxdiff"] = diff
        del po
        run_flex = not args.no_flex and (args.flex_patterns is None or pattern in args.flex_patterns)
        if run_flex:
            r["flex_closed_form_ok"] = check_closed_form(pattern)
            try:
                t0 = time.time()
                fx, r["flex_block_mask_s"] = flex_runner(pattern, cu_dev, total, q, k, v)
                fo = fx()
                torch.cuda.synchronize()
                r["flex_first_call_s"] = time.time() - t0
                r["varlen_vs_flex_maxdiff"] = (fo[0].transpose(0, 1).float() - ours.float()).abs().max().item()
                del fo
                fns["flex"] = fx
            except Exception as e:  # noqa: BLE001 (recorded, not fatal)
                r["flex_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        ms = timed_rounds(fns, args.reps, args.rounds)
        real = sum(_core.Geometry(pattern, int(n)).nnz for n in lengths)
        r["work_real"], r["work_padded"] = real, B * _core.Geometry(pattern, max_len).nnz
        r.update({f"{name}_ms": t for name, t in ms.items()})
        r["padded_minus_padding_ms"] = ms["splat_padded"] * real / r["work_padded"]
        r["varlen_vs_padded_minus_padding"] = r["padded_minus_padding_ms"] / ms["splat_varlen"]  # >= 0.9: target
        if "flex" in ms:
            r["varlen_speedup_vs_flex"] = ms["flex"] / ms["splat_varlen"]
        emit(r)
        torch.cuda.empty_cache()

    print(f"\n{device}, commit {sha}: `{command}`\n")
    print("| pattern | splat varlen (ms) | + device cu_seqlens | splat padded | padded x real/padded work | "
          "varlen vs padded-minus-padding | flex (doc mask) | plan, new composition (ms) | plan, new lengths |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fx = f"{r['flex_ms']:.2f}" if "flex_ms" in r else ("error" if "flex_error" in r else "-")
        print(f"| {r['pattern']} | {r['splat_varlen_ms']:.2f} | {r['splat_varlen_device_cu_ms']:.2f} | "
              f"{r['splat_padded_ms']:.2f} | {r['padded_minus_padding_ms']:.2f} | "
              f"{r['varlen_vs_padded_minus_padding']:.2f}x | {fx} | {r['plan_new_composition']['total_ms']:.1f} | "
              f"{r['plan_new_lengths']['total_ms']:.1f} |")


if __name__ == "__main__":
    main()
