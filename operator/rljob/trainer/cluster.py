"""Waiting for the Ray cluster to assemble, bounded by the job's coordination deadline.

The deadline is passed as an absolute time (RLJOB_COORDINATION_DEADLINE), not a duration, because
the operator counts clusterCoordinationTimeoutSeconds from the attempt's start and a head pod may
start late in that window; an absolute time means the driver and the operator give up together.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import ConfigError, CoordinationTimeout

log = logging.getLogger(__name__)

HEAD_RESOURCE = "node:__internal_head__"


def parse_deadline(text: str) -> float:
    """Unix time from an RFC 3339 timestamp (2026-11-25T12:00:00Z) or Unix seconds (1795000000)."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"cannot parse the coordination deadline {text!r}: expected RFC 3339 (2026-11-25T12:00:00Z) or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass(frozen=True)
class ClusterSummary:
    nodes: int
    workers: int
    cpus: float
    gpus: float
    head_cpus: float = 0.0  # the driver's node: where a learner with num_learners=0 computes

    def describe(self) -> str:
        return (
            f"Ray cluster ready: {self.nodes} nodes (1 head + {self.workers} workers), "
            f"{self.cpus:g} CPUs, {self.gpus:g} GPUs"
        )


def summarize(nodes: Sequence[dict[str, Any]]) -> ClusterSummary:
    """Counts alive nodes from `ray.nodes()`; the head is the node with Ray's internal head resource."""
    alive = [n for n in nodes if n.get("Alive")]
    heads = [n for n in alive if HEAD_RESOURCE in (n.get("Resources") or {})]
    cpus = sum(float((n.get("Resources") or {}).get("CPU", 0)) for n in alive)
    gpus = sum(float((n.get("Resources") or {}).get("GPU", 0)) for n in alive)
    workers = len(alive) - (1 if heads else 0)
    head_cpus = sum(float((n.get("Resources") or {}).get("CPU", 0)) for n in heads)
    return ClusterSummary(len(alive), workers, cpus, gpus, head_cpus)


def wait_for_workers(
    expected: int,
    deadline: float | None,
    list_nodes: Callable[[], Sequence[dict[str, Any]]],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 2.0,
) -> ClusterSummary:
    """Returns once `expected` workers are alive; raises CoordinationTimeout at the deadline."""
    announced = -1
    while True:
        summary = summarize(list_nodes())
        if summary.workers >= expected:
            return summary
        now = clock()
        if summary.workers != announced:
            left = f", {deadline - now:.0f}s left" if deadline is not None else ""
            log.info("waiting for Ray workers: %d of %d joined%s", summary.workers, expected, left)
            announced = summary.workers
        if deadline is not None and now >= deadline:
            raise CoordinationTimeout(
                f"cluster coordination timed out: {summary.workers} of {expected} Ray workers joined "
                f"before the deadline ({summary.nodes} nodes, {summary.cpus:g} CPUs); "
                "check the worker pods (kubectl describe) for scheduling or image problems"
            )
        sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - now)))
