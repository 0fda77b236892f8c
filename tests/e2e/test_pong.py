"""End to end on real nodes: the operator (installed with the chart, running as a pod) runs Pong jobs whose Ray
head and workers are real containers of the runtime image.

Sized for a 2-core machine: head 0.8 CPU, two workers 0.45 CPU each (requests = limits), the tiny Pong network
with 64-step iterations. See tests/e2e/conftest.py for the cluster: its two nodes share the machine's cores.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from rljob.trainer.checkpoints import iteration_of
from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.jobs import (
    SA_DIR,
    TARGET,
    apply,
    get_json,
    gpu_pool_nodes,
    job,
    job_manifest,
    leftovers,
    logs,
    node_of,
    on_gpu_pool,
    pods,
    progress_lines,
    wait_job,
)

# ----------------------------------------------------------------------------------------------------------------


def test_pong_job_runs_on_real_pods(cluster: e2e.Cluster, namespace: str) -> None:
    """The Ray cluster spans two nodes: the head on the GPU pool (by its selector and tolerations), the workers on
    the other node, where the pool's taint keeps them."""
    ns, name = namespace, "pong"
    t0 = time.monotonic()
    pool = gpu_pool_nodes(cluster)
    apply(cluster, ns, on_gpu_pool(job_manifest(name, iterations=3), pool))

    # The head pod and the worker StatefulSet's two pods start, as real containers.
    def all_running() -> bool:
        ps = pods(cluster, ns, name)
        roles = sorted(p["metadata"]["labels"].get("rljob.dev/role", "") for p in ps if p["status"].get("phase") == "Running")
        return roles == ["head", "worker", "worker"]

    wait_for(all_running, 420, 3.0, "head + 2 worker pods Running", ignore=(KubectlError,))
    started = time.monotonic() - t0
    head = f"{name}-head-1"
    if pool:
        workers_on = {node_of(cluster, ns, p["metadata"]["name"]) for p in pods(cluster, ns, name, "worker")}
        assert node_of(cluster, ns, head) in pool and workers_on and not workers_on & set(pool), (pool, workers_on)
    # No Kubernetes credentials in any pod of the job: no token mounted, no ServiceAccount of its own.
    for pod in pods(cluster, ns, name):
        assert pod["spec"].get("automountServiceAccountToken") is False, pod["spec"]
        assert pod["spec"]["serviceAccountName"] == "default", pod["spec"]  # the namespace's own, set by admission
    token_dir = cluster.kubectl("exec", "-n", ns, head, "--", "python3", "-c",
                                f"import os; print('EXISTS' if os.path.exists('{SA_DIR}') else 'ABSENT')", timeout=60)
    assert token_dir.stdout.strip() == "ABSENT", token_dir.stdout + token_dir.stderr
    # The workers joined the head's Ray cluster, from the other node: the driver says so.
    wait_for(lambda: "Ray cluster ready: 3 nodes (1 head + 2 workers)" in logs(cluster, ns, head), 420, 3.0,
             "the driver's 'Ray cluster ready: 3 nodes' line")  # fmt: skip
    # RLlib iterates; the operator reflects it in status.progress and the printer columns.
    wait_job(cluster, ns, name, lambda j: (j.get("status", {}).get("progress") or {}).get("iteration", 0) >= 2 and j,
                 600, "status.progress.iteration >= 2")  # fmt: skip
    table = cluster.kubectl("get", "rltj", name, "-n", ns).stdout
    header, row = table.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert int(columns["ITERATION"]) >= 2, table
    assert columns["WORKERS"].endswith("/2"), table
    # It ends Succeeded (spec.stop.iterations: 3), and the workers are removed.
    wait_job(cluster, ns, name, lambda j: j["status"].get("phase") == "Succeeded" and j, 600, "phase Succeeded")
    wait_for(lambda: not pods(cluster, ns, name, "worker"), 180, 2.0, "worker pods removed", ignore=(KubectlError,))
    driver_log = logs(cluster, ns, head)
    lines = progress_lines(driver_log)
    assert [rec["iteration"] for rec in lines][:3] == [1, 2, 3], [line for line in driver_log.splitlines() if "iteration" in line]
    # The attempt's last record, left by the driver as the head container's termination message, is the job's progress
    # (the operator reads it once the head has ended), and it stays after the head pod is gone.
    (terminated,) = [cs["state"]["terminated"] for cs in get_json(cluster, "pod", head, "-n", ns)["status"]["containerStatuses"]]
    final = json.loads(terminated["message"])["progress"]
    assert final["iteration"] == lines[-1]["iteration"] == 3 and final["lastCheckpoint"], terminated
    wait_job(cluster, ns, name, lambda j: j["status"]["progress"].get("lastCheckpoint") == final["lastCheckpoint"] and j,
                 120, "the final record in status.progress")  # fmt: skip
    cluster.kubectl("delete", "pod", head, "-n", ns, "--wait=true", timeout=120)
    kept = job(cluster, ns, name)["status"]["progress"]
    assert {k: kept[k] for k in final} == final, (kept, final)
    print(f"pong: pods running after {started:.0f}s, Succeeded after {time.monotonic() - t0:.0f}s")

    # Deleting the job leaves nothing behind (ownership: the garbage collector removes every child).
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=true", timeout=120)
    wait_for(lambda: not leftovers(cluster, ns, name), 120, 2.0, "every child of the job deleted")
    assert not cluster.kubectl("get", "rltj", "-n", ns, "-o", "name").stdout.strip()


