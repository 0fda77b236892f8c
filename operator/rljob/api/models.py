"""The RLTrainingJob API: spec and status as pydantic models, the single source of truth.

The CRD (crds/rltrainingjobs.rljob.dev.yaml) is generated from these classes by `rljob crd`; every
description, default, bound and cross-field rule below reaches `kubectl explain` and the API server.
"""
from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, GetPydanticSchema, ValidationError, WithJsonSchema, field_validator
from pydantic_core import core_schema

from .base import Model, Rule
from .constants import (
    API_VERSION,
    KIND,
    MAX_JOB_NAME_LENGTH,
    MAX_PROGRESS_BYTES,
    RETURN_WINDOW_EPISODES,
    TERMINATION_PROGRESS_KEY,
    USER_ENV,
)
from .quantity import QUANTITY_PATTERN, parse_quantity
from .vocabulary import ConditionType, Phase, Reason, known, words

RECIPES = ("pong", "cartpole")
PHASES = tuple(p.value for p in Phase)
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A DNS-1123 subdomain: names of Secrets, ConfigMaps, PersistentVolumeClaims and StorageClasses.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label key (and a taint key): an optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_KEY_MAX_LENGTH = 253 + 1 + 63
# An image reference as container runtimes parse it: [registry[:port]/]path[:tag][@digest]; empty means the default.
_IMAGE_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^(([a-zA-Z0-9.-]+(:[0-9]+)?/)?{_IMAGE_COMPONENT}(/{_IMAGE_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?)?$"
)


def _quantity_text(value: Any) -> str:
    # An integer or a string, as the schema's int-or-string: the API server refuses an unquoted 1.5 (a JSON number).
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a quantity such as 2, 500m, 8Gi (a fraction in quotes: \"1.5\")")
    text = str(value)
    if parse_quantity(text) <= 0:
        raise ValueError(f"{text} must be greater than zero")
    return text


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            # The pattern alone lets "0", "-3", -1 and "-1Gi" through: a pod of zero CPUs is no pod.
            "x-kubernetes-validations": [
                {
                    "rule": "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
                    "message": "must be a quantity greater than zero, such as 2, 500m or 8Gi",
                }
            ],
        }
    ),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]

PreservedObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


def _lt(a: str, b: str) -> bool:
    return parse_quantity(a) < parse_quantity(b)


def _is_label_key(key: str) -> bool:
    import re

    return len(key) <= LABEL_KEY_MAX_LENGTH and re.match(LABEL_KEY_PATTERN, key) is not None


class Toleration(Model):
    """A Kubernetes toleration, as in a pod spec."""

    key: str | None = Field(
        None, max_length=LABEL_KEY_MAX_LENGTH, pattern=rf"^(|{LABEL_KEY_PATTERN[1:-1]})$",
        description="Taint key the toleration applies to; empty with operator Exists matches all keys.",
    )
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists matches any value; Equal matches `value`.")
    value: LabelValue | None = Field(None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )

    rules = (
        Rule(
            cel="!(has(self.operator) && self.operator == 'Exists' && has(self.value) && self.value != '')",
            message="value must be empty when operator is Exists",
            check=lambda m: not (m.operator == "Exists" and m.value),
            field_path=".value",
        ),
        Rule(
            cel="(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            message="an empty key (every taint) needs operator Exists",
            check=lambda m: bool(m.key) or m.operator == "Exists",
            field_path=".operator",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds applies only to effect NoExecute",
            check=lambda m: m.toleration_seconds is None or m.effect == "NoExecute",
            field_path=".tolerationSeconds",
        ),
    )


class LocalObjectReference(Model):
    """A reference to an object in the job's namespace."""

    name: DnsSubdomain = Field(..., description="Name of the referenced object (a DNS subdomain: lowercase letters, digits, '-' and '.').")


