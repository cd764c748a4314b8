#!/usr/bin/python3
"""Plot a run's curves from its metrics.jsonl into a PNG.

usage: scripts/plot_metrics.py RUN_DIR [--out FILE.png]
Three panels over the optimizer steps: train loss (and validation loss where it was measured),
throughput in tokens/s, and memory in MiB (the process's resident set, the host pool's peak, and
the model states when logged).
"""
import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()
    metrics = args.run_dir / "metrics.jsonl"
    if not metrics.exists():
        print(f"plot_metrics: {metrics} does not exist", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        print(f"plot_metrics: {metrics} holds no steps", file=sys.stderr)
        return 1
    steps = [r["step"] for r in rows]
    fig, (ax, tput, mem) = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    ax.plot(steps, [r["loss"] for r in rows], label="train loss", linewidth=1.2)
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(f"{args.run_dir.name}: {rows[-1]['tokens_per_s']:.0f} tokens/s at the last step")
    ax.grid(alpha=0.3)
    ax.legend()
    tput.plot(steps, [r["tokens_per_s"] for r in rows], linewidth=1.0)
    tput.set_ylabel("tokens / s")
    tput.grid(alpha=0.3)
    for key, label in [("memory_mb", "resident"), ("peak_mb", "pool peak")]:
        if all(key in r for r in rows):
            mem.plot(steps, [r[key] for r in rows], label=label, linewidth=1.0)
    if all(k in r for r in rows for k in ("params_mb", "grads_mb", "optimizer_mb")):
        mem.plot(steps, [r["params_mb"] + r["grads_mb"] + r["optimizer_mb"] for r in rows],
                 label="model states", linewidth=1.0)
    mem.set_ylabel("MiB")
    mem.set_xlabel("optimizer step")
    mem.grid(alpha=0.3)
    mem.legend()
    out = args.out or args.run_dir / "loss.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"plot_metrics: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
