"""Events against the real API server: a repeat raises the count of the Event already posted, as client-go does."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from rljob.controller import credentials
from rljob.controller.kube import Kube
from tests.cluster.controlplane import ControlPlane


def post(occurrences: list[tuple[dict[str, Any], str, str, str]], kube: Kube) -> None:
    async def main() -> None:
        try:
            for body, type_, reason, message in occurrences:
                await kube.event(body, type_, reason, message)
        finally:
            await kube.close()

    asyncio.run(main())


def events_of(control_plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return control_plane.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]


def test_ten_identical_transitions_make_one_event_with_count_ten(control_plane: ControlPlane, namespace: str) -> None:
    kube = Kube(credentials.load(str(control_plane.kubeconfig)))
    job = {"metadata": {"name": "flapping", "namespace": namespace, "uid": str(uuid.uuid4())}}
    degraded = (job, "Warning", "ClusterDegraded", "2/3 worker pods ready")
    post([degraded] * 10 + [(job, "Normal", "ClusterRecovered", "3/3 worker pods ready")], kube)
    events = {e["reason"]: e for e in events_of(control_plane, namespace, "flapping")}
    assert sorted(events) == ["ClusterDegraded", "ClusterRecovered"], events
    assert events["ClusterDegraded"]["count"] == 10 and events["ClusterRecovered"]["count"] == 1
    assert events["ClusterDegraded"]["firstTimestamp"] <= events["ClusterDegraded"]["lastTimestamp"]
    assert events["ClusterDegraded"]["involvedObject"]["uid"] == job["metadata"]["uid"]

    # An Event that is gone (expired after the API server's event TTL, or deleted) is posted anew on the next repeat.
    control_plane.kubectl("delete", "event", "-n", namespace, events["ClusterDegraded"]["metadata"]["name"])
    post([degraded, degraded], kube)  # the same client: it remembers the deleted Event, whose patch 404s
    again = [e for e in events_of(control_plane, namespace, "flapping") if e["reason"] == "ClusterDegraded"]
    assert [e["count"] for e in again] == [2], again
