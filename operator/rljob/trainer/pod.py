"""The head and worker pods' main processes: install pipPackages, run Ray, run the driver.

`rljob pod head`: pip install -> `ray start --head --block` (a child) -> wait for the GCS port ->
`python -m rljob.trainer.driver` -> stop Ray -> exit with the driver's code.
`rljob pod worker`: pip install -> loop { wait for the head's GCS -> `ray start --address --block` };
a Ray worker whose head went away exits, and the loop joins the head's next incarnation.

Ray runs as a blocking child rather than daemonized (`ray start` + `ray stop`) so that this process
owns every Ray process: SIGTERM to the child drains and stops exactly this node's processes, and a
test can run a head next to other Ray instances on one machine. Command lines are pure functions of
the pod's resources (unit-tested); the process handling below them is kept thin.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import site
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ..api import constants as C
from .devices import check_visible_gpus
from .env_contract import PodResources, parse_spec, pod_resources
from .errors import ConfigError, TrainerError
from .sizing import object_store_bytes

log = logging.getLogger("rljob.pod")

GCS_READY_TIMEOUT_S = 180.0
HEAD_STOP_GRACE_S = 40.0  # Ray drains for up to 30 s on SIGTERM
WORKER_STOP_GRACE_S = 20.0  # within Kubernetes' default 30 s termination grace period
PIP_TARGET_DIR = "site-packages"  # under HOME, for images whose Python has no user site (venvs)


@dataclass(frozen=True)
class RayPorts:
    """Ray's fixed ports (Services and NetworkPolicies name them); tests pass free ones."""

    gcs: int = C.PORT_GCS
    dashboard: int = C.PORT_DASHBOARD
    client: int = C.PORT_CLIENT
    ray_metrics: int = C.PORT_RAY_METRICS
    node_manager: int = C.PORT_NODE_MANAGER
    object_manager: int = C.PORT_OBJECT_MANAGER


def _resource_flags(res: PodResources) -> list[str]:
    flags = [f"--num-cpus={res.cpu}", f"--num-gpus={res.gpus}"]
    store = object_store_bytes(res.shm_bytes) if res.shm_bytes else None
    if store is not None:
        flags.append(f"--object-store-memory={store}")
    if res.memory_bytes is not None:
        # Ray's logical "memory" resource: what the pod may use for heaps beside the object store.
        heap = res.memory_bytes - (store or 0)
        if heap > 0:
            flags.append(f"--memory={heap}")
    return flags


def ray_executable(python: str = sys.executable) -> str:
    """The `ray` script beside this interpreter (a venv's bin/), else whatever PATH finds."""
    beside = Path(python).parent / "ray"
    return str(beside) if beside.is_file() else "ray"


def ray_client_available() -> bool:
    """Ray refuses --ray-client-server-port unless grpcio (ray[client]) is installed."""
    return importlib.util.find_spec("grpc") is not None


def head_command(
    res: PodResources, ports: RayPorts = RayPorts(), ray: str = "ray", with_client: bool = True
) -> list[str]:
    client = [f"--ray-client-server-port={ports.client}"] if with_client else []
    return [
        ray, "start", "--head", "--block",
        f"--port={ports.gcs}",
        "--dashboard-host=0.0.0.0",
        f"--dashboard-port={ports.dashboard}",
        *client,
        f"--metrics-export-port={ports.ray_metrics}",
        f"--node-manager-port={ports.node_manager}",
        f"--object-manager-port={ports.object_manager}",
        *_resource_flags(res),
        "--disable-usage-stats",
    ]


def worker_command(res: PodResources, head_address: str, ports: RayPorts = RayPorts(), ray: str = "ray") -> list[str]:
    return [
        ray, "start", f"--address={head_address}:{ports.gcs}", "--block",
        f"--metrics-export-port={ports.ray_metrics}",
        f"--node-manager-port={ports.node_manager}",
        f"--object-manager-port={ports.object_manager}",
        *_resource_flags(res),
        "--disable-usage-stats",
    ]


def driver_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "rljob.trainer.driver"]


def pip_command(packages: Sequence[str], python: str, user_site: bool, target: Path) -> list[str]:
    """`pip install --user` where the interpreter has a user site, else `--target` (venv images).

    Either way the packages land under HOME (/tmp/home, a writable emptyDir), because the image's
    root filesystem may be read-only.
    """
    where = ["--user"] if user_site else ["--target", str(target)]
    return [python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *where, *packages]


def child_env(base: Mapping[str, str], gcs_port: int, pip_target: Path | None) -> dict[str, str]:
    """The environment of Ray and the driver: HOME for user-site packages, RAY_ADDRESS for the driver."""
    env = dict(base)
    env.setdefault("HOME", C.CONTAINER_HOME)
    env["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
    if pip_target is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pip_target), env.get("PYTHONPATH", "")) if p)
    return env


# -- process handling -------------------------------------------------------------------------------


def install_packages(packages: Sequence[str], env: Mapping[str, str]) -> Path | None:
    """Installs pipPackages; returns the --target folder to put on PYTHONPATH (None for --user)."""
    if not packages:
        return None
    if importlib.util.find_spec("pip") is None:
        raise ConfigError(
            f"spec.pipPackages: this image has no pip, so {' '.join(packages)} cannot be installed; "
            "use an image with pip, or one that already contains the packages"
        )
    home = Path(env.get("HOME") or C.CONTAINER_HOME)
    user_site = bool(site.ENABLE_USER_SITE)
    target = home / PIP_TARGET_DIR
    command = pip_command(packages, sys.executable, user_site, target)
    log.info("installing pipPackages: %s", " ".join(command))
    done = subprocess.run(command, env={**env, "HOME": str(home)}, check=False)
    if done.returncode != 0:
        raise TrainerError(
            f"pip install failed with exit code {done.returncode} for: {' '.join(packages)} "
            "(is network egress to the package index allowed? see spec.network)"
        )
    return None if user_site else target


