"""The API model: defaults, bounds and cross-field rules, as a user of `rljob render` meets them."""
from __future__ import annotations

from typing import Any

import pytest

from rljob.api import JobStatus, ManifestError, load_job, parse_job
from rljob.api.quantity import parse_quantity
from rljob.api.vocabulary import ConditionType, Phase, Reason
from tests import invalid_manifests
from tests.builders import minimal_job


def test_minimal_job_gets_defaults() -> None:
    job = parse_job(minimal_job())
    assert job.spec.experiment == "default"
    assert job.spec.workers.replicas == 2
    assert job.spec.head.gpus == 0
    assert job.spec.network.isolation is True
    assert job.spec.cluster_coordination_timeout_seconds == 900
    assert job.spec.max_run_duration_seconds is None


def test_wire_form_is_camel_case_and_round_trips() -> None:
    job = parse_job(minimal_job(head={"shmSize": "1Gi"}, maxRunDurationSeconds=60))
    wire = job.spec.wire()
    assert wire["head"]["shmSize"] == "1Gi"
    assert wire["maxRunDurationSeconds"] == 60
    assert parse_job({**minimal_job(), "spec": wire}).spec == job.spec


@pytest.mark.parametrize("value, expected", [("500m", 0.5), ("2", 2), (4, 4), ("1Gi", 2**30), ("1.5G", 1.5e9), ("1e3", 1000)])
def test_quantities(value: Any, expected: float) -> None:
    assert float(parse_quantity(value)) == pytest.approx(expected)


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no entrypoint", {"entrypoint": None}, "spec.entrypoint"),
    ("both recipe and script", {"entrypoint": {"recipe": "pong", "script": "a.py"}}, "exactly one of recipe or script"),
    ("neither recipe nor script", {"entrypoint": {"args": ["x"]}}, "exactly one of recipe or script"),
    ("unknown recipe", {"entrypoint": {"recipe": "breakout"}}, "spec.entrypoint.recipe"),
    ("negative gpus", {"head": {"gpus": -1}}, "spec.head.gpus"),
    ("absurd gpus", {"head": {"gpus": 1000}}, "spec.head.gpus"),
    ("negative replicas", {"workers": {"replicas": -2}}, "spec.workers.replicas"),
    ("bad cpu quantity", {"head": {"cpu": "two"}}, "spec.head.cpu"),
    ("zero memory", {"workers": {"memory": "0"}}, "spec.workers.memory"),
    ("shm not below memory", {"head": {"memory": "1Gi", "shmSize": "2Gi"}}, "shmSize must be less than memory"),
    ("zero coordination timeout", {"clusterCoordinationTimeoutSeconds": 0}, "spec.clusterCoordinationTimeoutSeconds"),
    ("negative run duration", {"maxRunDurationSeconds": -5}, "spec.maxRunDurationSeconds"),
    ("string timeout", {"maxRunDurationSeconds": "soon"}, "spec.maxRunDurationSeconds"),
    ("unknown field", {"heads": {}}, "spec.heads: unknown field"),
    ("bad cidr", {"network": {"egress": [{"cidr": "10.0.0.0/33"}]}}, "spec.network.egress[0].cidr"),
    ("pip without egress", {"pipPackages": ["numpy"]}, "pipPackages need network egress"),
    ("stop with script", {"entrypoint": {"script": "a.py"}, "stop": {"iterations": 3}}, "stop applies to built-in recipes"),
    ("stop of wrong type", {"stop": {"iterations": "many"}}, "spec.stop.iterations"),
    ("claim and size", {"checkpoint": {"claimName": "c", "size": "1Gi"}}, "claimName"),
    ("reserved env", {"env": [{"name": "RLJOB_NAME", "value": "x"}]}, "reserved"),
    ("GPU visibility by env", {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}, "NVIDIA container runtime"),
    ("bad experiment label", {"experiment": "has space"}, "spec.experiment"),
    ("bad port", {"network": {"egress": [{"cidr": "10.0.0.0/8", "ports": [{"port": 70000}]}]}}, "port"),
]


@pytest.mark.parametrize("title, spec, expected", INVALID, ids=[t for t, _, _ in INVALID])
def test_invalid_specs_name_the_field(title: str, spec: dict[str, Any], expected: str) -> None:
    body = minimal_job()
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key)
        else:
            body["spec"][key] = value
    with pytest.raises(ManifestError) as info:
        parse_job(body, "job.yaml")
    text = "\n".join(info.value.lines())
    assert expected in text, text
    assert all(line.startswith("job.yaml: ") for line in info.value.lines())


