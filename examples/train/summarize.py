"""Tables and a plot from the runs' JSONL logs (run_grid.py calls this; it also runs on its own).

    python examples/train/summarize.py examples/train/results          # prints the markdown
    python examples/train/summarize.py examples/train/results --plot docs/training_val_loss.png
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


def load_runs(results):
    """One dict per JSONL file: config, probe, evals (in order), final or skipped."""
    runs = []
    for path in sorted(Path(results).glob("*.jsonl")):
        run = {"path": path.name, "config": {}, "probe": {}, "evals": [], "final": None, "skipped": None}
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            kind = rec.get("type")
            if kind in ("config", "probe"):
                run[kind] = rec
            elif kind == "eval":
                run["evals"].append(rec)
            elif kind in ("final", "skipped"):
                run[kind] = rec
        if run["config"] or run["skipped"]:
            runs.append(run)
    return runs


def _key(run):
    src = run["config"] or run["skipped"]
    return src.get("task"), src.get("seq_len")


def _name(run):
    src = run["config"] or run["skipped"]
    return src.get("name") or src.get("attention")


def _f(x, fmt):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _group_table(runs):
    done = [r for r in runs if r["final"]]
    n_ck = max((len(r["evals"]) - 1 for r in done), default=0)  # evals after the one at step 0
    budget = next((r["config"].get("budget_s") for r in done if r["config"].get("budget_s")), None)
    evals = next((r["config"].get("evals") for r in done), n_ck) or 1
    labels = [f"{budget * (i + 1) / evals:.0f} s" if budget else f"eval {i + 1}" for i in range(n_ck)]
    head = (["attention", "seed", "tokens/s", "step ms (fwd / bwd)", "attn share", "steps"] +
            [f"val bpb @ {lab}" for lab in labels] + ["final val loss", "ppl", "bpb"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        name = _name(r)
        if r["final"] is None:
            why = (r["skipped"] or {}).get("reason", "incomplete")
            why = why if len(why) <= 120 else why[:117] + "..."  # the full reason is in the JSONL
            rows.append(f"| {name} | {(r['config'] or r['skipped']).get('seed')} | skipped: {why} |" +
                        " |" * (len(head) - 3))
            continue
        p, fin = r["probe"], r["final"]
        split = (f"{_f(p.get('forward_ms'), '.0f')} / {_f(p.get('backward_ms'), '.0f')}" if p else "-")
        steps_ms = 1e3 * fin["train_s"] / max(1, fin["tokens"] / (r["config"]["tokens_per_step"])) \
            if fin["tokens"] else None
        cks = [_f(e["val_bpb"], ".3f") for e in r["evals"][1:]]
        cks += ["-"] * (n_ck - len(cks))
        rows.append("| " + " | ".join([name, str(fin["seed"]), _f(fin["tokens_per_s"], ",.0f"),
                                        f"{_f(steps_ms, '.0f')} ({split})",
                                        _f(100 * p["attention_share"], ".0f") + " %" if p else "-",
                                        str(fin["steps"])] + cks +
                                       [_f(fin["val_loss"], ".4f"), _f(fin["val_ppl"], ".3f"),
                                        _f(fin["val_bpb"], ".3f")]) + " |")
    return rows


def _spread(runs):
    by = {}
    for r in runs:
        if r["final"]:
            by.setdefault(_name(r), []).append((r["final"]["seed"], r["final"]["val_bpb"]))
    rows = []
    for name, xs in by.items():
        if len(xs) > 1:
            vals = [v for _, v in xs]
            rows.append(f"| {name} | {', '.join(f's{s}: {v:.3f}' for s, v in sorted(xs))} | "
                        f"{statistics.mean(vals):.3f} | {max(vals) - min(vals):.3f} |")
    if not rows:
        return []
    return ["", "Seeds (final validation bits per byte):", "",
            "| attention | per seed | mean | max - min |", "|---|---|---|---|"] + rows


def _commits(rs):
    """'commit X', or which runs ran at which commit when a grid was run in pieces."""
    by = {}
    for r in rs:
        if r["config"]:
            by.setdefault(str(r["config"].get("commit")), []).append(f"{_name(r)} s{r['config'].get('seed', 0)}")
    if len(by) <= 1:
        return f"commit {next(iter(by), None)}"
    return "commits " + "; ".join(f"{c[:12]} ({', '.join(sorted(names))})" for c, names in by.items())


def summary_markdown(runs):
    out = []
    groups = {}
    for r in runs:
        groups.setdefault(_key(r), []).append(r)
    for (task, n), rs in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0)):
        c = next((r["config"] for r in rs if r["config"]), {})
        what = "masked-LM (bits per masked byte)" if task == "mlm" else "causal LM (bits per byte)"
        out += [f"### {what}, N = {n}", ""]
        if c:
            out += [f"Model d_model {c.get('d_model')}, {c.get('layers')} layers, {c.get('heads')} heads, "
                    f"{c.get('params', 0) / 1e6:.1f} M parameters; {c.get('tokens_per_step')} tokens per step; "
                    f"budget {c.get('budget_s')} s of training per run; device {c.get('gpu', c.get('device'))}, "
                    f"torch {c.get('torch')}, {_commits(rs)}.", ""]
        out += _group_table(sorted(rs, key=lambda r: (_name(r), (r["config"] or r["skipped"]).get("seed", 0))))
        out += _spread(rs) + [""]
    return "\n".join(out) + "\n"


def plot(runs, path):
    """Validation bits per byte against training seconds, one panel per (task, N). Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    groups = {}
    for r in runs:
        if r["final"]:
            groups.setdefault(_key(r), []).append(r)
    if not groups:
        return "plot skipped: no finished runs"
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.5), squeeze=False)
    for ax, ((task, n), rs) in zip(axes[0], sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))):
        for r in sorted(rs, key=_name):
            ev = r["evals"]
            ax.plot([e["train_s"] for e in ev], [e["val_bpb"] for e in ev], marker="o", ms=3,
                    label=f"{_name(r)} s{r['final']['seed']}")
        ax.set_title(f"{task}, N = {n}")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"wrote {path}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--plot", type=Path, default=None)
    a = ap.parse_args(argv)
    runs = load_runs(a.results)
    sys.stdout.write(summary_markdown(runs))
    if a.plot:
        print(plot(runs, a.plot), file=sys.stderr)


if __name__ == "__main__":
    main()
