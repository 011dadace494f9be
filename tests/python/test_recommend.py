"""splat.recommend: the cost models' candidates and choice, as the CLI prints them, from Python."""

import pytest

import splat


def names(r):
    return [c["name"] for c in r["candidates"]]


def test_candidates_and_the_fastest():
    r = splat.recommend(16384, 64, patterns=["window:w=1024", "strided:s=128"])
    assert names(r)[:2] == ["dense (exact, cuDNN)", "dense (exact, splat)"]
    assert {"window:w=1024", "strided:s=128", "linformer", "flurka-favor"} <= set(names(r))
    assert r["fastest"]["predicted_ms"] == min(c["predicted_ms"] for c in r["candidates"])
    lin = next(c for c in r["candidates"] if c["name"] == "linformer")
    assert lin["kind"] == "flurka" and lin["k"] == 128 and lin["error"] <= 0.8
    assert all(c["error"] is None for c in r["candidates"] if c["kind"] != "flurka")
    assert any(s.startswith("flurka-elu") for s in r["skipped"])
    assert all(c["predicted_ms"] >= c["floor_ms"] > 0 for c in r["candidates"])


def test_causal_and_train_and_ceilings():
    r = splat.recommend(16384, 64, causal=True, error=0.95, patterns="window:w=1024")
    assert names(r)[0] == "causal (exact, splat)" and "(window:w=1024)&causal" in names(r)
    slow = splat.recommend(4096, 128, patterns=["blocked:b=512"], bandwidth=1e12, gemm_flops=1e14)
    fast = splat.recommend(4096, 128, patterns=["blocked:b=512"])
    assert slow["device"] == "given"
    assert all(a["predicted_ms"] > b["predicted_ms"] for a, b in zip(slow["candidates"], fast["candidates"]))
    train = splat.recommend(4096, 128, patterns=["blocked:b=512"], train=True)
    assert all(a["predicted_ms"] > b["predicted_ms"] for a, b in zip(train["candidates"], fast["candidates"]))


@pytest.mark.parametrize("kw", [dict(seq_len=0, head_dim=64), dict(seq_len=64, head_dim=64, error=0),
                                dict(seq_len=64, head_dim=64, inputs="foo"),
                                dict(seq_len=64, head_dim=64, patterns=["bogus:x=1"])])
def test_bad_queries_raise_value_error(kw):
    with pytest.raises(ValueError):
        splat.recommend(**kw)
