"""reward_curve.png: episode return against env steps, from progress.jsonl (all resumed runs included).

Below it, when the learner reports it, the policy's entropy: in Pong it falls from uniform long before
the return leaves random play, so a short run on a CPU still shows whether the agent is learning.
"""
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
    entropy = sorted((r.env_steps, r.learner["entropy"]) for r in by_iteration.values() if "entropy" in r.learner)
    if entropy:
        fig, (ax, low) = plt.subplots(2, 1, figsize=(8, 6), dpi=100, sharex=True, height_ratios=(2, 1))
        low.plot([p[0] for p in entropy], [p[1] for p in entropy], color="tab:orange")
        low.set_ylabel("policy entropy")
        low.set_xlabel("env steps")
        low.grid(True, alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        ax.set_xlabel("env steps")
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
    else:
        ax.text(0.5, 0.5, "no episode finished yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("episode return (mean)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
