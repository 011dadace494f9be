"""Run the whole comparison: every attention variant, same model, data order, optimizer and budget.

    python examples/train/run_grid.py --budget-s 120 --task mlm --seq-len 4096
    python examples/train/run_grid.py --budget-s 120 --task mlm --seq-len 4096 --seed 1 --only full flurka-favor window
    python examples/train/run_grid.py --budget-s 120 --task clm --seq-len 4096

Each run is a fresh process (train.py) writing RESULTS/<task>-n<N>-<name>-s<seed>.jsonl; runs that already
finished are skipped (delete the file to rerun). A run that cannot train (e.g. a backward that is not
implemented for the device) is recorded as skipped with its error. At the end RESULTS/summary.md compares
every run at equal training time (summarize.py) and RESULTS/val_loss.png plots it when matplotlib exists.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from summarize import load_runs, plot, summary_markdown

HERE = Path(__file__).resolve().parent

# Sparse patterns keep an absolute window (their cost grows like N w); at N = 4096 they keep 11-15 % of
# the score matrix. Low-rank methods: Linformer rank k = 256, m = 128 random features (elu: m = D).
MLM_VARIANTS = {
    "full": "sdpa",
    "window": "splat:window:w=256",
    "dilated": "splat:dilated:w=256,d=4",
    "longformer": "splat:longformer:w=256,g=32",
    "bigbird": "splat:bigbird:b=64,w=1,g=2,r=3,seed=1",
    "flurka-favor": "flurka-favor:k=256,m=128",
    "flurka-elu": "flurka-elu:k=256",
    "flurka-relu": "flurka-relu:k=256,m=128",
    "linformer": "linformer:k=256",
    "performer": "performer:m=128",
}
CLM_VARIANTS = {
    "full-causal": "sdpa",
    "causal_window": "splat:causal_window:w=512",
    "causal_window+sink": "splat:(causal_window:w=512+sink:g=4)&causal",
    "flurka-favor-causal": "flurka-favor:c=256,r=64,m=128",
}
VARIANTS = {"mlm": MLM_VARIANTS, "clm": CLM_VARIANTS}


def finished(path):
    if not path.exists():
        return False
    lines = path.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1]).get("type") in ("final", "skipped")


def run_one(name, spec, a, extra, path):
    cmd = [sys.executable, str(HERE / "train.py"), "--attention", spec, "--name", name, "--task", a.task,
           "--seq-len", str(a.seq_len), "--budget-s", str(a.budget_s), "--seed", str(a.seed), "--out", str(path),
           "--quiet"] + extra
    print(f"run_grid: {name}: {spec}", flush=True)
    t = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.budget_s * 3 + 600)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", f"timed out after {e.timeout:.0f} s"
    if rc != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit {rc}"
        with open(path, "a") as f:
            f.write(json.dumps({"type": "skipped", "name": name, "attention": spec, "task": a.task,
                                "seq_len": a.seq_len, "seed": a.seed, "reason": reason}) + "\n")
        print(f"run_grid: {name}: skipped ({reason})", flush=True)
        if a.verbose:
            print(err, file=sys.stderr)
        return
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    final, probe = recs[-1], next((r for r in recs if r["type"] == "probe"), {})
    share = f", attention {100 * probe['attention_share']:.0f} % of a step" if probe else ""
    print(f"run_grid: {name}: {final['steps']} steps, {final['tokens_per_s']:.0f} tokens/s{share}, "
          f"val bpb {final['val_bpb']:.3f} ({time.time() - t:.0f} s)", flush=True)


def probe_grid(names, variants, a, extra):
    """Step time (forward / backward) and the attention's share of it for every variant, without training."""
    print(f"| attention | step fwd ms | step bwd ms | attention fwd+bwd ms | attention share |  (N = {a.seq_len})")
    print("|---|---|---|---|---|")
    for name in names:
        path = a.results / "probes" / f"{a.task}-n{a.seq_len}-{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HERE / "train.py"), "--attention", variants[name], "--name", name, "--task",
               a.task, "--seq-len", str(a.seq_len), "--max-steps", "1", "--probe-only", "--out", str(path),
               "--quiet"] + extra
        r = subprocess.run(cmd, capture_output=True, text=True)
        p = next((json.loads(x) for x in path.read_text().splitlines() if '"probe"' in x), None) \
            if path.exists() else None
        if r.returncode != 0 or p is None:
            lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
            print(f"| {name} | skipped: {lines[-1] if lines else r.returncode} | | | |", flush=True)
            continue
        print(f"| {name} | {p['forward_ms']:.1f} | {p['backward_ms']:.1f} | {p['attention_fwd_bwd_ms']:.1f} | "
              f"{100 * p['attention_share']:.0f} % |", flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Other options (e.g. --d-model, --layers, --tokens-per-step, --device) "
                                        "are passed to train.py unchanged.")
    ap.add_argument("--task", choices=("mlm", "clm"), default="mlm")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all of the task)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--list", action="store_true", help="print the variants and exit")
    ap.add_argument("--probe-only", action="store_true",
                    help="only time each variant's step and attention (seconds per variant) and print the shares")
    ap.add_argument("--verbose", action="store_true", help="print the stderr of skipped runs")
    a, extra = ap.parse_known_args(argv)
    variants = VARIANTS[a.task]
    if a.list:
        for task, vs in VARIANTS.items():
            for name, spec in vs.items():
                print(f"{task}  {name:22s} {spec}")
        return 0
    names = a.only if a.only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        ap.error(f"unknown variants for {a.task}: {', '.join(unknown)} (known: {', '.join(variants)})")
    a.results.mkdir(parents=True, exist_ok=True)
    if a.probe_only:
        return probe_grid(names, variants, a, extra)
    for name in names:
        path = a.results / f"{a.task}-n{a.seq_len}-{name}-s{a.seed}.jsonl"
        if finished(path):
            print(f"run_grid: {name}: done already ({path.name})")
            continue
        run_one(name, variants[name], a, extra, path)
    runs = load_runs(a.results)
    (a.results / "summary.md").write_text(summary_markdown(runs))
    print(f"run_grid: wrote {a.results / 'summary.md'}")
    png = plot(runs, a.results / "val_loss.png")
    print(f"run_grid: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
