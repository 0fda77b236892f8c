"""`rljob run`: the job of a manifest on this machine, through the same training loop as the pods.

Differences from the pod driver are deliberately few: Ray is started locally and sized to this
machine (worker pods become env runners, capped by local cores), progress goes to a display and an
output folder instead of the job's status, and a run resumes only when asked (--resume), so that
rerunning a manifest never silently continues an old experiment.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..api.manifest import ManifestError, load_job_file
from ..api.models import JobSpec
from . import checkpoints, evaluate
from .cluster import summarize
from .display import Display, DisplayLogHandler
from .driver import PROGRESS_FILE, TENSORBOARD_DIR, Entrypoint, resolve_entrypoint
from .errors import ConfigError, TrainerError
from .interrupts import StopRequest
from .plot import plot_reward_curve, read_progress
from .script import run_script, script_env
from .sinks import JsonLinesSink, MetricsSink, Sink, Sinks, TensorBoardSink
from .sizing import learns_in_turn, local_env_runners
from .stop import StopCriteria
from .training import TrainingRun, run_training

log = logging.getLogger("rljob.run")

CHECKPOINTS_DIR = "checkpoints"
REWARD_CURVE = "reward_curve.png"


@dataclass(frozen=True)
class LocalOptions:
    job_file: Path
    output: Path | None = None
    resume: bool = False
    max_iterations: int | None = None
    max_duration: float | None = None
    num_env_runners: int | None = None
    source_dir: Path | None = None
    metrics_port: int | None = None
    verbose: bool = False


def _fail(lines: list[str], stream: TextIO) -> None:
    for line in lines:
        stream.write(f"rljob run: error: {line}\n")
    stream.flush()


def run_local(opts: LocalOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Validates everything that can be validated before Ray starts, then runs; returns the exit code."""
    try:
        job = load_job_file(opts.job_file)
    except ManifestError as exc:
        _fail(exc.lines(), err)
        return ConfigError.exit_code
    spec = job.spec
    # Absolute: RLlib reads a relative checkpoint path as a URI without a scheme and refuses it.
    output = (opts.output or Path("runs") / job.name).resolve()
    checkpoint_dir = output / CHECKPOINTS_DIR
    try:
        entry = resolve_entrypoint(spec, opts.source_dir or opts.job_file.resolve().parent)
        if entry.recipe_run is not None:
            existing = checkpoints.latest(checkpoint_dir)
            if existing is not None and not opts.resume:
                raise ConfigError(
                    f"{output} already holds a run (checkpoint at iteration {existing.iteration}); "
                    "pass --resume to continue it, or --output DIR for a new run"
                )
            if opts.num_env_runners is not None:
                entry.recipe_run.options.num_env_runners = opts.num_env_runners  # the command line wins
    except TrainerError as exc:
        _fail(exc.lines, err)
        return exc.exit_code

    output.mkdir(parents=True, exist_ok=True)
    stop = StopRequest().install()
    try:
        return _run(job.name, spec, entry, opts, output, checkpoint_dir, stop, out, err)
    except TrainerError as exc:
        _fail(exc.lines, err)
        return exc.exit_code
    finally:
        stop.restore()


