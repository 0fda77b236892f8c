"""The training loop shared by the pod driver and `rljob run`: build, resume, train, report, checkpoint.

Both entry points differ only in how Ray is started and which sinks receive progress; everything
that decides what happens (sizing, resume, stop criteria, checkpoint cadence) happens here once.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..api.constants import EXIT_DEADLINE_EXCEEDED
from ..api.models import CheckpointSpec, JobSpec
from . import checkpoints
from .cluster import ClusterSummary
from .errors import ConfigError
from .interrupts import StopRequest
from .progress import ProgressRecord, ReturnWindow, episodes_in, record_from_result
from .recipes import RecipeRun
from .sinks import Outcome, RunHeader, Sinks
from .sizing import ResourcePlan, default_aggregators, learns_in_turn, plan_resources
from .stop import StopCriteria
from .timers import CHECKPOINT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    """One invocation of a recipe: what to train, where checkpoints live, when to stop."""

    job: str
    attempt: int | None
    spec: JobSpec
    recipe_run: RecipeRun
    criteria: StopCriteria
    checkpoint_dir: Path
    resume: bool = True
    default_env_runners: int | None = None  # used when the recipe args do not say

    @property
    def checkpoint_policy(self) -> CheckpointSpec:
        """The manifest's checkpoint settings, or their defaults when it has none (an emptyDir, or `rljob run`)."""
        return self.spec.checkpoint or CheckpointSpec()

    def checkpoint_due(self, iteration: int, seconds_since_last: float) -> bool:
        """By training time, so that short iterations do not mean constant saving; or every N iterations if asked."""
        policy = self.checkpoint_policy
        every = policy.every_iterations
        return seconds_since_last >= policy.every_seconds or (every is not None and iteration % every == 0)

    @property
    def keep(self) -> int:
        return self.checkpoint_policy.keep


def plan_for(run: TrainingRun, cluster: ClusterSummary) -> ResourcePlan:
    options = run.recipe_run.options
    if options.num_aggregators is None:
        options.num_aggregators = default_aggregators(run.recipe_run.algorithm, cluster.gpus)
    requested = options.num_env_runners if options.num_env_runners is not None else run.default_env_runners
    return plan_resources(
        cluster.cpus, cluster.gpus, requested, options.num_aggregators, options.cpus_per_env_runner,
        getattr(options, "gpus_per_env_runner", 0.0) or 0.0, learns_in_turn(run.recipe_run.algorithm, cluster.gpus),
    )


def _learn_on_driver_cores(cluster: ClusterSummary) -> int:
    """Gives the driver's torch the head's CPUs, no more.

    torch would otherwise start one thread per core of the whole node, which in a pod limited to a
    few CPUs means threads fighting over a CPU quota.
    """
    import torch

    threads = max(1, int(cluster.head_cpus or 1))
    torch.set_num_threads(threads)
    return threads