class EnvVar(Model):
    """An environment variable for the driver and the Ray processes (head and workers)."""

    name: str = Field(..., min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name.")
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: PreservedObject | None = Field(
        None, description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, ...)."
    )

    rules = (
        Rule(
            cel="!self.name.startsWith('RLJOB_') || self.name in [" + ", ".join(f"'{n}'" for n in USER_ENV) + "]",
            message=f"names starting with RLJOB_ are reserved for the operator, but for {' and '.join(USER_ENV)} "
            "(the evaluation after training)",
            check=lambda m: not m.name.startswith("RLJOB_") or m.name in USER_ENV,
            field_path=".name",
        ),
        Rule(
            cel="!self.name.startsWith('NVIDIA_')",
            message="names starting with NVIDIA_ are read by the NVIDIA container runtime (NVIDIA_VISIBLE_DEVICES=all "
            "would show a pod every GPU of its node): a pod sees the GPUs it requests (head.gpus), set by the operator",
            check=lambda m: not m.name.startswith("NVIDIA_"),
            field_path=".name",
        ),
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="set value or valueFrom, not both",
            check=lambda m: not (m.value is not None and m.value_from is not None),
        ),
    )


# /dev/shm unless set; named in the message that refuses a pod too small for it.
HEAD_SHM_DEFAULT, WORKER_SHM_DEFAULT = "2Gi", "1Gi"


class HeadSpec(Model):
    """The Ray head pod: it runs the GCS and the training driver (and the learner, on its GPUs)."""

    gpus: int = Field(0, ge=0, le=16, description="NVIDIA GPUs for the head (nvidia.com/gpu limit); the learner trains on them. 0 trains on the CPU.")
    cpu: Quantity = Field("2", description="CPU for the pod, as request and limit (Guaranteed QoS); Ray is told the same number.")
    memory: Quantity = Field("8Gi", description="Memory for the pod, as request and limit. /dev/shm counts against it.")
    shm_size: Quantity = Field(HEAD_SHM_DEFAULT, description="Size of /dev/shm (memory-backed); Ray's object store is sized inside it. Must be less than memory.")
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=64, description="Node labels the pod must match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Taints the pod tolerates, e.g. a GPU node pool's.")
    affinity: PreservedObject | None = Field(None, description="A Kubernetes Affinity (node, pod and anti-affinity), as in a pod spec.")

    rules = (
        Rule(
            cel=f"!has(self.nodeSelector) || self.nodeSelector.all(k, size(k) <= {LABEL_KEY_MAX_LENGTH} && k.matches(r'{LABEL_KEY_PATTERN}'))",
            message="every nodeSelector key must be a label key, such as kubernetes.io/arch or pool",
            check=lambda m: all(_is_label_key(k) for k in m.node_selector),
            field_path=".nodeSelector",
        ),
        Rule(
            cel="!isQuantity(string(self.shmSize)) || !isQuantity(string(self.memory)) || "
            "quantity(string(self.shmSize)).isLessThan(quantity(string(self.memory)))",
            message="shmSize must be less than memory: /dev/shm is charged to the pod's memory (unless set, shmSize is "
            f"{HEAD_SHM_DEFAULT} on the head and {WORKER_SHM_DEFAULT} on a worker: give a small pod a smaller one)",
            check=lambda m: _lt(m.shm_size, m.memory),
            field_path=".shmSize",
        ),
    )


class WorkersSpec(HeadSpec):
    """The Ray worker pods (a StatefulSet): they run the environment runners that collect experience."""

    replicas: int = Field(2, ge=0, le=512, description="Number of worker pods. Each joins the head's Ray cluster; 0 runs everything on the head.")
    cpu: Quantity = Field("2", description="CPU for each worker pod, as request and limit; one environment runner per CPU by default.")
    memory: Quantity = Field("4Gi", description="Memory for each worker pod, as request and limit.")
    shm_size: Quantity = Field(WORKER_SHM_DEFAULT, description="Size of /dev/shm in each worker pod. Must be less than memory.")


class Entrypoint(Model):
    """What the head runs once the Ray cluster is up: a built-in recipe, or your own script."""

    recipe: Literal[RECIPES] | None = Field(  # type: ignore[valid-type]
        None, description="A built-in recipe: pong (Ray RLlib APPO on Atari Pong), cartpole (a quick smoke test)."
    )
    script: str | None = Field(
        None, min_length=1, max_length=1024,
        description="Path of a Python script to run instead of a recipe, relative to the source directory (spec.source) or absolute in the image.",
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256,
        description="Arguments for the recipe (e.g. --num-env-runners 8) or the script.",
    )

    rules = (
        Rule(
            cel="has(self.recipe) != has(self.script)",
            message="set exactly one of recipe or script",
            check=lambda m: (m.recipe is None) != (m.script is None),
        ),
    )


