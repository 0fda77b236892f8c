"""Prometheus metrics of the operator: jobs by phase, durations, cluster-ready latency, reconcile
health, and each job's training progress as read from its status (which the operator reads from the head). Names, types and
labels are defined once, in rljob.api.metrics, for the operator and the driver alike.

Gauges that describe current state are computed at scrape time from the reconciler's cache, so
they can never drift from what `kubectl get rltj` shows.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ..api import metrics as m
from ..api.models import PHASES, JobSpec
from ..api.vocabulary import TERMINAL_PHASES, Phase
from . import conditions as cond
from .objects import Key

DEFAULT_EXPERIMENT = str(JobSpec.model_fields["experiment"].default)

RECONCILE_SECONDS = Histogram(
    m.RECONCILE_DURATION.name, m.RECONCILE_DURATION.help, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(m.RECONCILE_ERRORS.name, m.RECONCILE_ERRORS.help)
JOB_DURATION = Histogram(
    m.JOB_DURATION.name, m.JOB_DURATION.help, list(m.JOB_DURATION.labels),
    buckets=(60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
)
CLUSTER_READY = Histogram(m.CLUSTER_READY.name, m.CLUSTER_READY.help, buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))

# status.progress field -> the metric it feeds (the same names the driver exports).
PROGRESS_METRICS: dict[str, m.Metric] = {
    "iteration": m.TRAINING_ITERATIONS,
    "envSteps": m.ENV_STEPS,
    "timeTotalSeconds": m.TRAINING_SECONDS,
    "episodeReturnMean": m.EPISODE_RETURN_MEAN,
    "envStepsPerSecond": m.ENV_STEPS_PER_SECOND,
}

_seen_finished: set[Key] = set()
_seen_ready: dict[Key, set[str]] = {}  # by job: forgetting a deleted job is not a scan of every job's
_known: set[Key] = set()
# Histograms count what happened while this process ran: after a restart or a failover the jobs that
# finished (or became ready) earlier are in status, but were counted by the process that saw them happen.
# What the status held when this process first reconciled a job is that backlog; what a later view adds
# (this process's own writes, or its first reconcile's) is new. Clocks are not compared: status times have
# one-second resolution, and a restarted operator reconciles within the second it started.


def observe_reconcile(key: Key, before: dict[str, Any] | None, after: dict[str, Any] | None,
                      seconds: float, failed: bool) -> None:
    """`before` is the job as this reconcile found it, `after` as it left it (the same when nothing changed)."""
    RECONCILE_SECONDS.observe(seconds)
    if failed:
        RECONCILE_ERRORS.inc()
    if key not in _known and before is not None:
        _known.add(key)
        found = before.get("status") or {}
        if found.get("clusterReadyTime"):
            _seen_ready.setdefault(key, set()).add(found["clusterReadyTime"])
        if found.get("completionTime") and found.get("phase") in TERMINAL_PHASES:
            _seen_finished.add(key)
    if key not in _known:
        return
    status = (after or before or {}).get("status") or {}
    start = cond.parse_timestamp(status.get("attemptStartTime"))
    ready = cond.parse_timestamp(status.get("clusterReadyTime"))
    if start and ready and ready >= start and status["clusterReadyTime"] not in _seen_ready.get(key, ()):
        _seen_ready.setdefault(key, set()).add(status["clusterReadyTime"])
        CLUSTER_READY.observe((ready - start).total_seconds())
    done = cond.parse_timestamp(status.get("completionTime"))
    began = cond.parse_timestamp(status.get("startTime"))
    if done and began and key not in _seen_finished and status.get("phase") in TERMINAL_PHASES:
        _seen_finished.add(key)
        JOB_DURATION.labels(phase=status["phase"]).observe(max(0.0, (done - began).total_seconds()))


def forget_job(key: Key) -> None:
    _known.discard(key)
    _seen_finished.discard(key)
    _seen_ready.pop(key, None)


def family(metric: m.Metric) -> CounterMetricFamily | GaugeMetricFamily:
    if metric.kind is m.Kind.COUNTER:
        return CounterMetricFamily(metric.name, metric.help, labels=list(metric.labels))
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))


class JobsCollector(Collector):
    """Reads the reconciler's cache of job bodies at scrape time: every job the operator knows has a
    `rljob_job_info` series from its first event on, before its driver reports anything."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        from .handlers import _state

        rec = _state.get("reconciler")
        # Only the replica that leads exports its jobs: a standby's cache holds the same jobs, and a dashboard's `sum`
        # over both replicas would count each twice.
        jobs = list(rec.jobs.items()) if rec is not None and rec.may_act() else []
        by_phase = family(m.JOBS)
        counts = dict.fromkeys(PHASES, 0)
        info = InfoMetricFamily(m.JOB_INFO.name, m.JOB_INFO.help, labels=list(m.JOB_LABELS))
        progress_families = {field: family(metric) for field, metric in PROGRESS_METRICS.items()}
        attempt, ready, desired = family(m.ATTEMPT), family(m.READY_WORKERS), family(m.DESIRED_WORKERS)
        for (ns, name), body in jobs:
            status = body.get("status") or {}
            phase = status.get("phase") or Phase.PENDING
            counts[phase] = counts.get(phase, 0) + 1
            experiment = (body.get("spec") or {}).get("experiment") or DEFAULT_EXPERIMENT
            info.add_metric([ns, name], {"experiment": str(experiment), "phase": phase})
            progress = status.get("progress") or {}
            for field, fam in progress_families.items():
                value = progress.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    fam.add_metric([ns, name], float(value))
            for fam, value in ((attempt, status.get("attempts")), (ready, status.get("readyWorkers")),
                               (desired, ((body.get("spec") or {}).get("workers") or {}).get("replicas"))):
                if isinstance(value, int) and not isinstance(value, bool):
                    fam.add_metric([ns, name], float(value))
        for phase, n in counts.items():
            by_phase.add_metric([phase], n)
        reader = _state.get("progress")
        reads = CounterMetricFamily(m.PROGRESS_READS.name, m.PROGRESS_READS.help, labels=list(m.PROGRESS_READS.labels))
        if reader is not None:
            reads.add_metric(["ok"], float(reader.reads - reader.failures))
            reads.add_metric(["failed"], float(reader.failures))
        yield reads
        yield by_phase
        yield info
        yield from progress_families.values()
        yield attempt
        yield ready
        yield desired


_served: list[int] = []


def serve(port: int) -> None:
    if _served:
        return
    REGISTRY.register(JobsCollector())
    start_http_server(port)
    _served.append(port)
