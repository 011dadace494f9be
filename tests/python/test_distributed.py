"""Context parallelism (splat.distributed) on CPU processes with the gloo backend.

One torch.multiprocessing spawn per world size (1, 2, 3, 4) runs every case inside and writes its findings; the
tests below read them. Per case: the sharded outputs and gradients (dq, dk, dv) against the float64 dense
reference and the single-process splat result, with fresh random inputs and the tolerance idiom
err(ours) <= k * err(same-dtype naive) + atol; the bytes each rank sent against the communication model. N is
prime (not divisible by any world size), k / v have half the heads of q (GQA).
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest

import splat

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)
import splat.distributed as sd  # noqa: E402
import splat.torch as st  # noqa: E402

N, H, HK, D = 61, 4, 2, 16
ATOL = {"float32": 2e-6, "float64": 1e-6}  # float64: the lse is float32 in every merge and backward, as in splat


def _mask(n):
    """An explicit mask: random 8 x 8 blocks (many block pairs empty), random entries inside, one empty row."""
    rng = np.random.default_rng(7)
    blocks = rng.random(((n + 7) // 8, (n + 7) // 8)) < 0.3
    m = np.kron(blocks, np.ones((8, 8), dtype=bool))[:n, :n] & (rng.random((n, n)) < 0.6)
    m |= np.eye(n, dtype=bool)
    m[10] = False
    return m


def _case(pattern, sharding="contiguous", **kw):
    c = dict(pattern=pattern, sharding=sharding, strategy="auto", overlap=True, dtype="float32", layout="bhnd",
             batch=1, n=N)
    c.update(kw)
    c["name"] = "-".join(f"{k}={v}" for k, v in sorted(kw.items())) + ("-" if kw else "") + f"{pattern}-{sharding}"
    return c


CAUSAL = ["causal_window:w=7", "causal_dilated:w=3,d=2", "causal_window:w=8+sink:g=4&causal", "causal",
          "strided:s=8&causal", "(window:w=3+sink:g=2)&causal"]
CASES = ([_case(p) for p in ["window:w=5", "dilated:w=4,d=3", "strided:s=8", "sink:g=2", "global:g=3",
                             "causal_window:w=8+sink:g=4", "longformer:w=4,g=2", "bigbird:b=8,w=1,g=1,r=2",
                             "mask", "fixed:l=16,c=4&window:w=9"]]
         + [_case(p) for p in CAUSAL] + [_case(p, "zigzag") for p in CAUSAL]
         + [_case("window:w=5", "zigzag"), _case("longformer:w=4,g=2", "zigzag"), _case("mask", "zigzag"),
            _case("window:w=5", strategy="ring"), _case("causal_window:w=7", "zigzag", strategy="ring"),
            _case("longformer:w=4,g=2", overlap=False), _case("window:w=6", dtype="float64"),
            _case("longformer:w=4,g=2", layout="bnhd", batch=2), _case("window:w=5", n=200),
            _case("blocked:b=16", n=64), _case("longformer:w=1,g=1", n=3), _case("causal", "zigzag", n=3),
            # halos as wide as several shards, and the halo form of patterns the ring serves better
            _case("window:w=40", strategy="halo"), _case("longformer:w=30,g=20", strategy="halo"),
            _case("bigbird:b=8,w=1,g=1,r=2", strategy="halo"), _case("mask", strategy="halo"),
            _case("causal", "zigzag", strategy="halo")])


def _random_cases(count, seed=11):
    """Compositions of random leaves, random N, sharding, strategy and overlap (fixed seed: every process and
    every run sees the same cases)."""
    r = random.Random(seed)

    def leaf(n):
        w, g = r.randint(0, n // 3), r.randint(1, max(1, n // 4))
        return r.choice([f"window:w={w}", f"causal_window:w={w}", f"dilated:w={r.randint(1, 5)},d={r.randint(1, 4)}",
                         f"sink:g={g}", f"global:g={g}", f"longformer:w={w},g={g}", "causal",
                         f"strided:s={r.randint(2, 9)}", f"blocked:b={r.randint(1, 20)}",
                         f"bigbird:b={r.randint(2, 9)},w=1,g=1,r=1,seed={r.randint(0, 99)}"])

    cases = []
    for _ in range(count):
        n = r.randint(8, 90)
        spec = r.choice([leaf(n), f"{leaf(n)}+{leaf(n)}", f"({leaf(n)}+{leaf(n)})&causal", f"{leaf(n)}&{leaf(n)}"])
        cases.append(_case(spec, r.choice(["contiguous", "zigzag"]), n=n, strategy=r.choice(["auto", "ring", "halo"]),
                           overlap=r.random() < 0.7))
    return cases


FIXED = list(CASES)
CASES += _random_cases(10)


# strategy="auto" by the rows each form moves: bands, sinks, global tokens (also a reach that is a mask's, as
# fixed & window) take the halo; wide patterns whose halo is every other shard (causal, strided, masks) the ring
HALO = {"window:w=5", "dilated:w=4,d=3", "sink:g=2", "global:g=3", "causal_window:w=8+sink:g=4",
        "longformer:w=4,g=2", "fixed:l=16,c=4&window:w=9", "causal_window:w=7", "causal_dilated:w=3,d=2",
        "causal_window:w=8+sink:g=4&causal", "(window:w=3+sink:g=2)&causal"}
RING = {"strided:s=8", "mask", "causal", "strided:s=8&causal"}


def _ref(q, k, v, dout, mask):
    """float64 dense attention and its gradients (GQA groups summed)."""
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    s = (q @ k.repeat_interleave(g, 1).transpose(-1, -2)) * q.shape[-1] ** -0.5
    p = torch.softmax(s.masked_fill(~torch.from_numpy(mask), float("-inf")), -1).nan_to_num(0.0)
    out = p @ v.repeat_interleave(g, 1)
    out.backward(dout.double())
    return [out.detach(), q.grad, k.grad, v.grad]


def _naive(q, k, v, dout, mask):
    """Dense masked attention by autograd in the inputs' dtype: the same-dtype naive error."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    s = (q @ k.repeat_interleave(g, 1).transpose(-1, -2)) * q.shape[-1] ** -0.5
    p = torch.softmax(s.masked_fill(~torch.from_numpy(mask), float("-inf")), -1).nan_to_num(0.0)
    out = p @ v.repeat_interleave(g, 1)
    out.backward(dout)
    return [out.detach(), q.grad, k.grad, v.grad]