@pytest.mark.parametrize("name, fragment", [("a" * 41, "at most 40"), ("Upper", "DNS-1035"), ("9lives", "DNS-1035")])
def test_names_must_keep_children_valid(name: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_job(minimal_job(name=name))
    assert any("metadata.name" in p and fragment in p for p in info.value.problems)


def test_load_job_reports_yaml_errors_and_picks_the_job_among_documents() -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_job("spec: [unclosed", "x.yaml")
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: src}\n---\n" + \
        "apiVersion: rljob.dev/v1alpha1\nkind: RLTrainingJob\nmetadata: {name: j}\nspec: {entrypoint: {recipe: pong}}\n"
    assert load_job(text).name == "j"
    with pytest.raises(ManifestError, match="expected apiVersion"):
        load_job("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")


def test_several_problems_are_all_reported() -> None:
    body = minimal_job(head={"gpus": -1, "cpu": "x"}, workers={"replicas": -1})
    with pytest.raises(ManifestError) as info:
        parse_job(body)
    assert len(info.value.problems) >= 3


@pytest.mark.parametrize(
    "path, value, fragment", invalid_manifests.CASES, ids=[f"{p}={v!r}"[:60] for p, v, _ in invalid_manifests.CASES]
)
def test_every_manifest_the_api_server_refuses_the_model_refuses_too(path: str, value: Any, fragment: str) -> None:
    """The integration tests send the same table to a real API server; here the model must agree."""
    with pytest.raises(ManifestError) as info:
        parse_job(invalid_manifests.variant(path, value), "job.yaml")
    text = "\n".join(info.value.lines())
    field = fragment.split(".")[-1].split("[")[0]
    assert field.lower() in text.lower(), text


def test_a_job_may_tune_its_evaluation_and_nothing_else_of_the_operators_environment() -> None:
    body = minimal_job()
    body["spec"]["env"] = [{"name": "RLJOB_EVAL_EPISODES", "value": "50"}, {"name": "RLJOB_EVAL_MAX_STEPS", "value": "5000"}]
    assert [e.name for e in parse_job(body, "job.yaml").spec.env] == ["RLJOB_EVAL_EPISODES", "RLJOB_EVAL_MAX_STEPS"]
    body["spec"]["env"] = [{"name": "RLJOB_EVAL_EPISODES_X", "value": "1"}]
    with pytest.raises(ManifestError, match="reserved for the operator, but for RLJOB_EVAL_EPISODES and RLJOB_EVAL_MAX_STEPS"):
        parse_job(body, "job.yaml")


def test_status_words_are_the_vocabularys_members_and_other_words_are_kept_as_written() -> None:
    """A newer operator or a person may write words this version lacks: the job still parses, and a write keeps them."""
    condition = {"type": "Throttled", "status": "True", "reason": "ClusterReady", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    job = parse_job(minimal_job(status={"phase": "Running", "reason": "SomethingNewer", "conditions": [condition]}))
    assert job.status is not None
    assert job.status.phase is Phase.RUNNING and job.status.conditions[0].reason is Reason.CLUSTER_READY
    assert (job.status.reason, job.status.conditions[0].type) == ("SomethingNewer", "Throttled")
    assert not isinstance(job.status.reason, Reason) and not isinstance(job.status.conditions[0].type, ConditionType)
    assert job.status.wire()["reason"] == "SomethingNewer" and job.status.merge_patch(job.status) == {}
    with pytest.raises(ManifestError, match=r"status\.reason"):
        parse_job(minimal_job(status={"reason": "x" * 129}))


@pytest.mark.parametrize(("raw", "kept"), [
    ({"phase": "Failed", "attempts": 2}, {"phase": "Failed", "attempts": 2}),
    # What does not parse is left out, field by field; the rest is read.
    ({"phase": "Failed", "attempts": "two", "progress": {"iteration": -1}}, {"phase": "Failed"}),
    ({"phase": 7, "workers": "1/2"}, {"workers": "1/2"}),
    (None, {}),
    (["not", "a", "status"], {}),
])
def test_a_status_is_read_without_failing(raw: Any, kept: dict[str, Any]) -> None:
    assert {k: v for k, v in JobStatus.read(raw).wire().items() if k != "conditions"} == kept

