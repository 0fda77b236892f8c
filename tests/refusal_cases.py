"""Every refusal of an RLTrainingJob, generated from the CRD's own schema.

tests/invalid_manifests.py holds what someone thought of; this module walks the generated CRD's openAPIV3Schema and
makes one invalid job per constraint it finds there: a bound, a length, an item or key count, an enum, a pattern, a
format, a type, a required field, an unknown field, and every CEL rule. A constraint the CRD gains later (a new
bound, enum or pattern) gets its case with no edit here. What no generator can derive from the schema is reported as a
problem instead of being skipped, so that the unit test fails and names it: a CEL rule (a value that breaks an
arbitrary expression cannot be invented: BREAKERS holds one mutation per rule), a schema keyword the walker does not
know, a field that no base job has.

Beside the refusals, it makes edges: values at each bound, each enum value, quantities of every shape
(INT_OR_STRING_PROBES). Whether each is valid is not the point; the model and the API server must judge it alike.

The cases start from maximal valid jobs (BASES): every optional object and array present, so that a constraint deep
inside one (a port's protocol, a toleration's tolerationSeconds) has something to violate. There are two because some
fields exclude each other: stop needs a recipe and source a script; claimName excludes size.

Not walked: apiVersion and kind (they route the request), metadata (the API server validates ObjectMeta itself; the
CRD may only type metadata.name, whose rules sit on the root and are in BREAKERS) and status (the status subresource
drops it on create, so no refusal there can reach the API server through a create).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rljob.api.constants import API_VERSION, KIND, MAX_JOB_NAME_LENGTH
from tests.builders import DELETE

PathKey = str | int

_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoExecute",
               "tolerationSeconds": 60}
_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}}

#: Valid jobs with every optional field set: the first has a recipe, the second a script.
BASES: dict[str, dict[str, Any]] = {
    "recipe": {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "maximal"},
        "spec": {
            "experiment": "exp-1",
            "image": "registry.example.com/rljob/runtime:0.1.0-cpu",
            "imagePullPolicy": "IfNotPresent",
            "imagePullSecrets": [{"name": "regcred"}],
            "entrypoint": {"recipe": "pong", "args": ["--num-env-runners", "4"]},
            "stop": {"episodeReturnMean": 18.0, "envSteps": 1_000_000, "iterations": 100},
            "pipPackages": ["numpy==2.1"],
            "env": [
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "value"}}},
            ],
            "head": {"gpus": 1, "cpu": "4", "memory": "16Gi", "shmSize": "4Gi", "nodeSelector": {"pool": "gpu"},
                     "tolerations": [_TOLERATION], "affinity": _AFFINITY},
            "workers": {"replicas": 2, "gpus": 0, "cpu": 2, "memory": "4Gi", "shmSize": "1Gi",
                        "nodeSelector": {"pool": "cpu"}, "tolerations": [_TOLERATION], "affinity": _AFFINITY},
            "clusterCoordinationTimeoutSeconds": 600,
            "maxRunDurationSeconds": 3600,
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 60,
            "suspend": False,
            "checkpoint": {"size": "10Gi", "storageClassName": "fast-ssd", "everySeconds": 120, "everyIterations": 10,
                           "keep": 5},
            "network": {"isolation": True, "allowInternetEgress": False, "egress": [
                {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"], "ports": [{"port": 443, "protocol": "TCP"}]}]},
        },
    },
    "script": {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "maximal"},
        "spec": {
            "entrypoint": {"script": "train.py", "args": ["--lr", "0.001"]},
            "source": {"configMap": {"name": "train-code"}},
            "checkpoint": {"claimName": "checkpoints", "everySeconds": 60, "keep": 2},
        },
    },
}

NOT_WALKED = ("apiVersion", "kind", "metadata", "status")
UNKNOWN_FIELD = "unknownField"


@dataclass(frozen=True)
class Case:
    """One invalid job: `base` with the value at `path` replaced by `value` (or removed, for DELETE).

    `field` is where the API server points its refusal (spec.env[0].name); `node` is the object whose rule a CEL case
    breaks (the model reports a rule there, with the rule's fieldPath in its message); `message` is the rule's message,
    which both refusals must carry."""

    kind: str
    base: str
    path: tuple[PathKey, ...]
    value: Any
    field: str
    description: str
    node: str = ""
    message: str | None = None

    @property
    def id(self) -> str:
        return f"{self.kind} {self.field}" + (f" ({self.message[:40]})" if self.message else "")

    def body(self) -> dict[str, Any]:
        """A fresh copy of the invalid job."""
        if not self.path:
            return copy.deepcopy(self.value)
        out = copy.deepcopy(BASES[self.base])
        parent = out
        for key in self.path[:-1]:
            parent = parent[key]
        if self.value is DELETE:
            del parent[self.path[-1]]
        else:
            parent[self.path[-1]] = copy.deepcopy(self.value)
        return out


@dataclass(frozen=True)
class Breaker:
    """How to break one CEL rule. `message` is a prefix of the rule's message; `mutate` gets a copy of the value of the
    node that carries the rule and returns a value that breaks it; `base` names the base job to start from when the
    rule cannot be broken from the first base that has the node."""

    message: str
    mutate: Callable[[Any], Any]
    base: str | None = None


def _with(**changes: Any) -> Callable[[Any], Any]:
    return lambda node: {**node, **changes}


def _without(*keys: str) -> Callable[[Any], Any]:
    return lambda node: {k: v for k, v in node.items() if k not in keys}


def _renamed(name: str) -> Callable[[Any], Any]:
    return lambda job: {**job, "metadata": {**job["metadata"], "name": name}}


#: One mutation per CEL rule of the CRD (but the transition rules, which only an update runs).
BREAKERS: tuple[Breaker, ...] = (
    Breaker("must be a quantity greater than zero", lambda _: "0"),
    Breaker("value must be empty when operator is Exists", _with(operator="Exists")),
    Breaker("an empty key (every taint) needs operator Exists", _without("key")),
    Breaker("tolerationSeconds applies only to effect NoExecute", _with(effect="NoSchedule")),
    Breaker("names starting with RLJOB_ are reserved", _with(name="RLJOB_SPEC")),
    Breaker("names starting with NVIDIA_", _with(name="NVIDIA_VISIBLE_DEVICES")),
    Breaker("set value or valueFrom, not both",
            _with(value="x", valueFrom={"fieldRef": {"fieldPath": "metadata.name"}})),
    Breaker("every nodeSelector key must be a label key", _with(nodeSelector={"bad key": "x"})),
    Breaker("shmSize must be less than memory", lambda node: {**node, "shmSize": node["memory"]}),
    Breaker("set exactly one of recipe or script", _without("recipe", "script")),
    Breaker("set claimName (use an existing claim) or size", _with(claimName="checkpoints")),
    Breaker("storageClassName applies only to a claim the operator creates", _without("size")),
    Breaker("cidr must be a network", _with(cidr="10.0.0.1/8")),
    Breaker("every except entry must be a network", _with(**{"except": ["10.1.0.1/16"]})),
    Breaker("every except entry must be a smaller network inside cidr", _with(**{"except": ["192.168.0.0/16"]})),
    Breaker("with source set, entrypoint.script is a path inside the source directory",
            lambda spec: {**spec, "entrypoint": {**spec["entrypoint"], "script": "/opt/train.py"}}, base="script"),
    Breaker("stop applies to built-in recipes", _with(stop={"iterations": 1}), base="script"),
    Breaker("pipPackages need network egress", lambda spec: {**spec, "network": {**spec["network"], "egress": []}}),
    Breaker("pipPackages entries are requirements", _with(pipPackages=["--index-url=https://mirror.example/simple"])),
    Breaker("source is only used by a script entrypoint", _with(source={"configMap": {"name": "train-code"}})),
    Breaker(f"must be at most {MAX_JOB_NAME_LENGTH} characters", _renamed("a" * (MAX_JOB_NAME_LENGTH + 1))),
    Breaker("must be a DNS-1035 label", _renamed("9lives")),
)

#: Values the API server refuses for a format: the formats the models use (Timestamp's, in status for now).
FORMAT_BREAKERS: dict[str, Any] = {"date-time": "yesterday"}

#: Values of every shape an int-or-string field (a quantity) may get, valid or not: where the model's own parser and
#: the API server's pattern and CEL could part ways. Edges, not refusals: the two must merely agree on each.
INT_OR_STRING_PROBES: tuple[Any, ...] = (
    1, 0, -1, 1.5, "1e3", "1E3", "+1", "1.", ".5", "5e-1", "1E", "1Ei", "1e", "1.5.5", "0.1n", "1e-12", "-0", "0.0",
    "1e1000", "9223372036854775807", "99999999999999999999Ei", "1Ki", "1ki", "1K", "1k", "100u", "1mi", "",
)

#: A value of another type, for each schema type (int-or-string: neither an integer nor a string).
WRONG_TYPE: dict[str, Any] = {
    "string": 12345,
    "integer": "1",
    "number": "1.5",
    "boolean": "true",
    "object": "not-an-object",
    "array": "not-an-array",
    "int-or-string": True,
}

# The keywords the walker reads; any other is a constraint it would miss, so it is reported.
KNOWN_KEYWORDS = frozenset({
    "type", "description", "default", "properties", "required", "items", "additionalProperties", "enum", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
    "minProperties", "maxProperties", "format", "anyOf", "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
})


@dataclass
class Generated:
    """The walk's result: the cases; the edges (values at a bound, or of an unusual shape, that the model and the API
    server must judge alike, whatever the verdict); what could not be generated (each a sentence naming the place);
    and the transition rules (oldSelf) passed over, which only an update evaluates."""

    cases: list[Case] = field(default_factory=list)
    edges: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    transition_rules: list[dict[str, str]] = field(default_factory=list)
    breakers_used: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Instance:
    """Where a schema node occurs in a base job: which base, the concrete path, and the value there."""

    base: str
    path: tuple[PathKey, ...]
    value: Any


def dotted(path: tuple[PathKey, ...]) -> str:
    """A path as the API server and the model write it: spec.env[0].name."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else ("." if out else "") + key
    return out


