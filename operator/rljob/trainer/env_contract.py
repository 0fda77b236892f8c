"""The environment the operator gives the head and worker pods, read in one place.

Every variable name comes from api.constants; this module turns their text into typed values and
turns a bad value into a ConfigError naming the variable, so a mistake in the pod spec shows up as
one clear line in the head's log rather than a traceback.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..api import constants as C
from ..api.manifest import ManifestError, parse_job
from ..api.models import JobSpec
from .errors import ConfigError


@dataclass(frozen=True)
class DriverEnv:
    """What the driver in the head pod knows about its job."""

    name: str
    namespace: str
    attempt: int | None
    spec: JobSpec
    expected_workers: int
    coordination_deadline: str | None
    checkpoint_dir: Path
    source_dir: Path
    metrics_port: int


@dataclass(frozen=True)
class PodResources:
    """The pod's resources as the operator copied them from the container's limits (integers)."""

    cpu: int
    memory_bytes: int | None
    gpus: int
    shm_bytes: int | None


def _int(env: Mapping[str, str], key: str, default: int | None = None, minimum: int = 0) -> int | None:
    text = env.get(key)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"environment variable {key}={text!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"environment variable {key}={text!r} must be at least {minimum}")
    return value


def _required(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise ConfigError(f"environment variable {key} is not set (the operator sets it in the head pod)")
    return value


def parse_spec(text: str, name: str = "job") -> JobSpec:
    """The job spec from its JSON wire form, validated by the same model as every manifest."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment variable {C.ENV_JOB_SPEC} is not valid JSON: {exc}") from None
    try:
        job = parse_job(
            {"apiVersion": C.API_VERSION, "kind": C.KIND, "metadata": {"name": name}, "spec": data},
            source=C.ENV_JOB_SPEC,
        )
    except ManifestError as exc:
        raise ConfigError(*exc.lines()) from None
    return job.spec


def driver_env(env: Mapping[str, str]) -> DriverEnv:
    name = _required(env, C.ENV_JOB_NAME)
    spec = parse_spec(_required(env, C.ENV_JOB_SPEC), name)
    expected = _int(env, C.ENV_EXPECTED_WORKERS, spec.workers.replicas)
    return DriverEnv(
        name=name,
        namespace=env.get(C.ENV_NAMESPACE, "").strip() or "default",
        attempt=_int(env, C.ENV_ATTEMPT, None, minimum=1),
        spec=spec,
        expected_workers=expected if expected is not None else spec.workers.replicas,
        coordination_deadline=env.get(C.ENV_COORDINATION_DEADLINE, "").strip() or None,
        checkpoint_dir=Path(env.get(C.ENV_CHECKPOINT_DIR, "").strip() or C.CHECKPOINT_MOUNT),
        source_dir=Path(env.get(C.ENV_SOURCE_DIR, "").strip() or C.SOURCE_MOUNT),
        metrics_port=_int(env, C.ENV_METRICS_PORT, C.PORT_METRICS, minimum=1) or C.PORT_METRICS,
    )


def pod_resources(env: Mapping[str, str]) -> PodResources:
    return PodResources(
        cpu=_int(env, C.ENV_CPU, 1, minimum=1) or 1,
        memory_bytes=_int(env, C.ENV_MEMORY, None, minimum=1),
        gpus=_int(env, C.ENV_GPUS, 0) or 0,
        shm_bytes=_int(env, C.ENV_SHM_BYTES, None, minimum=1),
    )
