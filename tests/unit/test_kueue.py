"""Kueue admission as pure functions: the phase machine's decisions for a queued job, the Workload it asks
Kueue to admit, the placement of an admitted job, and the Workload status writes the operator owns."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from rljob.api import constants as c
from rljob.controller.observe import Observed, WorkloadObservation, observe_workload
from rljob.controller.phases import step
from rljob.resources import BuildContext
from rljob.resources import workload as wl
from tests.builders import T0, head, merged, parsed_job, running_status, ts, workers

COUNTS = (("head", 1), ("workers", 2))


def queued_job(status: dict[str, Any] | None = None, queue: str | None = "team-a", **spec: Any) -> Any:
    """A job in Kueue's queue `queue` (its label), or in none."""
    labels = {"labels": {c.KUEUE_QUEUE_LABEL: queue}} if queue else {}
    return parsed_job(status, metadata=labels, **{"workers": {"replicas": 2}, **spec})


def workload(**kw: Any) -> WorkloadObservation:
    return WorkloadObservation(name="rltrainingjob-demo", uid="w1", counts=COUNTS, queue_name="team-a", **kw)


def queued_status(**extra: Any) -> dict[str, Any]:
    return {"phase": "Suspended", "reason": "Queued", "observedGeneration": 1, **extra}


def test_a_new_queued_job_waits_suspended_with_no_pod_and_its_workload_created() -> None:
    d = step(queued_job(), Observed(kueue=True), T0)
    s = merged(d)
    assert s["phase"] == "Suspended" and s["reason"] == "Queued" and "team-a" in s["message"]
    assert d.ensure_workload and not d.ensure_children and d.create_head is None
    assert [e.reason for e in d.events] == ["Queued"]


def test_without_the_label_or_without_the_integration_nothing_changes() -> None:
    for job, kueue in ((queued_job(queue=None), True), (queued_job(), False)):
        d = step(job, Observed(kueue=kueue), T0)
        assert merged(d)["phase"] == "Pending" and d.create_head == 1 and not d.ensure_workload


def test_waiting_in_the_queue_writes_nothing_again() -> None:
    waiting = merged(step(queued_job(), Observed(kueue=True), T0))
    d = step(queued_job(waiting), Observed(kueue=True, workload=workload()), T0 + timedelta(seconds=5))
    assert d.status is None and not d.events and not d.ensure_workload and d.create_head is None


def test_admission_starts_the_whole_cluster() -> None:
    admitted = workload(admitted=True, quota_reserved=True, cluster_queue="gpus")
    d = step(queued_job(queued_status()), Observed(kueue=True, workload=admitted), T0)
    s = merged(d, queued_status())
    assert s["phase"] == "Pending" and s["reason"] == "Admitted" and "ClusterQueue gpus" in s["message"]
    assert s["attempts"] == 1 and d.ensure_children and d.create_head == 1
    assert [e.reason for e in d.events] == ["Admitted"]


def test_an_evicted_job_stops_then_releases_its_quota_then_resumes_when_admitted_again() -> None:
    evicted = workload(admitted=True, quota_reserved=True, evicted=True, evicted_reason="Preempted",
                       evicted_message="preempted by a higher priority workload")
    running = running_status()
    d = step(queued_job(running), Observed(pods=(head(),), workers=workers(), kueue=True, workload=evicted), T0)
    s = merged(d, running)
    assert s["phase"] == "Suspended" and s["reason"] == "Evicted" and "Preempted" in s["message"]
    assert d.delete_pods == ["demo-head-1"] and d.delete_workers and d.release_workload is None
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Evicted")]

    # Pods still going: the quota stays reserved (Kueue must not give it away while they run).
    d = step(queued_job(s), Observed(pods=(head(),), kueue=True, workload=evicted), T0 + timedelta(seconds=1))
    assert d.release_workload is None
    # Gone: the reservation is released, and the job waits.
    d = step(queued_job(s), Observed(kueue=True, workload=evicted), T0 + timedelta(seconds=2))
    assert d.release_workload == ("Preempted", "preempted by a higher priority workload") and d.create_head is None

    again = workload(admitted=True, quota_reserved=True)
    d = step(queued_job(s), Observed(kueue=True, workload=again), T0 + timedelta(seconds=60))
    resumed = merged(d, s)
    assert resumed["phase"] == "Pending" and resumed["attempts"] == 2 and d.create_head == 2
    assert "latest checkpoint" in d.events[0].message


def test_a_running_job_whose_workload_went_goes_back_to_the_queue() -> None:
    running = running_status()
    d = step(queued_job(running), Observed(pods=(head(),), workers=workers(), kueue=True, workload=None), T0)
    s = merged(d, running)
    assert s["phase"] == "Suspended" and s["reason"] == "Queued" and d.delete_pods == ["demo-head-1"]


def test_scaling_a_queued_job_replaces_its_workload_once_the_pods_are_gone() -> None:
    running = running_status()
    admitted = workload(admitted=True, quota_reserved=True)
    d = step(queued_job(running, workers={"replicas": 3}), Observed(pods=(head(),), workers=workers(), kueue=True,
                                                                     workload=admitted), T0)
    s = merged(d, running)
    assert s["phase"] == "Suspended" and "workers changed to 3" in s["message"] and not d.replace_workload
    d = step(queued_job(s, workers={"replicas": 3}), Observed(kueue=True, workload=admitted), T0 + timedelta(seconds=5))
    assert d.replace_workload and d.create_head is None


