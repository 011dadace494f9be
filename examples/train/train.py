"""Train one byte-level LM for a fixed wall-clock budget; log to JSONL.

    python examples/train/train.py --attention splat:window:w=256 --task mlm --seq-len 4096 --budget-s 120 \
        --out results/mlm-window.jsonl

The budget counts training steps only (CUDA-synchronised), not evaluation, the timing probe, or the first
--untimed-steps steps (kernel compilation, allocator warm-up); the learning-rate schedule runs on the same
clock (linear warm-up, cosine decay to 10 %), so every run anneals fully whatever its speed. Validation at
--evals equally spaced points of that clock, on the same tokens and masks for every run.
JSONL records: config, probe (forward/backward split and the attention's share of the step), train, eval,
final.
"""

import argparse
import json
import math
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from data import Corpus, make_task_batch, train_batch, val_batches
from model import ByteLM, ModelConfig

HERE = Path(__file__).resolve().parent
VAL_SEED = 7919  # validation masks: one fixed draw shared by every run and seed


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attention", default="sdpa", help="sdpa | splat:PATTERN | flurka-favor[:k=..,m=..] | ...")
    ap.add_argument("--name", default=None, help="label of the run in logs and tables (default: --attention)")
    ap.add_argument("--task", choices=("mlm", "clm"), default="mlm")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--tokens-per-step", type=int, default=65536, help="batch size = this / seq-len")
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup-frac", type=float, default=0.05)
    ap.add_argument("--budget-s", type=float, default=0.0, help="training seconds (0: use --max-steps)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    ap.add_argument("--untimed-steps", type=int, default=3)
    ap.add_argument("--evals", type=int, default=6, help="validation points over the budget (plus one at 0)")
    ap.add_argument("--val-tokens", type=int, default=262144)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=HERE / "data", help="prepared corpus (prepare_data.py)")
    ap.add_argument("--text-files", nargs="*", default=None, help="train on these text files instead")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--no-probe", action="store_true", help="skip the timing probe")
    ap.add_argument("--probe-only", action="store_true", help="stop after the timing probe (no training)")
    ap.add_argument("--out", type=Path, default=None, help="JSONL log")
    ap.add_argument("--commit", default=None, help="commit to record where the tree is not a git checkout")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.budget_s <= 0 and a.max_steps <= 0:
        ap.error("give --budget-s or --max-steps")
    if a.tokens_per_step % a.seq_len:
        ap.error("--tokens-per-step must be a multiple of --seq-len")
    return a


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device):
    env = {"torch": torch.__version__, "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["threads"] = torch.get_num_threads()
    try:
        import splat
        env["splat"] = getattr(splat, "__version__", "?")
    except ImportError:
        env["splat"] = None
    try:  # "-dirty" when the working tree has changes
        env["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["commit"] = None
    return env


def lr_at(progress, a):
    if progress < a.warmup_frac:
        return a.lr * progress / a.warmup_frac
    t = min(1.0, (progress - a.warmup_frac) / max(1e-9, 1.0 - a.warmup_frac))
    return a.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))


def make_optimizer(model, a):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": a.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), fused=fused)


def step_loss(model, task, ids, seed, index, device, amp):
    inputs, targets, select = make_task_batch(task, ids, seed, index)
    inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    select = None if select is None else select.to(device, non_blocking=True)
    with amp():
        return model.loss(inputs, targets, select)


@torch.no_grad()
def evaluate(model, task, batches, device, amp):
    model.eval()
    total = count = 0.0
    for i, ids in enumerate(batches):
        inputs, targets, select = make_task_batch(task, ids, VAL_SEED, i)
        n = int(select.sum()) if select is not None else int((targets != -100).sum())
        loss = step_loss(model, task, ids, VAL_SEED, i, device, amp)
        total += float(loss) * n
        count += n
    model.train()
    nats = total / count
    return {"val_loss": nats, "val_ppl": math.exp(nats), "val_bpb": nats / math.log(2), "val_scored": count}


