"""splat.decode / splat.torch.decode against the float64 reference of the full sequence: the output for position p is
row p of the whole sequence's attention under pattern & causal. Contiguous caches (both layouts, left-padded starts)
and paged caches with shuffled pages, GQA, T = 1 and T > 1, lengths 1 and max; torch.compile and opcheck."""

import numpy as np
import pytest

import splat
from conftest import ATOL, np_dtype, reference

FAMILIES = ["causal", "causal_window:w=8+sink:g=4", "dilated:w=4,d=3", "strided:s=8", "fixed:l=16,c=4",
            "longformer:w=4,g=2", "bigbird:b=8,w=1,g=1,r=2", "strided:s=8&causal", "sink:g=2&causal_window:w=3"]


class Case:
    """Sequences of `lengths` (random K, V per token), their newest T queries, and the expected rows."""

    def __init__(self, rng, pattern, lengths, T=1, H=4, Hkv=2, D=16, dtype=np.float32):
        self.pattern, self.lengths, self.T = pattern, np.array(lengths, np.int32), T
        self.B, self.H, self.Hkv, self.D, self.cap = len(lengths), H, Hkv, D, max(lengths)
        self.k = rng.standard_normal((self.B, Hkv, self.cap, D)).astype(dtype)
        self.v = rng.standard_normal((self.B, Hkv, self.cap, D)).astype(dtype)
        self.q = rng.standard_normal((self.B, H, T, D)).astype(dtype)

    def expected(self, dtype_for_naive=None):
        """float64 rows L-T .. L-1 of each full sequence (zeros for positions < 0), and the same-dtype naive ones."""
        want = np.zeros((self.B, self.H, self.T, self.D))
        naive = np.zeros_like(want)
        for b, L in enumerate(self.lengths):
            if L == 0:
                continue
            mask = splat.dense_mask(f"({self.pattern})&causal", int(L)).astype(bool)
            qf = np.zeros((self.H, L, self.D), self.q.dtype)
            rows = [L - self.T + t for t in range(self.T)]
            ok = [t for t, p in enumerate(rows) if p >= 0]
            qf[:, [rows[t] for t in ok]] = self.q[b][:, ok]
            full = reference(qf[None], self.k[b:b + 1, :, :L], self.v[b:b + 1, :, :L], mask)[0]
            approx = reference(*(np.asarray(x, np.float32) for x in (qf[None], self.k[b:b + 1, :, :L],
                                                                       self.v[b:b + 1, :, :L])), mask)[0]
            for t in ok:
                want[b, :, t] = full[:, rows[t]]
                naive[b, :, t] = approx[:, rows[t]].astype(self.q.dtype).astype(np.float64)
        return want, naive

    def paged(self, rng, page):
        """The same cache as a shuffled page pool [pages, H_kv, P, D] and its block table."""
        max_pages = -(-self.cap // page) + 1
        need = [-(-int(L) // page) for L in self.lengths]
        ids = rng.permutation(sum(need) + 2)
        pool_k = np.full((len(ids), self.Hkv, page, self.D), np.nan, self.k.dtype)
        pool_v = pool_k.copy()
        table = np.full((self.B, max_pages), -1, np.int32)
        nxt = 0
        for b in range(self.B):
            for pg in range(need[b]):
                table[b, pg] = ids[nxt]
                lo, hi = pg * page, min((pg + 1) * page, int(self.lengths[b]))
                pool_k[ids[nxt], :, :hi - lo] = self.k[b, :, lo:hi]
                pool_v[ids[nxt], :, :hi - lo] = self.v[b, :, lo:hi]
                nxt += 1
        return pool_k, pool_v, table


def check(ours, case, dtype_name="f32"):
    ours = np.asarray(ours, np.float64)
    assert not np.isnan(ours).any()
    want, naive = case.expected()
    bound = 4 * np.abs(naive - want).max() + ATOL[dtype_name]
    assert np.abs(ours - want).max() <= bound


@pytest.mark.parametrize("pattern", FAMILIES)
@pytest.mark.parametrize("T", [1, 4])
def test_numpy_decode_is_the_rows_of_full_attention(rng, pattern, T):
    case = Case(rng, pattern, [1, 4, 37, 70], T=T)
    out, lse = splat.decode(case.q, case.k, case.v, case.lengths, pattern=pattern, return_lse=True)
    check(out, case)
    ref = splat.decode(case.q, case.k, case.v, case.lengths, pattern=pattern, reference=True)
    check(ref, case)
    assert lse.shape == (case.B, case.H, T) and lse.dtype == np.float32


@pytest.mark.parametrize("page", [16, 64])
def test_paged_shuffled_equals_contiguous(rng, page):
    case = Case(rng, "causal_window:w=20+sink:g=4", [1, 15, 16, 17, 100], T=3)
    pool_k, pool_v, table = case.paged(rng, page)
    out = splat.decode(case.q, pool_k, pool_v, case.lengths, pattern=case.pattern, block_table=table)
    check(out, case)


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_half_dtypes_and_bnhd_layout(rng, dtype):
    dt = np_dtype(dtype)
    case = Case(rng, "causal_dilated:w=6,d=3+sink:g=2", [50, 9], T=2, H=6, Hkv=3, D=24, dtype=dt)
    q = np.ascontiguousarray(np.swapaxes(case.q, 1, 2))  # [B, T, H, D]
    k, v = (np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in (case.k, case.v))  # [B, L, H_kv, D]
    out = splat.decode(q, k, v, case.lengths, pattern=case.pattern, layout="bnhd")
    check(np.swapaxes(np.asarray(out, np.float64), 1, 2), case, dtype)


def test_left_padded_starts(rng):
    case = Case(rng, "causal_window:w=8+sink:g=4", [30, 12], T=2)
    starts = np.array([0, 18], np.int32)  # sequence 1's tokens sit at cache rows 18 .. 29
    k = np.full((2, case.Hkv, 30, case.D), np.nan, np.float32)
    v = k.copy()
    for b, (s, L) in enumerate(zip(starts, case.lengths)):
        k[b, :, s:s + L], v[b, :, s:s + L] = case.k[b, :, :L], case.v[b, :, :L]
    check(splat.decode(case.q, k, v, case.lengths, pattern=case.pattern, cache_starts=starts), case)


def test_errors():
    q = np.ones((1, 2, 1, 8), np.float32)
    k = np.ones((1, 1, 10, 8), np.float32)
    with pytest.raises(ValueError, match="int32"):
        splat.decode(q, k, k, np.array([5], np.int64), pattern="causal")
    with pytest.raises(ValueError, match="capacity"):
        splat.decode(q, k, k, np.array([11], np.int32), pattern="causal")
    with pytest.raises(ValueError, match="block_table"):
        splat.decode(q, k, k, np.array([5], np.int32), pattern="causal", block_table=np.array([[7]], np.int32))
    with pytest.raises(NotImplementedError, match="mask"):
        splat.decode(q, k, k, np.array([5], np.int32), pattern=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="T"):
        splat.decode(np.ones((1, 2, 65, 8), np.float32), k, k, np.array([5], np.int32), pattern="causal")


def test_host_check_of_device_indices():
    """The checks a CUDA call makes on host copies of its index arrays (splat.torch.decode(validate=True))."""
    pool = np.zeros((3, 2, 16, 8), np.float32)  # 3 pages of 16 tokens: only the shape counts
    table = np.array([[2, 0, -1], [1, -1, -1]], np.int32)
    ok = np.array([20, 16], np.int32)
    splat._core.check_decode_cache(pool, ok, table, None, "bhnd", 2)
    with pytest.raises(ValueError, match="capacity"):
        splat._core.check_decode_cache(pool, np.array([20, 49], np.int32), table, None, "bhnd", 2)
    with pytest.raises(ValueError, match="not a page of the pool"):
        splat._core.check_decode_cache(pool, np.array([20, 17], np.int32), table, None, "bhnd", 2)
    with pytest.raises(ValueError, match="capacity"):
        splat._core.check_decode_cache(pool, ok, table, np.array([0, 40], np.int32), "bhnd", 2)
    with pytest.raises(ValueError, match="page"):
        splat._core.check_decode_status(2)
    splat._core.check_decode_status(0)


torch = pytest.importorskip("torch")
import splat.torch  # noqa: E402

CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def _cuda(*xs, dtype=None):
    return [torch.from_numpy(np.asarray(x, np.float32) if dtype is not None else x).to(device="cuda", dtype=dtype)
            for x in xs]


@cuda_only
@pytest.mark.parametrize("pattern", FAMILIES)
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_cuda_decode_paged_and_contiguous(rng, pattern, dtype):
    """The CUDA route of splat.torch.decode: shuffled pages of 16 (lengths not multiples of it), GQA, T = 3,
    empty key sets (sink & window), lengths 1 .. 300, bf16 and f32, D = 64."""
    tdt = torch.float32 if dtype == "f32" else torch.bfloat16
    case = Case(rng, pattern, [1, 17, 300, 2], T=3, H=8, Hkv=2, D=64, dtype=np_dtype(dtype))
    lengths = torch.from_numpy(case.lengths).cuda()
    q, k, v = _cuda(case.q, case.k, case.v, dtype=tdt)
    out = splat.torch.decode(q, k, v, lengths, pattern=pattern)
    check(out.float().cpu().numpy(), case, dtype)
    pool_k, pool_v, table = case.paged(rng, 16)
    pk, pv = _cuda(pool_k, pool_v, dtype=tdt)
    out, lse = splat.torch.decode(q, pk, pv, lengths, pattern=pattern, block_table=torch.from_numpy(table).cuda(),
                                  return_lse=True)
    check(out.float().cpu().numpy(), case, dtype)
    _, want_lse = splat.decode(np.asarray(case.q, np.float32), np.asarray(case.k, np.float32),
                               np.asarray(case.v, np.float32), case.lengths, pattern=pattern, return_lse=True)
    np.testing.assert_allclose(lse.cpu().numpy(), want_lse, rtol=2e-5, atol=2e-5)


@cuda_only
def test_cuda_decode_bnhd_d128_long(rng):
    case = Case(rng, "causal_window:w=1000+sink:g=4", [3000, 5], T=1, H=32, Hkv=8, D=128, dtype=np_dtype("bf16"))
    q = torch.from_numpy(np.asarray(case.q, np.float32)).to("cuda", torch.bfloat16).transpose(1, 2).contiguous()
    k, v = (torch.from_numpy(np.asarray(x, np.float32)).to("cuda", torch.bfloat16).transpose(1, 2).contiguous()
            for x in (case.k, case.v))
    out = splat.torch.decode(q, k, v, torch.from_numpy(case.lengths).cuda(), pattern=case.pattern, layout="bnhd")
    check(out.transpose(1, 2).float().cpu().numpy(), case, "bf16")


@cuda_only
def test_cuda_decode_bad_indices(rng):
    """Eager calls check the device-resident lengths and table on the host; unchecked (validate=False, as under
    graph capture) the rows they touch come out NaN, never clamped."""
    case = Case(rng, "causal", [40, 33], T=1, H=4, Hkv=2, D=64)
    q, k, v = _cuda(case.q, case.k, case.v)
    too_long = torch.tensor([41, 33], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="capacity"):
        splat.torch.decode(q, k, v, too_long, pattern="causal")
    out = splat.torch.decode(q, k, v, too_long, pattern="causal", validate=False)
    assert torch.isnan(out[0]).all() and not torch.isnan(out[1]).any()
    pool_k, pool_v, table = case.paged(rng, 16)
    pk, pv = _cuda(pool_k, pool_v)
    table[1, 1] = pool_k.shape[0]  # outside the pool
    bt = torch.from_numpy(table).cuda()
    lengths = torch.from_numpy(case.lengths).cuda()
    with pytest.raises(ValueError, match="not a page of the pool"):
        splat.torch.decode(q, pk, pv, lengths, pattern="causal", block_table=bt)
    out = splat.torch.decode(q, pk, pv, lengths, pattern="causal", block_table=bt, validate=False)
    assert torch.isnan(out[1]).all() and not torch.isnan(out[0]).any()


@cuda_only
def test_cuda_decode_graph_replay_reads_new_lengths(rng):
    case = Case(rng, "causal_window:w=50+sink:g=4", [200, 90], T=1, H=8, Hkv=2, D=64)
    pool_k, pool_v, table = case.paged(rng, 32)
    q, pk, pv = _cuda(case.q, pool_k, pool_v)
    bt = torch.from_numpy(table).cuda()
    lengths = torch.tensor([7, 3], dtype=torch.int32, device="cuda")  # stale while capturing
    for _ in range(2):  # warm-up outside the capture (plans, workspace size)
        splat.torch.decode(q, pk, pv, lengths, pattern=case.pattern, block_table=bt)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = splat.torch.decode(q, pk, pv, lengths, pattern=case.pattern, block_table=bt)
    lengths.copy_(torch.from_numpy(case.lengths))
    graph.replay()
    torch.cuda.synchronize()
    check(out.cpu().numpy(), case)


@cuda_only
def test_cuda_decode_compiles(rng):
    case = Case(rng, "causal_dilated:w=6,d=3+sink:g=2", [30, 64], T=2, H=4, Hkv=2, D=64)
    q, k, v = _cuda(case.q, case.k, case.v)
    lengths = torch.from_numpy(case.lengths).cuda()
    fn = torch.compile(lambda *a: splat.torch.decode(*a, pattern=case.pattern), fullgraph=True)
    check(fn(q, k, v, lengths).cpu().numpy(), case)


def test_torch_decode_matches_and_compiles(rng):
    case = Case(rng, "causal_window:w=8+sink:g=4", [3, 40], T=2)
    pool_k, pool_v, table = case.paged(rng, 16)
    args = [torch.from_numpy(x) for x in (case.q, pool_k, pool_v, case.lengths)]
    bt = torch.from_numpy(table)
    out = splat.torch.decode(*args, pattern=case.pattern, block_table=bt)
    check(out.numpy(), case)
    fn = torch.compile(lambda *a: splat.torch.decode(*a, pattern=case.pattern, block_table=bt), fullgraph=True)
    torch.testing.assert_close(fn(*args), out)
    torch.library.opcheck(torch.ops.splat.decode.default, (*args, bt, None, case.pattern, 0.0, "bhnd"))
    o, lse = splat.torch.decode(*args, pattern=case.pattern, block_table=bt, return_lse=True)
    torch.testing.assert_close(o, out)
    assert lse.shape == (2, case.H, 2)


def test_torch_decode_bf16(rng):
    case = Case(rng, "strided:s=8", [33, 64], T=1, dtype=np_dtype("bf16"))
    t = [torch.from_numpy(np.asarray(x, np.float32)).to(torch.bfloat16) for x in (case.q, case.k, case.v)]
    out = splat.torch.decode(*t, torch.from_numpy(case.lengths), pattern=case.pattern)
    check(out.float().numpy(), case, "bf16")


def test_jax_decode_under_jit(rng):
    jax = pytest.importorskip("jax")
    case = Case(rng, "causal_dilated:w=6,d=3+sink:g=2", [3, 40], T=2)
    pool_k, pool_v, table = case.paged(rng, 16)
    import splat.jax
    fn = jax.jit(lambda q, k, v, s, t: splat.jax.decode(q, k, v, s, case.pattern, block_table=t, return_lse=True))
    with jax.default_device(jax.devices("cpu")[0]):  # the CPU handler (CUDA: test_jax_decode_cuda.py)
        out, lse = fn(case.q, pool_k, pool_v, case.lengths, table)
    check(np.asarray(out), case)
    _, want_lse = splat.decode(case.q, pool_k, pool_v, case.lengths, pattern=case.pattern, block_table=table,
                               return_lse=True)
    np.testing.assert_allclose(np.asarray(lse), want_lse, rtol=1e-6)


def test_torch_decode_is_not_differentiable_loudly(rng):
    case = Case(rng, "causal", [5], T=1)
    q = torch.from_numpy(case.q).requires_grad_()
    out = splat.torch.decode(q, torch.from_numpy(case.k), torch.from_numpy(case.v), torch.from_numpy(case.lengths),
                             pattern="causal")
    with pytest.raises(RuntimeError):
        out.sum().backward()