def test_the_users_suspend_takes_the_job_out_of_the_queue_and_back() -> None:
    d = step(queued_job(queued_status(), suspend=True), Observed(kueue=True, workload=workload()), T0)
    assert d.workload_active is False and merged(d, queued_status())["reason"] == "Suspended"
    held = queued_status(reason="Suspended")
    # Kueue marks an inactive Workload Evicted (reason Deactivated) and leaves the condition when it is active again.
    inactive = workload(active=False, evicted=True, evicted_reason="Deactivated")
    d = step(queued_job(held), Observed(kueue=True, workload=inactive), T0)
    assert d.workload_active is True and merged(d, held)["reason"] == "Queued" and d.release_workload is None


def test_a_finished_job_marks_its_workload_finished_once() -> None:
    done = {**running_status(), "phase": "Succeeded", "reason": "DriverSucceeded", "message": "done",
            "completionTime": ts()}
    d = step(queued_job(done), Observed(kueue=True, workload=workload(admitted=True)), T0)
    assert d.finish_workload == ("Succeeded", "done")
    d = step(queued_job(done), Observed(kueue=True, workload=workload(admitted=True, finished=True)), T0)
    assert d.finish_workload is None


def test_the_workload_asks_for_the_pods_the_operator_builds() -> None:
    job = queued_job(head={"gpus": 1, "cpu": "4", "memory": "16Gi"}, workers={"replicas": 3, "cpu": "2", "memory": "4Gi"})
    obj = wl.workload(job, BuildContext())
    assert obj["apiVersion"] == "kueue.x-k8s.io/v1beta2" and obj["metadata"]["name"] == "rltrainingjob-demo"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "u1" and obj["spec"]["queueName"] == "team-a"
    head_set, worker_set = obj["spec"]["podSets"]
    assert (head_set["name"], head_set["count"], worker_set["name"], worker_set["count"]) == ("head", 1, "workers", 3)
    head_limits = head_set["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert head_limits["nvidia.com/gpu"] == 1 or head_limits["nvidia.com/gpu"] == "1"
    assert worker_set["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "2"
    assert obj["spec"]["active"] is True
    assert wl.workload(queued_job(workers={"replicas": 0}), BuildContext())["spec"]["podSets"][-1]["name"] == "head"


def test_admitted_placement_adds_the_flavors_node_labels_and_tolerations() -> None:
    gpu = wl.flavor_placement({"spec": {"nodeLabels": {"pool": "a100"}, "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}})
    job = wl.admitted(queued_job(head={"nodeSelector": {"zone": "z1"}}), {"head": gpu, "workers": wl.Placement()})
    assert job.spec.head.node_selector == {"pool": "a100", "zone": "z1"}
    assert [t.key for t in job.spec.head.tolerations] == ["nvidia.com/gpu"]
    assert job.spec.workers.node_selector == {}
    pod = wl.workload(job, BuildContext())["spec"]["podSets"][0]["template"]["spec"]
    assert pod["nodeSelector"]["pool"] == "a100"


def test_workload_observation_and_status_writes() -> None:
    body = {"metadata": {"name": "rltrainingjob-demo", "uid": "w1", "resourceVersion": "7", "generation": 1,
                         "labels": {c.LABEL_CONTROLLER_UID: "u1"}},
            "spec": {"queueName": "team-a", "podSets": [{"name": "head", "count": 1}, {"name": "workers", "count": 2}]},
            "status": {"admission": {"clusterQueue": "gpus", "podSetAssignments": [
                {"name": "head", "flavors": {"cpu": "default", "nvidia.com/gpu": "a100"}}]},
                "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "",
                                "lastTransitionTime": ts()},
                               {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "",
                                "lastTransitionTime": ts()},
                               {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "by wl2",
                                "lastTransitionTime": ts()}]}}
    o = observe_workload(body)
    assert o.admitted and o.quota_reserved and o.evicted and o.evicted_reason == "Preempted"
    assert o.flavors == (("head", ("a100", "default")),) and o.counts == COUNTS and o.controller_uid == "u1"

    released = wl.released_patch(body, "Preempted", "by wl2", ts(10))
    assert released["metadata"]["resourceVersion"] == "7" and released["status"]["admission"] is None
    conds = {x["type"]: x for x in released["status"]["conditions"]}
    assert conds["QuotaReserved"]["status"] == "False" and conds["QuotaReserved"]["lastTransitionTime"] == ts(10)
    assert conds["Admitted"]["status"] == "False" and conds["Requeued"]["status"] == "True"
    assert conds["Evicted"]["status"] == "True"  # Kueue's to reset when it admits again

    finished = wl.finished_patch(body, "Succeeded", "done", ts(20))
    conds = {x["type"]: x for x in finished["status"]["conditions"]}
    assert conds["Finished"] == {"type": "Finished", "status": "True", "reason": "Succeeded", "message": "done",
                                 "lastTransitionTime": ts(20), "observedGeneration": 1}
