"""One figure of several runs' mean return against training minutes: the seeds of `pong_time_to_reward.py --seeds`.

Not a test: it draws what the runs recorded (their progress.jsonl), one line per run folder:

    .venv/bin/python benchmarks/plot_seeds.py runs/pong-benchmark-*/seed-* --out benchmarks/pong_cpu_seeds.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(folder: Path) -> list[tuple[float, float]]:
    points = []
    for line in (folder / "progress.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("episode_return_mean") is not None:
            points.append((record["time_total_s"] / 60, record["episode_return_mean"]))
    return points


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Plot several runs' mean return against training minutes.")
    p.add_argument("folders", type=Path, nargs="+", help="run folders holding progress.jsonl (a seed-K folder each)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--title", default="Pong on 2 CPU cores, make demo's settings: mean return of the latest 100 games")
    p.add_argument("--target", type=float, default=18.0, help="a horizontal line at this return (the stop criterion)")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for folder in args.folders:
        points = curve(folder)
        ax.plot([x for x, _ in points], [y for _, y in points], label=folder.name)
    ax.axhline(args.target, color="grey", linestyle="--", linewidth=1)
    ax.axvline(10, color="grey", linestyle=":", linewidth=1)  # make demo's ten minutes
    ax.set_xlabel("training minutes")
    ax.set_ylabel("episode return (mean of the latest 100)")
    ax.set_title(args.title, fontsize=10)
    ax.set_ylim(-21.5, 21.5)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
