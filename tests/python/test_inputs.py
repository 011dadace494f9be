"""Inputs that used to give plausible wrong answers or crashes (NumPy): stale mask files, in-memory masks, 16-bit
dtype confusion, out= aliasing an input, unchecked threads=, and the rough edges of the argument checks."""

import os
import subprocess
import sys

import numpy as np
import pytest

import splat
from conftest import BF16, check_close, mask_of, random_qkv


def random_mask(rng, n, density=0.3):
    m = rng.random((n, n)) < density
    m[np.arange(n), np.arange(n)] = True
    return m


# ---- item 3: a mask file's plan follows the file's content ----

def test_rewritten_mask_file_gets_a_new_plan(rng, tmp_path):
    n = 32
    q, k, v = random_qkv(rng, (1, 2, n, 8), (1, 2, n, 8), np.float32)
    path = tmp_path / "m.npy"
    for _ in range(3):  # same path, same size, new bits each time
        m = random_mask(rng, n)
        np.save(path, m)
        out = splat.attention(q, k, v, pattern=f"mask:{path}")
        check_close(out, q, k, v, m, "f32")
        np.testing.assert_allclose(out, splat.reference(q, k, v, f"mask:{path}"), atol=1e-5)


# ---- item 4: in-memory masks wherever a pattern goes ----

def test_in_memory_mask_array(rng):
    n = 40
    q, k, v = random_qkv(rng, (2, 2, n, 8), (2, 2, n, 8), np.float32)
    m = random_mask(rng, n)
    out = np.full_like(q, np.nan)
    splat.attention(q, k, v, pattern=m, out=out)
    check_close(out, q, k, v, m, "f32")
    plan = splat.plan(m[None, None], seq_len=n, head_dim=8)  # broadcast dims are squeezed
    assert plan.nnz == int(m.sum())
    check_close(splat.attention(q, k, v, plan), q, k, v, m, "f32")
    np.testing.assert_array_equal(splat.dense_mask(m, n), m.astype(np.uint8))
    np.testing.assert_allclose(splat.reference(q, k, v, m), out, atol=1e-5)
    m2 = m.copy()
    m2[5, :5] = ~m2[5, :5]  # a changed mask is a new plan, never the cached one
    check_close(splat.attention(q, k, v, pattern=m2), q, k, v, m2, "f32")


def test_additive_float_masks_and_bad_masks(rng):
    n = 24
    q, k, v = random_qkv(rng, (1, 1, n, 8), (1, 1, n, 8), np.float32)
    m = random_mask(rng, n)
    additive = np.where(m, 0.0, -np.inf).astype(np.float32)
    check_close(splat.attention(q, k, v, pattern=additive), q, k, v, m, "f32")
    with pytest.raises(ValueError, match="0 .*-inf"):
        splat.attention(q, k, v, pattern=np.where(m, 0.0, -1e4))  # a soft bias is not a mask
    with pytest.raises(ValueError, match="per-head"):
        splat.attention(q, k, v, pattern=np.ones((1, 2, n, n), bool))
    with pytest.raises(ValueError, match="sequence length"):
        splat.attention(q, k, v, pattern=np.ones((n + 1, n + 1), bool))
    with pytest.raises(ValueError, match="boolean"):
        splat.attention(q, k, v, pattern=np.ones((n, n), np.int64))


# ---- item 5: 16-bit arrays are never read as another 16-bit dtype ----

@pytest.mark.skipif(BF16 is None, reason="bfloat16 NumPy arrays need ml_dtypes")
@pytest.mark.parametrize("other", [np.float16, np.uint16, np.int16])
@pytest.mark.parametrize("which", ["k", "v", "out"])
def test_bf16_next_to_other_16_bit_dtypes_is_refused(rng, other, which):
    q, k, v = random_qkv(rng, (1, 1, 16, 8), (1, 1, 16, 8), np.float32)
    arrays = {"q": q.astype(BF16), "k": k.astype(BF16), "v": v.astype(BF16), "out": np.empty(q.shape, BF16)}
    arrays[which] = arrays[which].astype(other)
    with pytest.raises(ValueError, match="dtype"):
        splat.attention(arrays["q"], arrays["k"], arrays["v"], pattern="window:w=2", out=arrays["out"])
    if which != "out":
        with pytest.raises(ValueError, match="dtype"):
            splat.reference(arrays["q"], arrays["k"], arrays["v"], "window:w=2")


# ---- item 6: out= must not share memory with an input ----

@pytest.mark.parametrize("pattern", ["window:w=3", "strided:s=4"])  # strided: a multi-pass plan
@pytest.mark.parametrize("which", ["q", "k", "v", "q_view"])
def test_out_aliasing_an_input_is_refused(rng, pattern, which):
    q, k, v = random_qkv(rng, (1, 2, 32, 8), (1, 2, 32, 8), np.float32)
    out = {"q": q, "k": k, "v": v, "q_view": q[:, ::-1]}[which]
    before = out.copy()
    with pytest.raises(ValueError, match="shares memory"):
        splat.attention(q, k, v, pattern=pattern, out=out)
    np.testing.assert_array_equal(out, before)  # nothing written


