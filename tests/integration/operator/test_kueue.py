"""Kueue admits jobs as whole Ray clusters: real Kueue (tests/kueue.py) with its webhooks, `rljob operator --kueue`.

A ClusterQueue with quota for two GPU heads, three queued jobs: two run, the third waits Suspended (Queued) with no
pod at all, and starts when one finishes. A stopped ClusterQueue evicts the running jobs (their pods go, the quota
is released) and they resume from their checkpoints, in a new attempt, when it runs again. A job without the queue
label is left to the operator alone.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rljob.api import constants as c
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, wait_for
from tests.cluster.operator_process import OperatorProcess
from tests.integration.jobs import status, wait_phase
from tests.kueue import Kueue

GPU_HEAD = {"cpu": "1", "memory": "2Gi", "shmSize": "512Mi", "gpus": 1}
GPU_NODE_LABEL = ("node.kubernetes.io/instance-type", "kwok-gpu")


@pytest.fixture(scope="module")
def kueue(control_plane: ControlPlane, crd_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    k = Kueue(control_plane, tmp_path_factory.mktemp("kueue"))
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def kueue_operator(
    control_plane: ControlPlane, operator: OperatorProcess, kueue: Kueue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The session's operator gives way (one operator acts on a job at a time) to one that admits through Kueue."""
    operator.stop()
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("kueue-operator") / "operator.log",
                           extra_args=("--kueue",))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        operator.start()


def queues(namespace: str, cluster_queue: str) -> list[dict[str, Any]]:
    """Two flavors: CPU and memory anywhere, GPUs on the GPU nodes; quota for exactly two GPU heads."""
    flavor = {"apiVersion": c.KUEUE_API_VERSION, "kind": "ResourceFlavor"}
    return [
        {**flavor, "metadata": {"name": f"{cluster_queue}-any"}},
        {**flavor, "metadata": {"name": f"{cluster_queue}-gpu"}, "spec": {"nodeLabels": dict([GPU_NODE_LABEL])}},
        {"apiVersion": c.KUEUE_API_VERSION, "kind": "ClusterQueue", "metadata": {"name": cluster_queue}, "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [
                {"coveredResources": ["cpu", "memory"], "flavors": [{"name": f"{cluster_queue}-any", "resources": [
                    {"name": "cpu", "nominalQuota": "100"}, {"name": "memory", "nominalQuota": "1000Gi"}]}]},
                {"coveredResources": ["nvidia.com/gpu"], "flavors": [{"name": f"{cluster_queue}-gpu", "resources": [
                    {"name": "nvidia.com/gpu", "nominalQuota": "2"}]}]},
            ]}},
        {"apiVersion": c.KUEUE_API_VERSION, "kind": "LocalQueue", "metadata": {"name": "team", "namespace": namespace},
         "spec": {"clusterQueue": cluster_queue}},
    ]


def queued(name: str, namespace: str) -> dict[str, Any]:
    """A job in the LocalQueue `team`, its head on a GPU node."""
    return small_job(name, namespace, head=GPU_HEAD, metadata={"labels": {c.KUEUE_QUEUE_LABEL: "team"}})


