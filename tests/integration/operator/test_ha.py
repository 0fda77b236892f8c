"""Two operator replicas with leader election on a Lease: one acts; a frozen leader is replaced and, thawed, exits."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, wait_for
from tests.cluster.operator_process import OperatorProcess
from tests.integration.jobs import run_to, status, wait_phase

LEASE = ("lease", "rljob-operator", "-n", "rljob-system")


def holder(cp: ControlPlane) -> str:
    return cp.get_json(*LEASE)["spec"].get("holderIdentity") or ""


def test_a_frozen_leader_is_replaced_and_never_acts_again(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    operator.stop()  # the session's standalone operator would act beside the replicas
    first = OperatorProcess(cp.kubeconfig, tmp_path / "first.log", ("--leader-elect",))
    second = OperatorProcess(cp.kubeconfig, tmp_path / "second.log", ("--leader-elect",))
    try:
        first.start()
        wait_for(lambda: "this replica" in first.log_tail(200) and "leads" in first.log_tail(200), timeout=30,
                 description="the first replica leads")
        second.start()
        run_to(cp, namespace, small_job("ha", namespace))
        assert "created Pod" in first.log_tail(400) and "created Pod" not in second.log_tail(400)
        leader = holder(cp)

        assert first.proc is not None
        os.killpg(first.proc.pid, signal.SIGSTOP)  # frozen: it can neither renew nor notice
        frozen_at = time.monotonic()
        cp.set_pod_phase(namespace, "ha-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, namespace, "ha", "Succeeded", 60)
        took_over = time.monotonic() - frozen_at
        assert holder(cp) != leader and "leads" in second.log_tail(200)
        assert took_over >= 15.0 - 1.0, "a standby must wait out the lease duration"  # 15 s, minus timestamp slack
        finished = status(cp, namespace, "ha")

        os.killpg(first.proc.pid, signal.SIGCONT)
        wait_for(lambda: not first.alive(), timeout=20, description="the thawed former leader exits")
        assert first.proc.returncode != 0 and "lost the Lease" in first.log_tail(50)
        assert status(cp, namespace, "ha") == finished  # it wrote nothing on its way out
        assert holder(cp) != leader
    finally:
        if first.proc is not None and first.alive():
            os.killpg(first.proc.pid, signal.SIGCONT)
        first.stop()
        second.stop()
        cp.kubectl("delete", *LEASE, "--ignore-not-found")
        operator.start()
