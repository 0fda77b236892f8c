"""The operator against a real API server: kube-apiserver + controller manager (garbage collector,
StatefulSets) + scheduler + kwok nodes, with the operator running as `rljob operator`."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rljob import resources
from rljob.api import constants as c
from rljob.api import load_job_file, parse_job
from tests import invalid_manifests
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, wait_for
from tests.cluster.operator_process import OperatorProcess
from tests.integration.jobs import get_job, log_since, run_to, status, wait_phase
from tests.tooling import ROOT

CHILD_KINDS = "pods,statefulsets,services,networkpolicies,serviceaccounts,roles,rolebindings,persistentvolumeclaims"


def children(cp: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    return cp.get_json(CHILD_KINDS, "-n", ns, "-l", f"{c.LABEL_JOB}={name}")["items"]


def child_names(cp: ControlPlane, ns: str, name: str) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in children(cp, ns, name)}


def expected_names(body: dict[str, Any], attempt: int = 1) -> set[str]:
    """What the operator creates, plus the worker pods the StatefulSet makes (they carry the job label too)."""
    job = parse_job(body)
    names = {f"{o['kind']}/{o['metadata']['name']}" for o in resources.build(job, resources.BuildContext(), attempt)}
    return names | {f"Pod/{job.name}-workers-{i}" for i in range(job.spec.workers.replicas)}


def pod_names(cp: ControlPlane, ns: str, name: str) -> set[str]:
    pods = cp.get_json("pods", "-n", ns, "-l", f"{c.LABEL_JOB}={name}")["items"]
    return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}


def events(cp: ControlPlane, ns: str, name: str) -> list[str]:
    items = cp.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("lastTimestamp") or "")]


def event_counts(cp: ControlPlane, ns: str, name: str, reason: str) -> list[int]:
    """The count of each Event of `reason` on the job. The operator raises one Event's count for each repeat
    (`kubectl describe` shows "x3 over 4s"): their sum is how often it happened, their number how many Events."""
    items = cp.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    return [e.get("count") or 1 for e in items if e["reason"] == reason]


def wait_for_looks(cp: ControlPlane, ns: str, name: str, reason: str, looks: int = 3) -> None:
    """Until the operator has made `looks` passes over the job that ended in `reason` (each a retry after the first)."""
    wait_for(lambda: sum(event_counts(cp, ns, name, reason)) >= looks, timeout=60, interval=0.3,
             description=f"{ns}/{name}: {looks} passes ending in {reason}")


def wait_for_log(proc: OperatorProcess, mark: int, line: str) -> None:
    """Until the operator has logged `line` after `mark` (an offset in its log taken before the test's action)."""
    wait_for(lambda: line in log_since(proc, mark), timeout=30, interval=0.3, description=f"the operator logging {line!r}")


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(cond for cond in st["conditions"] if cond["type"] == type_)


# ── examples ─────────────────────────────────────────────────────────────────────────────────────────

EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if "kind: RLTrainingJob" in p.read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT / "examples")) for p in EXAMPLES])
def test_each_example_creates_exactly_its_children(
    control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str, path: Path
) -> None:
    cp = control_plane
    body = load_job_file(path).model_dump(by_alias=True, exclude_none=True, mode="json")
    name = body["metadata"]["name"]
    cp.kubectl("apply", "-n", namespace, "-f", str(path))
    if body["spec"].get("suspend"):
        wait_phase(cp, namespace, name, "Suspended", 30)
        assert not child_names(cp, namespace, name), "a job created suspended must create nothing"
        cp.kubectl("patch", "rltj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
        body["spec"]["suspend"] = False
    expected = expected_names({**body, "metadata": {**body["metadata"], "namespace": namespace}})
    wait_for(lambda: expected <= child_names(cp, namespace, name), timeout=30, description=f"children of {name}")
    # Proof that the operator has looked at the job since its children exist: it counts the workers ready, which it
    # writes in the status after carrying out the decision of that look (a child it would create in addition is
    # created by then).
    replicas = body["spec"]["workers"]["replicas"]
    wait_for(lambda: status(cp, namespace, name).get("readyWorkers") == replicas, timeout=60,
             description=f"{name}: {replicas} ready workers counted by the operator")
    assert child_names(cp, namespace, name) == expected
    uid = get_job(cp, namespace, name)["metadata"]["uid"]
    for obj in children(cp, namespace, name):
        owners = obj["metadata"].get("ownerReferences", [])
        if obj["kind"] == "Pod" and obj["metadata"]["name"].startswith(f"{name}-workers-"):
            assert owners[0]["kind"] == "StatefulSet"  # worker pods belong to their StatefulSet
            continue
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [(c.KIND, uid, True)], obj["metadata"]["name"]
        labels = obj["metadata"]["labels"]
        assert labels[c.LABEL_APP_MANAGED_BY] == c.MANAGED_BY and labels[c.LABEL_APP_INSTANCE] == name
    wide = cp.kubectl("get", "rltj", name, "-n", namespace, "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "WORKERS", "ITERATION", "REWARD", "AGE", "REASON", "EXPERIMENT", "STARTED", "EVALUATION"]


# ── life cycle ───────────────────────────────────────────────────────────────────────────────────────


def test_success_path(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    st = run_to(cp, namespace, small_job("ok", namespace))
    assert st["workers"] == "2/2" and st["attempts"] == 1 and st["headPod"] == "ok-head-1"
    assert condition(st, "ClusterReady")["status"] == "True"
    assert condition(st, "ClusterReady")["observedGeneration"] == 1
    cp.set_pod_phase(namespace, "ok-head-1", "Succeeded", exit_code=0)
    st = wait_phase(cp, namespace, "ok", "Succeeded", 30)
    assert condition(st, "Complete")["status"] == "True" and st["completionTime"]
    wait_for(
        lambda: not any(n.startswith("ok-workers-") for n in pod_names(cp, namespace, "ok")), timeout=30, description="workers removed"
    )
    assert "StatefulSet/ok-workers" not in child_names(cp, namespace, "ok")
    assert "Pod/ok-head-1" in child_names(cp, namespace, "ok")  # kept: its log is the run's record
    wait_for(
        lambda: {"Accepted", "ClusterStarting", "ClusterReady", "Succeeded"} <= set(events(cp, namespace, "ok")),
        timeout=10,
        description="events for every transition",
    )


def test_failed_head_retries_then_exceeds_backoff(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("retry", namespace, backoffLimit=1))
    cp.set_pod_phase(namespace, "retry-head-1", "Failed", exit_code=1)
    st = wait_phase(cp, namespace, "retry", "Running", 30, attempts=2)
    assert st["failedAttempts"] == 1 and st["headPod"] == "retry-head-2"
    assert "AttemptFailed" in events(cp, namespace, "retry")
    cp.set_pod_phase(namespace, "retry-head-2", "Failed", exit_code=1)
    st = wait_phase(cp, namespace, "retry", "Failed", 30, reason="BackoffLimitExceeded")
    assert st["lastExitCode"] == 1 and condition(st, "Failed")["status"] == "True"
    assert pod_names(cp, namespace, "retry") >= {"retry-head-1", "retry-head-2"}


def test_config_error_is_not_retried(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("cfg", namespace, backoffLimit=3))
    cp.set_pod_phase(namespace, "cfg-head-1", "Failed", exit_code=c.EXIT_CONFIG_ERROR)
    st = wait_phase(cp, namespace, "cfg", "Failed", 30, reason="DriverFailed")
    assert st["attempts"] == 1


def test_unschedulable_workers_time_out(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    body = small_job(
        "nogpu",
        namespace,
        clusterCoordinationTimeoutSeconds=8,
        workers={"replicas": 2, "gpus": 16, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"},
    )
    cp.apply(body)
    st = wait_phase(cp, namespace, "nogpu", "Failed", 40, reason="ClusterCoordinationTimeout")
    # Not before its time, by the API server's clock (1 s resolution); how soon after is a benchmark's business.
    waited = _time(condition(st, "Failed")["lastTransitionTime"]) - _time(st["attemptStartTime"])
    assert waited >= 8 - 1, f"failed {waited:.0f}s after the attempt started, for an 8s timeout"
    assert "0/2 workers ready" in st["message"] and "nvidia.com/gpu" in st["message"]
    wait_for(lambda: not pod_names(cp, namespace, "nogpu"), timeout=30, description="pods removed")


def test_a_pod_no_node_fits_is_named_while_the_cluster_starts(
        control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    body = small_job("toobig", namespace, head={"gpus": 16, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"})
    cp.apply(body)

    def named() -> dict[str, Any] | None:
        st = status(cp, namespace, "toobig")
        ready = next((x for x in st.get("conditions") or [] if x["type"] == "ClusterReady"), {})
        return st if ready.get("reason") == "Unschedulable" else None
    st = wait_for(named, timeout=30, interval=0.3, description="ClusterReady=False Unschedulable")
    # Long before the coordination timeout: still starting, and saying what it waits on, in the scheduler's words.
    assert st["phase"] == "Initializing" and "toobig-head-1 Unschedulable" in st["message"], st
    assert "nvidia.com/gpu" in condition(st, "ClusterReady")["message"]
    wait_for(lambda: "Unschedulable" in events(cp, namespace, "toobig"), timeout=15, description="a warning event")
    # Fixed while suspended (the head's resources change only then): the cluster starts and the condition says so.
    cp.kubectl("patch", "rltj", "toobig", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    wait_phase(cp, namespace, "toobig", "Suspended", 30)
    cp.kubectl("patch", "rltj", "toobig", "-n", namespace, "--type=merge", "-p",
               '{"spec": {"suspend": false, "head": {"gpus": 1}}}')
    st = wait_phase(cp, namespace, "toobig", "Running", 60, attempts=2)
    assert condition(st, "ClusterReady")["status"] == "True" and "Unschedulable" not in st["message"]


def test_max_run_duration_cuts_off(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("short", namespace, maxRunDurationSeconds=8))
    st = wait_phase(cp, namespace, "short", "Failed", 30, reason="DeadlineExceeded")
    ran = _time(condition(st, "Failed")["lastTransitionTime"]) - _time(st["startTime"])
    assert ran >= 8 - 1, f"cut off {ran:.0f}s after the start, for an 8s limit"
    wait_for(lambda: not pod_names(cp, namespace, "short"), timeout=30, description="pods removed")


def test_deleting_the_job_deletes_everything(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    body = small_job("gone", namespace, checkpoint={"size": "1Gi"})  # no provisioner here: the claim stays Pending
    cp.apply(body)
    wait_for(lambda: expected_names(body) <= child_names(cp, namespace, "gone"), timeout=30, description="children")
    cp.kubectl("delete", "rltj", "gone", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(lambda: not children(cp, namespace, "gone"), timeout=60, description="garbage collection")


def test_deleting_with_cascade_orphan_keeps_the_children(
        control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    """`kubectl delete --cascade=orphan` keeps what the job owned, as for any owner: the operator, which deletes a
    deleted job's pods at once to free them sooner, leaves orphaned ones alone."""
    cp = control_plane
    body = small_job("kept", namespace)
    run_to(cp, namespace, body)
    before = child_names(cp, namespace, "kept")
    assert expected_names(body) <= before
    mark = live_operator.log_path.stat().st_size
    # Returns once the job is gone, which the collector lets happen only after it orphaned the children.
    cp.kubectl("delete", "rltj", "kept", "-n", namespace, "--cascade=orphan", "--wait=true", "--timeout=30s")
    # Proof that the operator has seen the job go: what it did with the children, logged once it was done.
    wait_for_log(live_operator, mark, f"{namespace}/kept is gone; ")
    after = children(cp, namespace, "kept")
    assert {f"{o['kind']}/{o['metadata']['name']}" for o in after} == before
    assert not [o for o in after if o["metadata"].get("deletionTimestamp")]
    assert not [o for o in after if any(r.get("kind") == c.KIND for r in o["metadata"].get("ownerReferences") or [])]
    cp.kubectl("delete", CHILD_KINDS, "-n", namespace, "-l", f"{c.LABEL_JOB}=kept", "--wait=false")


def test_a_foreground_deletion_is_not_a_failed_attempt(
        control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    """`kubectl delete --cascade=foreground` (here held open by another finalizer): the garbage collector deletes the
    head and workers while the job still exists; the operator neither retries (no second head) nor fails the job."""
    cp = control_plane
    body = small_job("fg", namespace, backoffLimit=2)
    body["metadata"]["finalizers"] = ["example.com/hold"]
    run_to(cp, namespace, body)
    mark = live_operator.log_path.stat().st_size
    cp.kubectl("delete", "rltj", "fg", "-n", namespace, "--cascade=foreground", "--wait=false")
    wait_for(lambda: not pod_names(cp, namespace, "fg"), timeout=30, description="the collector deleting the pods")
    # Proof that the operator has looked at the job since its pods went (when a live job's would be a failed attempt):
    # it logs what it decided, after carrying it out.
    wait_for_log(live_operator, mark, f"{namespace}/fg is being deleted (no pods left): nothing to do")
    st = status(cp, namespace, "fg")
    assert (st["phase"], st.get("attempts")) == ("Running", 1), st
    assert not pod_names(cp, namespace, "fg")
    assert not {"AttemptFailed", "BackoffLimitExceeded"} & set(events(cp, namespace, "fg"))
    cp.kubectl("patch", "rltj", "fg", "-n", namespace, "--type=json", "-p",
               '[{"op": "remove", "path": "/metadata/finalizers"}]')
    wait_for(lambda: cp.kubectl("get", "rltj", "fg", "-n", namespace, check=False).returncode != 0, timeout=30,
             description="the job gone")


def test_children_deleted_by_hand_come_back(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    """The operator keeps what a live job owns: a NetworkPolicy or the head Service deleted by hand is created again
    (else the pods would run unisolated, new workers could not find the head)."""
    cp = control_plane
    body = small_job("kept-up", namespace)
    run_to(cp, namespace, body)
    before = child_names(cp, namespace, "kept-up")
    uids = {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["uid"] for o in children(cp, namespace, "kept-up")}
    removed = ["networkpolicy/kept-up-isolation", "networkpolicy/kept-up-head", "service/kept-up-head"]
    cp.kubectl("delete", *removed, "-n", namespace)
    wait_for(lambda: child_names(cp, namespace, "kept-up") == before, timeout=30, description="the children back")
    again = {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["uid"] for o in children(cp, namespace, "kept-up")}
    assert {k for k in again if again[k] != uids[k]} == {"NetworkPolicy/kept-up-isolation", "NetworkPolicy/kept-up-head",
                                                         "Service/kept-up-head"}
    wait_for(lambda: "ChildrenRestored" in events(cp, namespace, "kept-up"), timeout=15, description="a warning event")
    assert status(cp, namespace, "kept-up")["phase"] == "Running"


def test_suspend_and_resume(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("nap", namespace))
    cp.kubectl("patch", "rltj", "nap", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    st = wait_phase(cp, namespace, "nap", "Suspended", 30)
    assert condition(st, "Suspended")["status"] == "True"
    wait_for(lambda: not pod_names(cp, namespace, "nap"), timeout=30, description="pods removed while suspended")
    assert "Service/nap-head" in child_names(cp, namespace, "nap")
    cp.kubectl("patch", "rltj", "nap", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    st = wait_phase(cp, namespace, "nap", "Running", 40)
    assert st["attempts"] == 2 and condition(st, "Suspended")["status"] == "False"


def test_created_suspended_then_started(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    cp.apply(small_job("later", namespace, suspend=True))
    wait_phase(cp, namespace, "later", "Suspended", 30)
    assert not pod_names(cp, namespace, "later")
    cp.kubectl("patch", "rltj", "later", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_phase(cp, namespace, "later", "Running", 40)


def test_worker_scale_follows_spec(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("grow", namespace))
    cp.kubectl("patch", "rltj", "grow", "-n", namespace, "--type=merge", "-p", '{"spec":{"workers":{"replicas":3}}}')
    wait_for(lambda: status(cp, namespace, "grow").get("workers") == "3/3", timeout=40, description="3/3 workers")


def test_kubectl_scale_scales_the_workers(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("scaled", namespace))
    scale_path = f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL}/scaled/scale"
    scale = json.loads(cp.kubectl("get", "--raw", scale_path).stdout)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2), scale
    # The selector finds exactly the worker pods: what an autoscaler reads.
    selected = cp.get_json("pods", "-n", namespace, "-l", scale["status"]["selector"])["items"]
    assert sorted(p["metadata"]["name"] for p in selected) == ["scaled-workers-0", "scaled-workers-1"]
    cp.kubectl("scale", "rltj", "scaled", "-n", namespace, "--replicas=3")
    wait_for(lambda: status(cp, namespace, "scaled").get("workers") == "3/3", timeout=40, description="3/3 workers")
    assert json.loads(cp.kubectl("get", "--raw", scale_path).stdout)["status"]["replicas"] == 3
    # The schema's bounds hold through the scale subresource too.
    refused = cp.kubectl("scale", "rltj", "scaled", "-n", namespace, "--replicas=600", check=False)
    assert refused.returncode != 0 and "512" in refused.stderr, refused.stderr
    assert get_job(cp, namespace, "scaled")["spec"]["workers"]["replicas"] == 3


def test_ttl_deletes_finished_job(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("ttl", namespace, ttlSecondsAfterFinished=3))
    cp.set_pod_phase(namespace, "ttl-head-1", "Succeeded", exit_code=0)
    wait_phase(cp, namespace, "ttl", "Succeeded", 30)
    wait_for(lambda: cp.kubectl("get", "rltj", "ttl", "-n", namespace, check=False).returncode != 0, timeout=30, description="TTL deletion")


# ── no credentials in a job ──────────────────────────────────────────────────────────────────────────


def test_a_job_holds_no_credentials(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    """The head runs as the namespace's default ServiceAccount with no token mounted, and the job has no identity of
    its own (no ServiceAccount, Role or RoleBinding): its driver cannot reach the API, its progress is read from it."""
    cp = control_plane
    run_to(cp, namespace, small_job("bare", namespace))
    kinds = {o["kind"] for o in children(cp, namespace, "bare")}
    assert not kinds & {"ServiceAccount", "Role", "RoleBinding"}, kinds
    for name in ["bare-head-1", "bare-workers-0"]:
        spec = cp.get_json("pod", name, "-n", namespace)["spec"]
        assert spec["serviceAccountName"] == "default", (name, spec)  # set by the ServiceAccount admission plugin
        assert spec["automountServiceAccountToken"] is False, name
        projected = [v for v in spec.get("volumes") or [] for src in (v.get("projected") or {}).get("sources") or []
                     if "serviceAccountToken" in src]
        assert projected == [], (name, projected)
        mounts = [m["mountPath"] for ctr in spec["containers"] for m in ctr.get("volumeMounts") or []]
        assert not [m for m in mounts if m.startswith("/var/run/secrets/kubernetes.io")], (name, mounts)
    # The identity the pods run as may not touch the job (nor did the operator grant it anything).
    who = f"system:serviceaccount:{namespace}:default"
    for verb, what in (("patch", "rltrainingjobs.rljob.dev/bare"), ("get", "rltrainingjobs.rljob.dev/bare")):
        answer = cp.kubectl("auth", "can-i", verb, what, "--subresource=status", "-n", namespace, f"--as={who}", check=False)
        assert answer.stdout.strip() == "no", (verb, what, answer.stdout, answer.stderr)


# ── robustness ───────────────────────────────────────────────────────────────────────────────────────


def test_operator_killed_at_random_points(control_plane: ControlPlane, operator: OperatorProcess, namespace: str) -> None:
    """SIGKILL the operator through a job's life: no duplicate children, the same final state."""
    cp = control_plane
    rng = random.Random(7)
    if not operator.alive():
        operator.start()
    cp.apply(small_job("chaos", namespace, backoffLimit=1))
    for _ in range(3):
        time.sleep(rng.uniform(0.0, 1.5))
        operator.kill()
        operator.start()
    wait_phase(cp, namespace, "chaos", "Running", 60)
    cp.set_pod_phase(namespace, "chaos-head-1", "Failed", exit_code=1)
    time.sleep(rng.uniform(0.0, 0.5))
    operator.kill()
    operator.start()
    # The job still shows Running from attempt 1 until the operator has seen the failed head.
    st = wait_phase(cp, namespace, "chaos", "Running", 60, attempts=2)
    cp.set_pod_phase(namespace, "chaos-head-2", "Succeeded", exit_code=0)
    operator.kill()
    operator.start()
    st = wait_phase(cp, namespace, "chaos", "Succeeded", 60)
    assert pod_names(cp, namespace, "chaos") == {"chaos-head-1", "chaos-head-2"}
    heads = [o for o in children(cp, namespace, "chaos") if o["kind"] == "Pod"]
    assert len(heads) == 2 and st["attempts"] == 2 and st["failedAttempts"] == 1


def test_job_created_while_operator_is_down(control_plane: ControlPlane, operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    operator.stop()
    cp.apply(small_job("offline", namespace))
    operator.start()
    wait_phase(cp, namespace, "offline", "Running", 60)


# ── bad input never reaches the operator ─────────────────────────────────────────────────────────────


def test_invalid_manifests_are_rejected_by_the_api_server(
    control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    assert len(invalid_manifests.CASES) >= 40
    failures = []
    for path, value, fragment in invalid_manifests.CASES:
        body = invalid_manifests.variant(path, value)
        body["metadata"]["namespace"] = namespace
        result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
        if result.returncode == 0:
            failures.append(f"{path}={value!r}: accepted")
        elif fragment.lower() not in (result.stderr or "").lower():
            failures.append(f"{path}={value!r}: message lacks {fragment!r}: {result.stderr.strip()}")
    assert not failures, "\n".join(failures)
    assert cp.get_json("rltj", "-n", namespace)["items"] == []
    # The two RLJOB_ names a job may set (the evaluation's) pass the same rule.
    tuned = small_job("tuned", namespace, env=[{"name": "RLJOB_EVAL_EPISODES", "value": "50"},
                                               {"name": "RLJOB_EVAL_MAX_STEPS", "value": "5000"}])
    accepted = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(tuned), check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert cp.get_json("pods", "-n", namespace)["items"] == []
    run_to(cp, namespace, small_job("fine", namespace))  # the operator keeps working


# ── scale: 50 jobs at once ───────────────────────────────────────────────────────────────────────────


def test_fifty_jobs_applied_at_once(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str,
                                    record_property: Any) -> None:
    """Latency per job from its creation to its last child's creation, by the API server's clock.

    `kubectl apply` of 50 objects is itself serial (seconds), so the time is measured per job from
    server timestamps (one-second resolution), not from when the test started applying.
    """
    cp = control_plane
    n = 50
    tiny = {"cpu": "100m", "memory": "256Mi", "shmSize": "64Mi"}
    bodies = [small_job(f"many-{i}", namespace, workers={"replicas": 1, **tiny}, head=tiny) for i in range(n)]
    expected = {b["metadata"]["name"]: expected_names(b) for b in bodies}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(bodies), timeout=120)

    def all_created() -> dict[str, list[dict[str, Any]]] | None:
        by_job: dict[str, list[dict[str, Any]]] = {}
        for o in cp.get_json(CHILD_KINDS, "-n", namespace)["items"]:
            job = o["metadata"].get("labels", {}).get(c.LABEL_JOB)
            if job:
                by_job.setdefault(job, []).append(o)
        ok = all(names <= {f"{o['kind']}/{o['metadata']['name']}" for o in by_job.get(job, [])} for job, names in expected.items())
        return by_job if ok else None

    by_job = wait_for(all_created, timeout=180, interval=1.0, description="children of 50 jobs")
    created = {j["metadata"]["name"]: _time(j["metadata"]["creationTimestamp"]) for j in cp.get_json("rltj", "-n", namespace)["items"]}
    def owned(o: dict[str, Any]) -> bool:  # the operator's own children; worker pods are the StatefulSet controller's
        return any(ref["kind"] == c.KIND for ref in o["metadata"].get("ownerReferences", []))

    latencies = sorted(max(_time(o["metadata"]["creationTimestamp"]) for o in by_job[job] if owned(o)) - created[job] for job in expected)
    median, worst = latencies[n // 2], latencies[-1]
    record_property("apply_to_children_median_s", median)
    record_property("apply_to_children_worst_s", worst)
    # Reported, not asserted: how fast is benchmarks/operator_burst.py's to measure, on an idle machine.
    print(f"\n50 jobs: creation → all operator-made children (server clock, 1s resolution): median {median:.0f}s, worst {worst:.0f}s")


def _time(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_deleting_needs_no_operator(control_plane: ControlPlane, operator: OperatorProcess, namespace: str) -> None:
    """No finalizer: with the operator down, the garbage collector alone removes the job's children."""
    cp = control_plane
    if not operator.alive():
        operator.start()
    run_to(cp, namespace, small_job("orphan", namespace))
    assert not get_job(cp, namespace, "orphan")["metadata"].get("finalizers")
    operator.stop()
    try:
        cp.kubectl("delete", "rltj", "orphan", "-n", namespace, "--wait=true", "--timeout=30s")
        wait_for(lambda: not children(cp, namespace, "orphan"), timeout=60, description="garbage collection without the operator")
    finally:
        operator.start()


def test_refused_children_are_reported_and_retried(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    """A quota that refuses pods: the job says why (reason CreateFailed, one event), then proceeds once it is lifted."""
    cp = control_plane
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods", "namespace": namespace},
             "spec": {"hard": {"pods": "0"}}}
    cp.apply(quota)
    wait_for(lambda: cp.get_json("resourcequota", "no-pods", "-n", namespace).get("status", {}).get("hard"), timeout=30,
             description="quota in force")
    cp.apply(small_job("quota", namespace))
    st = wait_for(lambda: (s := status(cp, namespace, "quota")).get("reason") == "CreateFailed" and s, timeout=30,
                  description="CreateFailed")
    assert st["phase"] == "Pending" and "exceeded quota" in st["message"] and "quota-head-1" in st["message"]
    wait_for_looks(cp, namespace, "quota", "CreateFailed")  # the first pass and two retries, backing off
    assert len(event_counts(cp, namespace, "quota", "CreateFailed")) == 1, "one Event, counted up by each retry"
    cp.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    wait_phase(cp, namespace, "quota", "Running", 90)


# ── name reuse and ordering ──────────────────────────────────────────────────────────────────────────

HOLD = "testing.rljob.io/hold"


@pytest.mark.parametrize("old_phase", ["Succeeded", "Running"])
def test_a_recreated_job_never_adopts_the_deleted_ones_children(
    control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str, old_phase: str
) -> None:
    """Delete a job and re-create it under the same name while its old head lingers (a finalizer holds it, as a
    slow kubelet or a volume detach would): the new job waits for it, with a reason and an event, instead of
    taking the old head's Succeeded for its own or failing on its termination."""
    cp = control_plane
    run_to(cp, namespace, small_job("reuse", namespace))
    if old_phase == "Succeeded":
        cp.set_pod_phase(namespace, "reuse-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, namespace, "reuse", "Succeeded", 30)
    old_uid = get_job(cp, namespace, "reuse")["metadata"]["uid"]
    cp.kubectl("patch", "pod", "reuse-head-1", "-n", namespace, "--type=merge", "-p", json.dumps({"metadata": {"finalizers": [HOLD]}}))
    cp.kubectl("delete", "rltj", "reuse", "-n", namespace, "--wait=true")
    wait_for(lambda: cp.get_json("pod", "reuse-head-1", "-n", namespace)["metadata"].get("deletionTimestamp"), timeout=90,
             description="the old head is being deleted (by the operator at once, else by the garbage collector)")
    # The collector deletes the children one by one, in no set order: wait for all of them, not one, so that the
    # held head is the only thing left for the new job to wait on.
    wait_for(lambda: child_names(cp, namespace, "reuse") == {"Pod/reuse-head-1"},
             timeout=90, description="the old job's other children deleted by the garbage collector (it learns of new CRDs every 30 s)")

    cp.apply(small_job("reuse", namespace))
    new_uid = get_job(cp, namespace, "reuse")["metadata"]["uid"]
    st = wait_for(lambda: (s := status(cp, namespace, "reuse")).get("reason") == "WaitingForOldChildren" and s, timeout=30,
                  description="the new job waits for the old head")
    assert st["phase"] == "Pending" and "Pod reuse-head-1" in st["message"] and old_uid in st["message"]

    def waiting_event() -> dict[str, Any] | None:
        items = cp.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.uid={new_uid}")["items"]
        return next((e for e in items if e["reason"] == "WaitingForOldChildren"), None)

    # Proof that the operator looked again while the old head stayed: the same event, counted a second time.
    wait_for(lambda: (e := waiting_event()) is not None and e["count"] >= 2, timeout=60,
             description="the operator looking again at the waiting job")
    st = status(cp, namespace, "reuse")
    assert st["phase"] == "Pending" and st.get("attempts") == 1, st

    cp.kubectl("patch", "pod", "reuse-head-1", "-n", namespace, "--type=json",
               "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]))
    st = wait_phase(cp, namespace, "reuse", "Running", 60)
    assert st["attempts"] == 1 and st["failedAttempts"] == 0
    head = cp.get_json("pod", "reuse-head-1", "-n", namespace)
    assert head["metadata"]["labels"][c.LABEL_CONTROLLER_UID] == new_uid
    assert head["metadata"]["ownerReferences"][0]["uid"] == new_uid


def test_no_pod_before_its_network_policies(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    """An admission policy refuses NetworkPolicies in one namespace: the job stays Pending with the refusal, creates
    no pod and no StatefulSet, and goes on once the policy is lifted."""
    cp = control_plane
    policy = f"deny-netpol-{namespace}"[:63]
    cp.apply([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": policy},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                                                          "operations": ["CREATE"], "resources": ["networkpolicies"]}]},
                  "validations": [{"expression": "false", "message": "NetworkPolicies are frozen in this namespace"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
         "spec": {"policyName": policy, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}},
    ])
    probe = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "probe", "namespace": namespace},
             "spec": {"podSelector": {}}}
    wait_for(lambda: cp.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe), check=False).returncode != 0,
             timeout=30, description="the admission policy in force")
    try:
        cp.apply(small_job("fenced", namespace))
        st = wait_for(lambda: (s := status(cp, namespace, "fenced")).get("reason") == "CreateFailed" and s, timeout=30,
                      description="CreateFailed")
        assert st["phase"] == "Pending" and "NetworkPolicies are frozen" in st["message"]
        wait_for_looks(cp, namespace, "fenced", "CreateFailed")  # retries with backoff: still nothing that runs
        kinds = {o["kind"] for o in children(cp, namespace, "fenced")}
        assert not kinds & {"Pod", "StatefulSet"}, kinds
    finally:
        cp.kubectl("delete", "validatingadmissionpolicybinding", policy, check=False)
        cp.kubectl("delete", "validatingadmissionpolicy", policy, check=False)
    wait_phase(cp, namespace, "fenced", "Running", 120)
    assert {"NetworkPolicy"} <= {o["kind"] for o in children(cp, namespace, "fenced")}
