#!/usr/bin/env python3
"""Context-parallel weak scaling: splat.distributed against all-gathered K/V + FlexAttention, one process per GPU.

NOT RUN ON GPUs YET: no multi-GPU machine was available when this was written; there are no measurements. Only
the --cpu smoke mode has run (gloo, float32, small N, no baseline). splat.distributed itself is tested over gloo
on CPU processes (tests/python/test_distributed.py); its NCCL path, this script's GPU mode and its baseline have
never been executed.

Weak scaling as in the context-parallelism issue: N = --tokens-per-gpu (32k) x world tokens, B = 1, H = 16,
D = 128, bf16, contiguous shards (--zigzag: zigzag shards for splat). For window, causal_window + sink, dilated,
longformer and bigbird (fixed pattern sizes, PATTERNS below), per world size:
  fwd      out = splat.distributed.attention(q, k, v, pattern, seq_len=N)
  fwd+bwd  the same, then torch.autograd.grad(out, (q, k, v), dO)
median of --reps after warm-up (CUDA events, a barrier before each rep), the bytes this rank sent (counted by
splat.distributed) against the communication model, and the baseline: every rank all-gathers K and V
(torch.distributed.nn.functional.all_gather, differentiable: the bytes of ring attention, without its overlap) and
runs torch.compile(flex_attention) of its query rows against all keys with the pattern's mask_mod shifted to the
shard's offset. Weak-scaling efficiency = time(1 GPU) / time(world GPUs) at the same tokens per GPU.

  torchrun --nproc-per-node 8 bench/bench_distributed.py [--patterns window,longformer] [--out results.jsonl]

Run it for 1, 2, 4 and 8 GPUs (one torchrun each) and record device, command and commit in
docs/BENCHMARKS-distributed.md. bigbird goes through splat.distributed's fallback, which builds dense block masks:
it is skipped above --max-fallback-n total tokens (a limit of the fallback, see docs/DISTRIBUTED.md).
"""
import argparse
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import mask_mod_for  # noqa: E402

import splat.distributed as sd  # noqa: E402


# fixed sizes: weak scaling keeps the pattern and the tokens per GPU, and grows N with the world
PATTERNS = {"window": "window:w=2048",
            "causal_window+sink": "causal_window:w=4096+sink:g=4",
            "dilated": "dilated:w=512,d=4",
            "longformer": "longformer:w=1024,g=32",
            "bigbird": "bigbird:b=64,w=1,g=2,r=3,seed=1"}


def flex_mask_mod(spec, n):
    if spec.startswith("causal_window:") and "+sink:g=" in spec:
        w, g = (int(x) for x in spec.replace("causal_window:w=", "").split("+sink:g="))
        return lambda b, h, q, kv: ((q >= kv) & (q - kv <= w)) | (kv < g)
    return mask_mod_for(spec, n, None)


def timed(fn, reps, cuda=True):
    import time

    times = []
    for _ in range(reps):
        dist.barrier()
        if not cuda:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def baseline(spec, n, rank, world, sizes):
    from torch.distributed.nn.functional import all_gather
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    off = sum(sizes[:rank])
    base = flex_mask_mod(spec, n)
    block_mask = create_block_mask(lambda b, h, q, kv: base(b, h, q + off, kv), 1, 1, sizes[rank], n,
                                   device="cuda", BLOCK_SIZE=128)
    flex = torch.compile(flex_attention, dynamic=False)

    def attn(q, k, v):
        pad = max(sizes)  # all_gather needs equal sizes: pad, then drop the padding rows

        def full(x):
            x = torch.nn.functional.pad(x, (0, 0, 0, pad - x.shape[2]))
            parts = all_gather(x)
            return torch.cat([p[:, :, :s] for p, s in zip(parts, sizes)], 2)

        return flex(q, full(k), full(v), block_mask=block_mask)

    return attn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", default="window,causal_window+sink,dilated,longformer,bigbird")
    ap.add_argument("--tokens-per-gpu", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--zigzag", action="store_true", help="zigzag shards for splat (the baseline stays contiguous)")
    ap.add_argument("--max-fallback-n", type=int, default=65536)
    ap.add_argument("--out", default="")
    ap.add_argument("--cpu", action="store_true", help="smoke test: gloo, float32 on the CPU, no baseline")
    args = ap.parse_args()
    cuda = not args.cpu
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    dist.barrier()  # NCCL: a collective on the group before the first batch_isend_irecv
    n, h, d = args.tokens_per_gpu * world, args.heads, args.head_dim
    sharding = "zigzag" if args.zigzag else "contiguous"
    sizes = sd.shard_sizes(n, world)
    results = []
    for fam in args.patterns.split(","):
        spec = PATTERNS[fam]
        if fam == "bigbird" and n > args.max_fallback_n:
            if rank == 0:
                print(f"{fam}: skipped (the fallback's dense block masks at N={n} > --max-fallback-n)", flush=True)
            continue
        strategy = sd.plans(spec, n, world, sharding)[rank].strategy
        nl = sd.shard_sizes(n, world, sharding)[rank]
        g = torch.Generator(device=dev).manual_seed(rank)
        q, k, v, do = (torch.randn(1, h, nl, d, device=dev, dtype=dtype, generator=g) for _ in range(4))
        for x in (q, k, v):
            x.requires_grad_()

        def fwd():
            return sd.attention(q, k, v, spec, seq_len=n, sharding=sharding)

        def fwd_bwd():
            torch.autograd.grad(fwd(), (q, k, v), do)

        fwd_bwd()  # plans, kernels
        sd.reset_comm_stats()
        fwd()
        sent = sd.comm_stats()["bytes"].get("forward", 0)
        model = sd.comm_bytes(spec, n, world, heads=h, head_dim=d, dtype=dtype, sharding=sharding)[rank]
        row = {"pattern": spec, "world": world, "n": n, "rank": rank, "strategy": strategy, "device": dev,
               "splat_fwd_ms": timed(fwd, args.reps, cuda), "splat_fwd_bwd_ms": timed(fwd_bwd, args.reps, cuda),
               "bytes_fwd": sent, "model_fwd": model["forward"]}
        if cuda and not args.zigzag:
            qb, kb, vb = (x.detach().clone().requires_grad_() for x in (q, k, v))
            ring = baseline(spec, n, rank, world, sizes)
            ring(qb, kb, vb)
            row["flex_allgather_fwd_ms"] = timed(lambda: ring(qb, kb, vb), args.reps)
            row["flex_allgather_fwd_bwd_ms"] = timed(
                lambda: torch.autograd.grad(ring(qb, kb, vb), (qb, kb, vb), do), args.reps)
        results.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
    if args.out and rank == 0:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
