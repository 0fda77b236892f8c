"""Training progress as Prometheus metrics on the driver's metrics port (constants.PORT_METRICS).

A custom collector renders the latest ProgressRecord at scrape time, so counters that continue
across attempts (env steps, training time) are exposed as counters with their true lifetime values
rather than as prometheus_client Counters that would restart at zero in every new head pod. The names and
labels are the operator's (rljob.api.metrics): one query works against either.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..api import metrics as m
from .progress import ProgressRecord

log = logging.getLogger(__name__)


class ProgressCollector:
    """Exposes the latest record; before the first iteration only rljob_driver_info is shown."""

    def __init__(self, job: str, namespace: str, recipe: str, experiment: str = "") -> None:
        self.job_labels = [namespace, job]  # in the order of rljob.api.metrics.JOB_LABELS
        self.info = {"experiment": experiment or job, "recipe": recipe}
        self.record: ProgressRecord | None = None
        self.checkpoint_iteration: int | None = None

    def update(self, record: ProgressRecord, checkpoint_iteration: int | None = None) -> None:
        self.record = record
        if checkpoint_iteration is not None:
            self.checkpoint_iteration = checkpoint_iteration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        info = InfoMetricFamily(m.DRIVER_INFO.name, m.DRIVER_INFO.help, labels=list(m.JOB_LABELS))
        info.add_metric(self.job_labels, self.info)
        yield info
        r = self.record
        if r is None:
            return

        def one(metric: m.Metric, value: float) -> Any:
            cls = CounterMetricFamily if metric.kind is m.Kind.COUNTER else GaugeMetricFamily
            fam = cls(metric.name, metric.help, labels=list(metric.labels))
            fam.add_metric(self.job_labels, float(value))
            return fam

        yield one(m.TRAINING_ITERATIONS, r.iteration)
        yield one(m.ENV_STEPS, r.env_steps)
        yield one(m.TRAINING_SECONDS, r.time_total_s)
        if r.episode_return_mean is not None:
            yield one(m.EPISODE_RETURN_MEAN, r.episode_return_mean)
        yield one(m.ENV_STEPS_PER_SECOND, r.env_steps_per_second)
        if r.attempt is not None:
            yield one(m.ATTEMPT, r.attempt)
        yield one(m.LAST_ITERATION_TIME, r.timestamp)
        if self.checkpoint_iteration is not None:
            yield one(m.LAST_CHECKPOINT_ITERATION, self.checkpoint_iteration)


def serve(collector: ProgressCollector, port: int, addr: str = "0.0.0.0") -> Any:
    """Starts the /metrics endpoint; returns the registry (also when the port is taken: logged)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        log.warning("metrics endpoint not started on port %d: %s", port, exc)
    return registry
