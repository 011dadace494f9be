"""splat.recommend: which attention to run for one shape on the GPU, by the cost models (splat/recommend.hpp)."""

from . import _core


def recommend(seq_len, head_dim, *, batch=1, heads=16, error=0.8, inputs="clustered", causal=False, train=False,
              k_max=1 << 20, patterns=None, bandwidth=None, gemm_flops=None):
    """Predicted GPU time (bf16) of dense attention, of sparse patterns (default: the benchmark suite at seq_len) and
    of each FLuRKA-family method at the smallest (k, m) whose error against exact attention in the quality table of
    docs/FLURKA.md is <= error on the given kind of inputs ('random', 'low-rank' or 'clustered').

    causal=True: causal FLuRKA and the causal pattern as the exact baseline; sparse candidates are intersected with
    causal. train=True: forward + backward. bandwidth (bytes/s) and gemm_flops (FLOP/s) override the H200 defaults.
    Sparse patterns are exact on their own mask: whether a model tolerates that mask is not in the table.

    Returns a dict: "candidates" (dicts with name, kind 'dense'/'sparse'/'flurka', exact, k, m, error (FLuRKA only),
    floor_ms, predicted_ms; the exact baseline first), "skipped" (methods not considered and why), "fastest" (the
    fastest candidate's dict) and "device" (whose ceilings were used)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    r = _core.recommend(int(seq_len), int(head_dim), int(batch), int(heads), float(error), str(inputs), bool(causal),
                        bool(train), int(k_max), list(patterns or []), float(bandwidth or 0), float(gemm_flops or 0))
    r["fastest"] = r["candidates"][r["fastest"]]
    return r