def test_network_policies_are_enforced(cluster: e2e.Cluster, namespace: str) -> None:
    ns, name = namespace, "netpol"
    apply(cluster, ns, job_manifest(name, workers=1, iterations=None, clusterCoordinationTimeoutSeconds=600))
    wait_for(lambda: "Ray cluster ready" in logs(cluster, ns, f"{name}-head-1"), 480, 3.0, "the job's Ray cluster ready",
             ignore=(KubectlError,))  # fmt: skip
    worker = pods(cluster, ns, name, "worker")[0]["metadata"]["name"]
    head_svc = f"{name}-head.{ns}.svc.cluster.local"
    probe = f"import socket; socket.create_connection(('{head_svc}', 6379), timeout=5); print('CONNECTED')"
    # The job's own worker reaches the GCS port ...
    own = cluster.kubectl("exec", "-n", ns, worker, "--", "python3", "-c", probe, check=False, timeout=60)
    assert "CONNECTED" in own.stdout, own.stderr
    # No pod of the job reaches the API server: neither through the `kubernetes` Service nor at its own address.
    api = get_json(cluster, "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes")["items"][0]
    targets = [("kubernetes.default.svc.cluster.local", 443),
               (api["endpoints"][0]["addresses"][0], api["ports"][0]["port"])]
    reach_api = "\n".join([
        "import socket",
        "def attempt(host, port):\n"
        "    try:\n        socket.create_connection((host, port), timeout=5); return 'CONNECTED'\n"
        "    except TimeoutError: return 'TIMEOUT'\n"
        "    except ConnectionRefusedError: return 'REFUSED'\n"
        "    except OSError as exc: return 'ERROR ' + repr(exc)",
        f"print([attempt(h, p) for h, p in {targets!r}])",
    ])  # fmt: skip
    api_results = {}
    for pod in (f"{name}-head-1", worker):
        res = cluster.kubectl("exec", "-n", ns, pod, "--", "python3", "-c", reach_api, check=False, timeout=90)
        api_results[pod] = res.stdout.strip() + res.stderr[-500:]
    # ... a pod in another namespace does not.
    other = f"{ns}-other"
    cluster.kubectl("create", "namespace", other)
    cluster.kubectl("label", "namespace", other, "pod-security.kubernetes.io/enforce=restricted")
    def run_probe(pod: str, script: str) -> tuple[str, str]:
        """A pod of no job, in the other namespace, that runs `script` once: its phase and its output."""
        body = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "probe", "image": TARGET.runtime_image, "imagePullPolicy": TARGET.pull_policy,
                                "command": ["python3", "-c", script],
                                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            },
        }  # fmt: skip
        cluster.kubectl("apply", "-n", other, "-f", "-", input=yaml.safe_dump(body))
        done = wait_for(
            lambda: get_json(cluster, "pod", pod, "-n", other)["status"].get("phase") in ("Succeeded", "Failed")
            and get_json(cluster, "pod", pod, "-n", other)["status"]["phase"],
            120, 2.0, f"the {pod} probe to finish", ignore=(KubectlError,),
        )  # fmt: skip
        return done, logs(cluster, other, pod)

    phase, out = run_probe("intruder", probe)
    # The same probe of the API server from a pod of no job: the API server answers the pod network, so what the job's
    # pods get instead is the policy's doing.
    _, bystander = run_probe("bystander", reach_api)
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
    if not e2e.NETWORK_POLICY_ENFORCER:
        assert phase == "Succeeded" and "CONNECTED" in out  # documents that nothing enforces them here
        pytest.xfail(f"no NetworkPolicy enforcer on this node ({e2e.NO_ENFORCER_REASON}); verified: the policies "
                     "exist and intra-job traffic flows, but a pod in another namespace reached the GCS port")  # fmt: skip
    assert phase == "Failed" and "CONNECTED" not in out, out
    assert bystander.strip() == "['CONNECTED', 'CONNECTED']", bystander
    # Stopped by the policy: dropped (a timeout) or rejected (kube-router answers an ICMP port unreachable, which the
    # client sees as refused), never connected, nor lost to a name that did not resolve.
    for pod, result in api_results.items():
        assert re.fullmatch(r"\['(TIMEOUT|REFUSED)', '(TIMEOUT|REFUSED)'\]", result), (pod, result)


