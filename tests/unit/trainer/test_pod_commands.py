"""The head's and workers' command lines, built from the pod's resources and the shared port constants."""
from __future__ import annotations

from pathlib import Path

from rljob.api import constants as C
from rljob.trainer.env_contract import PodResources
from rljob.trainer.pod import child_env, driver_command, head_command, pip_command, worker_command

RES = PodResources(cpu=8, memory_bytes=16 * 2**30, gpus=1, shm_bytes=4 * 2**30)


def test_head_command() -> None:
    cmd = head_command(RES)
    store = int(4 * 2**30 * 0.7)
    assert cmd[:4] == ["ray", "start", "--head", "--block"]
    for flag in (
        f"--port={C.PORT_GCS}", "--dashboard-host=0.0.0.0", f"--dashboard-port={C.PORT_DASHBOARD}",
        f"--ray-client-server-port={C.PORT_CLIENT}", f"--metrics-export-port={C.PORT_RAY_METRICS}",
        f"--node-manager-port={C.PORT_NODE_MANAGER}", f"--object-manager-port={C.PORT_OBJECT_MANAGER}",
        "--num-cpus=8", "--num-gpus=1", f"--object-store-memory={store}", f"--memory={16 * 2**30 - store}",
        "--disable-usage-stats",
    ):
        assert flag in cmd
    assert not any(f.startswith("--ray-client-server-port") for f in head_command(RES, with_client=False))


def test_worker_command() -> None:
    cmd = worker_command(PodResources(cpu=2, memory_bytes=None, gpus=0, shm_bytes=None), "pong-head.team.svc")
    assert cmd[:4] == ["ray", "start", f"--address=pong-head.team.svc:{C.PORT_GCS}", "--block"]
    assert "--num-cpus=2" in cmd and "--num-gpus=0" in cmd
    assert not any(f.startswith(("--object-store-memory", "--memory", "--head")) for f in cmd)


def test_driver_and_pip_commands() -> None:
    assert driver_command("/py") == ["/py", "-m", "rljob.trainer.driver"]
    assert pip_command(["gymnasium[other]"], "/py", True, Path("/t"))[-2:] == ["--user", "gymnasium[other]"]
    assert pip_command(["x"], "/py", False, Path("/tmp/home/site-packages"))[-3:] == [
        "--target", "/tmp/home/site-packages", "x",
    ]


def test_child_env() -> None:
    env = child_env({"PYTHONPATH": "/a"}, C.PORT_GCS, Path("/tmp/home/site-packages"))
    assert env["HOME"] == C.CONTAINER_HOME
    assert env["RAY_ADDRESS"] == f"127.0.0.1:{C.PORT_GCS}"
    assert env["PYTHONPATH"] == "/tmp/home/site-packages:/a"
    assert "PYTHONPATH" not in child_env({}, 1, None)
