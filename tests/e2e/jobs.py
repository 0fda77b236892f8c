"""What the end-to-end tests share: the tiny Pong job, and waiting on and looking at jobs and their pods."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.target import target

TARGET = target()


def get_json(cluster: e2e.Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


# Pong on a CPU in seconds per iteration: one env runner with two envs (the lean runner steps them in halves),
# the tiny network, 64-step batches.
TINY_PONG_ARGS = [
    "--model", "tiny", "--num-env-runners", "1", "--envs-per-env-runner", "2",
    "--train-batch-size", "64", "--rollout-fragment-length", "32",
    "--min-iteration-seconds", "0", "--min-iteration-steps", "64",
    "--circular-buffer-num-batches", "1", "--broadcast-interval", "1", "--seed", "1",
]  # fmt: skip
JOB_LABEL = "rljob.dev/job"
#: What puts a pod on the GPU pool: its nodes' label, and a toleration of their taint (tests/e2e/cluster.py).
GPU_POOL = {"nodeSelector": {e2e.GPU_LABEL[0]: e2e.GPU_LABEL[1]},
            "tolerations": [{"key": e2e.GPU_TAINT["key"], "operator": "Exists", "effect": e2e.GPU_TAINT["effect"]}]}
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def job_manifest(name: str, *, workers: int = 2, iterations: int | None = 3, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "rljob.dev/v1alpha1",
        "kind": "RLTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "experiment": "e2e-pong",
            "image": TARGET.runtime_image,
            "imagePullPolicy": TARGET.pull_policy,
            "entrypoint": {"recipe": "pong", "args": TINY_PONG_ARGS},
            "stop": {"iterations": iterations} if iterations else {"envSteps": 100_000_000},
            "head": {"cpu": "800m", "memory": "3Gi", "shmSize": "512Mi"},
            "workers": {"replicas": workers, "cpu": "450m", "memory": "2Gi", "shmSize": "256Mi"},
            "clusterCoordinationTimeoutSeconds": 600,
            # The evaluation after a finished run: its 20 games, each cut off after 300 steps (an untrained policy's
            # whole games would take minutes on these fractions of a CPU).
            "env": [{"name": "RLJOB_EVAL_MAX_STEPS", "value": "300"}],
            **spec,
        },
    }
    return body


def gpu_pool_nodes(cluster: e2e.Cluster) -> list[str]:
    """The nodes of the GPU pool: the local cluster's second node; on a user's cluster, whatever nodes carry the
    label (none: the tests place the head wherever the scheduler likes)."""
    selector = "{}={}".format(*e2e.GPU_LABEL)
    names = [n["metadata"]["name"] for n in get_json(cluster, "nodes", "-l", selector)["items"]]
    assert names or TARGET.external, f"the local e2e cluster has no node labelled {selector}"
    return names


def on_gpu_pool(body: dict[str, Any], pool: list[str]) -> dict[str, Any]:
    """The job's head placed on the GPU pool by its selector and tolerations, as a GPU head is on a cloud's GPU
    node pool (it asks for no GPU here: no CUDA device is there); the workers stay on the other nodes."""
    if pool:
        body["spec"]["head"] = {**body["spec"]["head"], **GPU_POOL}
    return body


def node_of(cluster: e2e.Cluster, ns: str, pod: str) -> str:
    return str(get_json(cluster, "pod", pod, "-n", ns)["spec"].get("nodeName", ""))


def apply(cluster: e2e.Cluster, ns: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body))


def job(cluster: e2e.Cluster, ns: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "rltj", name, "-n", ns)


def wait_job(cluster: e2e.Cluster, ns: str, name: str, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
    def probe() -> Any:
        j = job(cluster, ns, name)
        if j.get("status", {}).get("phase") == "Failed" and "Failed" not in what:
            raise AssertionError(f"job failed: {json.dumps(j.get('status'), indent=1)}\n{diagnostics(cluster, ns)}")
        return check(j)

    try:
        return wait_for(probe, timeout, 3.0, what, ignore=(KubectlError,))
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{diagnostics(cluster, ns)}") from None


def pods(cluster: e2e.Cluster, ns: str, name: str, role: str | None = None) -> list[dict[str, Any]]:
    selector = f"{JOB_LABEL}={name}" + (f",rljob.dev/role={role}" if role else "")
    return get_json(cluster, "pods", "-n", ns, "-l", selector)["items"]


def logs(cluster: e2e.Cluster, ns: str, pod: str) -> str:
    return cluster.kubectl("logs", "-n", ns, pod, check=False, timeout=60).stdout


def diagnostics(cluster: e2e.Cluster, ns: str) -> str:
    out = [cluster.kubectl("get", "pods,sts,svc,pvc,events", "-n", ns, "-o", "wide", check=False).stdout]
    for p in get_json(cluster, "pods", "-n", ns)["items"]:
        out.append(f"--- logs {p['metadata']['name']} (last 40 lines)")
        out.append("\n".join(logs(cluster, ns, p["metadata"]["name"]).splitlines()[-40:]))
    return "\n".join(out)


def progress_lines(text: str) -> list[dict[str, Any]]:
    """The driver's JSON line per iteration (also where another process's unfinished output line runs into it: the
    driver and the Ray workers' forwarded logs share the container's log)."""
    out = []
    for line in text.splitlines():
        start = line.find('{"iteration"')
        if start >= 0:
            try:
                out.append(json.loads(line[start:]))
            except ValueError:
                continue
    return out


def leftovers(cluster: e2e.Cluster, ns: str, name: str) -> list[str]:
    kinds = "pods,services,statefulsets,networkpolicies,persistentvolumeclaims,configmaps"
    res = cluster.kubectl("get", kinds, "-n", ns, "-l", f"{JOB_LABEL}={name}", "-o", "name")
    return res.stdout.split()