class StopSpec(Model):
    """When a recipe stops training with success; the first criterion reached wins."""

    episode_return_mean: float | None = Field(None, ge=-1e9, le=1e9, description=f"Stop when the mean return of the latest {RETURN_WINDOW_EPISODES} episodes reaches this (Pong: 18 is near-perfect play).")
    env_steps: int | None = Field(None, ge=1, description="Stop after this many environment steps sampled.")
    iterations: int | None = Field(None, ge=1, le=10_000_000, description="Stop after this many training iterations.")


class SourceSpec(Model):
    """Where the script's directory comes from."""

    config_map: LocalObjectReference | None = Field(
        None, description="A ConfigMap whose keys are the files of the script directory; mounted read-only at /rljob/source."
    )


class CheckpointSpec(Model):
    """Where checkpoints (and TensorBoard files) go: a PersistentVolumeClaim mounted at /rljob/checkpoints on the head."""

    claim_name: DnsSubdomain | None = Field(None, description="An existing PersistentVolumeClaim to use. It outlives the job.")
    size: Quantity | None = Field(None, description="Create a claim of this size, owned by the job (deleted with it).")
    storage_class_name: DnsSubdomain | None = Field(None, description="Storage class for the created claim; the cluster default when empty.")
    every_seconds: int = Field(300, ge=10, le=604_800, description="Save a checkpoint after this many seconds of training since the last one, and always at the end.")
    every_iterations: int | None = Field(None, ge=1, le=1_000_000, description="Also save a checkpoint every N training iterations.")
    keep: int = Field(3, ge=1, le=1000, description="How many recent checkpoints to keep.")

    rules = (
        Rule(
            cel="!(has(self.claimName) && has(self.size))",
            message="set claimName (use an existing claim) or size (create one), not both",
            check=lambda m: not (m.claim_name and m.size),
        ),
        Rule(
            cel="!has(self.storageClassName) || has(self.size)",
            message="storageClassName applies only to a claim the operator creates (size)",
            check=lambda m: m.storage_class_name is None or m.size is not None,
            field_path=".storageClassName",
        ),
    )


class PortSpec(Model):
    """A destination port."""

    port: int = Field(..., ge=1, le=65535, description="Port number.")
    protocol: Literal["TCP", "UDP", "SCTP"] = Field("TCP", description="Protocol.")


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/8 ({exc})") from None
    return value


def _strictly_inside(inner: str, outer: str) -> bool:
    a, b = ipaddress.ip_network(inner), ipaddress.ip_network(outer)
    return a.version == b.version and a.subnet_of(b) and a.prefixlen > b.prefixlen  # type: ignore[arg-type]


Cidr = Annotated[str, Field(max_length=64), BeforeValidator(lambda v: _check_cidr(str(v)) if isinstance(v, str) else v)]


class EgressRule(Model):
    """Traffic the job's pods may send outside the job: a CIDR and optional ports."""

    cidr: Cidr = Field(..., description="Destination network, e.g. 10.20.0.0/16 for an internal package mirror.")
    except_: list[Cidr] = Field(default_factory=list, alias="except", max_length=32, description="Networks inside cidr to exclude.")
    ports: list[PortSpec] = Field(default_factory=list, max_length=32, description="Allowed ports; all ports when empty.")

    rules = (
        Rule(
            cel="isCIDR(self.cidr) && cidr(self.cidr).masked() == cidr(self.cidr)",
            message="cidr must be a network such as 10.0.0.0/8 (no host bits set)",
            check=lambda m: True,  # checked by Cidr
            field_path=".cidr",
        ),
        Rule(
            cel="!has(self.except) || self.except.all(e, isCIDR(e) && cidr(e).masked() == cidr(e))",
            message="every except entry must be a network such as 10.1.0.0/16 (no host bits set)",
            check=lambda m: True,  # checked by Cidr
            field_path=".except",
        ),
        Rule(
            cel="!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, !isCIDR(e) || "
            "(cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength()))",
            message="every except entry must be a smaller network inside cidr",
            check=lambda m: all(_strictly_inside(e, m.cidr) for e in m.except_),
            field_path=".except",
        ),
    )


class NetworkSpec(Model):
    """The job's private network (NetworkPolicies): its pods talk to each other and to DNS, nothing else by default."""

    isolation: bool = Field(True, description="Create NetworkPolicies that deny traffic other than within the job, DNS, and the operator's scrapes.")
    allow_internet_egress: bool = Field(False, description="Allow egress to public addresses: not private (RFC 1918, 100.64.0.0/10, fc00::/7), link-local (cloud metadata) or the cluster's own ranges; list those in egress. Needed by pipPackages unless egress lists a package mirror.")
    egress: list[EgressRule] = Field(default_factory=list, max_length=64, description="Extra destinations the job may reach.")


