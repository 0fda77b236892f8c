"""Prometheus metrics of the operator: jobs by phase, durations, cluster-ready latency, reconcile
health, and each job's training progress as read from its status (the driver's own report).

Gauges that describe current state are computed at scrape time from the reconciler's cache, so
they can never drift from what `kubectl get rltj` shows. Per-job series are labelled `namespace` and
`rltrainingjob`: `job` would collide with Prometheus' own scrape-job label.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..api.models import PHASES
from ..api.vocabulary import TERMINAL_PHASES, Phase
from . import conditions as cond

Key = tuple[str, str]

RECONCILE_SECONDS = Histogram(
    "rljob_reconcile_duration_seconds", "Time to reconcile one job once.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter("rljob_reconcile_errors_total", "Reconciles that failed and were retried.")
JOB_DURATION = Histogram(
    "rljob_job_duration_seconds", "Wall time of finished jobs, from start to completion.", ["phase"],
    buckets=(60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
)
CLUSTER_READY = Histogram(
    "rljob_cluster_ready_seconds", "Time from an attempt's start until its Ray cluster (head and all workers) was ready.",
    buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
)

JOB_LABELS = ["namespace", "rltrainingjob"]

_seen_finished: set[Key] = set()
_seen_ready: set[tuple[Key, str]] = set()
# Histograms count what happened while this process ran: after a restart or a failover the jobs that
# finished (or became ready) earlier are in status, but were counted by the process that saw them happen.
# Status times have one-second resolution, hence the truncation.
_since: list[datetime] = [datetime.now(timezone.utc).replace(microsecond=0)]


def count_from(when: datetime) -> None:
    """Counts transitions at or after `when` only (the start of this process, or of its leadership)."""
    _since[0] = when.astimezone(timezone.utc).replace(microsecond=0)


def observe_reconcile(key: Key, body: dict[str, Any] | None, seconds: float, failed: bool) -> None:
    RECONCILE_SECONDS.observe(seconds)
    if failed:
        RECONCILE_ERRORS.inc()
    status = (body or {}).get("status") or {}
    start = cond.parse_timestamp(status.get("attemptStartTime"))
    ready = cond.parse_timestamp(status.get("clusterReadyTime"))
    if start and ready and ready >= start and (key, status["clusterReadyTime"]) not in _seen_ready:
        _seen_ready.add((key, status["clusterReadyTime"]))
        if ready >= _since[0]:
            CLUSTER_READY.observe((ready - start).total_seconds())
    done = cond.parse_timestamp(status.get("completionTime"))
    began = cond.parse_timestamp(status.get("startTime"))
    if done and began and key not in _seen_finished and status.get("phase") in TERMINAL_PHASES:
        _seen_finished.add(key)
        if done >= _since[0]:
            JOB_DURATION.labels(phase=status["phase"]).observe(max(0.0, (done - began).total_seconds()))


def forget_job(key: Key) -> None:
    _seen_finished.discard(key)
    for item in [s for s in _seen_ready if s[0] == key]:
        _seen_ready.discard(item)


class JobsCollector(Collector):
    """Reads the reconciler's cache of job bodies at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .handlers import _state

        rec = _state.get("reconciler")
        jobs = list(rec.jobs.items()) if rec else []
        by_phase = GaugeMetricFamily("rljob_jobs", "RLTrainingJobs by phase.", labels=["phase"])
        counts = dict.fromkeys(PHASES, 0)
        per_job = {
            "iteration": GaugeMetricFamily("rljob_job_training_iteration", "Training iterations done.", labels=JOB_LABELS),
            "episodeReturnMean": GaugeMetricFamily(
                "rljob_job_episode_return_mean", "Mean episode return reported by the driver.", labels=JOB_LABELS),
            "envSteps": GaugeMetricFamily("rljob_job_env_steps", "Environment steps sampled in total.", labels=JOB_LABELS),
            "envStepsPerSecond": GaugeMetricFamily(
                "rljob_job_env_steps_per_second", "Sampling throughput over the last iteration.", labels=JOB_LABELS),
        }
        ready_workers = GaugeMetricFamily("rljob_job_ready_workers", "Ready worker pods.", labels=JOB_LABELS)
        for (ns, name), body in jobs:
            status = body.get("status") or {}
            phase = status.get("phase") or Phase.PENDING
            counts[phase] = counts.get(phase, 0) + 1
            progress = status.get("progress") or {}
            for field, family in per_job.items():
                value = progress.get(field)
                if isinstance(value, (int, float)):
                    family.add_metric([ns, name], float(value))
            if isinstance(status.get("readyWorkers"), int):
                ready_workers.add_metric([ns, name], float(status["readyWorkers"]))
        for phase, n in counts.items():
            by_phase.add_metric([phase], n)
        yield by_phase
        yield from per_job.values()
        yield ready_workers


_served: list[int] = []


def serve(port: int) -> None:
    if _served:
        return
    REGISTRY.register(JobsCollector())
    start_http_server(port)
    _served.append(port)