def _single(q, k, v, dout, pattern):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = st.attention(q, k, v, pattern=pattern)
    out.backward(dout)
    return [out.detach(), q.grad, k.grad, v.grad]


def _run_case(c, rank, world, group=None):
    n, dt = c["n"], getattr(torch, c["dtype"])
    gen = torch.Generator().manual_seed(1000 + n + len(c["name"]))
    b = c["batch"]
    q, dout = (torch.randn(b, H, n, D, generator=gen, dtype=torch.float64).to(dt) for _ in range(2))
    k, v = (torch.randn(b, HK, n, D, generator=gen, dtype=torch.float64).to(dt) for _ in range(2))
    pattern = torch.from_numpy(_mask(n)) if c["pattern"] == "mask" else c["pattern"]
    mask = splat.dense_mask(pattern.numpy() if c["pattern"] == "mask" else pattern, n).astype(bool)
    ref, naive, single = _ref(q, k, v, dout, mask), _naive(q, k, v, dout, mask), _single(q, k, v, dout, pattern)
    sh = c["sharding"]
    loc = [sd.shard(x, rank, world, sh).clone() for x in (q, k, v, dout)]
    if c["layout"] == "bnhd":
        loc = [x.transpose(1, 2).contiguous() for x in loc]
    ql, kl, vl = (x.requires_grad_() for x in loc[:3])
    sd.reset_comm_stats()
    out = sd.attention(ql, kl, vl, pattern, seq_len=n, sharding=sh, strategy=c["strategy"], overlap=c["overlap"],
                       layout=c["layout"], group=group)
    fwd = sd.comm_stats()["bytes"].get("forward", 0)
    out.backward(loc[3])
    bwd = sd.comm_stats()["bytes"].get("backward", 0)
    ours = [out.detach(), ql.grad, kl.grad, vl.grad]
    if c["layout"] == "bnhd":
        ours = [x.transpose(1, 2) for x in ours]
    model = sd.comm_bytes(pattern, n, world, heads=H, kv_heads=HK, head_dim=D, dtype=dt, batch=b, sharding=sh,
                          strategy=c["strategy"], overlap=c["overlap"])
    res = {"bytes": [fwd, bwd], "model": [model[rank]["forward"], model[rank]["backward"]],
           "strategy": model[rank]["strategy"], "checks": []}
    for name, a, r, nv, s1 in zip(("out", "dq", "dk", "dv"), ours, ref, naive, single):
        a = a.double()
        rs = sd.shard(r, rank, world, sh)
        res["checks"].append({
            "name": name, "nan": bool(torch.isnan(a).any()),
            "err": (a - rs).abs().max().item() if a.numel() else 0.0,
            "err_single": (a - sd.shard(s1.double(), rank, world, sh)).abs().max().item() if a.numel() else 0.0,
            "naive": (nv.double() - r).abs().max().item(), "single": (s1.double() - r).abs().max().item(),
            "scale": max(1.0, r.abs().max().item())})
    return res