class JobSpec(Model):
    """The desired state of an RLTrainingJob: what to train, on which Ray cluster, under which limits."""

    experiment: str = Field(
        "default", min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN,
        description="Groups related runs; becomes the rljob.dev/experiment label (kubectl get rltj -l rljob.dev/experiment=NAME).",
    )
    image: str = Field(
        "", max_length=512, pattern=IMAGE_PATTERN,
        description="Ray runtime image for head and workers, e.g. registry.example.com/rljob/runtime:0.1.0-cpu; the operator's default when empty.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="Image pull policy for every pod.")
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16, description="Secrets for pulling the image.")
    entrypoint: Entrypoint = Field(..., description="What the driver runs: a built-in recipe or a script.")
    stop: StopSpec | None = Field(None, description="Success criteria for a recipe (a script decides for itself).")
    source: SourceSpec | None = Field(None, description="Where the script directory comes from.")
    pip_packages: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=100,
        description="Extra pip requirements installed in every pod before Ray starts; needs network.allowInternetEgress or an egress rule to a mirror.",
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=128, description="Environment for the driver and every Ray process.")
    head: HeadSpec = Field(default_factory=HeadSpec, description="The head pod: Ray GCS, the driver and the learner.")
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="The worker pods: environment runners.")
    cluster_coordination_timeout_seconds: int = Field(
        900, ge=1, le=7 * 86400,
        description="The head and every worker must be ready within this many seconds of an attempt's start, else the job fails with ClusterCoordinationTimeout.",
    )
    max_run_duration_seconds: int | None = Field(
        None, ge=1, le=365 * 86400,
        description="The run budget: cut the job off (Failed/DeadlineExceeded) once it has been active this many seconds, all attempts together and suspended time excluded. Unlimited when empty.",
    )
    backoff_limit: int = Field(0, ge=0, le=100, description="How many times a failed head (driver) is retried; each new attempt resumes from the latest checkpoint.")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, le=365 * 86400, description="Delete the job (and its kept head pod) this many seconds after it finished. Kept forever when empty."
    )
    suspend: bool = Field(False, description="true removes the pods and keeps the job (Suspended); false again starts a new attempt from the latest checkpoint.")
    checkpoint: CheckpointSpec | None = Field(None, description="Persistent checkpoints. Without it they go to an emptyDir and a new attempt starts from scratch.")
    network: NetworkSpec = Field(default_factory=NetworkSpec, description="Network isolation of the job's pods.")

    rules = (
        Rule(
            cel="!has(self.entrypoint.script) || !self.entrypoint.script.startsWith('/') || !has(self.source)",
            message="with source set, entrypoint.script is a path inside the source directory and must be relative",
            check=lambda m: not (m.entrypoint.script and m.entrypoint.script.startswith("/") and m.source),
            field_path=".entrypoint.script",
        ),
        Rule(
            cel="!has(self.stop) || has(self.entrypoint.recipe)",
            message="stop applies to built-in recipes; a script decides when it is done",
            check=lambda m: m.stop is None or m.entrypoint.recipe is not None,
            field_path=".stop",
        ),
        Rule(
            cel="!has(self.pipPackages) || size(self.pipPackages) == 0 || !has(self.network) || !self.network.isolation"
            " || (has(self.network.allowInternetEgress) && self.network.allowInternetEgress)"
            " || (has(self.network.egress) && size(self.network.egress) > 0)",
            message="pipPackages need network egress: set network.allowInternetEgress, or an egress rule to your package mirror",
            check=lambda m: not m.pip_packages or not m.network.isolation or m.network.allow_internet_egress or bool(m.network.egress),
            field_path=".pipPackages",
        ),
        Rule(
            cel="!has(self.pipPackages) || self.pipPackages.all(p, !p.startsWith('-') && !p.matches(r'^\\s|[\\r\\n]'))",
            message="pipPackages entries are requirements such as numpy==2.1 or gymnasium[atari], one per entry; pip options "
            "such as --index-url are not accepted (bake them into the image, or reach a mirror through network.egress)",
            check=lambda m: all(not p.startswith("-") and p == p.lstrip() and "\n" not in p and "\r" not in p for p in m.pip_packages),
            field_path=".pipPackages",
        ),
        Rule(
            cel="!has(self.source) || has(self.entrypoint.script)",
            message="source is only used by a script entrypoint",
            check=lambda m: m.source is None or m.entrypoint.script is not None,
            field_path=".source",
        ),
    )


