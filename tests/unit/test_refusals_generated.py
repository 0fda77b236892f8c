"""Every refusal the CRD can make, made by the model too: cases generated from the CRD's schema (tests.refusal_cases).

The API server refuses these (tests/integration/operator/test_refusals_generated.py); `rljob run` and `rljob render`
validate with the model alone, so a case the model accepted would pass locally and then be refused by the cluster (or,
the other way round, a job the cluster takes would be refused locally). Besides, the model has checks of its own
(validators) beside what it writes into the schema; each needs a case here, and a new one without a case fails.
"""
from __future__ import annotations

import typing
from collections import Counter
from typing import Any

import pytest
from pydantic import AfterValidator, BaseModel, BeforeValidator, PlainValidator, WrapValidator

from rljob.api import models
from rljob.api.crd import crd, mutability_rules
from rljob.api.manifest import ManifestError, parse_job
from tests import refusal_cases
from tests.refusal_cases import BASES, Case

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
GENERATED = refusal_cases.generate(SCHEMA)


def _problems(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_job(body, "job.yaml")
    return info.value.problems


def _names_field(line: str, case: Case) -> bool:
    """Whether the model's problem `line` is about `case`: a line of the field itself (spec.head.gpus: ...), or the line
    of the object that carries the broken CEL rule (spec.head: shmSize: ...), with the rule's message."""

    def about(prefix: str) -> bool:
        return line.startswith((f"{prefix}:", f"{prefix}.", f"{prefix}["))

    return about(case.field) or (case.message is not None and about(case.node) and case.message in line)


def test_the_generator_covers_the_whole_schema() -> None:
    """No CEL rule without a mutation, no schema keyword the walker skips, no field that no base job has: each would
    be a constraint that nothing tests."""
    assert GENERATED.problems == []


def test_the_only_rules_passed_over_are_the_update_rules() -> None:
    """Rules on oldSelf run on updates alone (tests/integration/operator/test_edits.py sends those): they are the
    generated mutability rules, nothing hand-written."""
    generated = {(r["rule"], r["message"]) for r in mutability_rules()}
    assert GENERATED.transition_rules
    for rule in GENERATED.transition_rules:
        assert (rule["rule"], rule["message"]) in generated, rule


def test_cases_are_many_distinct_and_of_every_kind() -> None:
    ids = [c.id for c in GENERATED.cases]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    kinds = Counter(c.kind for c in GENERATED.cases)
    for kind in ("type", "minimum", "maximum", "minLength", "maxLength", "maxItems", "maxProperties", "enum",
                 "pattern", "required", "unknown-field", "cel"):
        assert kinds[kind] > 0, kind


@pytest.mark.parametrize("wanted", [
    ("cel", "spec.stop"),  # stop with a script
    ("cel", "spec.workers.memory"),  # zero memory
    ("cel", "spec.env[0]"),  # value with valueFrom
    ("cel", "spec.source"),  # source with a recipe
    ("cel", "spec.checkpoint.storageClassName"),  # storageClassName without size
    ("minimum", "spec.checkpoint.everySeconds"),
    ("minimum", "spec.checkpoint.keep"),
    ("maximum", "spec.workers.replicas"),
    ("maxItems", "spec.env"),
    ("maxLength", "spec.env[0].value"),
    ("enum", "spec.network.egress[0].ports[0].protocol"),
    ("type", "spec.head.affinity"),
])
def test_the_walk_reaches_deep_fields(wanted: tuple[str, str]) -> None:
    """A few cases named by hand, so that a walk that silently stopped short (a base lost a field) is seen."""
    assert wanted in {(c.kind, c.field) for c in GENERATED.cases}


@pytest.mark.parametrize("name", sorted(BASES))
def test_each_base_job_is_valid(name: str) -> None:
    """Otherwise every case would be refused for the base's fault, and prove nothing."""
    assert parse_job(BASES[name], "job.yaml").name == "maximal"


@pytest.mark.parametrize("case", GENERATED.cases, ids=[c.id for c in GENERATED.cases])
def test_the_model_refuses_each_generated_case(case: Case) -> None:
    problems = _problems(case.body())
    assert any(_names_field(line, case) for line in problems), f"{case.description}; the model said: {problems}"


# ── the model's checks beside the schema ─────────────────────────────────────────────────────────────────


def _validators(cls: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """'Class.field: function' for every validator function of `cls` and the models below it (Annotated
    Before/After/Plain/Wrap validators, @field_validator, @model_validator)."""
    seen = set() if seen is None else seen
    if cls in seen:
        return set()
    seen.add(cls)
    found: set[str] = set()
    decorators = cls.__pydantic_decorators__
    for dec in decorators.field_validators.values():
        found |= {f"{cls.__name__}.{name}: {dec.func.__name__}" for name in dec.info.fields}
    for dec in decorators.model_validators.values():
        owner = dec.func.__qualname__.split(".")[0]
        found.add(f"{owner}: {dec.func.__name__}")
    for name, info in cls.model_fields.items():
        wire = info.alias or name
        metadata: list[Any] = list(info.metadata)
        stack: list[Any] = [info.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                found |= _validators(tp, seen)
            metadata.extend(getattr(tp, "__metadata__", ()))
            stack.extend(typing.get_args(tp))
        for meta in metadata:
            if isinstance(meta, (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)):
                found.add(f"{cls.__name__}.{wire}: {meta.func.__name__}")  # type: ignore[union-attr]
    return found


_ALL_RULES = "every Rule's check: the CEL cases above break each rule, which the model runs too"

#: The model's own checks and where a case breaks each: a (base, path, value) set on a base job, or _ALL_RULES.
VALIDATOR_CASES: dict[str, Any] = {
    "Model: _check_rules": _ALL_RULES,
    "ObjectMeta.name: _name": ("recipe", ("metadata", "name"), "Upper-Case"),
    "EgressRule.cidr: <lambda>": ("recipe", ("spec", "network", "egress", 0, "cidr"), "10.0.0.0/40"),
    "EgressRule.except: <lambda>": ("recipe", ("spec", "network", "egress", 0, "except", 0), "10.1.0.0/ab"),
    **{f"{owner}.{name}: _quantity_text": ("recipe", ("spec", part, name), value)
       for owner, part in (("HeadSpec", "head"), ("WorkersSpec", "workers"))
       for name, value in (("cpu", "-500m"), ("memory", 0), ("shmSize", [1]))},
    "CheckpointSpec.size: _quantity_text": ("recipe", ("spec", "checkpoint", "size"), "0.0"),
}


def test_every_validator_of_the_model_has_a_case() -> None:
    """A validator added to models.py must get a line in VALIDATOR_CASES (and one removed, lose it)."""
    assert _validators(models.RLTrainingJob) == set(VALIDATOR_CASES)


@pytest.mark.parametrize("key", sorted(k for k, v in VALIDATOR_CASES.items() if v is not _ALL_RULES))
def test_the_model_refuses_each_validator_case(key: str) -> None:
    base, path, value = VALIDATOR_CASES[key]
    case = Case("validator", base, path, value, refusal_cases.dotted(path), key, node=refusal_cases.dotted(path))
    problems = _problems(case.body())
    assert any(_names_field(line, case) for line in problems), problems


def test_every_rule_of_the_model_is_in_the_crd_and_broken_by_a_case() -> None:
    """What _ALL_RULES stands for: each Rule of each model class reaches the CRD and a generated case breaks it."""
    broken = {c.message for c in GENERATED.cases if c.kind == "cel"}
    stack: list[type[BaseModel]] = [models.RLTrainingJob]
    seen: set[type[BaseModel]] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for rule in getattr(cls, "rules", ()):
            assert rule.message in broken, f"{cls.__name__}: {rule.message}"
        for info in cls.model_fields.values():
            pending: list[Any] = [info.annotation]
            while pending:
                tp = pending.pop()
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    stack.append(tp)
                pending.extend(typing.get_args(tp))
    assert models.JobSpec in seen and models.Toleration in seen


@pytest.mark.parametrize("text", [" 4", "4 ", "4\n", "8Gi\n", "\t500m"])
def test_a_quantity_with_whitespace_is_no_quantity(text: str) -> None:
    """As for the API server's pattern; Python's $ alone would let "4\\n" through, and stripping would take " 4"."""
    from rljob.api.quantity import parse_quantity

    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(text)
    assert parse_quantity(text.strip()) > 0


def test_a_final_capital_e_is_the_exa_suffix() -> None:
    """Kubernetes reads 1E as 10**18 (the API server takes it); an exponent always ends in a digit."""
    from rljob.api.quantity import parse_quantity

    assert parse_quantity("1E") == 10**18
    assert parse_quantity("2E3") == 2000


@pytest.mark.parametrize("value", [1.5, 2.0])
def test_an_unquoted_fraction_is_no_quantity(value: float) -> None:
    """The schema's int-or-string takes a JSON integer or string; the API server refuses 1.5 (and 2.0) unquoted."""
    body = refusal_cases.Case("float", "recipe", ("spec", "head", "cpu"), value, "spec.head.cpu", "").body()
    assert any(line.startswith("spec.head.cpu: ") for line in _problems(body))
    body["spec"]["head"]["cpu"] = str(value)
    assert parse_job(body, "job.yaml").spec.head.cpu == str(value)
