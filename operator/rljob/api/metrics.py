"""The Prometheus metrics of rljob: one naming scheme for the operator and the driver.

The operator (port 8080) and each job's driver (the head pod's port 9400) export the same training figures
under the same names and labels, so one query works against either target, and a dashboard that takes
`max by (namespace, rltrainingjob)` shows one line per job whichever it scrapes. Both exporters build their
families from these definitions, and the README's metrics table is checked against them.

Per-job series are labelled `namespace` and `rltrainingjob`: `job` would collide with Prometheus' own
scrape-job label. Counts that only grow across attempts (iterations, env steps, training time) are counters
with `_total`; a resumed attempt continues them.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    INFO = "info"


class Source(StrEnum):
    """Which process exports a metric."""

    OPERATOR = "operator"
    DRIVER = "driver"
    BOTH = "operator, driver"


JOB_LABELS: tuple[str, ...] = ("namespace", "rltrainingjob")


@dataclass(frozen=True)
class Metric:
    """One metric family. `name` is the family's name: Prometheus appends `_total` to counters, `_info` to
    info metrics and `_bucket`/`_sum`/`_count` to histograms; `exposed` is what a query names."""

    name: str
    kind: Kind
    help: str
    unit: str
    source: Source
    labels: tuple[str, ...] = JOB_LABELS

    @property
    def exposed(self) -> str:
        return {Kind.COUNTER: f"{self.name}_total", Kind.INFO: f"{self.name}_info"}.get(self.kind, self.name)

    def samples(self) -> set[str]:
        """Every sample name the family can produce (what a query may name)."""
        if self.kind is Kind.HISTOGRAM:
            return {f"{self.name}{s}" for s in ("_bucket", "_sum", "_count")}
        return {self.exposed}


def _m(name: str, kind: Kind, unit: str, source: Source, help: str, labels: tuple[str, ...] = JOB_LABELS) -> Metric:
    return Metric(name=name, kind=kind, help=help, unit=unit, source=source, labels=labels)


# ── training progress: the same figures from the operator (read from status.progress) and the driver ──────────
TRAINING_ITERATIONS = _m("rljob_job_training_iterations", Kind.COUNTER, "iterations", Source.BOTH,
                         "Training iterations completed, across attempts.")
ENV_STEPS = _m("rljob_job_env_steps", Kind.COUNTER, "env steps", Source.BOTH,
               "Environment steps sampled, across attempts.")
TRAINING_SECONDS = _m("rljob_job_training_seconds", Kind.COUNTER, "seconds", Source.BOTH,
                      "Time spent training, across attempts.")
EPISODE_RETURN_MEAN = _m("rljob_job_episode_return_mean", Kind.GAUGE, "return", Source.BOTH,
                         "Mean return of the latest episodes (RLlib's smoothing window).")
ENV_STEPS_PER_SECOND = _m("rljob_job_env_steps_per_second", Kind.GAUGE, "env steps/s", Source.BOTH,
                          "Sampling throughput over the last iteration.")
ATTEMPT = _m("rljob_job_attempt", Kind.GAUGE, "attempt", Source.BOTH,
             "The attempt running now (or last run), from 1.")

# ── the operator: every job it knows, from its cache, including jobs whose driver has not reported yet ────────
JOB_INFO = _m("rljob_job", Kind.INFO, "1", Source.OPERATOR,
              "One series per job: its experiment and phase (join on namespace and rltrainingjob; alert on phase).",
              labels=(*JOB_LABELS, "experiment", "phase"))
READY_WORKERS = _m("rljob_job_ready_workers", Kind.GAUGE, "pods", Source.OPERATOR, "Worker pods ready.")
DESIRED_WORKERS = _m("rljob_job_desired_workers", Kind.GAUGE, "pods", Source.OPERATOR, "Worker pods the spec asks for.")
JOBS = _m("rljob_jobs", Kind.GAUGE, "jobs", Source.OPERATOR, "RLTrainingJobs by phase.", labels=("phase",))
JOB_DURATION = _m("rljob_job_duration_seconds", Kind.HISTOGRAM, "seconds", Source.OPERATOR,
                  "Wall time of finished jobs, from start to completion.", labels=("phase",))
CLUSTER_READY = _m("rljob_cluster_ready_seconds", Kind.HISTOGRAM, "seconds", Source.OPERATOR,
                   "Time from an attempt's start until its Ray cluster (head and all workers) was ready.", labels=())
RECONCILE_DURATION = _m("rljob_reconcile_duration_seconds", Kind.HISTOGRAM, "seconds", Source.OPERATOR,
                        "Time to reconcile one job once.", labels=())
PROGRESS_READS = _m("rljob_progress_reads", Kind.COUNTER, "reads", Source.OPERATOR,
                    "Reads of the running heads' progress, by result: ok, or failed (unreachable, slow, refused as "
                    "invalid); progress stays empty while every read of a job fails.", labels=("result",))
RECONCILE_ERRORS = _m("rljob_reconcile_errors", Kind.COUNTER, "reconciles", Source.OPERATOR,
                      "Reconciles that failed and were retried.", labels=())

# ── the driver: what only the process that trains knows ──────────────────────────────────────────────────────
DRIVER_INFO = _m("rljob_driver", Kind.INFO, "1", Source.DRIVER,
                 "The job this driver trains: its experiment and recipe.", labels=(*JOB_LABELS, "experiment", "recipe"))
LAST_ITERATION_TIME = _m("rljob_job_last_iteration_timestamp_seconds", Kind.GAUGE, "Unix seconds", Source.DRIVER,
                         "When the last iteration ended (alert when it stops moving).")
LAST_CHECKPOINT_ITERATION = _m("rljob_job_last_checkpoint_iteration", Kind.GAUGE, "iteration", Source.DRIVER,
                               "Iteration of the latest checkpoint.")

ALL: tuple[Metric, ...] = (
    TRAINING_ITERATIONS, ENV_STEPS, TRAINING_SECONDS, EPISODE_RETURN_MEAN, ENV_STEPS_PER_SECOND, ATTEMPT,
    JOB_INFO, READY_WORKERS, DESIRED_WORKERS, JOBS, JOB_DURATION, CLUSTER_READY, RECONCILE_DURATION, RECONCILE_ERRORS,
    PROGRESS_READS,
    DRIVER_INFO, LAST_ITERATION_TIME, LAST_CHECKPOINT_ITERATION,
)


def exported_by(source: Source) -> tuple[Metric, ...]:
    return tuple(m for m in ALL if m.source in (source, Source.BOTH))


def markdown_table() -> str:
    """The README's table: `python -c 'from rljob.api.metrics import markdown_table; print(markdown_table())'`."""
    rows = ["| metric | type | labels | unit | exported by | meaning |", "|---|---|---|---|---|---|"]
    for m in ALL:
        name = m.exposed if m.kind is not Kind.HISTOGRAM else f"{m.name}_bucket/_sum/_count"
        labels = ", ".join(m.labels) or "-"
        rows.append(f"| `{name}` | {m.kind} | {labels} | {m.unit} | {m.source} | {m.help} |")
    return "\n".join(rows)
