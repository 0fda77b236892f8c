"""Smoke tests of the local control plane harness (tests.cluster.controlplane)."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.controlplane import (
    GPU_RESOURCE,
    K8S_VERSION,
    ControlPlane,
    ControlPlaneError,
    KubectlError,
    MissingBinariesError,
    find_bin_dir,
    wait_for,
)
from tests.tooling import ROOT

RESTRICTED_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_pod(name: str, restart_policy: str = "Always", resources: dict[str, Any] | None = None) -> dict:
    container: dict[str, Any] = {
        "name": "main",
        "image": "registry.invalid/rljob/test:0",
        "securityContext": RESTRICTED_SECURITY_CONTEXT,
    }
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"restartPolicy": restart_policy, "containers": [container]},
    }


def pod_is_running_and_ready(cp: ControlPlane, namespace: str, name: str) -> dict | None:
    pod = cp.get_json("pod", name, "-n", namespace)
    status = pod.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return pod if status.get("phase") == "Running" and conditions.get("Ready") == "True" else None


def test_version(control_plane: ControlPlane) -> None:
    assert control_plane.raw("/version")["gitVersion"] == K8S_VERSION
    client = control_plane.kubectl("version", "--client", "-o", "json").stdout
    assert K8S_VERSION in client


def test_nodes_ready(control_plane: ControlPlane) -> None:
    nodes = control_plane.get_json("nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(control_plane.node_names)
    for node in nodes:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True", node["metadata"]["name"]
        assert not node["spec"].get("taints"), node["spec"].get("taints")
    gpu_nodes = [n for n in nodes if GPU_RESOURCE in n["status"]["allocatable"]]
    assert len(gpu_nodes) == control_plane.gpu_nodes == 1
    assert gpu_nodes[0]["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert gpu_nodes[0]["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"


def test_restricted_pod_runs(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.create(restricted_pod("ok"), namespace=namespace)
    pod = wait_for(lambda: pod_is_running_and_ready(control_plane, namespace, "ok"), 30, description="pod ok")
    assert pod["spec"]["nodeName"] in control_plane.node_names
    assert pod["status"]["podIP"].startswith("127.")
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] is True and "running" in status["state"]


def test_non_compliant_pod_is_rejected(control_plane: ControlPlane, namespace: str) -> None:
    pod = restricted_pod("root")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(KubectlError, match="violates PodSecurity"):
        control_plane.create(pod, namespace=namespace)


def test_set_pod_phase_sticks(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.create([restricted_pod("done", "Never"), restricted_pod("crashed", "Never")], namespace=namespace)
    for name in ("done", "crashed"):
        wait_for(lambda n=name: pod_is_running_and_ready(control_plane, namespace, n), 30, description=name)

    control_plane.set_pod_phase(namespace, "done", "Succeeded")
    control_plane.set_pod_phase(namespace, "crashed", "Failed", exit_code=137, reason="OOMKilled")
    time.sleep(5)

    done = control_plane.get_json("pod", "done", "-n", namespace)
    assert done["status"]["phase"] == "Succeeded"
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    conditions = {c["type"]: c["status"] for c in done["status"]["conditions"]}
    assert conditions["Ready"] == "False"

    crashed = control_plane.get_json("pod", "crashed", "-n", namespace)
    assert crashed["status"]["phase"] == "Failed"
    terminated = crashed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")

    assert control_plane.set_pod_phase(namespace, "done", "Succeeded")["status"]["phase"] == "Succeeded"
    with pytest.raises(ControlPlaneError, match="already ended"):
        control_plane.set_pod_phase(namespace, "done", "Failed")


def test_set_pod_phase_right_after_binding(control_plane: ControlPlane, namespace: str) -> None:
    # Possibly still Pending when annotated: kwok makes it Running first, then Succeeded, never back.
    control_plane.create(restricted_pod("quick", "Never"), namespace=namespace)
    wait_for(
        lambda: control_plane.get_json("pod", "quick", "-n", namespace)["spec"].get("nodeName"),
        30,
        description="pod quick to be bound",
    )
    control_plane.set_pod_phase(namespace, "quick", "Succeeded")
    time.sleep(2)
    assert control_plane.get_json("pod", "quick", "-n", namespace)["status"]["phase"] == "Succeeded"


def test_set_pod_phase_on_an_unscheduled_pod(control_plane: ControlPlane, namespace: str) -> None:
    pod = restricted_pod("stuck", "Never", resources={"limits": {GPU_RESOURCE: "100"}})
    control_plane.create(pod, namespace=namespace)
    control_plane.set_pod_phase(namespace, "stuck", "Failed", reason="Evicted", message="test")
    time.sleep(2)
    status = control_plane.get_json("pod", "stuck", "-n", namespace)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Evicted")


def test_job_completes_when_its_pod_succeeds(control_plane: ControlPlane, namespace: str) -> None:
    template = restricted_pod("job", "Never")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {"backoffLimit": 0, "template": {"metadata": {}, "spec": template["spec"]}},
    }
    control_plane.create(job, namespace=namespace)

    def running_pod() -> str | None:
        pods = control_plane.get_json("pods", "-n", namespace, "-l", "job-name=train")["items"]
        return next((p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"), None)

    pod = wait_for(running_pod, 30, description="the job's pod to run")
    control_plane.set_pod_phase(namespace, pod, "Succeeded")

    def complete() -> bool:
        conditions = control_plane.get_json("job", "train", "-n", namespace)["status"].get("conditions", [])
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

    wait_for(complete, 30, description="job train to complete")


def test_statefulset_creates_pods(control_plane: ControlPlane, namespace: str) -> None:
    template = restricted_pod("web")
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]},
        },
    }
    control_plane.create(sts, namespace=namespace)

    def ready() -> bool:
        status = control_plane.get_json("statefulset", "web", "-n", namespace).get("status", {})
        return status.get("readyReplicas") == 2

    wait_for(ready, 60, description="statefulset web to have 2 ready replicas")
    names = sorted(p["metadata"]["name"] for p in control_plane.get_json("pods", "-n", namespace)["items"])
    assert names == ["web-0", "web-1"]


def test_garbage_collector_deletes_dependents(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace)
    uid = control_plane.get_json("configmap", "owner", "-n", namespace)["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    control_plane.create(dependent, namespace)
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)

    def gone() -> bool:
        res = control_plane.kubectl("get", "configmap", "dependent", "-n", namespace, check=False)
        return res.returncode != 0 and "NotFound" in res.stderr

    wait_for(gone, 60, description="the dependent ConfigMap to be garbage-collected")


def test_gpu_pods_schedule_on_the_gpu_node_or_stay_pending(control_plane: ControlPlane, namespace: str) -> None:
    one = restricted_pod("one-gpu", resources={"limits": {GPU_RESOURCE: "1"}})
    too_many = restricted_pod("many-gpus", resources={"limits": {GPU_RESOURCE: "100"}})
    control_plane.create([one, too_many], namespace=namespace)

    pod = wait_for(lambda: pod_is_running_and_ready(control_plane, namespace, "one-gpu"), 30, description="gpu pod")
    assert pod["spec"]["nodeName"].startswith("kwok-gpu-")

    def unschedulable() -> dict | None:
        p = control_plane.get_json("pod", "many-gpus", "-n", namespace)
        conds = {c["type"]: c for c in p["status"].get("conditions", [])}
        scheduled = conds.get("PodScheduled", {})
        return p if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable" else None

    wait_for(unschedulable, 30, description="pod many-gpus to be Unschedulable")
    time.sleep(3)
    p = control_plane.get_json("pod", "many-gpus", "-n", namespace)
    assert p["status"]["phase"] == "Pending"
    assert not p["spec"].get("nodeName")


def test_components_are_alive(control_plane: ControlPlane) -> None:
    control_plane.check_alive()
    assert set(control_plane.pids()) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }


def test_missing_binaries_tell_how_to_build_them(tmp_path: Path) -> None:
    with pytest.raises(MissingBinariesError, match="make cluster-bins"):
        find_bin_dir(tmp_path)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dev_cluster_entry_point_stops_everything_on_sigterm(tmp_path: Path) -> None:
    bin_dir = find_bin_dir()
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.controlplane", f"--workdir={tmp_path / 'state'}",
         f"--kubeconfig={kubeconfig}", f"--bin-dir={bin_dir}", "--cpu-nodes=1", "--gpu-nodes=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=ROOT,  # `tests` is importable from the repository's root, as with `make dev-cluster`
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    output = []
    try:
        deadline = time.monotonic() + 180
        while not any("export KUBECONFIG=" in line for line in output):
            assert proc.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=1))
        assert kubeconfig.exists()
        children = _children(proc.pid)
        assert len(children) == 5, children
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not {pid for pid in children if Path(f"/proc/{pid}").exists()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
