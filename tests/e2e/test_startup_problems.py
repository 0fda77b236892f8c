"""End to end on a real node: a job whose pods cannot start says why while it waits.

The kubelet, not a test double, reports the container's waiting reason: an image that is not on the node, with
`imagePullPolicy: Never`, is ErrImageNeverPull at once (no registry is asked). The job stays Initializing and names
it in its message and ClusterReady's reason, long before its coordination timeout.
"""

from __future__ import annotations

import re
from typing import Any

from tests.e2e import cluster as e2e
from tests.e2e.jobs import TARGET, apply, get_json, job_manifest, wait_job


def test_an_image_that_is_not_there_is_named_while_the_cluster_starts(
    cluster: e2e.Cluster, namespace: str
) -> None:
    ns, name = namespace, "no-image"
    apply(cluster, ns, job_manifest(name, workers=1, image="rljob/not-on-this-node:0"))

    def named(j: dict[str, Any]) -> dict[str, Any] | None:
        ready = next((x for x in j.get("status", {}).get("conditions") or [] if x["type"] == "ClusterReady"), {})
        return j["status"] if ready.get("reason") == "ContainersNotStarting" else None

    status = wait_job(cluster, ns, name, named, 180, "ClusterReady=False ContainersNotStarting")
    assert status["phase"] == "Initializing", status
    # This node never pulls (ErrImageNeverPull at once); a user's cluster tries the registry first.
    waiting = "ErrImageNeverPull" if TARGET.pull_policy == "Never" else "(ErrImagePull|ImagePullBackOff)"
    assert re.search(f"no-image-head-1 {waiting}", status["message"]), status["message"]
    assert "rljob/not-on-this-node:0" in status["message"], status["message"]
    events = get_json(cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    assert any(e["reason"] == "ContainersNotStarting" and e["type"] == "Warning" for e in events), events
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
