"""The user-facing commands and the operator's metrics, against the real API server."""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

from rljob.api import constants as c
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, wait_for
from tests.cluster.operator_process import OperatorProcess, rljob_executable
from tests.integration.jobs import rljob, status, wait_phase


def test_submit_list_status_logs_delete(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str,
                                        tmp_path: Path) -> None:
    cp = control_plane
    src = tmp_path / "files"
    (src / "lib").mkdir(parents=True)
    (src / "train.py").write_text("import lib.helpers\n")
    (src / "lib" / "helpers.py").write_text("X = 1\n")
    out = rljob(cp, "submit", "-n", namespace, "--source-dir", str(src), "--entry", "train.py", "--name", "cli-job",
                "--experiment", "exp-a", "--workers", "1", "--worker-cpu", "1", "--worker-memory", "2Gi",
                "--head-cpu", "1", "--head-memory", "2Gi", "--", "--stop-reward", "18")
    assert out.returncode == 0, out.stderr
    job = cp.get_json("rltj", "cli-job", "-n", namespace)
    assert job["spec"]["entrypoint"] == {"script": "train.py", "args": ["--stop-reward", "18"]}
    cm = cp.get_json("configmap", "cli-job-source", "-n", namespace)
    assert c.SOURCE_ARCHIVE_KEY in cm["binaryData"]  # nested directory: packed as one archive
    assert cm["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    wait_phase(cp, namespace, "cli-job", "Running", 60)

    listed = rljob(cp, "list", "-n", namespace, "--experiment", "exp-a")
    assert listed.returncode == 0 and re.search(r"cli-job\s+exp-a\s+Running\s+1/1", listed.stdout), listed.stdout
    assert "No RLTrainingJobs" in rljob(cp, "list", "-n", namespace, "--experiment", "other").stdout
    shown = rljob(cp, "status", "cli-job", "-n", namespace)
    assert shown.returncode == 0 and "ClusterReady" in shown.stdout and "Accepted" in shown.stdout, shown.stdout

    cp.set_pod_phase(namespace, "cli-job-head-1", "Failed", exit_code=1)
    wait_phase(cp, namespace, "cli-job", "Failed", 30)
    cp.kubectl("patch", "rltj", "cli-job", "-n", namespace, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"driverLogTail": "iteration 41\nboom\n"}}))
    cp.kubectl("delete", "pod", "cli-job-head-1", "-n", namespace, "--wait=true")
    logs = rljob(cp, "logs", "cli-job", "-n", namespace)
    assert logs.returncode == 0 and logs.stdout == "iteration 41\nboom\n" and "kept by the operator" in logs.stderr

    gone = rljob(cp, "delete", "cli-job", "-n", namespace)
    assert gone.returncode == 0
    wait_for(lambda: cp.kubectl("get", "configmap", "cli-job-source", "-n", namespace, check=False).returncode != 0,
             timeout=60, description="the source ConfigMap collected with its job")


