"""The committed CRD is exactly what the generator prints, and it is a structural schema."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rljob.api import constants as c
from rljob.api.crd import crd, crd_yaml
from tests.tooling import ROOT

CRD_FILE = ROOT / "crds" / f"{c.CRD_NAME}.yaml"


def test_committed_crd_is_up_to_date() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "crds/ is stale: run `rljob crd > crds/rltrainingjobs.rljob.dev.yaml`"


def test_crds_holds_the_crd_alone() -> None:
    """No admission policy for a driver any more: a job's pods never write to the API server."""
    assert sorted(p.name for p in CRD_FILE.parent.iterdir()) == [CRD_FILE.name]
    assert not (ROOT / "charts" / "rljob" / "files" / "driver-reports-progress-only.yaml").exists()


def test_chart_carries_the_same_crd() -> None:
    chart_copy = ROOT / "charts" / "rljob" / "crds" / CRD_FILE.name
    if chart_copy.exists():  # the chart is optional but must never drift once present
        assert chart_copy.read_text() == CRD_FILE.read_text()


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in (node.get("properties") or {}).items():
            out += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural_and_documented() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        assert "$ref" not in node and "$defs" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if path != "spec" and not path.endswith("[]") and not path.endswith("{}"):
            assert node.get("description"), f"{path} has no description (kubectl explain would be empty)"


def test_defaults_and_rules_reach_the_crd() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["head"]["default"]["shmSize"] == "2Gi"
    assert spec["properties"]["workers"]["properties"]["replicas"]["default"] == 2
    assert spec["properties"]["workers"]["properties"]["replicas"]["minimum"] == 0
    rules = [r["rule"] for r in spec["properties"]["entrypoint"]["x-kubernetes-validations"]]
    assert "has(self.recipe) != has(self.script)" in rules


def test_names_columns_and_status_subresource() -> None:
    body = crd()
    assert body["metadata"]["name"] == "rltrainingjobs.rljob.dev"
    names = body["spec"]["names"]
    assert set(names["shortNames"]) == {"rlj", "rltj"}
    assert names["categories"] == ["rljob"]  # not "all": `kubectl delete all --all` must not take jobs and their volumes
    version = body["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.workers.replicas", "statusReplicasPath": ".status.readyWorkers",
        "labelSelectorPath": ".status.workerSelector"}}
    columns = {col["name"]: col.get("priority", 0) for col in version["additionalPrinterColumns"]}
    assert [n for n, p in columns.items() if p == 0] == ["Phase", "Workers", "Iteration", "Reward", "Age"]
    assert {"Reason", "Experiment", "Started", "Evaluation"} <= {n for n, p in columns.items() if p == 1}


def test_crd_yaml_parses() -> None:
    assert yaml.safe_load(crd_yaml())["kind"] == "CustomResourceDefinition"
    assert Path(CRD_FILE).exists()


def test_spec_reference_is_up_to_date() -> None:
    from rljob.api.reference import markdown

    doc = ROOT / "docs" / "spec-reference.md"
    assert doc.read_text() == markdown(), "docs/ is stale: run `make crd`"
    assert "`spec.workers.replicas`" in doc.read_text()


def test_every_spec_field_has_its_mutability_rule() -> None:
    """One transition rule per fixed field, pointing at it; the mutable ones have none."""
    from rljob.api.crd import mutability_rules
    from rljob.api.models import MUTABLE_FIELDS

    paths = {r["fieldPath"].lstrip(".") for r in mutability_rules()}
    assert {"image", "entrypoint", "env", "network", "checkpoint", "head.cpu", "head.gpus", "workers.cpu",
            "workers.tolerations", "workers.nodeSelector"} <= paths
    assert not paths & set(MUTABLE_FIELDS)
    assert all("oldSelf" in r["rule"] for r in mutability_rules())
    suspended_only = {p for p in paths if p.startswith(("head.", "workers."))}
    assert all("self.suspend" in r["rule"] for r in mutability_rules() if r["fieldPath"].lstrip(".") in suspended_only)