ALIVE_NODES = "import ray; ray.init(address='auto', logging_level='ERROR'); print('ALIVE', sum(n['Alive'] for n in ray.nodes()))"


def alive_ray_nodes(cluster: e2e.Cluster, ns: str, head: str) -> int:
    res = cluster.kubectl("exec", "-n", ns, head, "--", "python3", "-c", ALIVE_NODES, check=False, timeout=120)
    m = re.search(r"ALIVE (\d+)", res.stdout)
    return int(m.group(1)) if m else -1


def test_worker_deleted_mid_run_is_recreated_and_rejoins(cluster: e2e.Cluster, namespace: str) -> None:
    ns, name = namespace, "rejoin"
    apply(cluster, ns, job_manifest(name, workers=2, iterations=None))
    head = f"{name}-head-1"
    wait_job(cluster, ns, name, lambda j: (j.get("status", {}).get("progress") or {}).get("iteration", 0) >= 1, 600,
             "the first iteration")  # fmt: skip
    # Delete a worker that hosts no learner (RLlib restarts env runners, not learners): the head log names the
    # learner's node by IP.
    learner_ips = set(re.findall(r"_WrappedExecutable pid=\d+, ip=([0-9.]+)\)", logs(cluster, ns, head)))
    workers = pods(cluster, ns, name, "worker")
    victim = next((p for p in workers if p["status"].get("podIP") not in learner_ips), workers[0])
    victim_name, old_uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    cluster.kubectl("delete", "pod", "-n", ns, victim_name, "--wait=false")

    def replaced_and_ready() -> bool:
        p = get_json(cluster, "pod", victim_name, "-n", ns)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        return p["metadata"]["uid"] != old_uid and ready

    wait_for(replaced_and_ready, 300, 3.0, "the worker pod recreated and Ready", ignore=(KubectlError,))
    wait_for(lambda: "joining:" in logs(cluster, ns, victim_name), 120, 3.0, "the new worker to join")
    # The head's GCS sees head + 2 workers alive again (the deleted worker's node is dead, its successor alive).
    wait_for(lambda: alive_ray_nodes(cluster, ns, head) == 3, 240, 5.0, "3 alive Ray nodes")
    # Training goes on, on the same head.
    before = job(cluster, ns, name)["status"]["progress"]["iteration"]
    wait_job(cluster, ns, name, lambda j: j["status"]["progress"]["iteration"] >= before + 2, 600, "two more iterations")
    j = job(cluster, ns, name)
    assert j["status"]["phase"] == "Running", j["status"]
    assert [p["metadata"]["name"] for p in pods(cluster, ns, name, "head")] == [head]
    # While it runs, `kubectl get rltj` answers "how is my job doing?": the iteration, and the mean return once the
    # first games have ended (Pong: about 900 steps each at random play).
    def row() -> dict[str, str] | None:
        header, line = cluster.kubectl("get", "rltj", name, "-n", ns).stdout.splitlines()[:2]
        columns = dict(zip(header.split(), line.split(), strict=False))
        return columns if columns.get("REWARD", "<none>") != "<none>" else None

    columns = wait_for(row, 900, 5.0, "the REWARD column", ignore=(KubectlError,))
    assert columns["PHASE"] == "Running" and int(columns["ITERATION"]) >= 1 and -21 <= float(columns["REWARD"]) <= 21
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")


