"""Two operator replicas with kopf peering: one is active, the other takes over when it dies."""
from __future__ import annotations

import time

from rljob.testing.controlplane import ControlPlane
from rljob.testing.operatorproc import OperatorProcess
from tests.integration.operator.test_operator import run_to, small_job, wait_phase
from tests.jobs import ROOT


def test_standby_replica_takes_over(control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path) -> None:
    cp = control_plane
    cp.apply((ROOT / "charts" / "rljob" / "crds" / "kopf.dev-peerings.yaml").read_text())
    cp.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=30s")
    cp.apply({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "rljob"}})
    operator.stop()  # the session's standalone operator would act beside the peers
    high = OperatorProcess(cp.kubeconfig, tmp_path / "high.log", ("--peering", "rljob", "--peering-priority", "200"))
    low = OperatorProcess(cp.kubeconfig, tmp_path / "low.log", ("--peering", "rljob", "--peering-priority", "100"))
    try:
        high.start()
        low.start()
        run_to(cp, namespace, small_job("ha", namespace))
        assert "created Pod" in high.log_tail(400) and "created Pod" not in low.log_tail(400)
        high.kill()
        time.sleep(1)
        cp.set_pod_phase(namespace, "ha-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, namespace, "ha", "Succeeded", 120)  # kopf's peering lifetime bounds the takeover
    finally:
        high.stop()
        low.stop()
        cp.kubectl("delete", "clusterkopfpeering", "rljob", "--ignore-not-found")  # other tests install the chart's own
        operator.start()
