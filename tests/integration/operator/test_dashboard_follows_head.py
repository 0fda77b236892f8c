"""`rljob dashboard` across a retry: the local ports stay open and new connections reach the head pod the job names
now. The job, its attempts and its head pods are the real API server's and the live operator's; the pods' ports are
local servers (tests.fake_pods), since kwok's nodes have no kubelet to forward to. What is under test is the routing:
which pod the forwarder opens a stream to, on each port, as the job's status changes."""
from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rljob.api import constants as c
from rljob.cli.cluster import connect
from rljob.cli.forward import ForwardedPort, Forwarder, HeadRoute, dashboard_ports, job_head_lookup
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_process import OperatorProcess
from tests.fake_pods import FakePods, ask, fake_pods
from tests.integration.jobs import run_to, wait_phase


@contextmanager
def forwarding(cp: ControlPlane, namespace: str, name: str, pods: FakePods, said: list[str],
               warned: list[str]) -> Iterator[list[ForwardedPort]]:
    """The dashboard's forwarder for the job, on free local ports, looking the head up in the cluster."""
    cluster = connect(argparse.Namespace(kubeconfig=str(cp.kubeconfig), context=None, namespace=namespace))
    lookup = job_head_lookup(cluster, name)
    forwarder = Forwarder(HeadRoute(lookup, said.append, current=lookup()), pods.open, dashboard_ports(0, 0), warned.append)
    ports = forwarder.listen()
    thread = threading.Thread(target=forwarder.serve, daemon=True)
    thread.start()
    try:
        yield ports
    finally:
        forwarder.close()
        thread.join(10)


def test_new_connections_follow_the_retry_to_the_new_head_pod_on_both_ports(
        control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("dash", namespace, backoffLimit=1))
    said: list[str] = []
    warned: list[str] = []
    with fake_pods() as pods:
        for attempt in (1, 2):  # both answer while they exist: a connection routed to the old head would show it
            pods.add(f"dash-head-{attempt}", c.PORT_DASHBOARD, c.PORT_CLIENT)
        with forwarding(cp, namespace, "dash", pods, said, warned) as (dashboard, client):
            assert ask(dashboard.local, "GET /") == f"dash-head-1 {c.PORT_DASHBOARD} GET /"
            assert ask(client.local) == f"dash-head-1 {c.PORT_CLIENT} hello"

            # The driver fails; the operator starts attempt 2 with a new head pod, which status.headPod names.
            cp.set_pod_phase(namespace, "dash-head-1", "Failed", exit_code=1)
            st = wait_phase(cp, namespace, "dash", "Running", 60, attempts=2)
            assert st["headPod"] == "dash-head-2"
            assert ask(dashboard.local, "GET /api/jobs") == f"dash-head-2 {c.PORT_DASHBOARD} GET /api/jobs"
            assert ask(client.local) == f"dash-head-2 {c.PORT_CLIENT} hello"
            assert said == ["head pod changed: dash-head-1 -> dash-head-2; new connections go to dash-head-2"]

            # The old head pod deleted: nothing changes for the forwarder, which no longer goes there.
            cp.kubectl("delete", "pod", "dash-head-1", "-n", namespace, "--wait=true")
            pods.remove("dash-head-1")
            assert ask(dashboard.local) == f"dash-head-2 {c.PORT_DASHBOARD} hello"

            # Suspended: no head at all; connections are closed unanswered, with one line that says why.
            cp.kubectl("patch", "rltj", "dash", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
            wait_phase(cp, namespace, "dash", "Suspended", 60)
            assert ask(dashboard.local) == "" and ask(client.local) == ""
            assert said[1:] == ["no head pod to forward to: rltrainingjob dash is Suspended: the Ray dashboard runs in its "
                                "head pod, which is up only while the job is Initializing or Running; connections are "
                                "closed until there is one"]
    assert pods.opened == [("dash-head-1", c.PORT_DASHBOARD), ("dash-head-1", c.PORT_CLIENT),
                           ("dash-head-2", c.PORT_DASHBOARD), ("dash-head-2", c.PORT_CLIENT), ("dash-head-2", c.PORT_DASHBOARD)]
    assert warned == []