def test_out_in_a_separate_part_of_one_buffer_is_fine(rng):
    buf = rng.standard_normal((4, 1, 2, 16, 8)).astype(np.float32)
    q, k, v, out = buf
    check_close(splat.attention(q, k, v, pattern="window:w=2", out=out), q, k, v, mask_of("window:w=2", 16), "f32")


# ---- item 10: threads= is validated ----

@pytest.mark.parametrize("threads", [-1, 4097, 32768, 65536, 1 << 40])
def test_threads_out_of_range_is_a_value_error(rng, threads):
    q, k, v = random_qkv(rng, (1, 1, 16, 8), (1, 1, 16, 8), np.float32)
    with pytest.raises(ValueError, match="threads"):
        splat.attention(q, k, v, pattern="window:w=2", threads=threads)
    if splat._core.has_flurka:
        E = np.ones((4, 16), np.float32) / 16
        with pytest.raises(ValueError, match="threads"):
            splat.flurka(q, k, v, E, E, np.ones((8, 8), np.float32), threads=threads)


def test_threads_in_range_work(rng):
    q, k, v = random_qkv(rng, (1, 2, 16, 8), (1, 2, 16, 8), np.float32)
    for t in (0, 1, 3, 4096):
        check_close(splat.attention(q, k, v, pattern="window:w=2", threads=t), q, k, v, mask_of("window:w=2", 16),
                    "f32")


# ---- rough edges ----

def test_read_only_out_is_a_value_error(rng):
    q, k, v = random_qkv(rng, (1, 1, 16, 8), (1, 1, 16, 8), np.float32)
    out = np.empty_like(q)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        splat.attention(q, k, v, pattern="window:w=2", out=out)


def test_array_where_a_plan_goes_is_a_type_error(rng):
    q, k, v = random_qkv(rng, (1, 1, 16, 8), (1, 1, 16, 8), np.float32)
    with pytest.raises(TypeError, match="splat.Plan"):
        splat.attention(q, k, v, q)


@pytest.mark.parametrize("n, d", [(64.7, 16), (64, 16.2), ("64", 16), (64.0, 16)])
def test_non_integral_sizes_are_refused(n, d):
    with pytest.raises(TypeError, match="integer"):
        splat.plan("window:w=2", n, d)


def test_float64_on_the_cpu(rng):
    q, k, v = random_qkv(rng, (2, 2, 40, 8), (2, 2, 40, 8), np.float64)
    out = np.full_like(q, np.nan)
    splat.attention(q, k, v, pattern="strided:s=5", out=out)
    ref = splat.reference(q, k, v, "strided:s=5")
    assert out.dtype == np.float64 and ref.dtype == np.float64
    np.testing.assert_allclose(out, ref, atol=1e-12, rtol=0)
    check_close(out, q, k, v, mask_of("strided:s=5", 40), "f32")


def test_cuda_plans_say_which_dtypes_work():
    with pytest.raises(NotImplementedError, match="float16 and bfloat16"):
        splat.plan("window:w=2", 64, 64, "float64", "cuda")


@pytest.mark.parametrize("shape", [(0, 2, 16, 8), (1, 2, 0, 8), (0, 0, 0, 8)])
def test_empty_inputs_give_empty_results(shape):
    q = np.ones(shape, np.float32)
    out = splat.attention(q, q, q, pattern="window:w=2")
    assert out.shape == shape
    assert splat.reference(q, q, q, "window:w=2").shape == shape
    with pytest.raises(ValueError, match="empty"):
        splat.attention(q, np.ones((1, 2, 16, 8), np.float32), q, pattern="window:w=2")


def test_no_crash_on_huge_threads_in_a_subprocess():
    # 65536 threads used to crash the interpreter inside the OpenMP runtime: a child process proves it no longer does.
    code = ("import numpy as np, splat\nq = np.ones((1, 1, 8, 4), np.float32)\n"
            "try:\n    splat.attention(q, q, q, pattern='dense', threads=65536)\nexcept ValueError:\n    print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(__file__))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.skipif(not splat._core.has_flurka, reason="built without FLuRKA")
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_flurka_out_aliasing_an_input_is_refused(rng, which):
    q, k, v = random_qkv(rng, (1, 2, 16, 8), (1, 2, 16, 8), np.float32)
    E = (rng.standard_normal((4, 16)) / 4).astype(np.float32)
    W = rng.standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        splat.flurka(q, k, v, E, E, W, out={"q": q, "k": k, "v": v}[which])
    with pytest.raises(ValueError, match="dtype"):
        splat.flurka(q, k, v.astype(np.float16), E, E, W)
