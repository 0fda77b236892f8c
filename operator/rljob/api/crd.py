"""Generates the CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema with $refs, nullable anyOfs and `additionalProperties: false`; the API
server wants a structural OpenAPI v3 schema: everything inlined, every node typed, no nulls. This
module does that translation and attaches each model's `rules` as x-kubernetes-validations.
"""
from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from . import models
from .base import Model, Rule
from .constants import (
    API_VERSION,
    CATEGORIES,
    CRD_NAME,
    GROUP,
    KIND,
    LIST_KIND,
    MAX_JOB_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the job is in its life."},
    {"name": "Workers", "type": "string", "jsonPath": ".status.workers", "description": "Ready/desired worker pods."},
    {"name": "Iteration", "type": "integer", "jsonPath": ".status.progress.iteration", "description": "Training iterations done."},
    {"name": "Reward", "type": "number", "jsonPath": ".status.progress.episodeReturnMean", "description": "Mean episode return."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1, "description": "Why the job is in this phase."},
    {"name": "Experiment", "type": "string", "jsonPath": ".spec.experiment", "priority": 1},
    {"name": "Started", "type": "date", "jsonPath": ".status.startTime", "priority": 1},
    {"name": "Evaluation", "type": "number", "jsonPath": ".status.progress.evaluation.meanReturn", "priority": 1,
     "description": "Mean return of the greedy evaluation's games after a finished run."},
]

# `kubectl scale rltj NAME --replicas N` and autoscalers: the workers are what scales (the head is one pod).
SCALE: dict[str, str] = {
    "specReplicasPath": ".spec.workers.replicas",
    "statusReplicasPath": ".status.readyWorkers",
    "labelSelectorPath": ".status.workerSelector",
}

ROOT_RULES: tuple[Rule, ...] = (
    Rule(
        cel=f"self.metadata.name.size() <= {MAX_JOB_NAME_LENGTH}",
        message=f"must be at most {MAX_JOB_NAME_LENGTH} characters so that every child name stays valid",
        check=lambda m: True,  # checked by models.ObjectMeta
        field_path=".metadata.name",
    ),
    Rule(
        cel=f"self.metadata.name.matches('{models.NAME_PATTERN}')",
        message="must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter): Service names derive from it",
        check=lambda m: True,
        field_path=".metadata.name",
    ),
)


def _model_classes(root: type[BaseModel]) -> dict[str, type[Model]]:
    """Maps JSON-schema titles to classes so each $def can find its rules."""
    found: dict[str, type[Model]] = {}

    def visit(cls: type[BaseModel]) -> None:
        if cls.__name__ in found:
            return
        found[cls.__name__] = cls  # type: ignore[assignment]
        for field in cls.model_fields.values():
            for arg in _walk_types(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    visit(arg)

    visit(root)
    return found


def _walk_types(tp: Any) -> list[Any]:
    out = [tp]
    for arg in getattr(tp, "__args__", ()) or ():
        out.extend(_walk_types(arg))
    return out


class _Converter:
    def __init__(self, schema: dict[str, Any], classes: dict[str, type[Model]]) -> None:
        self.defs = schema.get("$defs", {})
        self.classes = classes

    def convert(self, node: dict[str, Any]) -> dict[str, Any]:
        node = dict(node)
        description = node.pop("description", None)
        default = node.pop("default", None)
        if "$ref" in node:
            name = node.pop("$ref").split("/")[-1]
            out = self.convert(self.defs[name])
            out.update({k: v for k, v in node.items() if k not in ("title",)})
        elif "allOf" in node and len(node["allOf"]) == 1:
            out = self.convert(node["allOf"][0])
        elif "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            out = self.convert(branches[0])
        else:
            out = self._plain(node)
        if description:
            out["description"] = " ".join(description.split())
        if default is not None:
            out["default"] = default
        return _ordered(out)

    def _plain(self, node: dict[str, Any]) -> dict[str, Any]:
        title = node.get("title")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "additionalProperties", "properties", "required", "items", "const", "$defs"):
                continue
            out[key] = value
        if "const" in node:
            out["enum"] = [node["const"]]
            out.setdefault("type", "string")
        if "enum" in out:
            out.setdefault("type", "string")
        if node.get("type") == "object" and "properties" in node:
            out["properties"] = {}
            cls = self.classes.get(title or "")
            for prop, sub in node["properties"].items():
                converted = self.convert(sub)
                if cls is not None:
                    field = _field_by_alias(cls, prop)
                    if field is not None and field.default_factory is not None and converted.get("type") == "object":
                        factory_value = field.default_factory()  # type: ignore[call-arg]
                        if isinstance(factory_value, BaseModel):
                            # The full default, not {}: the API server checks the default against the
                            # object's own CEL rules, before nested defaults would have filled it in.
                            converted["default"] = factory_value.model_dump(by_alias=True, exclude_none=True, mode="json")
                out["properties"][prop] = converted
            if node.get("required"):
                out["required"] = list(node["required"])
            if cls is not None and cls.rules:
                out["x-kubernetes-validations"] = [r.crd() for r in cls.rules]
            if cls is not None and cls.__doc__ and "description" not in node:
                out["description"] = " ".join(cls.__doc__.split())
        elif node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self.convert(node["additionalProperties"])
        elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
        if node.get("type") == "array":
            out["items"] = self.convert(node.get("items", {}))
        return out