def _timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def probe(model, a, batch, device, amp, dtype, repeats=5):
    """Median forward and backward time of one step, and of the attention alone (one layer's call, forward
    + backward, times the layer count). For sdpa on CUDA it first picks the fastest backend."""
    blk = model.blocks[0]
    b, n, h, d = batch.shape[0], a.seq_len, blk.n_heads, blk.head_dim
    qkv = [torch.randn(b, n, h, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    grad = torch.randn(b, n, h, d, device=device, dtype=dtype)

    def attn_once(mod):
        return lambda: mod(*qkv).backward(grad)

    out = {}
    attn = blk.attn
    if a.attention == "sdpa" and device.type == "cuda":
        tried = {}
        for name in ("cudnn", "flash", "efficient"):
            attn.backend = name
            try:
                attn_once(attn)()
                tried[name] = _timed(attn_once(attn), device, repeats) * 1e3
            except RuntimeError as e:  # backend not available for this shape/device
                tried[name] = str(e).split("\n")[0][:120]
        ok = {k: v for k, v in tried.items() if isinstance(v, float)}
        best = min(ok, key=ok.get) if ok else None
        for m in model.blocks:
            m.attn.backend = best
        out["sdpa_backends_ms"], out["sdpa_backend"] = tried, best or "auto"
    for _ in range(2):  # warm-up: plans, kernel compilation
        attn_once(attn)()
    attn_ms = _timed(attn_once(attn), device, repeats) * 1e3 * len(model.blocks)

    fwd, bwd = [], []
    for i in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        loss = step_loss(model, a.task, batch, a.seed, -1 - i, device, amp)
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        if i:  # the first is a warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    model.zero_grad(set_to_none=True)
    for p in qkv:
        p.grad = None
    med = lambda xs: sorted(xs)[len(xs) // 2] * 1e3  # noqa: E731
    out.update(forward_ms=med(fwd), backward_ms=med(bwd), attention_fwd_bwd_ms=attn_ms)
    out["attention_share"] = attn_ms / (out["forward_ms"] + out["backward_ms"])
    return out


def run(a):
    """Trains one configuration; returns the final record (also written to a.out as the last line)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    torch.manual_seed(a.seed)
    on_gpu = device.type == "cuda"
    amp_dtype = torch.bfloat16 if on_gpu else torch.float32
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else nullcontext
    if on_gpu:
        torch.set_float32_matmul_precision("high")  # fp32 leftovers (outside autocast) on TF32

    corpus = Corpus.from_files(a.text_files) if a.text_files else Corpus.from_dir(a.data)
    cfg = ModelConfig(seq_len=a.seq_len, d_model=a.d_model, n_layers=a.layers, n_heads=a.heads,
                      causal=a.task == "clm")
    model = ByteLM(cfg, attention=a.attention).to(device)
    opt = make_optimizer(model, a)
    batch_size = a.tokens_per_step // a.seq_len
    val = val_batches(corpus, a.val_tokens, batch_size, a.seq_len)
    log_file = open(a.out, "w") if a.out else None

    def emit(rec):
        if log_file:
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
        if not a.quiet:
            print(json.dumps(rec), flush=True)

    n_params = sum(p.numel() for p in model.parameters())
    emit({"type": "config", **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
          "batch_size": batch_size, "params": n_params, "attention_module": repr(model.blocks[0].attn),
          "corpus": {"train_bytes": len(corpus.train), "val_bytes": len(corpus.val),
                     **{k: corpus.source[k] for k in ("packages", "files") if k in corpus.source}},
          **environment(device), **({"commit": a.commit} if a.commit else {})})
    if not a.no_probe or a.probe_only:
        rec = {"type": "probe", **probe(model, a, train_batch(corpus, 0, batch_size, a.seq_len, a.seed), device,
                                        amp, amp_dtype)}
        emit(rec)
        if a.probe_only:
            if log_file:
                log_file.close()
            return rec

    checkpoints = [(k / a.evals) for k in range(1, a.evals + 1)]  # fractions of the budget
    last_eval = {"step": 0, **evaluate(model, a.task, val, device, amp)}
    emit({"type": "eval", "train_s": 0.0, "tokens": 0, **last_eval})
    train_s, step, tokens, last_loss = 0.0, 0, 0, float("nan")
    window = []  # (seconds, loss) since the last train record

    def progress():
        p = 0.0
        if a.budget_s > 0:
            p = max(p, train_s / a.budget_s)
        if a.max_steps > 0:
            p = max(p, step / a.max_steps)
        return p

    while progress() < 1.0:
        lr = lr_at(progress(), a)
        for g in opt.param_groups:
            g["lr"] = lr
        ids = train_batch(corpus, step, batch_size, a.seq_len, a.seed)
        sync(device)
        t0 = time.perf_counter()
        loss = step_loss(model, a.task, ids, a.seed, step, device, amp)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        last_loss = float(loss.detach())  # synchronises
        sync(device)
        dt = time.perf_counter() - t0
        step += 1
        if step > a.untimed_steps:  # the first steps compile kernels and warm the allocator
            train_s += dt
            tokens += ids.numel()
        window.append((dt, last_loss))
        if step % a.log_every == 0:
            secs = sum(t for t, _ in window)
            emit({"type": "train", "step": step, "train_s": train_s, "tokens": tokens, "lr": lr,
                  "loss": sum(x for _, x in window) / len(window), "step_ms": 1e3 * secs / len(window),
                  "tokens_per_s": ids.numel() * len(window) / secs})
            window = []
        while checkpoints and progress() >= checkpoints[0] - 1e-12:
            checkpoints.pop(0)
            last_eval = {"step": step, **evaluate(model, a.task, val, device, amp)}
            emit({"type": "eval", "train_s": train_s, "tokens": tokens, **last_eval})
        if not math.isfinite(last_loss):
            emit({"type": "error", "step": step, "message": f"training loss is {last_loss}"})
            break
    final = {"type": "final", "name": a.name or a.attention, "attention": a.attention, "task": a.task,
             "seq_len": a.seq_len, "seed": a.seed, "steps": step, "train_s": train_s, "tokens": tokens,
             "tokens_per_s": tokens / train_s if train_s else None, "last_train_loss": last_loss}
    if last_eval["step"] != step:
        last_eval = {"step": step, **evaluate(model, a.task, val, device, amp)}
        emit({"type": "eval", "train_s": train_s, "tokens": tokens, **last_eval})
    final.update({k: v for k, v in last_eval.items() if k != "step"})
    emit(final)
    if log_file:
        log_file.close()
    return final


if __name__ == "__main__":
    run(parse_args())