def _worker(rank, world, tmp):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = {}
    for c in CASES:
        try:
            results[c["name"]] = _run_case(c, rank, world)
        except Exception:  # recorded: the test of this case fails with the traceback
            results[c["name"]] = {"error": traceback.format_exc()}
    # a subgroup: ranks 1 and 3 of 4 (the plans speak of group ranks, the messages of global ones)
    if world == 4:
        sub = dist.new_group([1, 3])
        if rank in (1, 3):
            try:
                results["subgroup"] = _run_case(SUBGROUP, rank // 2, 2, group=sub)
            except Exception:
                results["subgroup"] = {"error": traceback.format_exc()}
    if world in (2, 3):  # messages and collectives staged through host copies, as for CUDA tensors on gloo
        from splat import _cp_comm

        own = _cp_comm.Batch._host, _cp_comm._staged
        _cp_comm.Batch._host, _cp_comm._staged = (lambda self, device: True), (lambda group, tensor: True)
        for c in STAGED:
            try:
                results["staged:" + c["name"]] = _run_case(c, rank, world)
            except Exception:
                results["staged:" + c["name"]] = {"error": traceback.format_exc()}
        _cp_comm.Batch._host, _cp_comm._staged = own
    # bad input is one clear error, on every rank alike
    try:
        sd.attention(torch.zeros(1, H, 3, D), torch.zeros(1, HK, 3, D), torch.zeros(1, HK, 3, D), "window:w=2",
                     seq_len=N)
        results["bad_size"] = "no error"
    except ValueError as e:
        results["bad_size"] = str(e)
    dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


_RESULTS = {}


def _results(world):
    if world not in _RESULTS:
        import torch.multiprocessing as mp

        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_worker, args=(world, tmp), nprocs=world, join=True)
            _RESULTS[world] = []
            for r in range(world):
                with open(os.path.join(tmp, f"rank{r}.json")) as f:
                    _RESULTS[world].append(json.load(f))
    return _RESULTS[world]


SUBGROUP = _case("longformer:w=4,g=2", "zigzag")
STAGED = [_case("longformer:w=4,g=2"), _case("mask"), _case("causal_window:w=7", "zigzag")]


def _check_case(r, rank, world, case):
    assert "error" not in r, f"rank {rank}: {r.get('error')}"
    for ch in r["checks"]:
        where = f"rank {rank}/{world} {ch['name']}"
        assert not ch["nan"], f"{where} has NaNs"
        atol = ATOL[case["dtype"]] * ch["scale"]
        bound = 4.0 * max(ch["naive"], ch["single"]) + atol
        assert ch["err"] <= bound, f"{where}: error {ch['err']:.3g} > {bound:.3g} vs the float64 reference"
        assert ch["err_single"] <= bound, f"{where}: differs from single-process splat by {ch['err_single']:.3g}"
    assert r["bytes"] == r["model"], f"rank {rank}/{world}: sent (fwd, bwd) {r['bytes']} != model {r['model']}"


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_sharded_equals_single_process(world, case):
    for rank, res in enumerate(_results(world)):
        _check_case(res[case["name"]], rank, world, case)


