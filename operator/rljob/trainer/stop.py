"""When training stops with success, and how long until it probably will (the display's ETA).

Criteria come from the job's `spec.stop`, overridden field by field by recipe args (--stop-reward,
--stop-timesteps, --stop-iters): the manifest states the goal, args are the quick tweak. Run limits
(`rljob run --max-iterations/--max-duration`) bound one invocation; `maxRunDurationSeconds` bounds
the training time of all attempts together, as counted in progress.timeTotalSeconds.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from ..api.models import JobSpec
from .progress import ProgressRecord


@dataclass(frozen=True)
class StopCriteria:
    """Goals (across attempts) and limits (this invocation); the first one reached stops training."""

    episode_return_mean: float | None = None
    env_steps: int | None = None
    iterations: int | None = None
    # maxRunDurationSeconds as `rljob run` applies it (training time, all attempts): a limit, not a goal. In a
    # cluster the operator alone owns the run budget, and the driver never ends a job Succeeded over it.
    total_seconds: float | None = None
    run_iterations: int | None = None  # iterations in this invocation
    run_seconds: float | None = None  # wall time of this invocation

    @classmethod
    def build(
        cls,
        spec: JobSpec,
        options: argparse.Namespace | None,
        run_iterations: int | None = None,
        run_seconds: float | None = None,
        owns_run_budget: bool = False,
    ) -> StopCriteria:
        stop = spec.stop
        reward = getattr(options, "stop_reward", None)
        steps = getattr(options, "stop_timesteps", None)
        iters = getattr(options, "stop_iters", None)
        return cls(
            episode_return_mean=reward if reward is not None else (stop.episode_return_mean if stop else None),
            env_steps=steps if steps is not None else (stop.env_steps if stop else None),
            iterations=iters if iters is not None else (stop.iterations if stop else None),
            total_seconds=spec.max_run_duration_seconds if owns_run_budget else None,
            run_iterations=run_iterations,
            run_seconds=run_seconds,
        )

    def reached(self, record: ProgressRecord, run_iterations: int, run_seconds: float) -> str | None:
        """The reason to stop now, or None; `run_*` count this invocation only."""
        ret = record.episode_return_mean
        if self.episode_return_mean is not None and ret is not None and ret >= self.episode_return_mean:
            return f"episode return mean {ret:.2f} reached {self.episode_return_mean:g}"
        if self.env_steps is not None and record.env_steps >= self.env_steps:
            return f"env steps {record.env_steps} reached {self.env_steps}"
        if self.iterations is not None and record.iteration >= self.iterations:
            return f"iteration {record.iteration} reached {self.iterations}"
        if self.run_iterations is not None and run_iterations >= self.run_iterations:
            return f"ran {run_iterations} iterations (--max-iterations)"
        if self.run_seconds is not None and run_seconds >= self.run_seconds:
            return f"ran {run_seconds:.0f}s (--max-duration)"
        return None

    def over_budget(self, record: ProgressRecord) -> str | None:
        """Why the run budget is spent (a failure, as DeadlineExceeded in a cluster), or None."""
        if self.total_seconds is not None and record.time_total_s >= self.total_seconds:
            return (
                f"DeadlineExceeded: training time {record.time_total_s:.0f}s (all attempts) reached "
                f"maxRunDurationSeconds={self.total_seconds:g}"
            )
        return None

    def describe(self) -> str:
        parts = []
        if self.episode_return_mean is not None:
            parts.append(f"return >= {self.episode_return_mean:g}")
        if self.env_steps is not None:
            parts.append(f"{self.env_steps} env steps")
        if self.iterations is not None:
            parts.append(f"{self.iterations} iterations")
        if self.total_seconds is not None:
            parts.append(f"{self.total_seconds:g}s training time")
        if self.run_iterations is not None:
            parts.append(f"{self.run_iterations} iterations in this run")
        if self.run_seconds is not None:
            parts.append(f"{self.run_seconds:g}s in this run")
        return ", ".join(parts) or "none (runs until interrupted)"


def eta_seconds(
    criteria: StopCriteria, history: Sequence[ProgressRecord], run_iterations: int, run_seconds: float
) -> float | None:
    """Seconds until the nearest criterion at the recent pace; None when nothing can be estimated.

    The return-based estimate extrapolates the trend over the recent records, so it is only offered
    while the return is actually improving.
    """
    if not history:
        return None
    last = history[-1]
    window = list(history[-20:])
    first = window[0]
    dt = last.time_total_s - first.time_total_s
    estimates: list[float] = []
    if criteria.env_steps is not None and last.env_steps_per_second:
        estimates.append(max(0.0, (criteria.env_steps - last.env_steps) / last.env_steps_per_second))
    per_iter = dt / (last.iteration - first.iteration) if last.iteration > first.iteration else None
    if per_iter is None and last.iteration > 0:
        per_iter = last.time_total_s / last.iteration
    if criteria.iterations is not None and per_iter:
        estimates.append(max(0.0, (criteria.iterations - last.iteration) * per_iter))
    if criteria.run_iterations is not None and per_iter:
        estimates.append(max(0.0, (criteria.run_iterations - run_iterations) * per_iter))
    if criteria.total_seconds is not None:
        estimates.append(max(0.0, criteria.total_seconds - last.time_total_s))
    if criteria.run_seconds is not None:
        estimates.append(max(0.0, criteria.run_seconds - run_seconds))
    if criteria.episode_return_mean is not None:
        points = [(r.time_total_s, r.episode_return_mean) for r in window if r.episode_return_mean is not None]
        if len(points) >= 3:
            slope = _slope(points)
            current = points[-1][1]
            if slope > 0:
                estimates.append(max(0.0, (criteria.episode_return_mean - current) / slope))
    return min(estimates) if estimates else None


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope: a single noisy episode must not swing the ETA."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx
