"""What the integration tests share about jobs on the test control plane: reading one, waiting for its phase,
applying one and waiting for it to run, reading what the operator logged, and running the `rljob` command against
the control plane.

The jobs themselves come from tests/builders.py.
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from tests.cluster.controlplane import ControlPlane, wait_for
from tests.cluster.operator_process import OperatorProcess, rljob_executable


def get_job(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return cp.get_json("rltj", name, "-n", ns)


def status(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    """The job's status; empty before the operator first writes it."""
    return get_job(cp, ns, name).get("status") or {}


def wait_phase(
    cp: ControlPlane, ns: str, name: str, phase: str, timeout: float = 60, reason: str | None = None, attempts: int | None = None
) -> dict[str, Any]:
    """Waits for a phase; `attempts` pins it to one attempt, since a job can show the phase from before a transition.
    A timeout fails the test with the status the job has instead."""

    def check() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        if st.get("phase") == phase and (reason is None or st.get("reason") == reason) and (
            attempts is None or st.get("attempts") == attempts
        ):
            return st
        return None

    what = f"{ns}/{name} phase {phase} {reason or ''}{f' attempt {attempts}' if attempts else ''}"
    try:
        return wait_for(check, timeout=timeout, interval=0.3, description=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status now: {json.dumps(status(cp, ns, name), indent=1)}") from None


def run_to(cp: ControlPlane, ns: str, body: dict[str, Any], phase: str = "Running", timeout: float = 60) -> dict[str, Any]:
    """Applies the job and waits for `phase`; its status then."""
    cp.apply(body)
    return wait_phase(cp, ns, body["metadata"]["name"], phase, timeout)


def log_since(proc: OperatorProcess, mark: int) -> str:
    """What the operator logged after `mark`, an offset in its log taken before a test's action
    (`proc.log_path.stat().st_size`): a line found here was written after it, not by an earlier test's job."""
    with open(proc.log_path, "rb") as f:
        f.seek(mark)
        return f.read().decode("utf-8", "replace")


def rljob(cp: ControlPlane, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The installed `rljob` command, as a user runs it, against the test control plane; its output captured."""
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
    return subprocess.run([rljob_executable(), *args], capture_output=True, text=True, timeout=timeout, env=env)