def pods_of(cp: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    return cp.get_json("pods", "-n", namespace, "-l", f"{c.LABEL_JOB}={job}")["items"]


def workload(cp: ControlPlane, namespace: str, job: str) -> dict[str, Any]:
    return cp.get_json("workloads.kueue.x-k8s.io", f"rltrainingjob-{job}", "-n", namespace)


def is_true(obj: dict[str, Any], type_: str) -> bool:
    return any(x["type"] == type_ and x["status"] == "True" for x in (obj.get("status") or {}).get("conditions") or [])


def test_kueue_admits_whole_ray_clusters_within_quota(
    control_plane: ControlPlane, kueue_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    cq = f"{namespace}-gpus"
    cp.apply(queues(namespace, cq))
    wait_for(lambda: is_true(cp.get_json("clusterqueue", cq), "Active"), timeout=30, description="ClusterQueue active")
    try:
        for name in ("q1", "q2", "q3"):
            cp.apply(queued(name, namespace))
        cp.apply(small_job("plain", namespace))

        for name in ("q1", "q2"):
            wait_phase(cp, namespace, name, "Running", 90)
        third = wait_phase(cp, namespace, "q3", "Suspended", 30, reason="Queued")
        assert "team" in third["message"] and "no pod" in third["message"]
        # Quota for two heads: the third Ray cluster does not exist at all, not even a head without workers.
        for _ in range(5):
            assert pods_of(cp, namespace, "q3") == [] and not is_true(workload(cp, namespace, "q3"), "Admitted")
        # The flavor Kueue chose for the GPUs puts the heads on the GPU nodes; the workers' flavor has no labels.
        head = cp.get_json("pod", "q1-head-1", "-n", namespace)
        assert head["spec"]["nodeSelector"][GPU_NODE_LABEL[0]] == GPU_NODE_LABEL[1]
        admitted = workload(cp, namespace, "q1")
        assert admitted["status"]["admission"]["clusterQueue"] == cq
        assert [(p["name"], p["count"]) for p in admitted["spec"]["podSets"]] == [("head", 1), ("workers", 2)]
        # Without the label the job runs as ever, with no Workload.
        wait_phase(cp, namespace, "plain", "Running", 60)
        assert cp.kubectl("get", "workloads.kueue.x-k8s.io", "rltrainingjob-plain", "-n", namespace,
                          check=False).returncode != 0

        # One finishes: its Workload is Finished, its quota goes to the third, which starts whole.
        cp.set_pod_phase(namespace, "q1-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, namespace, "q1", "Succeeded", 30)
        wait_for(lambda: is_true(workload(cp, namespace, "q1"), "Finished"), timeout=30, description="q1's Workload Finished")
        started = wait_phase(cp, namespace, "q3", "Running", 90)
        assert started["attempts"] == 1

        # Stopping the ClusterQueue evicts what runs: pods removed, quota released, the jobs wait Evicted.
        cp.kubectl("patch", "clusterqueue", cq, "--type=merge", "-p", '{"spec":{"stopPolicy":"HoldAndDrain"}}')
        for name in ("q2", "q3"):
            evicted = wait_phase(cp, namespace, name, "Suspended", 60, reason="Evicted")
            assert "ClusterQueueStopped" in evicted["message"] or "stopped" in evicted["message"].lower()
        for name in ("q2", "q3"):
            wait_for(lambda n=name: pods_of(cp, namespace, n) == [], timeout=60, description=f"{name}'s pods gone")
            wait_for(lambda n=name: not (workload(cp, namespace, n).get("status") or {}).get("admission"), timeout=60,
                     description=f"{name}'s quota reservation released")
        events = cp.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=q2")["items"]
        assert any(e["reason"] == "Evicted" and e["type"] == "Warning" for e in events)

        # Running again: both are admitted again and resume in a new attempt.
        cp.kubectl("patch", "clusterqueue", cq, "--type=merge", "-p", '{"spec":{"stopPolicy":"None"}}')
        for name in ("q2", "q3"):
            resumed = wait_phase(cp, namespace, name, "Running", 90, attempts=2)
            assert resumed["reason"] == "ClusterReady"
        assert status(cp, namespace, "plain")["phase"] == "Running"
    finally:
        for name in ("q1", "q2", "q3", "plain"):
            cp.kubectl("delete", "rltj", name, "-n", namespace, "--ignore-not-found", "--wait=false", check=False)
        cp.kubectl("delete", "localqueue", "team", "-n", namespace, "--ignore-not-found", "--wait=false", check=False)
        cp.kubectl("delete", "clusterqueue", cq, "--ignore-not-found", "--wait=false", check=False)


def test_a_suspended_queued_job_leaves_the_queue(
    control_plane: ControlPlane, kueue_operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    body = queued("held", namespace)
    body["spec"]["suspend"] = True
    cp.apply(body)
    wait_phase(cp, namespace, "held", "Suspended", 30, reason="Suspended")
    wait_for(lambda: workload(cp, namespace, "held")["spec"].get("active") is False, timeout=30,
             description="the Workload inactive while the user holds the job")
    cp.kubectl("patch", "rltj", "held", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_phase(cp, namespace, "held", "Suspended", 30, reason="Queued")  # no LocalQueue "team" here: it waits
    assert workload(cp, namespace, "held")["spec"]["active"] is True and pods_of(cp, namespace, "held") == []