def test_submit_wait_follows_to_the_end(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane

    def finish() -> None:
        wait_for(lambda: status(cp, namespace, "waited").get("phase") == "Running", timeout=60, ignore=(Exception,))
        cp.set_pod_phase(namespace, "waited-head-1", "Succeeded", exit_code=0)

    t = threading.Thread(target=finish, daemon=True)
    t.start()
    out = rljob(cp, "submit", "-n", namespace, "--recipe", "cartpole", "--name", "waited", "--workers", "1",
                "--worker-cpu", "1", "--worker-memory", "2Gi", "--head-cpu", "1", "--head-memory", "2Gi", "--wait", timeout=120)
    t.join(5)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "waited: Succeeded (DriverSucceeded" in out.stdout


def test_clear_errors(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    cp = control_plane
    big = tmp_path / "big"
    big.mkdir()
    (big / "train.py").write_text("pass\n")
    (big / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    out = rljob(cp, "submit", "-n", namespace, "--source-dir", str(big), "--entry", "train.py")
    assert out.returncode == 2 and "at most 1 MiB" in out.stderr and "Traceback" not in out.stderr
    assert cp.get_json("configmaps", "-n", namespace, "-l", c.LABEL_APP_NAME + "=rljob")["items"] == []
    missing = rljob(cp, "status", "nope", "-n", namespace)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "not found" in missing.stderr
    kubeconfig = tmp_path / "dead.yaml"
    kubeconfig.write_text(Path(cp.kubeconfig).read_text().replace(cp.server, "https://127.0.0.1:1"))
    dead = subprocess.run([rljob_executable(), "list", "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=60)
    assert dead.returncode == 1 and "cannot reach the cluster" in dead.stderr and dead.stderr.count("\n") == 1, dead.stderr


Sample = tuple[str, frozenset[tuple[str, str]]]


def _scrape(url: str) -> dict[Sample, float]:
    """Prometheus text format → {(name, labels): value}."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, rest = key.partition("{")
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', rest))
        out[(name, labels)] = float(value)
    return out


def _value(metrics: dict[Sample, float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_with_jobs(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    before = _scrape(live_operator.metrics_url)
    cp.apply(small_job("metered", namespace))
    wait_phase(cp, namespace, "metered", "Running", 60)
    cp.kubectl("patch", "rltj", "metered", "-n", namespace, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"progress": {"iteration": 3, "episodeReturnMean": -20.5, "envStepsPerSecond": 850.0}}}))

    def progressed() -> dict[str, Any] | None:
        m = _scrape(live_operator.metrics_url)
        return m if _value(m, "rljob_job_episode_return_mean", namespace=namespace, rltrainingjob="metered") == -20.5 else None

    during = wait_for(progressed, timeout=30, description="progress in metrics")
    assert _value(during, "rljob_jobs", phase="Running") >= 1
    assert _value(during, "rljob_job_training_iterations_total", namespace=namespace, rltrainingjob="metered") == 3
    assert _value(during, "rljob_job_info", namespace=namespace, rltrainingjob="metered", experiment="default",
                  phase="Running") == 1
    assert _value(during, "rljob_job_ready_workers", namespace=namespace, rltrainingjob="metered") == 2
    assert _value(during, "rljob_reconcile_duration_seconds_count") > _value(before, "rljob_reconcile_duration_seconds_count")
    assert _value(during, "rljob_cluster_ready_seconds_count") > _value(before, "rljob_cluster_ready_seconds_count")
    cp.set_pod_phase(namespace, "metered-head-1", "Succeeded", exit_code=0)
    wait_phase(cp, namespace, "metered", "Succeeded", 30)
    after = wait_for(lambda: (m := _scrape(live_operator.metrics_url)) and
                     _value(m, "rljob_job_duration_seconds_count", phase="Succeeded") >
                     _value(before, "rljob_job_duration_seconds_count", phase="Succeeded") and m, timeout=30)
    assert _value(after, "rljob_jobs", phase="Succeeded") >= 1


def test_a_restarted_operator_does_not_count_finished_jobs_again(
    control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str
) -> None:
    """Histograms count what a process saw happen: after a restart the finished jobs are in status, not new."""
    cp = control_plane
    cp.apply(small_job("counted", namespace))
    wait_phase(cp, namespace, "counted", "Running", 60)
    cp.set_pod_phase(namespace, "counted-head-1", "Succeeded", exit_code=0)
    wait_phase(cp, namespace, "counted", "Succeeded", 30)
    live_operator.kill()
    live_operator.start()

    def settled() -> dict[Sample, float] | None:  # the restarted operator has reconciled every job again
        m = _scrape(live_operator.metrics_url)
        return m if _value(m, "rljob_jobs", phase="Succeeded") >= 1 and _value(m, "rljob_reconcile_duration_seconds_count") > 0 else None

    restarted = wait_for(settled, timeout=30, description="the restarted operator's first reconciles")
    assert _value(restarted, "rljob_job_duration_seconds_count", phase="Succeeded") == 0
    assert _value(restarted, "rljob_cluster_ready_seconds_count") == 0
    cp.apply(small_job("fresh", namespace))  # what finishes after the restart is counted, once
    wait_phase(cp, namespace, "fresh", "Running", 60)
    cp.set_pod_phase(namespace, "fresh-head-1", "Succeeded", exit_code=0)
    wait_phase(cp, namespace, "fresh", "Succeeded", 30)
    after = wait_for(lambda: (m := _scrape(live_operator.metrics_url)) and
                     _value(m, "rljob_job_duration_seconds_count", phase="Succeeded") == 1 and m, timeout=30)
    assert _value(after, "rljob_cluster_ready_seconds_count") == 1