def generate(schema: dict[str, Any], breakers: tuple[Breaker, ...] = BREAKERS) -> Generated:
    """All cases of `schema` (a CRD version's openAPIV3Schema), from BASES."""
    out = Generated()
    roots = [_Instance(name, (), body) for name, body in BASES.items()]
    _walk(schema, "", roots, out, breakers, top=True)
    for breaker in breakers:
        if breaker.message not in out.breakers_used:
            out.problems.append(f"BREAKERS entry {breaker.message!r} matches no CEL rule of the CRD: remove it")
    return out


def _walk(node: dict[str, Any], where: str, found: list[_Instance], out: Generated, breakers: tuple[Breaker, ...],
          top: bool = False) -> None:
    label = where or "(root)"
    unknown = sorted(set(node) - KNOWN_KEYWORDS)
    if unknown:
        out.problems.append(f"{label}: schema keywords {unknown} have no case generator (extend tests/refusal_cases.py)")
    if not found:
        out.problems.append(f"{label}: no base job has this field, so none of its constraints is tested: add it to "
                            "BASES in tests/refusal_cases.py")
        return
    first = found[0]
    if not top:
        out.cases.extend(_scalar_cases(node, first, out.problems))
        out.edges.extend(_edge_cases(node, first))
    out.cases.extend(_rule_cases(node, found, out, breakers))
    for prop in node.get("required", []):
        path = (*first.path, prop)
        out.cases.append(Case("required", first.base, path, DELETE, dotted(path), f"{dotted(path)} removed; it is required",
                              node=dotted(path)))
    properties = node.get("properties", {})
    if properties and not node.get("x-kubernetes-preserve-unknown-fields"):
        path = (*first.path, UNKNOWN_FIELD)
        out.cases.append(Case("unknown-field", first.base, path, "x", dotted(path),
                              f"{dotted(path)}: a field the schema does not have", node=dotted(path)))
    for prop, sub in properties.items():
        if top and prop in NOT_WALKED:
            continue
        inside = [_Instance(i.base, (*i.path, prop), i.value[prop]) for i in found
                  if isinstance(i.value, dict) and prop in i.value]
        _walk(sub, f"{where}.{prop}" if where else prop, inside, out, breakers)
    if "items" in node:
        inside = [_Instance(i.base, (*i.path, n), item) for i in found for n, item in enumerate(i.value)]
        _walk(node["items"], f"{where}[]", inside, out, breakers)
    if isinstance(node.get("additionalProperties"), dict):
        inside = [_Instance(i.base, (*i.path, k), v) for i in found for k, v in i.value.items()]
        _walk(node["additionalProperties"], f"{where}{{}}", inside, out, breakers)


