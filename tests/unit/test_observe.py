"""How watched children become observations: ready workers are counted from their pods, not the StatefulSet's
status, which its controller writes later."""
from __future__ import annotations

from typing import Any

from rljob.api import constants as c
from rljob.controller.observe import PodObservation, WorkersObservation, merge, observe_pod, observe_workers
from rljob.controller.phases import step
from tests.builders import T0, parsed_job, ts

JOB_UID, STS_UID = "job-1", "sts-1"


def worker_body(ordinal: int, *, ready: bool = True, phase: str = "Running", owner: str = STS_UID,
                deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"demo-workers-{ordinal}", "namespace": "default", "uid": f"pod-{ordinal}", "resourceVersion": "7",
        "labels": {c.LABEL_JOB: "demo", c.LABEL_ROLE: c.ROLE_WORKER, c.LABEL_CONTROLLER_UID: JOB_UID},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "demo-workers", "uid": owner,
                             "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}}


def statefulset_body(ready_replicas: int, replicas: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo-workers", "namespace": "default", "uid": STS_UID, "resourceVersion": "5",
                     "labels": {c.LABEL_JOB: "demo", c.LABEL_CONTROLLER_UID: JOB_UID}},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready_replicas} if ready_replicas else {},
    }


def head() -> PodObservation:
    return PodObservation("demo-head-1", "head", 1, "Running", ready=True, controller_uid=JOB_UID, owner_uid=JOB_UID)


def initializing_job() -> Any:
    return parsed_job({"phase": "Initializing", "attempts": 1, "failedAttempts": 0, "startTime": ts(),
                       "attemptStartTime": ts(), "observedGeneration": 1, "headPod": "demo-head-1"}, uid=JOB_UID)


def test_a_pod_knows_its_controlling_owner() -> None:
    assert observe_pod(worker_body(0)).owner_uid == STS_UID
    orphan = worker_body(0)
    orphan["metadata"]["ownerReferences"][0]["controller"] = False
    assert observe_pod(orphan).owner_uid == ""


def test_ready_workers_are_counted_from_the_statefulsets_pods() -> None:
    pods = [head(), observe_pod(worker_body(0)), observe_pod(worker_body(1)),
            observe_pod(worker_body(2, ready=False, phase="Pending")),  # not ready yet
            observe_pod(worker_body(3, deleting=True)),  # on its way out
            observe_pod(worker_body(4, owner="sts-of-before"))]  # a deleted StatefulSet's, not yet collected
    observed = merge(pods, [observe_workers(statefulset_body(ready_replicas=0, replicas=5))], uid=JOB_UID)
    assert observed.workers.ready == 2  # the StatefulSet's status still says 0: its controller writes it later


def test_a_worker_that_stops_being_ready_counts_at_once() -> None:
    pods = [head(), observe_pod(worker_body(0)), observe_pod(worker_body(1, ready=False))]
    observed = merge(pods, [observe_workers(statefulset_body(ready_replicas=2))], uid=JOB_UID)
    assert observed.workers.ready == 1


def test_a_statefulset_whose_uid_is_unknown_keeps_its_own_count() -> None:
    observed = merge([head()], [WorkersObservation(exists=True, replicas=2, ready=2)], uid=JOB_UID)
    assert observed.workers.ready == 2


def test_the_job_is_running_once_its_pods_are_ready_before_the_statefulset_says_so() -> None:
    pods = [head(), observe_pod(worker_body(0)), observe_pod(worker_body(1))]
    d = step(initializing_job(), merge(pods, [observe_workers(statefulset_body(ready_replicas=0))], uid=JOB_UID), T0)
    assert d.status is not None and d.status.phase == "Running" and d.status.workers == "2/2"
    one_ready = [head(), observe_pod(worker_body(0)), observe_pod(worker_body(1, ready=False))]
    d = step(initializing_job(), merge(one_ready, [observe_workers(statefulset_body(ready_replicas=2))], uid=JOB_UID), T0)
    assert d.status is not None and d.status.phase == "Initializing" and d.status.workers == "1/2"