# What an update may change, after batch/v1 Job's rules; every other spec field is fixed at creation,
# because the running pods were built from it and the operator does not rebuild them mid-attempt.
MUTABLE_FIELDS = ("suspend", "ttlSecondsAfterFinished", "maxRunDurationSeconds", "workers.replicas")
# The pods' scheduling and size, which a person or a queue (Kueue) may change while the job is suspended:
# the pods are gone then, and the next attempt builds them from the new values.
MUTABLE_WHILE_SUSPENDED = ("head", "workers")


class ObjectMeta(Model):
    """The parts of metadata rljob reads; the rest is kept as it is."""

    model_config = {**Model.model_config, "extra": "allow"}

    name: str = Field(..., min_length=1, description="Job name.")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    deletion_timestamp: str | None = None  # set while finalizers hold a deleted job (foreground deletion, anyone's)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        import re

        if len(value) > MAX_JOB_NAME_LENGTH:
            raise ValueError(
                f"must be at most {MAX_JOB_NAME_LENGTH} characters so that every child name stays valid (got {len(value)})"
            )
        if not re.match(NAME_PATTERN, value):
            raise ValueError("must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter")
        return value


# Bounds of what a head may report: its answer is untrusted input (the user's code runs there), so every figure has a
# range and every string a length, in the schema and in the operator's parser alike.
MAX_COUNT = 10**15  # iterations, env steps: far beyond any run, well inside JSON's exact integers (2**53)
MAX_SECONDS = 10**10  # about 300 years
MAX_RETURN = 1e9
MAX_PATH_LENGTH = 1024
MAX_MESSAGE_LENGTH = 4096
MAX_REASON_LENGTH = 128
TIMESTAMP_MAX_LENGTH = 64
Timestamp = Annotated[str, Field(max_length=TIMESTAMP_MAX_LENGTH, json_schema_extra={"format": "date-time"})]


def _word_of(enum: type[StrEnum]) -> GetPydanticSchema:
    """A string, read as the member of `enum` it spells and kept as it is when it spells none (vocabulary.known): the
    schema and the checks are a string's, so the CRD says what it said, and code compares members, not spellings."""

    def read(value: str) -> StrEnum | str:
        return known(enum, value)

    return GetPydanticSchema(lambda _source, handler: core_schema.no_info_after_validator_function(read, handler(str)))


# The API server takes only the six phases (the schema's enum); reading another is no error all the same.
PhaseWord = Annotated[Phase | str, _word_of(Phase), WithJsonSchema({"type": "string", "enum": list(PHASES)})]
ReasonWord = Annotated[Reason | str, _word_of(Reason)]
ConditionTypeWord = Annotated[ConditionType | str, _word_of(ConditionType)]