def _type_of(node: dict[str, Any]) -> str | None:
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    return node.get("type")


def _scalar_cases(node: dict[str, Any], at: _Instance, problems: list[str]) -> Iterator[Case]:
    """The node's own constraints: type, bounds, lengths, counts, enum, pattern, format; what it cannot break goes to
    `problems`."""
    f, value = dotted(at.path), at.value

    def case(kind: str, bad: Any, description: str) -> Case:
        return Case(kind, at.base, at.path, bad, f, f"{f}: {description}", node=f)

    kind = _type_of(node)
    if "anyOf" in node and kind != "int-or-string":
        problems.append(f"{f}: anyOf other than int-or-string has no case generator")
    if kind is not None:
        yield case("type", WRONG_TYPE[kind], f"a {type(WRONG_TYPE[kind]).__name__} where the schema wants {kind}")
    for bound, step in (("minimum", -1), ("maximum", 1)):
        exclusive = node.get(f"exclusive{bound[0].upper()}{bound[1:]}")
        if exclusive is not None and not isinstance(exclusive, bool):
            problems.append(f"{f}: a numeric exclusive{bound[1:]} is JSON Schema 2020, not OpenAPI v3 (a boolean beside "
                            f"{bound}): the API server refuses such a CRD")
        if bound in node:
            limit = node[bound]
            bad = limit if exclusive is True else limit + step
            yield case(bound, bad, f"{bad} beyond the {'exclusive ' if exclusive else ''}{bound} {limit}")
    pattern = node.get("pattern")
    if "minLength" in node and node["minLength"] > 0:
        yield case("minLength", str(value)[: node["minLength"] - 1], f"shorter than {node['minLength']} characters")
    if "maxLength" in node:
        limit = node["maxLength"]
        yield case("maxLength", _long_string(str(value), limit + 1, pattern), f"longer than {limit} characters")
    if "minItems" in node and node["minItems"] > 0:
        yield case("minItems", list(value)[: node["minItems"] - 1], f"fewer than {node['minItems']} items")
    if "maxItems" in node:
        limit = node["maxItems"]
        yield case("maxItems", [copy.deepcopy(value[n % len(value)]) for n in range(limit + 1)],
                   f"more than {limit} items")
    if "minProperties" in node and node["minProperties"] > 0:
        keep = list(value.items())[: node["minProperties"] - 1]
        yield case("minProperties", dict(keep), f"fewer than {node['minProperties']} keys")
    if "maxProperties" in node:
        limit = node["maxProperties"]
        key, item = next(iter(value.items()))
        yield case("maxProperties", {f"{key}{n}": item for n in range(limit + 1)}, f"more than {limit} keys")
    if "enum" in node:
        choices = node["enum"]
        near = str(choices[0]).swapcase()
        bad = near if near not in choices else f"{choices[0]}-not-in-enum"
        yield case("enum", bad, f"{bad!r}, not one of {choices}")
    if pattern is not None:
        misses = _off_pattern(str(value), pattern, node.get("maxLength"))
        if not misses:
            problems.append(f"{f}: no candidate value breaks the pattern {pattern} (extend _off_pattern)")
        for kind, bad in misses:
            yield case(kind, bad, f"{bad!r} does not match {pattern}")
    if "format" in node:
        fmt = node["format"]
        if fmt not in FORMAT_BREAKERS:
            problems.append(f"{f}: no value known to break format {fmt!r} (add one to FORMAT_BREAKERS)")
        else:
            yield case("format", FORMAT_BREAKERS[fmt], f"not a {fmt}")


