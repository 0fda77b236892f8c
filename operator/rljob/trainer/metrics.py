"""Training progress as Prometheus metrics on the driver's metrics port (constants.PORT_METRICS).

A custom collector renders the latest ProgressRecord at scrape time, so counters that continue
across attempts (env steps, training time) are exposed as counters with their true lifetime values
rather than as prometheus_client Counters that would restart at zero in every new head pod.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from .progress import ProgressRecord

log = logging.getLogger(__name__)


class ProgressCollector:
    """Exposes the latest record; before the first iteration only rljob_info is shown."""

    def __init__(self, job: str, namespace: str, recipe: str) -> None:
        self.labels = {"rljob": job, "namespace": namespace, "recipe": recipe}
        self.record: ProgressRecord | None = None
        self.checkpoint_iteration: int | None = None

    def update(self, record: ProgressRecord, checkpoint_iteration: int | None = None) -> None:
        self.record = record
        if checkpoint_iteration is not None:
            self.checkpoint_iteration = checkpoint_iteration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        yield InfoMetricFamily("rljob", "The training job this driver runs.", value=self.labels)
        r = self.record
        if r is None:
            return
        names = list(self.labels)
        values = list(self.labels.values())

        def gauge(name: str, doc: str, value: float) -> Any:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, value)
            return g

        yield gauge("rljob_training_iteration", "Training iterations completed (all attempts).", r.iteration)
        if r.episode_return_mean is not None:
            yield gauge("rljob_episode_return_mean", "Mean return of recent episodes.", r.episode_return_mean)
        steps = CounterMetricFamily("rljob_env_steps", "Environment steps sampled (all attempts).", labels=names)
        steps.add_metric(values, r.env_steps)
        yield steps
        yield gauge("rljob_env_steps_per_second", "Sampling throughput over the last iteration.", r.env_steps_per_second)
        time_total = CounterMetricFamily(
            "rljob_training_time_seconds", "Training time (all attempts).", labels=names
        )
        time_total.add_metric(values, r.time_total_s)
        yield time_total
        if r.attempt is not None:
            yield gauge("rljob_attempt", "The attempt this driver runs.", r.attempt)
        yield gauge("rljob_last_iteration_timestamp_seconds", "When the last iteration ended (Unix time).", r.timestamp)
        if self.checkpoint_iteration is not None:
            yield gauge(
                "rljob_last_checkpoint_iteration", "Iteration of the latest checkpoint.", self.checkpoint_iteration
            )


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