def port_open(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:  # refused, unreachable, or the head Service's name does not resolve yet
        return False


def wait_for_port(
    host: str, port: int, timeout_s: float | None, alive: Callable[[], bool] = lambda: True, poll_s: float = 1.0
) -> bool:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while alive():
        if port_open(host, port):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return False


def start_group(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Starts `ray start --block` as the leader of its own process group, which its raylet and GCS join."""
    # Ray's own chatter goes to stderr: stdout carries only the driver's JSON progress lines.
    return subprocess.Popen(list(command), env=dict(env), start_new_session=True, stdout=sys.stderr.fileno())


def stop_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to `ray start --block` (it drains, then stops its processes); SIGKILL to the group after grace.

    The kill matters on workers: when the head is already gone, Ray's drain waits on a GCS that
    will never answer and `ray start` hangs with its raylet still running.
    """
    if child.poll() is None:
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group may be gone already
        os.killpg(child.pid, signal.SIGKILL)
    if child.poll() is None:
        child.wait()


class _Signals:
    """Records SIGTERM/SIGINT and passes them to the current child (the driver or the Ray worker)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def ensure_home(env: Mapping[str, str]) -> None:
    """HOME points into the /tmp emptyDir, which starts empty; pip, Ray and matplotlib write there."""
    Path(env.get("HOME") or C.CONTAINER_HOME).mkdir(parents=True, exist_ok=True)


def run_head(env: Mapping[str, str] = os.environ, ports: RayPorts = RayPorts()) -> int:
    signals = _Signals()
    ensure_home(env)
    res = pod_resources(env)
    check_visible_gpus(res.gpus)
    spec = parse_spec(env.get(C.ENV_JOB_SPEC, "") or "{}", env.get(C.ENV_JOB_NAME, "job"))
    target = install_packages(spec.pip_packages, env)
    environment = child_env(env, ports.gcs, target)
    command = head_command(res, ports, ray_executable(), ray_client_available())
    log.info("starting the Ray head: %s", " ".join(command))
    ray_head = start_group(command, environment)
    try:
        if not wait_for_port("127.0.0.1", ports.gcs, GCS_READY_TIMEOUT_S, alive=lambda: ray_head.poll() is None):
            raise TrainerError(f"the Ray head did not open its GCS port {ports.gcs} (exit code {ray_head.poll()})")
        if signals.signum is not None:
            return 128 + signals.signum
        driver = subprocess.Popen(driver_command(), env=environment)
        signals.child = driver
        code = driver.wait()
        log.info("driver exited with code %d; stopping Ray", code)
        return code if code >= 0 else 128 - code
    finally:
        stop_group(ray_head, HEAD_STOP_GRACE_S)


def worker_packages(env: Mapping[str, str]) -> list[str]:
    """The pip requirements the operator passes to workers (RLJOB_PIP_PACKAGES, a JSON list)."""
    text = env.get(C.ENV_PIP_PACKAGES, "").strip()
    if not text:
        return []
    try:
        packages = json.loads(text)
    except ValueError:
        packages = None
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise TrainerError(f"{C.ENV_PIP_PACKAGES} must be a JSON list of requirement strings, got {text[:200]!r}")
    return packages


def run_worker(env: Mapping[str, str] = os.environ, ports: RayPorts = RayPorts()) -> int:
    signals = _Signals()
    ensure_home(env)
    res = pod_resources(env)
    head = env.get(C.ENV_HEAD_ADDRESS, "").strip()
    if not head:
        raise TrainerError(f"environment variable {C.ENV_HEAD_ADDRESS} is not set")
    packages = worker_packages(env)
    target = install_packages(packages, env)
    environment = child_env(env, ports.gcs, target)
    environment.pop("RAY_ADDRESS", None)  # a worker joins by --address, it runs no driver
    command = worker_command(res, head, ports, ray_executable())
    backoff = 1.0
    while signals.signum is None:
        log.info("waiting for the Ray head at %s:%d", head, ports.gcs)
        if not wait_for_port(head, ports.gcs, None, alive=lambda: signals.signum is None, poll_s=2.0):
            break
        log.info("joining: %s", " ".join(command))
        started = time.monotonic()
        child = start_group(command, environment)
        signals.child = child
        while child.poll() is None and signals.signum is None:
            time.sleep(0.5)
        signals.child = None
        if signals.signum is not None:
            # Draining needs the head; when it is gone already (the job ended) Ray would wait in vain.
            stop_group(child, WORKER_STOP_GRACE_S if port_open(head, ports.gcs) else 2.0)
            break
        code = child.wait()
        stop_group(child, 0)  # leftovers of a Ray worker that lost its head
        if time.monotonic() - started > 60:
            backoff = 1.0  # it was up for a while: the head went away, rejoin promptly
        log.warning("the Ray worker exited with code %d (head restarted?); rejoining in %.0fs", code, backoff)
        time.sleep(backoff)
        backoff = min(backoff * 2, 30.0)
    log.info("stopped by signal %s", signals.signum)
    return 0


def main(role: str, env: Mapping[str, str] | None = None) -> int:
    from .driver import setup_logging

    setup_logging()
    env = os.environ if env is None else env
    try:
        if role == C.ROLE_HEAD:
            return run_head(env)
        if role == C.ROLE_WORKER:
            return run_worker(env)
        from .driver import main as driver_main

        return driver_main(env)
    except TrainerError as exc:
        for line in exc.lines:
            log.error("%s", line)
        return exc.exit_code