def run_training(
    run: TrainingRun,
    cluster: ClusterSummary,
    sinks: Sinks,
    stop: StopRequest,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Trains until a stop criterion or a signal; returns the outcome (exceptions are real failures)."""
    recipe = run.recipe_run.recipe
    plan = plan_for(run, cluster)
    for note in plan.notes:
        log.warning("%s", note)
    resume_from = checkpoints.latest(run.checkpoint_dir) if run.resume else None
    if resume_from is not None and resume_from.recipe and resume_from.recipe != recipe.name:
        raise ConfigError(
            f"{resume_from.path} is a checkpoint of recipe {resume_from.recipe!r}, but this job runs {recipe.name!r}; "
            "use another checkpoint directory (or output folder)"
        )
    config = recipe.build_config(run.recipe_run.options, plan)
    if plan.learner_in_driver:
        learner = f"the learner in the driver on {_learn_on_driver_cores(cluster)} CPU threads"
    else:
        learner = f"{plan.num_learners} learner(s) on {'GPU' if plan.gpus_per_learner else 'CPU'}"
    log.info(
        "building %s (%s): %d env runners x %g CPU, %s",
        recipe.name, run.recipe_run.algorithm, plan.num_env_runners, plan.cpus_per_env_runner, learner,
    )
    try:
        config.validate()
    except ValueError as exc:  # RLlib's own consistency checks: a bad combination of recipe args
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"recipe {recipe.name}: invalid RLlib configuration: {first}") from None
    algo = config.build_algo()
    try:
        return _loop(run, algo, plan, resume_from, sinks, stop, clock)
    finally:
        try:
            algo.stop()
        except Exception as exc:  # shutting down must not mask the outcome
            log.warning("stopping the algorithm failed: %s", exc)


def _loop(
    run: TrainingRun,
    algo: Any,
    plan: ResourcePlan,
    resume_from: checkpoints.CheckpointInfo | None,
    sinks: Sinks,
    stop: StopRequest,
    clock: Callable[[], float],
) -> Outcome:
    recipe = run.recipe_run.recipe
    previous_steps, time_offset, last_checkpoint = 0, 0.0, None
    if resume_from is not None:
        try:
            algo.restore_from_path(str(resume_from.path.resolve()))
        except Exception as exc:
            raise ConfigError(
                f"cannot resume from {resume_from.path}: {type(exc).__name__}: {exc} "
                "(did the recipe's model settings change?)"
            ) from None
        previous_steps, time_offset = resume_from.env_steps, resume_from.time_total_s
        last_checkpoint = str(resume_from.path)
        log.info("resumed from %s (iteration %d, %d env steps)", resume_from.path, resume_from.iteration,
                 resume_from.env_steps)
    sinks.start(
        RunHeader(
            job=run.job, recipe=recipe.name, algorithm=run.recipe_run.algorithm, env_runners=plan.num_env_runners,
            stop=run.criteria.describe(), resumed_from=resume_from.iteration if resume_from else None,
            notes=plan.notes,
        )
    )
    started = clock()
    run_iterations = 0
    record: ProgressRecord | None = None
    saved_iteration = resume_from.iteration if resume_from else None

    saved_at = clock()
    save_seconds: float | None = None

    def save(rec: ProgressRecord) -> str:
        nonlocal saved_iteration, saved_at, save_seconds
        begun = clock()
        info = checkpoints.save(algo.save_to_path, run.checkpoint_dir, rec, recipe.name)
        saved_at = clock()
        save_seconds = saved_at - begun
        checkpoints.prune(run.checkpoint_dir, run.keep)
        saved_iteration = rec.iteration
        log.info("checkpoint saved: %s", info.path)
        return str(info.path)

    def finish(code: int, reason: str) -> Outcome:
        nonlocal last_checkpoint
        if record is not None and saved_iteration != record.iteration:
            last_checkpoint = save(record)
        outcome = Outcome(code, reason, record.with_checkpoint(last_checkpoint) if record else None, last_checkpoint)
        sinks.close(outcome)
        return outcome

    returns = ReturnWindow()
    try:
        while True:
            if stop.requested:
                return finish(stop.exit_code, "interrupted")
            result = algo.train()
            run_iterations += 1
            record = record_from_result(
                result, previous_env_steps=previous_steps, time_offset_s=time_offset, attempt=run.attempt
            )
            previous_steps = record.env_steps
            # The latest 100 episodes, not only this iteration's few (or none: the Reward column would flicker).
            record = replace(record, episode_return_mean=returns.add(record.episode_return_mean, episodes_in(result)))
            reason = run.criteria.reached(record, run_iterations, clock() - started)
            over = None if reason is not None else run.criteria.over_budget(record)
            if reason is not None or over is not None or run.checkpoint_due(record.iteration, clock() - saved_at):
                last_checkpoint = save(record)
                if save_seconds is not None:
                    record = replace(record, timers={**record.timers, CHECKPOINT: round(save_seconds, 4)})
            record = record.with_checkpoint(last_checkpoint)
            sinks.record(record)
            if reason is not None:
                log.info("stop criterion reached: %s", reason)
                return finish(0, reason)
            if over is not None:
                log.warning("%s", over)
                return finish(EXIT_DEADLINE_EXCEEDED, over)
    except KeyboardInterrupt:
        log.warning("interrupted during an iteration; saving the last completed one")
        return finish(stop.exit_code, "interrupted")