def test_head_deleted_mid_run_resumes_from_checkpoint(cluster: e2e.Cluster, namespace: str, checkpoint_volumes: None) -> None:
    ns, name = namespace, "resume"
    apply(cluster, ns, job_manifest(name, workers=1, iterations=None, backoffLimit=1,
                                    checkpoint={"size": "1Gi", "everyIterations": 2, "keep": 2}))  # fmt: skip
    # Wait for a checkpoint (iteration 2 or later) to be reported.
    wait_job(cluster, ns, name, lambda j: (j.get("status", {}).get("progress") or {}).get("iteration", 0) >= 3 and j,
                 600, "three iterations (a checkpoint at 2)")  # fmt: skip
    first_log = logs(cluster, ns, f"{name}-head-1")
    saved = [iteration_of(rec["checkpoint"]) for rec in progress_lines(first_log) if rec.get("checkpoint")]
    assert saved and None not in saved, first_log[-3000:]
    before_delete = job(cluster, ns, name)["status"]["progress"]
    assert before_delete["attempt"] == 1, before_delete
    cluster.kubectl("delete", "pod", "-n", ns, f"{name}-head-1", "--wait=false")
    head2 = f"{name}-head-2"
    wait_for(lambda: "resumed from" in logs(cluster, ns, head2), 600, 3.0, "attempt 2 to resume", ignore=(KubectlError,))
    wait_for(lambda: progress_lines(logs(cluster, ns, head2)), 600, 3.0, "attempt 2's first iteration", ignore=(KubectlError,))
    second = progress_lines(logs(cluster, ns, head2))
    m = re.search(r"resumed from \S+ \(iteration (\d+)", logs(cluster, ns, head2))
    assert m, logs(cluster, ns, head2)[-3000:]
    resumed_at = int(m.group(1))
    # The latest checkpoint: the last one the log named, or one saved after the log was read (at the latest when the
    # driver stopped on its SIGTERM).
    assert resumed_at >= max(saved), (resumed_at, saved)
    assert second[0]["iteration"] == resumed_at + 1 > 1, (second[:2], saved)
    status = job(cluster, ns, name)["status"]
    assert status["attempts"] == 2 and status["failedAttempts"] == 1, status
    # The counters continue: attempt 2's progress never shows fewer iterations than attempt 1 had reported.
    reported = wait_job(cluster, ns, name, lambda j: j["status"]["progress"].get("attempt") == 2 and j["status"]["progress"],
                        300, "attempt 2's progress in status")  # fmt: skip
    assert reported["iteration"] >= before_delete["iteration"], (reported, before_delete)
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")


def test_max_run_duration_cuts_a_long_run_off(cluster: e2e.Cluster, namespace: str) -> None:
    ns, name = namespace, "deadline"
    apply(cluster, ns, job_manifest(name, workers=1, iterations=None, maxRunDurationSeconds=150))
    j = wait_job(cluster, ns, name, lambda j: j.get("status", {}).get("phase") == "Failed" and j, 600, "phase Failed")
    assert j["status"]["reason"] == "DeadlineExceeded", j["status"]
    wait_for(lambda: not pods(cluster, ns, name), 180, 2.0, "the job's pods gone", ignore=(KubectlError,))
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
