#!/usr/bin/python3
"""Plot a run's loss curve from its metrics.jsonl into a PNG.

usage: scripts/plot_metrics.py RUN_DIR [--out FILE.png]
Train loss per logged step, and validation loss where it was measured.
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
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(steps, [r["loss"] for r in rows], label="train loss", linewidth=1.2)
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(f"{args.run_dir.name}: {rows[-1]['tokens_per_s']:.0f} tokens/s at the last step")
    ax.grid(alpha=0.3)
    ax.legend()
    out = args.out or args.run_dir / "loss.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"plot_metrics: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