def test_subgroup():
    res = _results(4)
    for rank in (1, 3):
        _check_case(res[rank]["subgroup"], rank // 2, 2, SUBGROUP)
    assert "subgroup" not in res[0] and "subgroup" not in res[2]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_strategies_and_closed_form_bytes(world):
    res = _results(world)
    for c in FIXED:
        want = c["strategy"] if c["strategy"] != "auto" else "halo" if c["pattern"] in HALO else "ring" \
            if c["pattern"] in RING else None
        if want is not None:
            assert res[0][c["name"]]["strategy"] == want, c["name"]
    # window:w=5 over shards of 200 / world rows: each rank sends 5 k/v rows to each neighbour, gradients back
    row = 2 * HK * D * 4
    for rank in range(world):
        nb = (rank > 0) + (rank < world - 1)
        assert res[rank]["n=200-window:w=5-contiguous"]["bytes"] == [nb * 5 * row] * 2
        # blocked:b=16 on 64 rows: block-diagonal by shard at world 2 and 4: every other pair is skipped
        if 64 % (16 * world) == 0 or world == 4:
            assert res[rank]["n=64-blocked:b=16-contiguous"]["bytes"] == [0, 0]
        assert res[rank]["bad_size"].startswith(f"splat: rank {rank} holds"), res[rank]["bad_size"]


def test_shards():
    assert sd.shard_sizes(61, 4) == [16, 15, 15, 15]
    assert sd.shard_segments(10, 2, "zigzag") == [[(0, 3), (8, 10)], [(3, 8)]]
    assert sd.shard_sizes(3, 4) == [1, 1, 1, 0]
    x = torch.arange(10)[:, None]
    assert sd.shard(x, 0, 2, "zigzag", dim=0)[:, 0].tolist() == [0, 1, 2, 8, 9]
    with pytest.raises(ValueError):
        sd.shard_segments(10, 2, "striped")


def test_model_and_table():
    kw = dict(heads=16, head_dim=128, dtype=torch.bfloat16)
    row = 2 * 16 * 128 * 2
    m = sd.comm_bytes("window:w=512", 65536, 8, **kw)
    assert [r["forward"] for r in m] == [512 * row] + [1024 * row] * 6 + [512 * row]
    assert all(r["strategy"] == "halo" for r in m)
    ring = sd.comm_bytes("window:w=512", 8192, 8, strategy="ring", **kw)
    assert ring[3]["forward"] == 2 * 1024 * row  # the ring skips every pair beyond the band: 2 shards
    dense = sd.comm_bytes("dense", 8192, 8, **kw)
    assert all(r["forward"] == 7 * 1024 * row for r in dense)
    # the ring keeps no received shard for the backward: it fetches them again, then returns their gradients
    assert all(r["backward"] == 2 * 7 * 1024 * row for r in dense)
    # sinks: rank 0 sends its halo to rank 1 and broadcasts the sink rows once (not once per rank)
    sink = sd.comm_bytes("causal_window:w=512+sink:g=64", 65536, 8, **kw)
    assert sink[0]["forward"] == (512 + 64) * row and sink[0]["messages_forward"] == 2
    assert all(r["forward"] == 512 * row for r in sink[1:7]) and sink[7]["forward"] == 0
    assert all(r["backward"] == (512 * (r_ > 0) + 64) * row for r_, r in enumerate(sink))  # + the reduce
    table = sd.scaling_table()
    assert len(table) == 5 * 2 * 5 and all(r["halo"] < r["ring"] for r in table)
    # the closed form is what the plans send, at a size where both can be computed
    for fam, spec in [("window", "window:w=512"), ("causal_window", "causal_window:w=512"),
                      ("dilated", "dilated:w=128,d=4"), ("causal_window+sink", "causal_window:w=512+sink:g=64"),
                      ("longformer", "longformer:w=512,g=64")]:
        w = 128 if fam == "dilated" else 512
        for n, world in ((65536, 8), (10485760, 1024)):  # the doc's table: planned in well under a second
            plan = max(r["forward"] for r in sd.comm_bytes(spec, n, world, **kw))
            assert plan == sd.busiest_rank_bytes(fam, n, world, heads=16, w=w, d=4, g=64)[0], (fam, n, world)
    with pytest.raises(ValueError, match="strategy"):
        sd.plans("bigbird:b=8,w=1,g=1,r=2", 64, 2, strategy="halos")


def test_ring_steps():
    """The streamed ring: step s receives rank r - s's shard and sends to rank r + s, only for non-empty pairs."""
    from splat import _cp_ring

    dense = sd.plans("dense", 64, 4, strategy="ring")
    assert [(src, dst) for src, dst, _ in _cp_ring._steps(dense[1])] == [(None, None), (0, 2), (3, 3), (2, 0)]
    assert all(len(tasks) == 1 for _, _, tasks in _cp_ring._steps(dense[1]))
    causal = sd.plans("causal", 64, 4, strategy="ring")  # contiguous: only earlier shards, only to later ranks
    assert [(src, dst) for src, dst, _ in _cp_ring._steps(causal[1])] == [(None, None), (0, 2), (None, 3), (None, None)]


def test_one_rank_runs_the_pattern_itself():
    """One rank holding the whole sequence runs the pattern's own spec, never an N x N mask (bigbird, masks)."""
    for spec in ("bigbird:b=64,w=1,g=2,r=3,seed=1", "blocked:b=16"):
        for strategy in ("auto", "halo", "ring"):
            tasks = sd.plans(spec, 4096, 1, strategy=strategy)[0].tasks
            assert [(t.kind, t.spec) for t in tasks] == [("translate", spec)], (spec, strategy)


def test_import_splat_needs_no_torch_distributed():
    code = "import sys, splat; assert 'torch.distributed' not in sys.modules and 'splat.distributed' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_shapes_are_errors():
    x = torch.zeros(1, 4, 8, 16)
    with pytest.raises(ValueError, match="k and v"):
        sd.attention(x, torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 8), "window:w=1", seq_len=8)
    with pytest.raises(ValueError, match="4-D"):
        sd.attention(x[0], x[0], x[0], "window:w=1", seq_len=8)
    with pytest.raises(ValueError, match="layout"):
        sd.attention(x, x, x, "window:w=1", seq_len=8, layout="nhd")