_FIRST = ("type", "description", "default")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """type and description first: the generated YAML is read by people too."""
    return {**{k: node[k] for k in _FIRST if k in node}, **{k: v for k, v in node.items() if k not in _FIRST}}


def _field_by_alias(cls: type[BaseModel], alias: str) -> Any:
    for name, field in cls.model_fields.items():
        if (field.alias or name) == alias:
            return field
    return None


def _section(cls: type[Model]) -> dict[str, Any]:
    schema = cls.model_json_schema(by_alias=True, mode="validation")
    classes = _model_classes(cls)
    return _Converter(schema, classes).convert(schema)


def _unchanged(path: str) -> str:
    """Absent before and after, or present and equal: an absent field (the usual case) costs two lookups."""
    return f"(!has(self.{path}) && !has(oldSelf.{path})) || (has(self.{path}) && has(oldSelf.{path}) && self.{path} == oldSelf.{path})"


# spec.suspend has a default, so it is always there: no has() needed.
SUSPENDED_CEL = "self.suspend || oldSelf.suspend"
# The rule of a field that is always there (required, or defaulted), placed on the field itself.
FIELD_UNCHANGED = "self == oldSelf"


def _always_present(section: dict[str, Any], path: str) -> bool:
    """Required or defaulted at every step of `path`: the API server defaults old and new objects alike, so the field
    is never added or removed by an update."""
    node = section
    for name in path.split("."):
        if name not in node.get("required", []) and "default" not in node["properties"][name]:
            return False
        node = node["properties"][name]
    return True


def mutability_rules() -> list[dict[str, str]]:
    """Transition rules (oldSelf): one per field, so a refused edit names its field.

    Fields in models.MUTABLE_FIELDS change freely; the fields of models.MUTABLE_WHILE_SUSPENDED change
    while the job is suspended before or after the edit (as batch/v1 Job allows for queues); all others
    never. A field that may be absent has its rule on the spec (with fieldPath), which also sees it added or
    removed; one that is always there has `self == oldSelf` on the field itself. Every update evaluates every rule,
    a status write included, and each field a rule on the spec reads is a lookup in the spec's schema: rules
    with fewer lookups keep the API server's cost per status write down.
    """
    spec = _section(models.JobSpec)
    rules: list[dict[str, str]] = []
    for name, field in models.JobSpec.model_fields.items():
        wire = field.alias or name
        if wire in models.MUTABLE_FIELDS:
            continue
        if wire in models.MUTABLE_WHILE_SUSPENDED:
            annotation = field.annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
            for sub_name, sub in annotation.model_fields.items():
                path = f"{wire}.{sub.alias or sub_name}"
                if path in models.MUTABLE_FIELDS:
                    continue
                same = f"self.{path} == oldSelf.{path}" if _always_present(spec, path) else _unchanged(path)
                rules.append({
                    # The comparison first: on nearly every update (a status write) the field is unchanged, and
                    # the rule ends there, without looking spec.suspend up twice in the spec's schema.
                    "rule": f"({same}) || {SUSPENDED_CEL}",
                    "message": "field can change only while the job is suspended (spec.suspend: true); "
                    "the next attempt's pods get the new value",
                    "fieldPath": f".{path}",
                })
            continue
        rules.append({
            "rule": FIELD_UNCHANGED if _always_present(spec, wire) else _unchanged(wire),
            "message": "field is immutable after creation (changeable: "
            + ", ".join(f"spec.{f}" for f in models.MUTABLE_FIELDS)
            + "; head and workers while suspended); delete and re-create the job to change it",
            "fieldPath": f".{wire}",
        })
    return rules


def openapi_schema() -> dict[str, Any]:
    spec = _section(models.JobSpec)
    on_spec = []
    for rule in mutability_rules():
        if rule["rule"] == FIELD_UNCHANGED:  # on the field: its path is the rule's own
            field = spec["properties"][rule["fieldPath"].lstrip(".")]
            field["x-kubernetes-validations"] = [*field.get("x-kubernetes-validations", []),
                                                 {k: v for k, v in rule.items() if k != "fieldPath"}]
        else:
            on_spec.append(rule)
    spec["x-kubernetes-validations"] = [*spec.get("x-kubernetes-validations", []), *on_spec]
    status = _section(models.JobStatus)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "type": "object",
        "description": " ".join((models.RLTrainingJob.__doc__ or "").split()),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "rljob.dev/v1alpha1"},
            "kind": {"type": "string", "description": "RLTrainingJob"},
            # The name's type only (the one field a CRD may describe here): so that its rules' errors point at it.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [r.crd() for r in ROOT_RULES],
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "rljob", "app.kubernetes.io/part-of": "rljob"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}, "scale": SCALE},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = f"# Generated by `rljob crd` from rljob.api.models ({API_VERSION}). Do not edit by hand.\n"
    return header + yaml.dump(crd(), Dumper=_NoAliasDumper, sort_keys=False, width=120)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas in full: anchors are legal YAML but unreadable in a CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
