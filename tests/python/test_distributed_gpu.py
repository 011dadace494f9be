"""Context parallelism with CUDA tensors on one GPU (skipped without a usable CUDA build of splat).

- 1 rank over NCCL: the NCCL process group and splat's CUDA kernels on the shard tasks.
- 2 and 3 ranks sharing the GPU over gloo (3: the broadcasts and reduces of sinks and global rows): NCCL refuses two ranks on one device and gloo's send/recv take CPU
  tensors only, so splat.distributed stages device tensors through host copies on gloo; the local calls, the
  log-sum-exp merges and the backward run on the GPU as on a multi-GPU machine. What travels is counted as usual
  and checked against the communication model.
- A probe of gloo's send/recv with CUDA tensors themselves (recorded, not asserted: the answer is torch's).

Per case: outputs and gradients against the float64 dense reference and the single-process splat CUDA result,
tolerance idiom err(ours) <= 4 * max(err(same-dtype naive), err(single-process splat)) + atol. Findings go to
$SPLAT_DIST_GPU_OUT/distributed_gpu.json when that is set.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import pytest

import splat

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (torch.cuda.is_available() and splat.cuda_available()[0]):
    pytest.skip("needs a GPU and splat built with CUDA", allow_module_level=True)
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
import splat.distributed as sd  # noqa: E402
from test_distributed import _mask, _naive, _ref, _single  # noqa: E402

N, H, HK, D = 509, 4, 2, 64
ATOL = {"bfloat16": 8e-3, "float16": 2e-3}
PATTERNS = [("window:w=32", "contiguous"), ("causal_window:w=16+sink:g=4", "contiguous"),
            ("longformer:w=16,g=8", "contiguous"), ("bigbird:b=16,w=1,g=1,r=2", "contiguous"),
            ("mask", "contiguous"), ("causal", "zigzag"), ("causal_window:w=24", "zigzag")]
# gloo-3: the patterns whose columns and global rows are broadcast (and their gradients reduced) at 3 ranks
CONFIGS = {"nccl-1": ("nccl", 1, [PATTERNS[0], PATTERNS[2], PATTERNS[4]]), "gloo-2": ("gloo", 2, PATTERNS),
           "gloo-3": ("gloo", 3, [("causal_window:w=16+sink:g=4", "contiguous"), ("longformer:w=16,g=8", "contiguous")])}


def _run(pattern, sharding, dtype, rank, world):
    dev, dt = torch.device("cuda", 0), getattr(torch, dtype)
    gen = torch.Generator().manual_seed(7 + len(pattern))
    q, dout = (torch.randn(1, H, N, D, generator=gen).to(dev, dt) for _ in range(2))
    k, v = (torch.randn(1, HK, N, D, generator=gen).to(dev, dt) for _ in range(2))
    pat = torch.from_numpy(_mask(N)) if pattern == "mask" else pattern
    mask = splat.dense_mask(pat.numpy() if pattern == "mask" else pat, N).astype(bool)
    host = [x.cpu() for x in (q, k, v, dout)]  # the references on the host (the mask is a host array)
    ref, naive = _ref(*host, mask), _naive(*host, mask)
    single = [x.cpu() for x in _single(q, k, v, dout, pat)]
    loc = [sd.shard(x, rank, world, sharding).clone() for x in (q, k, v, dout)]
    ql, kl, vl = (x.requires_grad_() for x in loc[:3])
    sd.reset_comm_stats()
    out = sd.attention(ql, kl, vl, pat, seq_len=N, sharding=sharding)
    out.backward(loc[3])
    torch.cuda.synchronize()
    sent = sd.comm_stats()["bytes"]
    model = sd.comm_bytes(pat, N, world, heads=H, kv_heads=HK, head_dim=D, dtype=dt, sharding=sharding)[rank]
    res = {"bytes": [sent.get("forward", 0), sent.get("backward", 0)], "model": [model["forward"], model["backward"]],
           "strategy": model["strategy"], "checks": []}
    for name, a, r, nv, s1 in zip(("out", "dq", "dk", "dv"), (out, ql.grad, kl.grad, vl.grad), ref, naive, single):
        a, rs = a.detach().double().cpu(), sd.shard(r, rank, world, sharding).cpu()
        res["checks"].append({"name": name, "device": str(a.device), "nan": bool(torch.isnan(a).any()),
                              "err": (a - rs).abs().max().item() if a.numel() else 0.0,
                              "naive": (nv.double() - r).abs().max().item(),
                              "single": (s1.double() - r).abs().max().item(), "scale": max(1.0, r.abs().max().item())})
    return res


def _worker(rank, world, backend, patterns, tmp):
    torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    dist.barrier()  # every rank takes part in the group's first collective before any batch_isend_irecv
    results = {}
    for pattern, sharding in patterns:
        for dtype in ("bfloat16",) + (("float16",) if pattern == "window:w=32" else ()):
            name = f"{pattern}-{sharding}-{dtype}"
            t0 = time.time()
            try:
                results[name] = _run(pattern, sharding, dtype, rank, world)
            except Exception:
                results[name] = {"error": traceback.format_exc()}
            results[name]["seconds"] = time.time() - t0
    dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


_RESULTS = {}


def _results(config):
    if config not in _RESULTS:
        import torch.multiprocessing as mp

        backend, world, patterns = CONFIGS[config]
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_worker, args=(world, backend, patterns, tmp), nprocs=world, join=True)
            _RESULTS[config] = [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(world)]
        _record(config, _RESULTS[config])
    return _RESULTS[config]


def _record(key, value):
    out = os.environ.get("SPLAT_DIST_GPU_OUT")
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "distributed_gpu.json")
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[key] = value
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


CASES = [f"{p}-{s}-{d}" for p, s in PATTERNS for d in ("bfloat16",) + (("float16",) if p == "window:w=32" else ())]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("case", CASES)
def test_sharded_cuda_equals_single_process(config, case):
    if not any(case.startswith(f"{p}-{s}-") for p, s in CONFIGS[config][2]):
        pytest.skip(f"{case} does not run in {config}")
    for rank, res in enumerate(_results(config)):
        r = res[case]
        assert "error" not in r, f"rank {rank}: {r.get('error')}"
        dtype = case.rsplit("-", 1)[1]
        for ch in r["checks"]:
            where = f"{config} rank {rank} {ch['name']}"
            assert not ch["nan"], f"{where} has NaNs"
            bound = 4.0 * max(ch["naive"], ch["single"]) + ATOL[dtype] * ch["scale"]
            assert ch["err"] <= bound, f"{where}: error {ch['err']:.3g} > {bound:.3g} vs the float64 reference"
        assert r["bytes"] == r["model"], f"{config} rank {rank}: sent {r['bytes']} != model {r['model']}"


_PROBE = r"""
import os, sys, torch, torch.distributed as dist
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
x = torch.full((4,), float(rank + 1), device="cuda")
y = torch.zeros(4, device="cuda")
try:
    ops = [dist.P2POp(dist.isend, x, 1 - rank), dist.P2POp(dist.irecv, y, 1 - rank)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    torch.cuda.synchronize()
    print("RESULT", "moves CUDA tensors" if (y == 2 - rank).all().item() else "wrong values: " + str(y.tolist()))
except Exception as e:
    print("RESULT", "error:", type(e).__name__, str(e).splitlines()[0][:200])
"""


def test_probe_gloo_cuda_send_recv():
    """Does gloo's send/recv move CUDA tensors? Recorded for docs/DISTRIBUTED.md; never fails on the answer."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, "-c", _PROBE, str(r), f"{tmp}/store"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for r in range(2)]
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append("RESULT timeout (60 s)")
    found = [line for o in outs for line in o.splitlines() if line.startswith("RESULT")]
    finding = {"results": found or ["no result"], "returncodes": [p.returncode for p in procs],
               "tail": [o[-600:] for o in outs]}
    _record("gloo_cuda_send_recv", finding)
    print(finding)