def test_uninitialised_group_is_an_error():
    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    x = torch.zeros(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="not initialised"):
        sd.attention(x, x, x, "window:w=1", seq_len=4)


def test_merge_of_partials():
    """The lse merge equals attention over the union of the key sets; poisoned (NaN) accumulators are replaced
    on a row's first merge; a row no partial wrote keeps its NaN until finish() makes rows without keys zeros."""
    from splat._cp_run import finish, merge

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 1, 5, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    s = q @ k.transpose(-1, -2)
    full = torch.softmax(s, -1) @ v
    acc = torch.full((1, 1, 5, 8), float("nan"), dtype=torch.float64)
    lacc = torch.full((1, 1, 5), float("-inf"), dtype=torch.float64)
    for cols in (slice(0, 2), slice(2, 5)):  # two disjoint key sets for rows 0..3
        part = torch.softmax(s[..., cols], -1) @ v[..., cols, :]
        merge(acc, lacc, [(0, 4, 0)], part, torch.logsumexp(s[..., cols], -1))
    assert torch.allclose(acc[..., :4, :], full[..., :4, :], atol=1e-12)
    assert torch.isnan(acc[..., 4, :]).all()
    finish(acc, lacc)  # row 4 has lse -inf: no keys, zeros
    assert (acc[..., 4, :] == 0).all()



@pytest.mark.parametrize("world", [2, 3])
def test_messages_staged_through_the_host(world):
    """Messages and collectives staged through host copies, as for CUDA tensors on gloo (forced for CPU tensors;
    at world 3 longformer's columns and global rows are broadcast and reduced)."""
    res = _results(world)
    for rank in range(world):
        for c in STAGED:
            _check_case(res[rank]["staged:" + c["name"]], rank, world, c)
