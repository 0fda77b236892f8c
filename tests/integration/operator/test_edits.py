"""Which edits the API server lets through after creation: batch/v1 Job's rules, enforced by the CRD.

No operator is needed: admission alone decides. Every refused edit must name its field.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.builders import minimal_job
from tests.cluster.controlplane import ControlPlane

pytestmark = pytest.mark.integration

# (title, the job's spec at creation beyond a minimal one, merge patch of spec, refused field or None when allowed)
EDITS: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("scale workers", {}, {"workers": {"replicas": 5}}, None),
    ("suspend", {}, {"suspend": True}, None),
    ("set a ttl", {}, {"ttlSecondsAfterFinished": 60}, None),
    ("set a run budget", {}, {"maxRunDurationSeconds": 3600}, None),
    ("drop the run budget", {"maxRunDurationSeconds": 60}, {"maxRunDurationSeconds": None}, None),
    ("change the image", {}, {"image": "rljob/runtime:0.2.0-cpu"}, "spec.image"),
    ("change the recipe args", {}, {"entrypoint": {"args": ["--lr", "0.001"]}}, "spec.entrypoint"),
    ("change the head's cpu", {}, {"head": {"cpu": "4"}}, "spec.head.cpu"),
    ("change the head's gpus", {}, {"head": {"gpus": 1}}, "spec.head.gpus"),
    ("change the workers' memory", {}, {"workers": {"memory": "8Gi"}}, "spec.workers.memory"),
    ("add a node selector", {}, {"workers": {"nodeSelector": {"pool": "cpu"}}}, "spec.workers.nodeSelector"),
    ("add a toleration", {}, {"head": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}, "spec.head.tolerations"),
    ("add env", {}, {"env": [{"name": "A", "value": "1"}]}, "spec.env"),
    ("add a checkpoint volume", {}, {"checkpoint": {"size": "1Gi"}}, "spec.checkpoint"),
    ("remove the stop criteria", {"stop": {"iterations": 5}}, {"stop": None}, "spec.stop"),
    ("open the network", {}, {"network": {"isolation": False}}, "spec.network"),
    ("change the experiment", {}, {"experiment": "other"}, "spec.experiment"),
    ("change the retry budget", {}, {"backoffLimit": 3}, "spec.backoffLimit"),
    ("change the coordination timeout", {}, {"clusterCoordinationTimeoutSeconds": 60}, "spec.clusterCoordinationTimeoutSeconds"),
    ("suspended: resize the head", {"suspend": True}, {"head": {"cpu": "4", "memory": "16Gi"}}, None),
    ("suspended: move the workers", {"suspend": True},
     {"workers": {"nodeSelector": {"pool": "spot"}, "tolerations": [{"key": "spot", "operator": "Exists"}]}}, None),
    ("suspended: give the head a GPU", {"suspend": True}, {"head": {"gpus": 1}}, None),
    ("resize while suspending", {}, {"suspend": True, "workers": {"cpu": "4"}}, None),
    ("resize while resuming", {"suspend": True}, {"suspend": False, "workers": {"cpu": "4"}}, None),
    ("suspended: the image stays", {"suspend": True}, {"image": "rljob/runtime:0.2.0-cpu"}, "spec.image"),
    ("suspended: the recipe stays", {"suspend": True}, {"entrypoint": {"recipe": "cartpole"}}, "spec.entrypoint"),
]


def test_edit_matrix(control_plane: ControlPlane, crd_installed: None, namespace: str) -> None:
    cp = control_plane
    failures = []
    for i, (title, initial, patch, refused_field) in enumerate(EDITS):
        name = f"edit-{i}"
        body = minimal_job(name, **initial)
        body["metadata"]["namespace"] = namespace
        cp.apply(body)
        result = cp.kubectl("patch", "rltj", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": patch}),
                            check=False)
        err = (result.stderr or "").strip()
        if refused_field is None and result.returncode != 0:
            failures.append(f"{title}: refused: {err}")
        elif refused_field is not None and result.returncode == 0:
            failures.append(f"{title}: accepted")
        elif refused_field is not None and f"{refused_field}:" not in err:
            failures.append(f"{title}: the error does not name {refused_field}: {err}")
    assert not failures, "\n".join(failures)
    # Refused edits changed nothing; allowed ones took effect.
    job = cp.get_json("rltj", "edit-5", "-n", namespace)
    assert job["spec"].get("image", "") == "" and job["metadata"]["generation"] == 1
    assert cp.get_json("rltj", "edit-0", "-n", namespace)["spec"]["workers"]["replicas"] == 5
    assert cp.get_json("rltj", "edit-19", "-n", namespace)["spec"]["head"]["cpu"] == "4"


def test_a_refused_edit_lists_every_field_it_touched(control_plane: ControlPlane, crd_installed: None, namespace: str) -> None:
    cp = control_plane
    body = minimal_job("multi")
    body["metadata"]["namespace"] = namespace
    cp.apply(body)
    patch = {"spec": {"image": "x/y:1", "head": {"cpu": "3"}, "workers": {"replicas": 1}}}
    result = cp.kubectl("patch", "rltj", "multi", "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False)
    assert result.returncode != 0
    assert "spec.image:" in result.stderr and "spec.head.cpu:" in result.stderr, result.stderr
    assert "spec.workers.replicas:" not in result.stderr
    assert cp.get_json("rltj", "multi", "-n", namespace)["spec"]["workers"]["replicas"] == 2  # all or nothing
