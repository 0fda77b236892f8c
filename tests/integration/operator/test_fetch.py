"""`rljob fetch` against the real API server: its refusals, and the reader pod's admission and clean-up.

The control plane's nodes are kwok's, whose pods run no containers, so the copy itself (exec into
the reader) is proven by the end-to-end test on a real node; here everything up to it is.
"""
from __future__ import annotations

from typing import Any

from rljob.api import constants as c
from rljob.api import parse_job
from rljob.resources.fetch import COMPONENT_FETCH, reader_pod
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, wait_for
from tests.integration.jobs import rljob


def readers(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    selector = f"{c.LABEL_APP_COMPONENT}={COMPONENT_FETCH}"
    items: list[dict[str, Any]] = cp.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_refusals_are_one_line(control_plane: ControlPlane, crd_installed: None, namespace: str) -> None:
    cp = control_plane
    missing = rljob(cp, "fetch", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("rljob fetch: error: get rltrainingjob") and "not found" in missing.stderr

    cp.create(small_job("no-volume", namespace, workers={"replicas": 0}))
    nowhere = rljob(cp, "fetch", "no-volume", "-n", namespace)
    assert nowhere.returncode == 1
    assert nowhere.stderr == (
        "rljob fetch: error: no-volume has no checkpoint volume: its checkpoints were in the head pod's emptyDir "
        "(set spec.checkpoint.size or claimName to keep them)\n"
    )
    assert readers(cp, namespace) == []

    cp.create(small_job("with-volume", namespace, workers={"replicas": 0}, checkpoint={"size": "1Gi"}))
    bad = rljob(cp, "fetch", "with-volume", "-n", namespace, "--checkpoint", "latest")
    assert bad.returncode == 1 and "--checkpoint 'latest'" in bad.stderr
    assert readers(cp, namespace) == []  # refused before any pod was made


def test_reader_pod_is_admitted_as_restricted_and_owned_by_the_job(
    control_plane: ControlPlane, crd_installed: None, namespace: str
) -> None:
    cp = control_plane
    cp.create(small_job("owned", namespace, workers={"replicas": 0}, checkpoint={"size": "1Gi"}))
    job = parse_job(cp.get_json("rltj", "owned", "-n", namespace))
    # The namespace enforces Pod Security "restricted": the API server refuses a pod that does not meet it.
    created = reader_pod(job, "registry.example.com/rljob/runtime:0.1.0-cpu", name="owned-fetch-test")
    cp.create(created)
    pod = cp.get_json("pod", "owned-fetch-test", "-n", namespace)
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job.metadata.uid
    # Deleting the job lets the garbage collector delete the reader, as it does the job's own children.
    cp.kubectl("delete", "rltj", "owned", "-n", namespace, "--wait=true")
    wait_for(lambda: cp.kubectl("get", "pod", "owned-fetch-test", "-n", namespace, check=False).returncode != 0,
             timeout=60, description="the reader pod collected with its job")


def test_a_reader_that_cannot_start_is_reported_and_deleted(
    control_plane: ControlPlane, crd_installed: None, namespace: str
) -> None:
    cp = control_plane
    # Created suspended, so no operator (the session's may be running) creates its claim: refused before any pod is
    # made, naming the claim.
    cp.create(small_job("unplaced", namespace, workers={"replicas": 0}, checkpoint={"size": "1Gi"}, suspend=True))
    out = rljob(cp, "fetch", "unplaced", "-n", namespace, "--timeout", "5")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stdout + out.stderr
    assert "checkpoint volume claim unplaced-checkpoints does not exist" in out.stderr, out.stderr
    assert readers(cp, namespace) == []
    # The claim exists but nothing provisions it (no storage here): the scheduler cannot place the reader.
    cp.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "unplaced-checkpoints", "namespace": namespace},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    out = rljob(cp, "fetch", "unplaced", "-n", namespace, "--timeout", "5")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rljob fetch: error: the reader pod unplaced-fetch-"), out.stderr
    assert "did not start within 5s" in lines[0] and "Unschedulable" in lines[0], lines[0]
    assert readers(cp, namespace) == []
