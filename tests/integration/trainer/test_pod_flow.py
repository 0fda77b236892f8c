"""The pods' processes on one machine: `rljob pod head` and `rljob pod worker` logic with free ports.

A head and a worker form a two-node Ray cluster, the driver waits for the worker, trains the
cartpole recipe, prints JSON lines and checkpoints; a second attempt resumes from the checkpoint; a
head whose workers never come fails with the coordination timeout; SIGTERM ends the worker cleanly.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rljob.api import constants as C

# Not handed out twice by this process: a `ray start` here names six ports before anything binds them, and Ray
# refuses a port named for two of its components.
from tests.cluster.processes import free_port

RUNNER = """
import sys
from rljob.trainer.driver import setup_logging
from rljob.trainer.pod import RayPorts, run_head, run_worker
setup_logging()
ports = RayPorts(**{k: int(v) for k, v in (kv.split("=") for kv in sys.argv[2:])})
sys.exit((run_head if sys.argv[1] == "head" else run_worker)(ports=ports))
"""

SPEC = {
    "entrypoint": {"recipe": "cartpole", "args": ["--train-batch-size", "200", "--num-epochs", "1", "--num-env-runners", "1"]},
    "stop": {"iterations": 2},
    "workers": {"replicas": 1, "cpu": "1"},
    "checkpoint": {"everyIterations": 1, "keep": 2},
}


def ports(node_manager: int, object_manager: int, ray_metrics: int, gcs: int) -> list[str]:
    return [f"gcs={gcs}", f"dashboard={free_port()}", f"client={free_port()}", f"ray_metrics={ray_metrics}",
            f"node_manager={node_manager}", f"object_manager={object_manager}"]


def start(role: str, env: dict[str, str], port_args: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, role, *port_args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )


@pytest.fixture
def gcs_port() -> int:
    return free_port()


@pytest.fixture
def worker(tmp_path: Path, gcs_port: int) -> Iterator[subprocess.Popen[str]]:
    env = {C.ENV_HEAD_ADDRESS: "127.0.0.1", C.ENV_CPU: "1", C.ENV_GPUS: "0", C.ENV_SHM_BYTES: str(256 * 2**20),
           "HOME": str(tmp_path / "worker-home")}
    proc = start("worker", env, ports(free_port(), free_port(), free_port(), gcs_port), tmp_path / "worker.log")
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def head_env(tmp_path: Path, attempt: int, spec: dict[str, object], deadline: float) -> dict[str, str]:
    return {
        C.ENV_JOB_NAME: "pod-test", C.ENV_NAMESPACE: "test", C.ENV_JOB_SPEC: json.dumps(spec),
        C.ENV_ATTEMPT: str(attempt), C.ENV_EXPECTED_WORKERS: str(spec["workers"]["replicas"]),  # type: ignore[index]
        C.ENV_COORDINATION_DEADLINE: str(deadline), C.ENV_CHECKPOINT_DIR: str(tmp_path / "checkpoints"),
        C.ENV_METRICS_PORT: str(free_port()), C.ENV_CPU: "2", C.ENV_GPUS: "0", C.ENV_SHM_BYTES: str(512 * 2**20),
        C.ENV_MEMORY: str(4 * 2**30), "HOME": str(tmp_path / "head-home"),
    }


def run_head(tmp_path: Path, gcs_port: int, attempt: int, spec: dict[str, object], deadline_s: float = 120) -> tuple[int, list[dict], str]:
    log = tmp_path / f"head-{attempt}.log"
    env = head_env(tmp_path, attempt, spec, time.time() + deadline_s)
    # Each head gets its own Ray temp dir (short: Ray's socket paths must fit in 107 bytes). In a pod
    # every head is alone; here the worker's raylet from the previous attempt, still waiting for its
    # old GCS on this machine, would otherwise make `ray start --head` think one is running.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        head = start("head", env, ports(free_port(), free_port(), free_port(), gcs_port), log)
        stdout, _ = head.communicate(timeout=240)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return head.returncode, lines, log.read_text()


def test_head_and_worker_train_resume_and_stop(tmp_path: Path, gcs_port: int, worker: subprocess.Popen[str]) -> None:
    code, lines, log = run_head(tmp_path, gcs_port, 1, SPEC)
    assert code == 0, log[-4000:]
    assert "Ray cluster ready: 2 nodes (1 head + 1 workers)" in log
    assert [line["iteration"] for line in lines] == [1, 2]
    assert lines[-1]["attempt"] == 1
    assert lines[-1]["checkpoint"] == str(tmp_path / "checkpoints" / "iteration-000002")
    assert (tmp_path / "checkpoints" / "progress.jsonl").is_file()

    # Attempt 2 (a restarted head) resumes: the worker rejoins the new head by itself.
    code, lines, log = run_head(tmp_path, gcs_port, 2, {**SPEC, "stop": {"iterations": 3}})
    assert code == 0, log[-4000:]
    assert "resumed from" in log
    assert [line["iteration"] for line in lines] == [3]
    assert lines[0]["attempt"] == 2

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


def test_coordination_timeout(tmp_path: Path, gcs_port: int) -> None:
    spec = {**SPEC, "workers": {"replicas": 2, "cpu": "1"}}
    code, lines, log = run_head(tmp_path, gcs_port, 1, spec, deadline_s=3)
    assert code == 3, log[-4000:]
    assert "cluster coordination timed out: 0 of 2 Ray workers joined" in log
    assert lines == [] and "Traceback" not in log
