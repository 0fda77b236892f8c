"""The tail of each finished attempt's driver log, kept in status (status.attemptLogs) for `rljob logs --attempt N`
after the head pod is gone: written when the operator sees the attempt end, bounded in count and size."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from rljob import resources
from rljob.api.models import ATTEMPT_LOG_CHARS, MAX_ATTEMPT_LOGS, AttemptLog, JobStatus
from rljob.controller.apply import with_attempt_log
from rljob.controller.observe import PodObservation
from rljob.controller.reconciler import Reconciler
from tests.builders import minimal_job


class LoggingKube:
    """Serves each head pod's log tail; records status writes and creations, as the API server would take them."""

    def __init__(self, logs: dict[str, str]) -> None:
        self.logs = logs
        self.patches: list[dict[str, Any]] = []
        self.created: list[tuple[str, str]] = []

    async def pod_log_tail(self, namespace: str, name: str, lines: int = 40) -> str | None:
        return self.logs.get(name)

    async def patch_job_status(self, ns: str, name: str, status: dict[str, Any], decided_on: Any = None) -> dict[str, Any]:
        self.patches.append(status)
        return {"metadata": {"namespace": ns, "name": name, "resourceVersion": str(100 + len(self.patches))}, "status": status}

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        self.created.append((obj["kind"], obj["metadata"]["name"]))
        return None, True

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        pass

    async def delete(self, *args: Any, **kwargs: Any) -> bool:
        return True

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        *_, namespace, _, name = path.split("/")
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"}}


def test_each_failed_attempt_leaves_its_tail_and_the_last_one_the_driver_log_tail_too() -> None:
    key = ("ns1", "flaky")
    kube = LoggingKube({"flaky-head-1": "iteration 3\nRuntimeError: one\n", "flaky-head-2": "iteration 9\nMemoryError\n"})
    rec = Reconciler(kube, resources.BuildContext(),  # type: ignore[arg-type]
                     clock=lambda: datetime(2026, 12, 4, 0, 5, 0, tzinfo=timezone.utc))
    body = minimal_job("flaky", workers={"replicas": 0}, backoffLimit=1)
    body["metadata"].update(uid="u1", generation=1, resourceVersion="7")
    started = "2026-12-04T00:00:00Z"
    body["status"] = {"phase": "Running", "attempts": 1, "observedGeneration": 1, "startTime": started,
                      "attemptStartTime": started, "headPod": "flaky-head-1"}

    def fail(attempt: int) -> dict[str, Any]:
        rec.jobs[key] = body
        rec.pods = {key: [PodObservation(f"flaky-head-{attempt}", "head", attempt, "Failed", exit_code=1,
                                         controller_uid="u1", uid=f"p{attempt}", owner_uid="u1")]}
        rec.pods_changed(key)
        asyncio.run(rec.reconcile(key))
        written = {k: v for patch in kube.patches for k, v in patch.items()}
        body["status"] = {**body["status"], **written}  # as the watch delivers our writes
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return body["status"]

    st = fail(1)
    assert st["phase"] == "Pending" and st["reason"] == "AttemptFailed" and st["attempts"] == 2
    assert st["attemptLogs"] == [{"attempt": 1, "logTail": "iteration 3\nRuntimeError: one\n"}]
    assert st["driverLogTail"] == "iteration 3\nRuntimeError: one\n"
    body["status"].update(phase="Running", headPod="flaky-head-2")
    st = fail(2)
    assert st["phase"] == "Failed" and st["reason"] == "BackoffLimitExceeded"
    assert st["attemptLogs"] == [{"attempt": 1, "logTail": "iteration 3\nRuntimeError: one\n"},
                                 {"attempt": 2, "logTail": "iteration 9\nMemoryError\n"}]
    assert st["driverLogTail"] == "iteration 9\nMemoryError\n"
    assert JobStatus.model_validate(st).attempt_logs is not None  # what the schema admits


def test_the_kept_tails_are_the_latest_attempts_each_cut_at_a_line() -> None:
    logs = None
    for attempt in range(1, MAX_ATTEMPT_LOGS + 3):
        logs = with_attempt_log(logs, attempt, f"attempt {attempt}\n")
    assert [entry.attempt for entry in logs or []] == list(range(3, MAX_ATTEMPT_LOGS + 3))
    # The same attempt again (a decision carried out twice) replaces its entry.
    again = with_attempt_log(logs, 4, "attempt 4, read again\n")
    assert [(e.attempt, e.log_tail) for e in again if e.attempt == 4] == [(4, "attempt 4, read again\n")]
    assert len(again) == MAX_ATTEMPT_LOGS
    long = "".join(f"line {i:05d} of a long traceback\n" for i in range(500))
    (entry,) = with_attempt_log(None, 1, long)
    assert len(entry.log_tail) <= ATTEMPT_LOG_CHARS and entry.log_tail.startswith("line ") and long.endswith(entry.log_tail)
    one_line = "x" * (ATTEMPT_LOG_CHARS * 2)
    assert with_attempt_log(None, 1, one_line) == [AttemptLog(attempt=1, log_tail="x" * ATTEMPT_LOG_CHARS)]