def _start_ray(verbose: bool) -> None:
    """A local Ray sized to this machine; quiet unless --verbose, so the display stays readable."""
    if not verbose:
        # The C++ core worker's warnings (e.g. about actor constructor arguments) go straight to stderr.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray

    ray.init(
        address="local",  # always a new instance: never attach to a cluster left running on this machine
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=verbose,
        logging_level=logging.INFO if verbose else logging.ERROR,
    )
    if not verbose:
        for name in ("ray", "ray.rllib", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _run(
    name: str,
    spec: JobSpec,
    entry: Entrypoint,
    opts: LocalOptions,
    output: Path,
    checkpoint_dir: Path,
    stop: StopRequest,
    out: TextIO,
    err: TextIO,
) -> int:
    import ray

    cores = os.cpu_count() or 1
    _start_ray(opts.verbose)
    try:
        cluster = summarize(ray.nodes())
        if entry.script is not None:
            out.write(f"{name}: running {entry.script} on a local Ray ({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs)\n")
            out.flush()
            gcs = ray.get_runtime_context().gcs_address
            env = script_env(os.environ, gcs)
            env.setdefault("RLJOB_CHECKPOINT_DIR", str(checkpoint_dir.resolve()))
            return run_script(entry.script, entry.script_args, env, stop)
        assert entry.recipe_run is not None
        options = entry.recipe_run.options
        default_runners, note = local_env_runners(
            spec.workers.replicas, spec.workers.cpu, spec.head.cpu, cores, options.cpus_per_env_runner,
            learns_in_turn(entry.recipe_run.algorithm, cluster.gpus),
        )
        if note and options.num_env_runners is None:
            out.write(note + "\n")
        # No operator here: `rljob run` applies the run budget itself.
        criteria = StopCriteria.build(spec, options, opts.max_iterations, opts.max_duration, owns_run_budget=True)
        display = Display(out, criteria, live=out.isatty())
        handler = DisplayLogHandler(display)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        rljob_logger = logging.getLogger("rljob")
        rljob_logger.addHandler(handler)
        rljob_logger.setLevel(logging.INFO)
        rljob_logger.propagate = False
        sinks: list[Sink] = [display, JsonLinesSink(path=output / PROGRESS_FILE)]
        try:
            sinks.append(TensorBoardSink(output / TENSORBOARD_DIR))
        except Exception as exc:
            log.warning("TensorBoard files disabled: %s", exc)
        if opts.metrics_port:
            from .metrics import ProgressCollector, serve

            collector = ProgressCollector(name, "local", entry.recipe_run.recipe.name, spec.experiment)
            serve(collector, opts.metrics_port, addr="127.0.0.1")
            sinks.append(MetricsSink(collector))
        if opts.resume and checkpoints.latest(checkpoint_dir) is None:
            log.info("nothing to resume in %s: starting a new run", checkpoint_dir)
        run = TrainingRun(
            job=name,
            attempt=None,
            spec=spec,
            recipe_run=entry.recipe_run,
            criteria=criteria,
            checkpoint_dir=checkpoint_dir,
            resume=opts.resume,
            default_env_runners=default_runners,
        )
        try:
            outcome = run_training(run, cluster, Sinks(sinks), stop)
        finally:
            rljob_logger.removeHandler(handler)
            rljob_logger.propagate = True
        played = None
        if outcome.exit_code == 0:  # not after Ctrl-C: the user asked to stop
            played = evaluate.after_training(outcome.checkpoint, output / evaluate.EVAL_GIF, os.environ)
        curve = _plot(output, name)
        out.write(f"stopped: {outcome.reason}\n")
        if played is not None:
            film = played.gif or f"no GIF ({played.render_error})"
            out.write(f"evaluation: {evaluate.describe(played, greedy=True)}: {film}\n")
            if played.card is not None:
                out.write(f"evaluation results: {played.card}\n")
        if outcome.checkpoint:
            out.write(f"checkpoint: {outcome.checkpoint}\n")
        out.write(f"outputs: {output}/ ({PROGRESS_FILE}, {CHECKPOINTS_DIR}/, {TENSORBOARD_DIR}/"
                  f"{', ' + curve.name if curve else ''})\n")
        out.flush()
        return outcome.exit_code
    finally:
        ray.shutdown()


def _plot(output: Path, name: str) -> Path | None:
    try:
        return plot_reward_curve(read_progress(output / PROGRESS_FILE), output / REWARD_CURVE, name)
    except Exception as exc:  # a missing font must not turn a finished run into a failure
        log.warning("reward curve not written: %s", exc)
        return None