def _edge_cases(node: dict[str, Any], at: _Instance) -> Iterator[Case]:
    """Values at the node's bounds (valid, or so they should be), each other enum value, and for an int-or-string
    every shape in INT_OR_STRING_PROBES."""
    f, value = dotted(at.path), at.value

    def edge(kind: str, good: Any, description: str) -> Case:
        return Case(kind, at.base, at.path, good, f, f"{f}: {description}", node=f)

    for bound in ("minimum", "maximum"):
        if bound in node and not node.get(f"exclusive{bound[0].upper()}{bound[1:]}"):
            yield edge(f"at-{bound}", node[bound], f"exactly the {bound} {node[bound]}")
    if "maxLength" in node:
        limit = node["maxLength"]
        yield edge("at-maxLength", _long_string(str(value), limit, node.get("pattern")), f"{limit} characters")
    if "maxItems" in node:
        limit = node["maxItems"]
        yield edge("at-maxItems", [copy.deepcopy(value[n % len(value)]) for n in range(limit)], f"{limit} items")
    if "maxProperties" in node:
        limit = node["maxProperties"]
        key, item = next(iter(value.items()))
        yield edge("at-maxProperties", {f"{key}{n}": item for n in range(limit)}, f"{limit} keys")
    for choice in node.get("enum", []):
        if choice != value:
            yield edge(f"enum={choice}", choice, f"the enum value {choice!r}")
    if _type_of(node) == "int-or-string":
        for probe in INT_OR_STRING_PROBES:
            yield edge(f"probe={probe!r}", probe, f"{probe!r}")