class Condition(Model):
    """A Kubernetes-style condition."""

    type: ConditionTypeWord = Field(..., max_length=MAX_REASON_LENGTH, description=f"{words(ConditionType)}.")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: ReasonWord = Field(..., max_length=MAX_REASON_LENGTH, description="A CamelCase word for machines.")
    message: str = Field("", max_length=MAX_MESSAGE_LENGTH, description="A sentence for people.")
    last_transition_time: Timestamp = Field(..., description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition was computed from.")


MAX_EVAL_GAMES = 10_000


class EvaluationSummary(Model):
    """The greedy evaluation after a finished run: seeded games in the training's own environment."""

    model_config = {**Model.model_config, "extra": "ignore"}

    games: int = Field(..., ge=1, le=MAX_EVAL_GAMES, description="Games played; game i was reset with seed + i.")
    mean_return: float = Field(..., ge=-MAX_RETURN, le=MAX_RETURN, description="Mean of the games' returns (a whole game each).")
    std_return: float = Field(..., ge=0, le=2 * MAX_RETURN, description="Their standard deviation.")
    min_return: float = Field(..., ge=-MAX_RETURN, le=MAX_RETURN, description="The worst game's return.")
    max_return: float = Field(..., ge=-MAX_RETURN, le=MAX_RETURN, description="The best game's return.")
    wins: int = Field(..., ge=0, le=MAX_EVAL_GAMES, description="Games with a positive return (in Pong: won).")
    losses: int = Field(..., ge=0, le=MAX_EVAL_GAMES, description="Games with a negative return (in Pong: lost).")
    cut_off: int | None = Field(None, ge=0, le=MAX_EVAL_GAMES, description="Games cut off at the step limit, counted with their score so far.")
    seed: int | None = Field(None, ge=0, le=MAX_COUNT, description="The first game's seed.")
    iteration: int | None = Field(None, ge=0, le=MAX_COUNT, description="The iteration of the checkpoint evaluated.")


class Progress(Model):
    """Training progress: the driver serves it on the head, the operator reads it from there and writes it here."""

    model_config = {**Model.model_config, "extra": "ignore"}

    attempt: int | None = Field(None, ge=1, le=MAX_COUNT, description="The attempt that reported this.")
    iteration: int | None = Field(None, ge=0, le=MAX_COUNT, description="Training iterations completed (across attempts: resumed runs continue counting).")
    episode_return_mean: float | None = Field(
        None, ge=-MAX_RETURN, le=MAX_RETURN,
        description=f"Mean return of the latest {RETURN_WINDOW_EPISODES} episodes (Pong: -21 to 21).",
    )
    env_steps: int | None = Field(None, ge=0, le=MAX_COUNT, description="Environment steps sampled in total.")
    env_steps_per_second: float | None = Field(None, ge=0, le=MAX_COUNT, description="Sampling throughput over the last iteration.")
    time_total_seconds: float | None = Field(None, ge=0, le=MAX_SECONDS, description="Training time in total, all attempts.")
    last_checkpoint: str | None = Field(None, max_length=MAX_PATH_LENGTH, description="Path of the latest checkpoint on the checkpoint volume.")
    update_time: Timestamp | None = Field(None, description="When the driver recorded this (RFC 3339).")
    evaluation: EvaluationSummary | None = Field(None, description="The greedy evaluation that ends a finished run.")


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def parse_progress(raw: bytes | str) -> Progress:
    """A head's answer as untrusted input: at most MAX_PROGRESS_BYTES of JSON whose every figure is in range and of
    its own type (no "3" for 3, no NaN), with a real timestamp. Raises ValueError saying what was wrong."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_PROGRESS_BYTES:
        raise ValueError(f"{size} bytes, more than the {MAX_PROGRESS_BYTES} a progress record may have")
    progress = Progress.model_validate_json(raw)  # pydantic's ValidationError is a ValueError
    if progress.update_time is not None:
        # RFC 3339 exactly, as the API server's date-time check: Python alone would take a bare date or no offset.
        try:
            if not RFC3339.fullmatch(progress.update_time):
                raise ValueError
            datetime.fromisoformat(progress.update_time.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"updateTime {progress.update_time[:40]!r} is not an RFC 3339 time") from None
    return progress


def termination_progress(message: str | None) -> Progress | None:
    """The progress a head container left as its termination message ({"progress": {...}}), or None: another message
    (the log tail Kubernetes falls back to), or a record that does not parse."""
    if not message or not message.startswith("{") or len(message) > MAX_PROGRESS_BYTES:
        return None
    try:
        inner = json.loads(message).get(TERMINATION_PROGRESS_KEY)
        return parse_progress(json.dumps(inner)) if isinstance(inner, dict) else None
    except (ValueError, AttributeError):
        return None


# Per-attempt log tails: enough lines to show how an attempt ended (its traceback), for few enough attempts that the
# status stays small (it travels with every watch event of the job).
MAX_ATTEMPT_LOGS = 5
ATTEMPT_LOG_CHARS = 2000


class AttemptLog(Model):
    """The end of one finished attempt's driver log, kept in status after its head pod is gone."""

    model_config = {**Model.model_config, "extra": "ignore"}

    attempt: int = Field(..., ge=1, le=MAX_COUNT, description="The attempt whose head pod wrote it.")
    log_tail: str = Field(..., max_length=ATTEMPT_LOG_CHARS, description="Its last lines.")


class JobStatus(Model):
    """The observed state of an RLTrainingJob."""

    model_config = {**Model.model_config, "extra": "ignore"}

    phase: PhaseWord | None = Field(None, description=f"{words(Phase)}.")
    reason: ReasonWord | None = Field(None, max_length=MAX_REASON_LENGTH, description="Why the job is in this phase (e.g. ClusterCoordinationTimeout).")
    message: str | None = Field(None, max_length=MAX_MESSAGE_LENGTH, description="Details for people.")
    observed_generation: int | None = Field(None, description="The spec generation the operator last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description=f"{words(ConditionType)}.")
    attempts: int | None = Field(None, description="The current attempt, from 1; a failed head with backoff left starts the next.")
    failed_attempts: int | None = Field(None, description="Attempts whose driver failed; the job fails when this exceeds backoffLimit.")
    head_pod: str | None = Field(None, max_length=253, description="Name of the current attempt's head pod (kubectl logs it).")
    workers: str | None = Field(None, max_length=32, description="Ready/desired worker pods, e.g. 3/4; a change of the count alone is written within about 2 s.")
    ready_workers: int | None = Field(None, description="Worker pods ready (the scale subresource's replicas).")
    worker_selector: str | None = Field(
        None, max_length=MAX_PATH_LENGTH, description="Label selector of the worker pods, as `kubectl -l` takes it: the scale subresource's, so that "
        "`kubectl scale` and autoscalers find the pods.")
    start_time: Timestamp | None = Field(None, description="When the job (or its latest resumption) started.")
    active_seconds: int | None = Field(
        None, ge=0,
        description="Seconds the job was active (not suspended) before its latest resumption. maxRunDurationSeconds counts these plus the time since startTime, so suspending and resuming does not renew the budget.",
    )
    attempt_start_time: Timestamp | None = Field(None, description="When the current attempt started; clusterCoordinationTimeoutSeconds counts from here.")
    cluster_ready_time: Timestamp | None = Field(None, description="When the whole Ray cluster was last ready.")
    completion_time: Timestamp | None = Field(None, description="When the job finished; ttlSecondsAfterFinished counts from here.")
    last_exit_code: int | None = Field(None, description="Exit code of the last finished driver.")
    driver_log_tail: str | None = Field(None, max_length=2 * MAX_MESSAGE_LENGTH, description="The end of the last finished driver's log, kept after its pod is gone.")
    attempt_logs: list[AttemptLog] | None = Field(
        None, max_length=MAX_ATTEMPT_LOGS,
        description=f"The ends of the driver logs of the latest {MAX_ATTEMPT_LOGS} finished attempts, oldest first (`rljob logs NAME --attempt N`); each attempt's head pod, while it exists, has the whole log.")
    progress: Progress | None = Field(None, description="Training progress: read by the operator from the head, where the driver serves it.")

    @classmethod
    def read(cls, raw: Any) -> JobStatus:
        """A job's status as stored, without failing: a field that does not parse is left out, and the rest is kept.

        What the operator reads besides its decisions (the work queue's lane, the metrics) must go on for a job whose
        status another writer left partly unreadable, as it goes on for an unknown word (`known`)."""
        data = dict(raw) if isinstance(raw, Mapping) else {}
        while True:
            try:
                return cls.model_validate(data)
            except ValidationError as exc:
                bad = {err["loc"][0] for err in exc.errors() if err["loc"]} & data.keys()
                if not bad:
                    return cls()
                data = {key: value for key, value in data.items() if key not in bad}

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((cond for cond in self.conditions if cond.type == type_), None)

    def operator_fields(self) -> JobStatus:
        """A deep copy without status.progress, which the progress reader writes, never a decision."""
        return self.model_copy(deep=True, update={"progress": None})

    def merge_patch(self, old: JobStatus | None) -> dict[str, Any]:
        """The JSON merge patch of status that turns `old` into this: changed fields, null for removed ones.

        status.progress is never in it: the progress reader writes it on its own schedule, and a decision made on an
        older view must not undo it."""
        new, before = self.wire(), old.wire() if old is not None else {}
        new.pop("progress", None)
        before.pop("progress", None)
        return {key: new.get(key) for key in sorted(set(new) | set(before)) if new.get(key) != before.get(key)}


class RLTrainingJob(Model):
    """RLTrainingJob runs Ray RLlib reinforcement-learning training on a Ray cluster the operator builds for it."""

    api_version: Literal[API_VERSION] = Field(..., description="rljob.dev/v1alpha1")  # type: ignore[valid-type]
    kind: Literal[KIND] = Field(..., description="RLTrainingJob")  # type: ignore[valid-type]
    metadata: ObjectMeta
    spec: JobSpec
    status: JobStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"
