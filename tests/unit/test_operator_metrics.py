"""The operator's histograms count what happened while the process ran, never a restart's backlog again."""
from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import REGISTRY

from rljob.controller import metrics


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0


def finished(name: str, completed: str, ready: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name}, "status": {
        "phase": "Succeeded", "startTime": "2026-12-01T10:00:00Z", "attemptStartTime": "2026-12-01T10:00:00Z",
        "clusterReadyTime": ready, "completionTime": completed}}


def test_jobs_finished_before_this_process_started_are_not_counted_again() -> None:
    metrics.count_from(datetime(2026, 12, 1, 12, 0, 0, 500_000, tzinfo=timezone.utc))
    done, ready = _count("rljob_job_duration_seconds", phase="Succeeded"), _count("rljob_cluster_ready_seconds")
    # A restart finds a job that finished an hour ago: in status, but counted by the process that saw it.
    metrics.observe_reconcile(("ns", "old"), finished("old", "2026-12-01T11:00:00Z", "2026-12-01T10:01:00Z"), 0.01, False)
    assert _count("rljob_job_duration_seconds", phase="Succeeded") == done
    assert _count("rljob_cluster_ready_seconds") == ready
    # One that finishes now is counted, once, however often it is reconciled.
    for _ in range(3):
        metrics.observe_reconcile(("ns", "new"), finished("new", "2026-12-01T12:00:00Z", "2026-12-01T12:00:00Z"), 0.01, False)
    assert _count("rljob_job_duration_seconds", phase="Succeeded") == done + 1
    assert _count("rljob_cluster_ready_seconds") == ready + 1
