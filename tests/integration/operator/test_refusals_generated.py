"""Every generated refusal (tests.refusal_cases) sent to a real API server, which must refuse each and name its field.

The unit tests prove the model refuses the same cases; here the CRD does, as installed. Each case is a server-side
dry-run create (nothing is stored, so one name serves every case), sent over a few connections at once: a couple of
hundred cases take seconds.
"""
from __future__ import annotations

import copy
import json
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from rljob.api.constants import GROUP, PLURAL, VERSION
from rljob.api.crd import crd
from rljob.api.manifest import ManifestError, parse_job
from tests.cluster.controlplane import ControlPlane
from tests.refusal_cases import BASES, Case, generate

Answer = tuple[int, dict[str, Any], list[str]]


class DryRun:
    """POSTs jobs to the API server as its admin with dryRun=All: the whole admission chain (schema, CEL rules,
    defaulting) runs, nothing is stored."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.url = f"{cp.server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}?dryRun=All"
        self.namespace = namespace
        self.tls = ssl.create_default_context(cafile=str(cp.ca_crt))
        self.tls.load_cert_chain(str(cp.pki_dir / "admin.crt"), str(cp.pki_dir / "admin.key"))

    def create(self, body: dict[str, Any], field_validation: str | None = "Strict") -> Answer:
        """HTTP status, the returned object or Status, and the Warning headers. Strict is what kubectl asks for by
        default (--validate=strict); without it the API server drops unknown fields (see the last test)."""
        body = {**body, "metadata": {**body.get("metadata", {}), "namespace": self.namespace}}
        url = self.url + (f"&fieldValidation={field_validation}" if field_validation else "")
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=60) as response:
                return response.status, json.loads(response.read()), response.headers.get_all("Warning") or []
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), error.headers.get_all("Warning") or []


@pytest.fixture
def dry_run(control_plane: ControlPlane, crd_installed: None, namespace: str) -> DryRun:
    return DryRun(control_plane, namespace)


def _verdict(case: Case, answer: Answer) -> str | None:
    """Why the answer is not the refusal `case` wants, or None."""
    status, body, _ = answer
    message = body.get("message", "")
    if status not in (400, 422):
        return f"HTTP {status}, not a refusal"
    if case.field not in message:
        return f"the refusal does not name {case.field}: {message[:400]}"
    if case.message and case.message not in message:
        return f"the refusal lacks the rule's message: {message[:400]}"
    return None


def test_the_api_server_refuses_every_generated_case(control_plane: ControlPlane, dry_run: DryRun,
                                                     record_property: Any) -> None:
    generated = generate(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert generated.problems == []
    assert len(generated.cases) > 200
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        bases = dict(zip(BASES, pool.map(dry_run.create, BASES.values()), strict=True))
        answers = list(pool.map(lambda c: dry_run.create(c.body()), generated.cases))
    record_property("cases", len(answers))
    record_property("seconds", round(time.monotonic() - started, 2))
    for name, (status, body, _) in bases.items():
        assert status == 201, f"base {name} refused: {body.get('message')}"
    failures = [f"{case.id}: {why} [{case.description[:200]}]" for case, answer in zip(generated.cases, answers, strict=True)
                if (why := _verdict(case, answer)) is not None]
    assert not failures, f"{len(failures)} of {len(answers)} cases:\n" + "\n".join(failures)
    assert control_plane.get_json("rltj", "-n", dry_run.namespace)["items"] == []


def _model_verdict(body: dict[str, Any]) -> str | None:
    """None where the model takes the job, else its problems."""
    try:
        parse_job(body, "job.yaml")
    except ManifestError as error:
        return "; ".join(error.problems)
    return None


def test_the_model_and_the_api_server_agree_on_every_edge(dry_run: DryRun) -> None:
    """Values at a bound, each enum value, quantities of every shape: taken or refused, alike by both. Where they part,
    a job would pass `rljob run` and be refused by the cluster, or the reverse."""
    generated = generate(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert len(generated.edges) > 100
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda c: dry_run.create(c.body()), generated.edges))
    verdicts = [(edge, _model_verdict(edge.body()), answer) for edge, answer in zip(generated.edges, answers, strict=True)]
    assert {model is None for _, model, _ in verdicts} == {True, False}  # some taken, some refused: the probes work
    disagreements = [
        f"{edge.id}: the model {'takes it' if model is None else 'refuses it (' + model[:200] + ')'}, the API server "
        + ("takes it" if status == 201 else f"refuses it ({body.get('message', '')[:200]})")
        for edge, model, (status, body, _) in verdicts
        if (model is None) != (status == 201)
    ]
    assert not disagreements, "\n".join(disagreements)


def test_without_strict_field_validation_an_unknown_field_is_dropped_with_a_warning(dry_run: DryRun) -> None:
    """The unknown-field cases above are refused because kubectl asks for Strict. A client that does not (the
    server's default is Warn) gets its job stored without the field, and a Warning header: the model refuses such a
    job outright, as kubectl does."""
    body = copy.deepcopy(BASES["recipe"])
    body["spec"]["head"]["unknownField"] = "x"
    status, created, warnings = dry_run.create(body, field_validation=None)
    assert status == 201, created.get("message")
    assert "unknownField" not in created["spec"]["head"]
    assert any("unknown field" in w and "spec.head.unknownField" in w for w in warnings), warnings
    status, _, _ = dry_run.create(body, field_validation="Ignore")
    assert status == 201
    assert dry_run.create(body)[0] in (400, 422)
