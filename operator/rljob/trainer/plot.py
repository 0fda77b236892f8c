"""reward_curve.png: episode return against env steps, from progress.jsonl (all resumed runs included)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .progress import ProgressRecord


def read_progress(path: Path) -> list[ProgressRecord]:
    """Records from a progress.jsonl; unreadable lines (a run killed mid-write) are skipped."""
    records: list[ProgressRecord] = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(ProgressRecord.from_json(line))
        except (ValueError, TypeError):
            continue
    return records


def plot_reward_curve(records: Sequence[ProgressRecord], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A resumed run re-reports iterations after its checkpoint: the latest report of an iteration wins.
    by_iteration = {r.iteration: r for r in records}
    points = sorted((r.env_steps, r.episode_return_mean) for r in by_iteration.values() if r.episode_return_mean is not None)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
    else:
        ax.text(0.5, 0.5, "no episode finished yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return (mean)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
