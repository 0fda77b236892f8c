"""The driver in the head pod: read the job from the environment, wait for the cluster, train.

Run as `python -m rljob.trainer.driver` (what `rljob pod head` starts after `ray start --head`) or
`rljob pod driver`. Environment (names in api.constants): RLJOB_NAME, RLJOB_NAMESPACE, RLJOB_SPEC
(the spec as JSON, camelCase), RLJOB_ATTEMPT, RLJOB_EXPECTED_WORKERS, RLJOB_COORDINATION_DEADLINE
(RFC 3339 or Unix seconds), RLJOB_CHECKPOINT_DIR, RLJOB_SOURCE_DIR, RLJOB_METRICS_PORT, RLJOB_TERMINATION_LOG
(default /dev/termination-log, where it exists); RAY_ADDRESS (default "auto"). A recipe's progress is served on
RLJOB_METRICS_PORT (/metrics, /progress) and left in the termination message, for the operator to read: the
pod holds no Kubernetes credentials. Exit codes: 0 a stop criterion was reached (or the script succeeded),
2 configuration error, 3 cluster coordination timeout, 130/143 interrupted, 1 anything else.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..api.models import JobSpec
from . import evaluate
from .cluster import ClusterSummary, parse_deadline, wait_for_workers
from .env_contract import DriverEnv, driver_env
from .errors import TrainerError
from .interrupts import StopRequest
from .metrics import ProgressCollector, serve
from .recipes import RecipeRun, prepare
from .script import resolve_script, run_script, script_env, unpack_source
from .sinks import JsonLinesSink, MetricsSink, Sink, Sinks, TensorBoardSink, TerminationMessageSink, stdout_json
from .stop import StopCriteria
from .training import TrainingRun, run_training

log = logging.getLogger("rljob.driver")

PROGRESS_FILE = "progress.jsonl"
TENSORBOARD_DIR = "tensorboard"
UNPACKED_SOURCE_DIR = "rljob-source"  # under /tmp: the pod's writable emptyDir


@dataclass(frozen=True)
class Entrypoint:
    """What to run, validated before any Ray process starts: a parsed recipe or an existing script."""

    recipe_run: RecipeRun | None = None
    script: Path | None = None
    script_args: tuple[str, ...] = ()


def resolve_entrypoint(spec: JobSpec, source_dir: Path) -> Entrypoint:
    """Parses recipe args and checks the env (or finds the script); raises ConfigError."""
    ep = spec.entrypoint
    if ep.recipe is not None:
        recipe_run = prepare(ep.recipe, ep.args)
        recipe_run.recipe.preflight(recipe_run.options)
        return Entrypoint(recipe_run=recipe_run)
    assert ep.script is not None  # the model requires exactly one of recipe or script
    if not Path(ep.script).is_absolute():
        source_dir = unpack_source(source_dir, Path(tempfile.gettempdir()) / UNPACKED_SOURCE_DIR)
    return Entrypoint(script=resolve_script(ep.script, source_dir), script_args=tuple(ep.args))


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def connect(address: str, attempts: int = 10, delay_s: float = 3.0) -> None:
    """ray.init with retries: the GCS port opens a moment before the head's raylet registers."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, logging_level=logging.WARNING)
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if attempt == attempts:
                raise TrainerError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
            log.info("Ray cluster at %s not ready (%s); retrying in %.0fs", address, exc, delay_s)
            time.sleep(delay_s)


def main(env: Mapping[str, str] | None = None) -> int:
    setup_logging()
    stop = StopRequest().install()
    try:
        return _main(os.environ if env is None else env, stop)
    except TrainerError as exc:
        for line in exc.lines:
            log.error("%s", line)
        return exc.exit_code
    finally:
        stop.restore()


def _main(env: Mapping[str, str], stop: StopRequest) -> int:
    denv = driver_env(env)
    deadline = parse_deadline(denv.coordination_deadline) if denv.coordination_deadline else None
    entry = resolve_entrypoint(denv.spec, denv.source_dir)
    collector = None
    if entry.recipe_run is not None:
        collector = ProgressCollector(denv.name, denv.namespace, entry.recipe_run.recipe.name, denv.spec.experiment)
        serve(collector, denv.metrics_port)

    import ray

    address = env.get("RAY_ADDRESS", "auto")
    connect(address)
    try:
        cluster = wait_for_workers(denv.expected_workers, deadline, ray.nodes)
        log.info("%s", cluster.describe())
        if entry.script is not None:
            gcs = ray.get_runtime_context().gcs_address
            ray.shutdown()  # the script is the Ray driver now
            return run_script(entry.script, entry.script_args, script_env(env, gcs), stop)
        assert entry.recipe_run is not None and collector is not None
        return _train_in_cluster(denv, entry.recipe_run, cluster, collector, stop, env)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def _train_in_cluster(
    denv: DriverEnv,
    recipe_run: RecipeRun,
    cluster: ClusterSummary,
    collector: ProgressCollector,
    stop: StopRequest,
    env: Mapping[str, str],
) -> int:
    sinks: list[Sink] = [
        stdout_json(),
        JsonLinesSink(path=denv.checkpoint_dir / PROGRESS_FILE),
        MetricsSink(collector),
    ]
    try:
        sinks.append(TensorBoardSink(denv.checkpoint_dir / TENSORBOARD_DIR))
    except Exception as exc:  # e.g. a read-only volume: training matters more than curves
        log.warning("TensorBoard files disabled: %s", exc)
    # The operator reads progress from /progress (MetricsSink's collector) while the head runs, and from the
    # termination message once it has ended: the pod holds no credentials to write status itself.
    termination = TerminationMessageSink.in_pod(env)
    if termination is None:
        log.info("no termination message file: once this pod has ended, its last progress is only in its log")
    else:
        sinks.append(termination)
    run = TrainingRun(
        job=denv.name,
        attempt=denv.attempt,
        spec=denv.spec,
        recipe_run=recipe_run,
        criteria=StopCriteria.build(denv.spec, recipe_run.options),
        checkpoint_dir=denv.checkpoint_dir,
        resume=True,
    )
    outcome = run_training(run, cluster, Sinks(sinks), stop)
    if outcome.exit_code == 0:  # a finished run, not one cut off or interrupted: the pod may be going away
        # The GIF and the score card lie on the checkpoint volume, next to the checkpoints `rljob fetch` copies;
        # the figures reach status.progress.evaluation through /progress and the termination message.
        played = evaluate.after_training(outcome.checkpoint, denv.checkpoint_dir / evaluate.EVAL_GIF, env)
        if played is not None and outcome.last is not None:
            final = replace(outcome.last, evaluation=played.summary())
            collector.update(final)
            if termination is not None:
                termination.record(final)
    log.info("finished (exit %d): %s", outcome.exit_code, outcome.reason)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
