#!/usr/bin/env python3
"""Where the time of splat.torch.attention's forward + backward goes beyond the kernels (one GPU, one process).

For one pattern and shape (default window:w=256, B=4, H=16, N=4096, D=64, bf16), the median of
  autograd:  out = st.attention(q, k, v, pattern=...); torch.autograd.grad(out, (q, k, v), dO)
  ops:       the same through the registered torch.library ops instead of the eager autograd.Function
  graph:     the same, captured once in a CUDA graph and replayed (device time only: no Python, no dispatch)
  raw:       the two binding calls (_core.attention_lse, _core.attention_backward) on preallocated tensors
  host:      the CPU time of one autograd fwd+bwd call (no synchronisation, averaged over --host-reps calls at
             N=256 where the GPU work is negligible), for splat and for torch.compile(flex_attention)
so that autograd - graph is what the framework path costs on the device's timeline.

  python3 bench/profile_overhead.py [--pattern window:w=256] [--shape 4,16,4096,64]
"""
import argparse
import os
import sys
import time

import torch

import splat
import splat.torch as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_backward import events_ms, median  # noqa: E402


def median_ms(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    return median(events_ms(fn, reps))


def host_us(fn, reps):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t) / reps * 1e6
    torch.cuda.synchronize()
    return host


def tensors(shape, dev="cuda", dt=torch.bfloat16):
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(shape, device=dev, dtype=dt, generator=g).requires_grad_() for _ in range(3))
    return q, k, v, torch.randn(shape, device=dev, dtype=dt, generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pattern", default="window:w=256")
    ap.add_argument("--shape", default="4,16,4096,64")
    ap.add_argument("--host-reps", type=int, default=300)
    a = ap.parse_args()
    shape = tuple(int(x) for x in a.shape.split(","))
    q, k, v, dO = tensors(shape)

    def autograd():
        out = st.attention(q, k, v, pattern=a.pattern)
        return torch.autograd.grad(out, (q, k, v), dO)

    rows = {"autograd": median_ms(autograd)}
    eager = st._plain_eager
    st._plain_eager = lambda *ts: False  # the same call through the registered ops (what torch.compile sees)
    rows["ops"] = median_ms(autograd)
    st._plain_eager = eager
    autograd()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        autograd()
    rows["graph"] = median_ms(graph.replay)

    core = splat._core
    plan = splat.plan(a.pattern, shape[2], shape[3], "bf16", "cuda")
    b, h = shape[0], shape[1]
    out, lse = torch.empty_like(q), torch.empty(shape[:-1], device="cuda", dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    fws = torch.empty(max(1, core.workspace_bytes(plan, b * h, 1, 0)), dtype=torch.uint8, device="cuda")
    bws = torch.empty(max(1, core.backward_workspace_bytes(plan, b * h, 1, 0)), dtype=torch.uint8,
                      device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    dl = torch.utils.dlpack.to_dlpack
    qd, kd, vd = (x.detach() for x in (q, k, v))

    def raw():
        core.attention_lse(plan, dl(qd), dl(kd), dl(vd), dl(out), dl(lse), 0.0, "bhnd", "", stream, 0,
                           fws.data_ptr(), fws.numel(), None)
        core.attention_backward(plan, dl(qd), dl(kd), dl(vd), dl(out), dl(dO), dl(lse), dl(dq), dl(dk), dl(dv),
                                0.0, "bhnd", "", stream, 0, bws.data_ptr(), bws.numel(), None)

    rows["raw"] = median_ms(raw)
    print(f"{a.pattern}, shape {shape}, bf16, {torch.cuda.get_device_name()}")
    for name, ms in rows.items():
        print(f"  {name:9s} {ms:.3f} ms")
    print(f"  framework path on the device timeline: {rows['autograd'] - rows['graph']:.3f} ms; "
          f"binding calls over the graph: {rows['raw'] - rows['graph']:.3f} ms")

    small = (1, 2, 256, shape[3])
    sq, sk, sv, sdo = tensors(small)
    pat_small = a.pattern if "=" not in a.pattern else "window:w=16"
    small_call = lambda: torch.autograd.grad(st.attention(sq, sk, sv, pattern=pat_small), (sq, sk, sv), sdo)  # noqa: E731
    us = host_us(small_call, a.host_reps)
    st._plain_eager = lambda *ts: False
    us_ops = host_us(small_call, a.host_reps)
    st._plain_eager = eager
    print(f"  host time per splat fwd+bwd call ({pat_small}, N=256): {us:.0f} us ({us_ops:.0f} us through the ops)")
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
        bm = create_block_mask(lambda b_, h_, i, j: (i - j).abs() <= 16, None, None, 256, 256, BLOCK_SIZE=128)
        us = host_us(lambda: torch.autograd.grad(flex(sq, sk, sv, block_mask=bm), (sq, sk, sv), sdo), a.host_reps)
        print(f"  host time per torch.compile(flex_attention) fwd+bwd call (same): {us:.0f} us")
    except Exception as e:  # noqa: BLE001  (a baseline that cannot run here is reported, not fatal)
        print(f"  flex: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
