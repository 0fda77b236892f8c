"""Prometheus metrics of the operator: jobs by phase, durations, cluster-ready latency, reconcile
health, and each job's training progress as read from its status (which the operator reads from the head). Names, types and
labels are defined once, in rljob.api.metrics, for the operator and the driver alike.

Gauges that describe current state are computed at scrape time from the reconciler's cache, so
they can never drift from what `kubectl get rltj` shows.

An `OperatorMetrics` keeps its collectors in a registry of its own, with the process, platform and garbage-collector
collectors that prometheus_client's global registry would hold, so its endpoint serves the same series as before
and nothing here is process-wide: two instances (a test's and another's) count apart, and what a job has been
counted for lives and goes with the operator that counted it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ..api import metrics as m
from ..api.models import PHASES, JobSpec, JobStatus
from ..api.vocabulary import TERMINAL_PHASES, Phase
from . import conditions as cond
from .objects import Key

DEFAULT_EXPERIMENT = str(JobSpec.model_fields["experiment"].default)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JOB_DURATION_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
CLUSTER_READY_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

# A field of status.progress (Progress) -> the metric it feeds (the same names the driver exports).
PROGRESS_METRICS: dict[str, m.Metric] = {
    "iteration": m.TRAINING_ITERATIONS,
    "env_steps": m.ENV_STEPS,
    "time_total_seconds": m.TRAINING_SECONDS,
    "episode_return_mean": m.EPISODE_RETURN_MEAN,
    "env_steps_per_second": m.ENV_STEPS_PER_SECOND,
}

# What a scrape reads: the jobs to export, as (key, body); the progress reader's (reads, failures).
JobsSource = Callable[[], Iterable[tuple[Key, Mapping[str, Any]]]]
ReadsSource = Callable[[], tuple[int, int]]


class OperatorMetrics:
    """The operator's collectors and what its histograms have counted.

    Histograms count what happened while this process ran: after a restart or a failover the jobs that finished (or
    became ready) earlier are in status, but were counted by the process that saw them happen. What the status held
    when this process first reconciled a job is that backlog; what a later view adds (this process's own writes, or
    its first reconcile's) is new. Clocks are not compared: status times have one-second resolution, and a
    restarted operator reconciles within the second it started.
    """

    def __init__(self, jobs: JobsSource, progress_reads: ReadsSource | None = None) -> None:
        self.registry = CollectorRegistry()
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)
        self.reconcile_seconds = Histogram(m.RECONCILE_DURATION.name, m.RECONCILE_DURATION.help,
                                           buckets=RECONCILE_BUCKETS, registry=self.registry)
        self.reconcile_errors = Counter(m.RECONCILE_ERRORS.name, m.RECONCILE_ERRORS.help, registry=self.registry)
        self.job_duration = Histogram(m.JOB_DURATION.name, m.JOB_DURATION.help, list(m.JOB_DURATION.labels),
                                      buckets=JOB_DURATION_BUCKETS, registry=self.registry)
        self.cluster_ready = Histogram(m.CLUSTER_READY.name, m.CLUSTER_READY.help, buckets=CLUSTER_READY_BUCKETS,
                                       registry=self.registry)
        self.registry.register(JobsCollector(jobs, progress_reads))
        self._seen_finished: set[Key] = set()
        self._seen_ready: dict[Key, set[str]] = {}  # by job: forgetting a deleted job is not a scan of every job's
        self._known: set[Key] = set()
        self._port: int | None = None

    def observe_reconcile(self, key: Key, before: JobStatus | None, after: JobStatus | None,
                          seconds: float, failed: bool) -> None:
        """`before` is the job's status as this reconcile found it (None: no such job), `after` as it left it (the same
        when nothing changed)."""
        self.reconcile_seconds.observe(seconds)
        if failed:
            self.reconcile_errors.inc()
        if key not in self._known and before is not None:
            self._known.add(key)
            if before.cluster_ready_time:
                self._seen_ready.setdefault(key, set()).add(before.cluster_ready_time)
            if before.completion_time and before.phase in TERMINAL_PHASES:
                self._seen_finished.add(key)
        status = after if after is not None else before
        if key not in self._known or status is None:
            return
        start = cond.parse_timestamp(status.attempt_start_time)
        ready = cond.parse_timestamp(status.cluster_ready_time)
        if start and ready and ready >= start and status.cluster_ready_time not in self._seen_ready.get(key, ()):
            self._seen_ready.setdefault(key, set()).add(status.cluster_ready_time)
            self.cluster_ready.observe((ready - start).total_seconds())
        done = cond.parse_timestamp(status.completion_time)
        began = cond.parse_timestamp(status.start_time)
        if done and began and key not in self._seen_finished and status.phase in TERMINAL_PHASES:
            self._seen_finished.add(key)
            self.job_duration.labels(phase=str(status.phase)).observe(max(0.0, (done - began).total_seconds()))

    def forget_job(self, key: Key) -> None:
        """A deleted job: a new one of the same name is counted afresh."""
        self._known.discard(key)
        self._seen_finished.discard(key)
        self._seen_ready.pop(key, None)

    def serve(self, port: int) -> None:
        """Serves the registry on `port` (once: kopf runs a failed start-up again) from a thread of its own, so a
        scrape is answered while the event loop is busy."""
        if self._port is None:
            start_http_server(port, registry=self.registry)
            self._port = port


def family(metric: m.Metric) -> CounterMetricFamily | GaugeMetricFamily:
    if metric.kind is m.Kind.COUNTER:
        return CounterMetricFamily(metric.name, metric.help, labels=list(metric.labels))
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))


class JobsCollector(Collector):
    """Reads the jobs at scrape time: every job the operator knows has a `rljob_job_info` series from its first event
    on, before its driver reports anything."""

    def __init__(self, jobs: JobsSource, progress_reads: ReadsSource | None = None) -> None:
        self.jobs, self.progress_reads = jobs, progress_reads

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        by_phase = family(m.JOBS)
        counts = dict.fromkeys(PHASES, 0)
        info = InfoMetricFamily(m.JOB_INFO.name, m.JOB_INFO.help, labels=list(m.JOB_LABELS))
        progress_families = {field: family(metric) for field, metric in PROGRESS_METRICS.items()}
        attempt, ready, desired = family(m.ATTEMPT), family(m.READY_WORKERS), family(m.DESIRED_WORKERS)
        for (ns, name), body in self.jobs():
            status = JobStatus.read(body.get("status"))
            phase = str(status.phase or Phase.PENDING)
            counts[phase] = counts.get(phase, 0) + 1
            experiment = (body.get("spec") or {}).get("experiment") or DEFAULT_EXPERIMENT
            info.add_metric([ns, name], {"experiment": str(experiment), "phase": phase})
            for field, fam in progress_families.items():
                value = getattr(status.progress, field) if status.progress is not None else None
                if value is not None:
                    fam.add_metric([ns, name], float(value))
            replicas = ((body.get("spec") or {}).get("workers") or {}).get("replicas")
            for fam, value in ((attempt, status.attempts), (ready, status.ready_workers), (desired, replicas)):
                if isinstance(value, int) and not isinstance(value, bool):
                    fam.add_metric([ns, name], float(value))
        for phase, n in counts.items():
            by_phase.add_metric([phase], n)
        reads = CounterMetricFamily(m.PROGRESS_READS.name, m.PROGRESS_READS.help, labels=list(m.PROGRESS_READS.labels))
        if self.progress_reads is not None:
            done, failed = self.progress_reads()
            reads.add_metric(["ok"], float(done - failed))
            reads.add_metric(["failed"], float(failed))
        yield reads
        yield by_phase
        yield info
        yield from progress_families.values()
        yield attempt
        yield ready
        yield desired
