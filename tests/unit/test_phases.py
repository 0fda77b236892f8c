"""Every phase transition as a pure function of (job, observed children, now)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rljob.api import JobStatus, parse_job
from rljob.controller.observe import Observed, PodObservation, WorkersObservation, observe_pod, observe_workers
from rljob.controller.phases import PROBLEMS_MESSAGE_CHARS, CreateProblem, Decision, blocked, invalid, step
from tests.builders import T0, head, merged, minimal_job, parsed_job, running_status, ts, workers


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_every_status_written_carries_the_worker_selector_the_scale_subresource_reads() -> None:
    d = step(parsed_job(), Observed(), T0)
    assert d.status is not None and d.status.worker_selector == "rljob.dev/job=demo,rljob.dev/role=worker"
    assert d.head_created is not None and d.head_created.worker_selector == d.status.worker_selector


def test_new_job_is_accepted_and_creates_everything() -> None:
    d = step(parsed_job(), Observed(), T0)
    s = merged(d)
    assert s["phase"] == "Pending" and s["reason"] == "Accepted"
    assert s["attempts"] == 1 and s["startTime"] == ts() and s["attemptStartTime"] == ts()
    assert s["observedGeneration"] == 1 and s["headPod"] == "demo-head-1"
    assert d.ensure_children and d.create_head == 1
    assert [e.reason for e in d.events] == ["Accepted"]
    # Once its head pod is created, the pass writes Initializing instead, with both events: one status write, not two.
    assert d.head_created is not None and d.status is not None
    created = merged(Decision(status=d.head_created))
    assert created["phase"] == "Initializing" and created["reason"] == "ClusterStarting"
    assert created["message"] == "waiting for head pod demo-head-1 and 2 worker(s)"
    assert created["workers"] == "0/2" and created["readyWorkers"] == 0  # else the next pass writes the count alone
    changed = ("phase", "reason", "message", "workers", "readyWorkers")
    assert {k: v for k, v in created.items() if k not in changed} == {k: v for k, v in s.items() if k not in changed}
    assert [e.reason for e in d.head_created_events] == ["ClusterStarting"]


def test_a_failed_attempt_is_written_pending_before_its_successor_initializes() -> None:
    failed = head(phase="Failed", ready=False, exit_code=1, reason="Error")
    d = step(parsed_job(running_status(), backoffLimit=2), Observed(pods=(failed,), workers=workers()), T0 + timedelta(minutes=5))
    assert d.create_head == 2 and d.head_created is None and not d.head_created_events


def test_no_initializing_without_a_head_to_create() -> None:
    pending = {"phase": "Pending", "attempts": 2, "startTime": ts(), "attemptStartTime": ts()}
    d = step(parsed_job(pending), Observed(pods=(head(1, phase="Running"),)), T0)  # the earlier head must stop first
    assert d.create_head is None and d.head_created is None


def test_new_suspended_job_creates_nothing() -> None:
    d = step(parsed_job(suspend=True), Observed(), T0)
    assert merged(d)["phase"] == "Suspended"
    assert condition(merged(d), "Suspended")["status"] == "True"
    assert not d.ensure_children and d.create_head is None


def test_pending_without_head_keeps_creating_idempotently() -> None:
    status = {"phase": "Pending", "attempts": 1, "startTime": ts(), "attemptStartTime": ts()}
    d = step(parsed_job(status), Observed(), T0 + timedelta(seconds=3))
    assert d.create_head == 1 and d.ensure_children
    assert not d.events


def test_pending_with_head_moves_to_initializing_then_running() -> None:
    status = {"phase": "Pending", "attempts": 1, "startTime": ts(), "attemptStartTime": ts()}
    d = step(parsed_job(status), Observed(pods=(head(phase="Pending", ready=False),), workers=workers(0)), T0)
    s = merged(d, status)
    assert s["phase"] == "Initializing" and s["workers"] == "0/2"
    d2 = step(parsed_job(s), Observed(pods=(head(),), workers=workers(2)), T0 + timedelta(seconds=20))
    s2 = merged(d2, s)
    assert s2["phase"] == "Running" and s2["reason"] == "ClusterReady" and s2["workers"] == "2/2"
    assert condition(s2, "ClusterReady")["status"] == "True" and condition(s2, "Running")["status"] == "True"
    assert s2["clusterReadyTime"] == ts(20)
    assert [e.reason for e in d2.events] == ["ClusterReady"]


def test_zero_workers_needs_only_the_head() -> None:
    status = {"phase": "Initializing", "attempts": 1, "startTime": ts(), "attemptStartTime": ts()}
    d = step(parsed_job(status, workers={"replicas": 0}), Observed(pods=(head(),), workers=workers(0, 0)), T0)
    assert merged(d, status)["phase"] == "Running"


def test_head_success_succeeds_and_releases_workers() -> None:
    status = running_status()
    finished = Observed(pods=(head(phase="Succeeded", ready=False, exit_code=0),), workers=workers())
    d = step(parsed_job(status), finished, T0 + timedelta(hours=1))
    s = merged(d, status)
    assert s["phase"] == "Succeeded" and s["completionTime"] == ts(3600) and s["lastExitCode"] == 0
    assert condition(s, "Complete")["status"] == "True" and condition(s, "Running")["status"] == "False"
    assert d.delete_workers and (d.capture_log, d.capture_attempt) == ("demo-head-1", 1) and not d.delete_pods


def test_head_failure_with_backoff_left_starts_next_attempt() -> None:
    status = running_status()
    failed = head(phase="Failed", ready=False, exit_code=1, reason="Error")
    d = step(parsed_job(status, backoffLimit=2), Observed(pods=(failed,), workers=workers()), T0 + timedelta(minutes=5))
    s = merged(d, status)
    assert s["phase"] == "Pending" and s["reason"] == "AttemptFailed"
    assert s["attempts"] == 2 and s["failedAttempts"] == 1 and s["attemptStartTime"] == ts(300)
    assert s["startTime"] == ts()  # maxRunDuration counts all attempts
    assert d.create_head == 2 and (d.capture_log, d.capture_attempt) == ("demo-head-1", 1) and not d.delete_workers
    assert "exit code 1" in s["message"]
    # Applying the same observation again with the new status does not start a third attempt.
    d2 = step(parsed_job(s, backoffLimit=2), Observed(pods=(failed,), workers=workers()), T0 + timedelta(minutes=5, seconds=1))
    assert merged(d2, s)["attempts"] == 2 and d2.create_head == 2


def test_head_failure_without_backoff_fails() -> None:
    status = running_status()
    d = step(parsed_job(status), Observed(pods=(head(phase="Failed", ready=False, exit_code=1),), workers=workers()), T0)
    s = merged(d, status)
    assert s["phase"] == "Failed" and s["reason"] == "BackoffLimitExceeded"
    assert condition(s, "Failed")["status"] == "True" and d.delete_workers


def test_config_error_exit_code_is_not_retried() -> None:
    status = running_status()
    d = step(parsed_job(status, backoffLimit=5), Observed(pods=(head(phase="Failed", ready=False, exit_code=2),)), T0)
    s = merged(d, status)
    assert s["phase"] == "Failed" and s["reason"] == "DriverFailed"


def test_deleted_head_counts_as_a_failed_attempt() -> None:
    status = running_status()
    d = step(parsed_job(status, backoffLimit=1), Observed(pods=(), workers=workers()), T0)
    s = merged(d, status)
    assert s["attempts"] == 2 and "disappeared" in s["message"]
    d2 = step(parsed_job(status, backoffLimit=1), Observed(pods=(head(deleting=True),), workers=workers()), T0)
    assert merged(d2, status)["attempts"] == 2 and d2.delete_pods == ["demo-head-1"]


def test_coordination_timeout_names_what_is_missing() -> None:
    status = {"phase": "Initializing", "attempts": 1, "startTime": ts(), "attemptStartTime": ts()}
    stuck = PodObservation(name="demo-workers-1", role="worker", attempt=None, phase="Pending",
                           reason="Unschedulable", message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    obs = Observed(pods=(head(), stuck), workers=workers(1))
    early = step(parsed_job(status, clusterCoordinationTimeoutSeconds=60), obs, T0 + timedelta(seconds=30))
    assert merged(early, status)["phase"] == "Initializing" and early.requeue_after == 30
    # Timestamps are truncated to the second: the deadline counts from the end of the recorded one.
    almost = step(parsed_job(status, clusterCoordinationTimeoutSeconds=60), obs, T0 + timedelta(seconds=60.5))
    assert merged(almost, status)["phase"] == "Initializing"
    d = step(parsed_job(status, clusterCoordinationTimeoutSeconds=60), obs, T0 + timedelta(seconds=61))
    s = merged(d, status)
    assert s["phase"] == "Failed" and s["reason"] == "ClusterCoordinationTimeout"
    assert "1/2 workers ready" in s["message"] and "Insufficient nvidia.com/gpu" in s["message"]
    assert d.delete_pods == ["demo-head-1"] and d.delete_workers


def test_a_pod_that_cannot_start_is_named_while_the_cluster_starts() -> None:
    status = {"phase": "Initializing", "reason": "ClusterStarting", "attempts": 1, "startTime": ts(), "attemptStartTime": ts(),
              "message": "waiting for head pod demo-head-1 and 2 worker(s)", "headPod": "demo-head-1", "observedGeneration": 1,
              "workers": "2/2", "readyWorkers": 2,
              "conditions": [{"type": "ClusterReady", "status": "False", "reason": "Starting",
                              "message": "the Ray cluster is being created", "lastTransitionTime": ts()}]}
    no_gpu = head(phase="Pending", ready=False, reason="Unschedulable",
                  message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    d = step(parsed_job(status), Observed(pods=(no_gpu,), workers=workers(2)), T0 + timedelta(seconds=5))
    s = merged(d, status)
    assert s["phase"] == "Initializing" and s["reason"] == "ClusterStarting"
    assert s["message"] == ("waiting for head pod demo-head-1 and 2 worker(s); "
                            "demo-head-1 Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    ready = condition(s, "ClusterReady")
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable") and "Insufficient nvidia.com/gpu" in ready["message"]
    assert ready["lastTransitionTime"] == ts()  # still False: no transition
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Unschedulable")]
    # The same observation again: nothing to write, no second event.
    again = step(parsed_job(s), Observed(pods=(no_gpu,), workers=workers(2)), T0 + timedelta(seconds=10))
    assert again.status is None and not again.events
    # Scheduled, its image still pulling: the job says so; a stuck image pull is named too.
    pulling = step(parsed_job(s), Observed(pods=(head(phase="Pending", ready=False),), workers=workers(2)), T0 + timedelta(seconds=20))
    s2 = merged(pulling, s)
    assert s2["message"] == "waiting for head pod demo-head-1 and 2 worker(s)" and not pulling.events
    assert (condition(s2, "ClusterReady")["reason"], condition(s2, "ClusterReady")["message"]) == (
        "Starting", "the Ray cluster is being created")
    bad_image = head(phase="Pending", ready=False, reason="ImagePullBackOff", message='Back-off pulling image "nope:1"')
    d3 = step(parsed_job(s2), Observed(pods=(bad_image,), workers=workers(2)), T0 + timedelta(seconds=30))
    s3 = merged(d3, s2)
    assert condition(s3, "ClusterReady")["reason"] == "ContainersNotStarting"
    assert s3["message"].endswith('; demo-head-1 ImagePullBackOff: Back-off pulling image "nope:1"')
    assert [(e.type, e.reason) for e in d3.events] == [("Warning", "ContainersNotStarting")]


def test_startup_problems_name_the_head_first_and_count_the_rest() -> None:
    status = {"phase": "Initializing", "attempts": 2, "startTime": ts(), "attemptStartTime": ts()}
    old_head = PodObservation(name="demo-head-1", role="head", attempt=1, phase="Pending", reason="Unschedulable", message="old")
    crashing = [PodObservation(name=f"demo-workers-{i}", role="worker", attempt=None, phase="Running",
                               reason="CrashLoopBackOff", message="back-off 10s") for i in range(3)]
    config = head(attempt=2, phase="Pending", ready=False, reason="CreateContainerConfigError",
                  message='secret "wandb" not found')
    d = step(parsed_job(status, workers={"replicas": 3}), Observed(pods=(old_head, *crashing, config), workers=workers(0, 3)), T0)
    s = merged(d, status)
    assert condition(s, "ClusterReady")["reason"] == "ContainersNotStarting"  # the old attempt's head does not count
    assert s["message"] == ('waiting for head pod demo-head-2 and 3 worker(s); demo-head-2 CreateContainerConfigError: '
                            'secret "wandb" not found; demo-workers-0 CrashLoopBackOff: back-off 10s; and 2 more pod(s)')


def test_a_degraded_cluster_says_why_its_replacement_does_not_start() -> None:
    status = running_status(workers="2/2", readyWorkers=2)
    lost = PodObservation(name="demo-workers-1", role="worker", attempt=None, phase="Pending",
                          reason="Unschedulable", message="0/3 nodes are available: 3 Insufficient cpu.")
    d = step(parsed_job(status), Observed(pods=(head(), lost), workers=workers(1)), T0)
    s = merged(d, status)
    assert s["phase"] == "Running" and condition(s, "ClusterReady")["reason"] == "WorkersNotReady"
    assert condition(s, "ClusterReady")["message"] == (
        "1/2 workers ready; the StatefulSet is replacing the others; "
        "demo-workers-1 Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
    later = step(parsed_job(s), Observed(pods=(head(), lost), workers=workers(1)), T0 + timedelta(seconds=61))
    assert [e.reason for e in later.events] == ["ClusterDegraded"]
    assert condition(merged(later, s), "ClusterReady")["message"] == condition(s, "ClusterReady")["message"]


def test_a_job_held_by_finalizers_after_its_deletion_is_left_to_the_garbage_collector() -> None:
    """Foreground deletion: the collector deletes the head and workers while the job still exists. That is neither a
    failed attempt nor a reason to create anything again."""
    body = parsed_job(running_status(), backoffLimit=3).model_dump(by_alias=True, exclude_none=True)
    body["metadata"]["deletionTimestamp"] = ts(5)
    deleting = parse_job(body)
    assert deleting.metadata.deletion_timestamp == ts(5)
    going = Observed(pods=(head(deleting=True),), workers=workers(exists=False))
    d = step(deleting, going, T0 + timedelta(seconds=6))
    # Nothing to do, and the log says so: once while its pods remain, once when the last one has gone (the moment a
    # live job's lost head is a failed attempt), whatever the pods do in between.
    assert d == Decision(note="is being deleted (its pods remain): nothing to do, its children are left to the garbage "
                              "collector")
    assert step(deleting, Observed(pods=(head(),), workers=workers()), T0).note == d.note
    gone = Observed(workers=workers(exists=False))
    assert step(deleting, gone, T0 + timedelta(seconds=6)) == Decision(
        note="is being deleted (no pods left): nothing to do, its children are left to the garbage collector")
    # The same observation without the deletion is an attempt that failed, and the next one starts.
    retry = step(parsed_job(running_status(), backoffLimit=3), gone, T0 + timedelta(seconds=6))
    assert retry.status is not None and retry.status.reason == "AttemptFailed"


def test_a_deleted_policy_or_service_of_a_live_job_is_created_again() -> None:
    status = running_status()
    gone = ("NetworkPolicy demo-isolation", "Service demo-head")
    d = step(parsed_job(status), Observed(pods=(head(),), workers=workers(), children_gone=gone), T0)
    assert d.ensure_children and d.status is None and d.create_head is None
    assert [(e.type, e.reason, e.message) for e in d.events] == [
        ("Warning", "ChildrenRestored", "NetworkPolicy demo-isolation, Service demo-head deleted while the job runs: created again")]
    # A finished job keeps its record only: nothing comes back.
    done = step(parsed_job({**status, "phase": "Succeeded"}), Observed(pods=(head(phase="Succeeded", ready=False),),
                                                                children_gone=gone), T0)
    assert not done.ensure_children and not done.events


def test_max_run_duration_cuts_the_run_off() -> None:
    status = running_status()
    d = step(parsed_job(status, maxRunDurationSeconds=600), Observed(pods=(head(),), workers=workers()), T0 + timedelta(seconds=601))
    s = merged(d, status)
    assert s["phase"] == "Failed" and s["reason"] == "DeadlineExceeded"
    assert d.delete_pods == ["demo-head-1"] and d.delete_workers
    before = step(parsed_job(status, maxRunDurationSeconds=600), Observed(pods=(head(),), workers=workers()), T0 + timedelta(seconds=590))
    assert before.requeue_after == 11 and before.status is None


def test_lost_worker_degrades_then_recovers_without_leaving_running() -> None:
    status = running_status(workers="2/2", readyWorkers=2)
    d = step(parsed_job(status), Observed(pods=(head(),), workers=workers(1)), T0)
    s = merged(d, status)
    assert s["phase"] == "Running" and s["workers"] == "1/2"
    assert condition(s, "ClusterReady")["status"] == "False" and d.events == []  # not yet a degradation to warn of
    assert d.requeue_after is not None and d.requeue_after <= 30  # looked at again before DEGRADED_AFTER has passed
    still = step(parsed_job(s), Observed(pods=(head(),), workers=workers(1)), T0 + timedelta(seconds=30))
    assert still.events == []
    d1 = step(parsed_job(s), Observed(pods=(head(),), workers=workers(1)), T0 + timedelta(seconds=61))
    s1 = merged(d1, s)
    assert [(e.type, e.reason) for e in d1.events] == [("Warning", "ClusterDegraded")]
    assert condition(s1, "ClusterReady")["reason"] == "ClusterDegraded"
    again = step(parsed_job(s1), Observed(pods=(head(),), workers=workers(1)), T0 + timedelta(seconds=90))
    assert again.events == []  # warned once
    d2 = step(parsed_job(s1), Observed(pods=(head(),), workers=workers(2)), T0 + timedelta(seconds=95))
    assert condition(merged(d2, s1), "ClusterReady")["status"] == "True"
    assert [e.reason for e in d2.events] == ["ClusterRecovered"]


def test_a_successful_finish_is_no_degradation() -> None:
    """The driver finished and stopped Ray: its workers lose the head before the head pod is seen Succeeded."""
    status = running_status(workers="2/2", readyWorkers=2)
    stopping = step(parsed_job(status), Observed(pods=(head(ready=False),), workers=workers(0)), T0 + timedelta(seconds=100))
    s = merged(stopping, status)
    done = step(parsed_job(s), Observed(pods=(head(phase="Succeeded", ready=False, exit_code=0),), workers=workers(0)),
                T0 + timedelta(seconds=130))
    assert merged(done, s)["phase"] == "Succeeded"
    assert [e for e in [*stopping.events, *done.events] if e.type == "Warning"] == []


def test_replicas_edit_scales_the_statefulset() -> None:
    status = running_status()
    d = step(parsed_job(status, workers={"replicas": 5}), Observed(pods=(head(),), workers=workers(2, 2)), T0)
    assert d.scale_workers == 5


def test_missing_statefulset_is_recreated() -> None:
    d = step(parsed_job(running_status()), Observed(pods=(head(),), workers=WorkersObservation()), T0)
    assert d.ensure_children


def test_suspend_and_resume() -> None:
    status = running_status()
    d = step(parsed_job(status, suspend=True), Observed(pods=(head(),), workers=workers()), T0)
    s = merged(d, status)
    assert s["phase"] == "Suspended" and d.delete_pods == ["demo-head-1"] and d.delete_workers
    assert condition(s, "Suspended")["status"] == "True"
    d2 = step(parsed_job(s, suspend=False), Observed(), T0 + timedelta(minutes=10))
    s2 = merged(d2, s)
    assert s2["phase"] == "Pending" and s2["reason"] == "Resumed" and s2["attempts"] == 2
    assert s2["startTime"] == ts(600) and condition(s2, "Suspended")["status"] == "False"
    assert d2.create_head == 2


def test_ttl_deletes_the_finished_job() -> None:
    status = {**running_status(), "phase": "Succeeded", "completionTime": ts()}
    early = step(parsed_job(status, ttlSecondsAfterFinished=100), Observed(), T0 + timedelta(seconds=40))
    assert early.requeue_after == 60 and not early.delete_job
    late = step(parsed_job(status, ttlSecondsAfterFinished=100), Observed(), T0 + timedelta(seconds=100))
    assert late.delete_job
    assert not step(parsed_job(status), Observed(), T0 + timedelta(days=400)).delete_job


def test_finished_job_releases_leftover_workers_only() -> None:
    status = {**running_status(), "phase": "Succeeded", "completionTime": ts()}
    d = step(parsed_job(status), Observed(pods=(head(phase="Succeeded", ready=False),), workers=workers()), T0)
    assert d.delete_workers and not d.delete_pods and d.status is None


def test_condition_transition_time_is_kept_when_status_unchanged() -> None:
    status = running_status()
    d = step(parsed_job(status, generation=2), Observed(pods=(head(),), workers=workers()), T0 + timedelta(hours=1))
    s = merged(d, status)
    assert condition(s, "ClusterReady")["lastTransitionTime"] == ts()
    assert s["observedGeneration"] == 2


def test_observations_from_raw_bodies() -> None:
    pod = observe_pod({
        "metadata": {"name": "demo-head-2", "resourceVersion": "42",
                     "labels": {"rljob.dev/role": "head", "rljob.dev/attempt": "2", "rljob.dev/job": "demo"}},
        "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
    })
    assert (pod.attempt, pod.phase, pod.exit_code, pod.reason, pod.ready) == (2, "Failed", 137, "OOMKilled", False)
    pending = observe_pod({"metadata": {"name": "w", "labels": {"rljob.dev/role": "worker"}}, "status": {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no"}]}})
    problems = Observed(pods=(pending,)).startup_problems(1)
    assert pending.reason == "Unschedulable" and [p.startup_problem for p in problems] == ["w Unschedulable: no"]
    def waiting(reason: str, init: bool = False) -> Any:
        key = "initContainerStatuses" if init else "containerStatuses"
        return observe_pod({"metadata": {"name": "h", "labels": {"rljob.dev/role": "head"}}, "status": {
            "phase": "Pending", key: [{"state": {"waiting": {"reason": reason, "message": "why"}}}]}})
    assert (waiting("ImagePullBackOff").reason, waiting("ImagePullBackOff").startup_problem) == (
        "ImagePullBackOff", "h ImagePullBackOff: why")
    assert waiting("CreateContainerConfigError", init=True).startup_problem == "h CreateContainerConfigError: why"
    # On its way, not stuck.
    assert waiting("ContainerCreating").reason is None and waiting("PodInitializing").startup_problem is None
    sts = observe_workers({"metadata": {"name": "x"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 2}})
    assert (sts.exists, sts.replicas, sts.ready, sts.controller_uid) == (True, 3, 2, None)


def test_a_child_belongs_to_the_instance_in_its_label_or_its_controlling_owner() -> None:
    labelled = observe_pod({"metadata": {"name": "p", "labels": {"rljob.dev/controller-uid": "u2"}}})
    owned = observe_workers({"metadata": {"name": "w", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "uid": "cm"},
        {"apiVersion": "rljob.dev/v1alpha1", "kind": "RLTrainingJob", "uid": "u3", "controller": True}]}})
    orphan = observe_pod({"metadata": {"name": "q", "ownerReferences": [{"kind": "StatefulSet", "uid": "s", "controller": True}]}})
    assert (labelled.controller_uid, owned.controller_uid, orphan.controller_uid) == ("u2", "u3", None)


def test_job_gets_its_experiment_label() -> None:
    d = step(parsed_job(experiment="exp-b"), Observed(), T0)
    assert d.job_labels == {"rljob.dev/experiment": "exp-b"}
    labelled = minimal_job(experiment="exp-b")
    labelled["metadata"]["labels"] = {"rljob.dev/experiment": "exp-b"}
    assert step(parse_job(labelled), Observed(), T0).job_labels is None


def test_resume_waits_for_the_suspended_head_to_stop_before_the_next_head() -> None:
    suspended = {"phase": "Suspended", "attempts": 1, "failedAttempts": 0, "startTime": ts(), "attemptStartTime": ts()}
    terminating = Observed(pods=(head(1, phase="Running", deleting=True),))
    d = step(parsed_job(suspended), terminating, T0 + timedelta(seconds=5))
    s = merged(d, suspended)
    assert s["phase"] == "Pending" and s["attempts"] == 2
    assert d.create_head is None and d.ensure_children and d.requeue_after is not None
    pending = {**s}
    d = step(parsed_job(pending), terminating, T0 + timedelta(seconds=7))
    assert d.create_head is None and "waiting for demo-head-1 to stop before attempt 2 starts" in merged(d, pending)["message"]
    assert d.delete_pods == []  # already being deleted
    d = step(parsed_job(pending), Observed(pods=(head(1, phase="Failed", ready=False),)), T0 + timedelta(seconds=9))
    assert d.create_head == 2


def test_a_retry_deletes_a_still_running_earlier_head_first() -> None:
    pending = {"phase": "Pending", "attempts": 2, "failedAttempts": 1, "startTime": ts(), "attemptStartTime": ts()}
    d = step(parsed_job(pending, backoffLimit=2), Observed(pods=(head(1, phase="Running"),)), T0 + timedelta(seconds=3))
    assert d.create_head is None and d.delete_pods == ["demo-head-1"]


def test_children_of_a_deleted_job_of_the_same_name_are_not_this_jobs() -> None:
    """A leftover Succeeded head of the old instance must not end the new one; a terminating one must not fail it."""
    from rljob.controller.observe import merge

    old_head = head(1, phase="Succeeded", ready=False, controller_uid="old")
    old_workers = WorkersObservation(exists=True, replicas=2, ready=2, controller_uid="old", name="demo-workers")
    observed = merge([old_head], [old_workers], uid="u1")
    assert observed.pods == () and not observed.workers.exists
    pending = {"phase": "Pending", "attempts": 1, "failedAttempts": 0, "startTime": ts(), "attemptStartTime": ts()}
    d = step(parsed_job(pending), observed, T0 + timedelta(seconds=3))
    assert merged(d, pending)["phase"] == "Pending" and d.create_head == 1  # creating it waits on the name: see `blocked`
    mine = merge([head(1, controller_uid="u1"), head(2, controller_uid=None)], [], uid="u1")
    assert [p.name for p in mine.pods] == ["demo-head-1", "demo-head-2"]  # no uid: a child of an older operator


def test_suspend_and_resume_do_not_renew_the_run_budget() -> None:
    spec = {"maxRunDurationSeconds": 100}
    running = running_status()
    d = step(parsed_job(running, **spec, suspend=True), Observed(pods=(head(),), workers=workers()), T0 + timedelta(seconds=70))
    suspended = merged(d, running)
    assert suspended["phase"] == "Suspended" and suspended["activeSeconds"] == 70
    # An hour later, resumed: the budget has 30 s left, counted from the resumption.
    d = step(parsed_job(suspended, **spec), Observed(), T0 + timedelta(hours=1))
    resumed = merged(d, suspended)
    assert resumed["phase"] == "Pending" and resumed["activeSeconds"] == 70
    later = T0 + timedelta(hours=1, seconds=20)
    d = step(parsed_job(resumed, **spec), Observed(pods=(head(2),)), later)
    assert merged(d, resumed)["phase"] != "Failed" and d.requeue_after is not None and d.requeue_after <= 11
    d = step(parsed_job(resumed, **spec), Observed(pods=(head(2),)), T0 + timedelta(hours=1, seconds=32))
    failed = merged(d, resumed)
    assert failed["phase"] == "Failed" and failed["reason"] == "DeadlineExceeded" and "suspended time excluded" in failed["message"]


def test_the_decision_is_a_typed_status_and_the_patch_leaves_progress_to_the_driver() -> None:
    progress = {"attempt": 1, "iteration": 7, "envSteps": 7000}
    status = running_status(progress=progress)
    d = step(parsed_job(status, suspend=True), Observed(pods=(head(),), workers=workers()), T0 + timedelta(seconds=90))
    assert isinstance(d.status, JobStatus)
    assert d.status.phase == "Suspended" and d.status.active_seconds == 90
    assert d.status.progress is None  # the machine never decides the driver's field ...
    patch = d.status.merge_patch(JobStatus.model_validate(status))
    assert "progress" not in patch  # ... and never writes it, not even as a removal
    assert patch["phase"] == "Suspended" and patch["activeSeconds"] == 90
    assert "startTime" not in patch and "headPod" not in patch  # unchanged fields are not sent
    assert merged(d, status)["progress"] == progress


def test_a_cleared_field_is_a_null_in_the_patch() -> None:
    status = {"phase": "Suspended", "attempts": 1, "failedAttempts": 0, "startTime": ts(), "attemptStartTime": ts(),
              "completionTime": ts(), "headPod": "demo-head-1", "observedGeneration": 1}
    d = step(parsed_job(status, suspend=False), Observed(), T0 + timedelta(seconds=5))
    assert d.status is not None
    patch = d.status.merge_patch(JobStatus.model_validate(status))
    assert patch["completionTime"] is None and patch["attempts"] == 2 and patch["headPod"] == "demo-head-2"


def test_nothing_changed_means_no_status_to_write() -> None:
    status = running_status()
    d = step(parsed_job(status), Observed(pods=(head(),), workers=workers()), T0 + timedelta(seconds=5))
    assert d.status is None and not d.events


def test_a_finished_job_keeps_no_live_head_whatever_ended_it() -> None:
    for reason in ("DriverSucceeded", "BackoffLimitExceeded", "NetworkIsolationRequired", "ValidationFailed"):
        status = {**running_status(), "phase": "Failed", "reason": reason, "completionTime": ts()}
        d = step(parsed_job(status), Observed(pods=(head(1, phase="Succeeded", ready=False), head(2)), workers=workers()), T0)
        assert d.delete_pods == ["demo-head-2"] and d.delete_workers, reason


def test_pods_built_before_an_edit_made_while_suspended_are_replaced_not_taken_as_the_edit() -> None:
    """Suspended, edited, resumed, all before the operator acted on the suspension: the running pods are the old size."""
    from rljob.resources.meta import pod_size_hash

    before = parsed_job(running_status())
    edited = parsed_job(running_status(), workers={"replicas": 2, "cpu": "3"})
    old, new = pod_size_hash(before), pod_size_hash(edited)
    assert old != new and pod_size_hash(parsed_job(running_status(), workers={"replicas": 5})) == old  # a scale is no rebuild
    built_before = Observed(pods=(head(size_hash=old),), workers=WorkersObservation(True, 2, 2, size_hash=old, name="demo-workers"))
    d = step(edited, built_before, T0 + timedelta(seconds=30))
    s = merged(d, running_status())
    assert s["phase"] == "Pending" and s["reason"] == "Resumed" and s["attempts"] == 2 and s["failedAttempts"] == 0
    assert d.delete_pods == ["demo-head-1"] and d.delete_workers and d.create_head is None  # the old head goes first
    assert "StatefulSet demo-workers" in s["message"]
    # Pods built from the spec as it is, or by an operator that did not annotate them, are left alone.
    assert step(edited, Observed(pods=(head(size_hash=new),), workers=workers()), T0).status is None
    assert step(edited, Observed(pods=(head(),), workers=workers()), T0).status is None


ISOLATION = ("spec.network.isolation is false, but this cluster's operator requires isolated jobs "
             "(--require-network-isolation): re-create the job without it")
REFUSED_AT = T0 + timedelta(minutes=1)
RUNNING_CLUSTER = Observed(pods=(head(), head(0, phase="Succeeded", ready=False)), workers=workers(), require_isolation=True)


@pytest.mark.parametrize(("status", "observed", "written", "conditions", "deletes"), [
    # (the job's status, what runs) -> its new phase and reason (None: nothing written), its conditions, what goes
    pytest.param(None, Observed(require_isolation=True), ("Failed", "NetworkIsolationRequired"),
                 {"Failed": "True"}, ([], False), id="new"),
    pytest.param(running_status(), RUNNING_CLUSTER, ("Failed", "NetworkIsolationRequired"),
                 {"ClusterReady": "False", "Failed": "True"}, (["demo-head-1"], True), id="started-before"),
    pytest.param({**running_status(), "phase": "Failed", "reason": "NetworkIsolationRequired", "message": ISOLATION},
                 RUNNING_CLUSTER, None, {"ClusterReady": "True"}, (["demo-head-1"], True), id="refused-before"),
    pytest.param({**running_status(), "phase": "Succeeded", "completionTime": ts()}, RUNNING_CLUSTER, None,
                 {"ClusterReady": "True"}, (["demo-head-1"], True), id="finished"),
])
def test_a_job_that_breaks_the_isolation_rule_is_failed_once_and_torn_down(
    status: dict[str, Any] | None, observed: Observed, written: tuple[str, str] | None, conditions: dict[str, str],
    deletes: tuple[list[str], bool],
) -> None:
    d = step(parsed_job(status, network={"isolation": False}), observed, REFUSED_AT)
    s = merged(d, status)
    assert (d.delete_pods, d.delete_workers) == deletes
    assert {c["type"]: c["status"] for c in s.get("conditions", [])} == conditions
    if written is None:
        assert d.status is None and not [e for e in d.events if e.reason == "NetworkIsolationRequired"]
        return
    assert (s["phase"], s["reason"], s["message"]) == (*written, ISOLATION)
    assert s["completionTime"] == ts(60) and s["observedGeneration"] == 1
    assert [(e.type, e.reason, e.message) for e in d.events] == [("Warning", "NetworkIsolationRequired", ISOLATION)]
    # A refusal creates nothing, keeps no log, sets no TTL and labels nothing.
    assert (d.ensure_children, d.create_head, d.capture_log, d.requeue_after, d.job_labels) == (False, None, None, None, None)


@pytest.mark.parametrize(("isolation", "require", "metadata", "refused"), [
    (False, False, {}, False),
    (True, True, {}, False),
    (False, True, {}, True),
    # Held by a finalizer, it is still refused: its pods go at once, not when the finalizer lets it go.
    (False, True, {"deletionTimestamp": ts(), "finalizers": ["example.com/hold"]}, True),
])
def test_the_isolation_rule_refuses_only_open_jobs_of_an_operator_that_requires_it(
    isolation: bool, require: bool, metadata: dict[str, Any], refused: bool,
) -> None:
    d = step(parsed_job(network={"isolation": isolation}, metadata=metadata), Observed(require_isolation=require), T0)
    assert (d.status is not None and d.status.reason == "NetworkIsolationRequired") == refused


@pytest.mark.parametrize(("status", "problems", "written"), [
    pytest.param(None, ["spec.head.cpu: too small", "spec.workers: no"], "spec.head.cpu: too small; spec.workers: no",
                 id="new"),
    pytest.param(running_status(), ["x" * 3000], "x" * PROBLEMS_MESSAGE_CHARS, id="cut"),
    pytest.param({**running_status(), "phase": "Failed", "reason": "ValidationFailed", "message": "spec.x: bad"},
                 ["spec.x: bad"], None, id="refused-before"),
    pytest.param({**running_status(), "phase": "Failed", "reason": "BackoffLimitExceeded", "message": "attempt 3 failed"},
                 ["spec.x: bad"], "spec.x: bad", id="failed-otherwise"),
])
def test_a_job_that_does_not_parse_is_failed_once_and_torn_down(
    status: dict[str, Any] | None, problems: list[str], written: str | None,
) -> None:
    d = invalid(JobStatus.model_validate(status or {}), 3, problems, RUNNING_CLUSTER, REFUSED_AT)
    assert (d.delete_pods, d.delete_workers) == (["demo-head-1"], True)
    if written is None:
        assert d.status is None and not d.events
        return
    s = merged(d, status)
    assert (s["phase"], s["reason"], s["message"], s["observedGeneration"]) == ("Failed", "ValidationFailed", written, 3)
    assert [(c["type"], c["status"], c["reason"]) for c in s["conditions"]] == (
        [("ClusterReady", "False", "ValidationFailed")] if status else []) + [("Failed", "True", "ValidationFailed")]
    assert [(e.type, e.reason, e.message) for e in d.events] == [("Warning", "ValidationFailed", written)]


QUOTA = CreateProblem(refused=True, message="cannot create Pod demo-head-1: exceeded quota")
POLICY = CreateProblem(refused=True, message="cannot create NetworkPolicy demo-head: denied by policy")
TAKEN = CreateProblem(refused=False, message="Service demo-head already exists and belongs to an earlier RLTrainingJob")


@pytest.mark.parametrize(("problems", "reason", "event_type", "message", "waiting"), [
    ([QUOTA], "CreateFailed", "Warning", QUOTA.message, False),
    # A refusal is named before any wait, and alone: waiting would not end it.
    ([TAKEN, QUOTA, POLICY], "CreateFailed", "Warning", f"{QUOTA.message}; {POLICY.message}", False),
    ([TAKEN, TAKEN], "WaitingForOldChildren", "Normal", f"{TAKEN.message}; {TAKEN.message}", True),
    ([CreateProblem(refused=True, message="y" * 3000)], "CreateFailed", "Warning", "y" * PROBLEMS_MESSAGE_CHARS, False),
])
def test_a_pass_that_could_not_create_a_child_stays_where_it_was_decided_and_says_why(
    problems: list[CreateProblem], reason: str, event_type: str, message: str, waiting: bool,
) -> None:
    decided = step(parsed_job(), Observed(), T0).status
    assert decided is not None
    b = blocked(decided, None, problems)
    assert (b.status.phase, b.status.reason, b.status.message, b.waiting) == ("Pending", reason, message, waiting)
    assert (b.event.type, b.event.reason, b.event.message) == (event_type, reason, message)
    assert b.status.model_copy(update={"reason": decided.reason, "message": decided.message}) == decided


@pytest.mark.parametrize(("current", "expected"), [
    (None, {"reason": "CreateFailed", "message": QUOTA.message, "conditions": []}),
    # The decision changed nothing: the job's own status, without the progress only the progress reader writes.
    (running_status(progress={"iteration": 3}), {**running_status(), "reason": "CreateFailed", "message": QUOTA.message}),
])
def test_a_failed_creation_amends_the_jobs_own_status_when_nothing_was_decided(
    current: dict[str, Any] | None, expected: dict[str, Any],
) -> None:
    b = blocked(None, JobStatus.model_validate(current) if current is not None else None, [QUOTA])
    assert b.status.wire() == expected