def _long_string(value: str, length: int, pattern: str | None) -> str:
    """A string of `length` characters that still matches `pattern` where one of a few shapes does, so that the case
    breaks the length alone: the valid value padded at its front or end, or a run of one letter or digit."""
    seed = value or "a"
    shapes = [seed[0] * (length - len(seed)) + seed, seed + seed[-1] * (length - len(seed)), "a" * length, "1" * length]
    fits = [s for s in shapes if len(s) == length and (pattern is None or server_matches(pattern, s))]
    return fits[0] if fits else "a" * length


def server_matches(pattern: str, value: str) -> bool:
    """Whether the API server's regexp engine (Go's RE2) finds `pattern` in `value`: its $ matches at the very end only,
    where Python's also matches before a final newline."""
    return re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), value) is not None


def _off_pattern(value: str, pattern: str, max_length: int | None) -> list[tuple[str, str]]:
    """Near misses: the valid value with a space after or before it (what a hand-edited YAML gets wrong), else a string
    with a space and punctuation in it; and the valid value with a newline after it (a YAML block scalar's), which
    Python's $ lets through where the API server's does not."""
    out: list[tuple[str, str]] = []
    for candidate in (f"{value} ", f" {value}", "not valid!", "-"):
        if (max_length is None or len(candidate) <= max_length) and not server_matches(pattern, candidate):
            out.append(("pattern", candidate))
            break
    newline = f"{value}\n"
    if (max_length is None or len(newline) <= max_length) and not server_matches(pattern, newline):
        out.append(("pattern-newline", newline))
    return out


def _rule_cases(node: dict[str, Any], found: list[_Instance], out: Generated,
                breakers: tuple[Breaker, ...]) -> Iterator[Case]:
    for rule in node.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            out.transition_rules.append({**rule, "node": dotted(found[0].path)})
            continue
        matches = [b for b in breakers if rule["message"].startswith(b.message)]
        label = dotted(found[0].path) or "(root)"
        if len(matches) != 1:
            why = "no BREAKERS entry" if not matches else f"{len(matches)} BREAKERS entries"
            out.problems.append(f"{label}: CEL rule {rule['rule']!r} ({rule['message']!r}) has {why} in "
                                "tests/refusal_cases.py: add one mutation that breaks it")
            continue
        breaker = matches[0]
        out.breakers_used.add(breaker.message)
        at = next((i for i in found if breaker.base in (None, i.base)), None)
        if at is None:
            out.problems.append(f"{label}: BREAKERS entry {breaker.message!r} wants base {breaker.base!r}, "
                                "which lacks this node")
            continue
        node_path = dotted(at.path)
        target = f"{node_path}{rule.get('fieldPath', '')}".lstrip(".")
        yield Case("cel", at.base, at.path, breaker.mutate(copy.deepcopy(at.value)), target,
                   f"{target}: breaks {rule['rule']}", node=node_path, message=rule["message"])
