"""CPU timings of the serving path (docs/SERVING.md): decode steps of splat.torch.decode against a KV cache, and
tiny-Llama generation steps through attn_implementation="splat" vs the masked SDPA path it replaces vs dense SDPA.

    python python/bench/serving_cpu.py [--contexts 2048,8192,16384] [--threads N]
"""

import argparse
import statistics
import time

import torch

import splat.hf
import splat.torch


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def kernel_rows(contexts, pattern, repeats):
    """One decode step (T = 1) for B = 1 and 8, H = 32, H_kv = 8, D = 128, bf16; contiguous and paged (P = 64)."""
    for batch in (1, 8):
        for L in contexts:
            q = torch.randn(batch, 32, 1, 128, dtype=torch.bfloat16)
            k, v = (torch.randn(batch, 8, L, 128, dtype=torch.bfloat16) for _ in range(2))
            lens = torch.full((batch,), L, dtype=torch.int32)
            t = median_ms(lambda: splat.torch.decode(q, k, v, lens, pattern=pattern), repeats)
            pages = -(-L // 64)
            pool = [x.view(batch, 8, pages, 64, 128).transpose(1, 2).reshape(batch * pages, 8, 64, 128)
                    for x in (k, v)] if L % 64 == 0 else None
            tp = float("nan")
            if pool is not None:
                table = torch.randperm(batch * pages, dtype=torch.int32).view(batch, pages)
                tp = median_ms(lambda: splat.torch.decode(q, *pool, lens, pattern=pattern, block_table=table), repeats)
            print(f"| {pattern} | {batch} | {L} | {t:.3f} | {tp:.3f} |", flush=True)


def hf_rows(contexts, pattern, tokens):
    """Per-token time of greedy decoding after a prompt of L tokens (a random 2-layer Llama, fp32)."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=32768)
    config.splat_pattern = pattern
    for L in contexts:
        ids = torch.randint(0, 1000, (1, L))
        row = [str(L)]
        for impl in ("splat", "masked", "sdpa"):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa" if impl == "sdpa" else "splat")
            model.eval()
            saved = splat.hf._decode_splat
            if impl == "masked":  # the path before splat.torch.decode: SDPA with the pattern's rows as the mask
                splat.hf._decode_splat = lambda *a, **k: None
            try:
                with torch.no_grad():
                    out = model(ids, use_cache=True)
                    cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    n = tokens if impl != "masked" or L <= 8192 else 2
                    t0 = time.perf_counter()
                    for _ in range(n):
                        out = model(nxt, past_key_values=cache, use_cache=True)
                        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    row.append(f"{1e3 * (time.perf_counter() - t0) / n:.1f}")
            finally:
                splat.hf._decode_splat = saved
        print("| " + " | ".join(row) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="2048,8192,16384")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    contexts = [int(x) for x in args.contexts.split(",")]
    print(f"torch threads {torch.get_num_threads()}")
    print("| pattern | B | L | contiguous ms | paged (P=64) ms |\n|---|---|---|---|---|")
    for pattern in ("causal_window:w=4096+sink:g=4", "causal_dilated:w=2048,d=4", "causal"):
        kernel_rows(contexts + [65536], pattern, args.repeats)
    pattern = "causal_window:w=256+sink:g=4"
    print(f"\nHF per-token ms ({pattern}):\n| L | splat decode | masked SDPA (before) | dense SDPA |\n|---|---|---|---|")
    hf_rows(contexts, pattern, args.tokens)


if __name__ == "__main__":
    main()
