"""Reading the pod's RLJOB_* environment."""
from __future__ import annotations

import json

import pytest

from rljob.api import constants as C
from rljob.trainer.env_contract import driver_env, pod_resources
from rljob.trainer.errors import ConfigError

SPEC = {"entrypoint": {"recipe": "pong"}, "workers": {"replicas": 3}}


def test_driver_env_defaults() -> None:
    d = driver_env({C.ENV_JOB_NAME: "pong", C.ENV_JOB_SPEC: json.dumps(SPEC)})
    assert (d.name, d.namespace, d.attempt, d.expected_workers) == ("pong", "default", None, 3)
    assert str(d.checkpoint_dir) == C.CHECKPOINT_MOUNT and str(d.source_dir) == C.SOURCE_MOUNT
    assert d.metrics_port == C.PORT_METRICS and d.coordination_deadline is None
    assert d.spec.entrypoint.recipe == "pong"


def test_driver_env_full() -> None:
    d = driver_env({
        C.ENV_JOB_NAME: "pong", C.ENV_NAMESPACE: "team", C.ENV_JOB_SPEC: json.dumps(SPEC), C.ENV_ATTEMPT: "2",
        C.ENV_EXPECTED_WORKERS: "1", C.ENV_COORDINATION_DEADLINE: "2026-11-25T12:00:00Z",
        C.ENV_CHECKPOINT_DIR: "/ck", C.ENV_SOURCE_DIR: "/src", C.ENV_METRICS_PORT: "9999",
    })
    assert (d.namespace, d.attempt, d.expected_workers, d.metrics_port) == ("team", 2, 1, 9999)
    assert d.coordination_deadline == "2026-11-25T12:00:00Z"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "RLJOB_NAME is not set"),
        ({C.ENV_JOB_NAME: "x"}, "RLJOB_SPEC is not set"),
        ({C.ENV_JOB_NAME: "x", C.ENV_JOB_SPEC: "{"}, "RLJOB_SPEC is not valid JSON"),
        ({C.ENV_JOB_NAME: "x", C.ENV_JOB_SPEC: '{"entrypoint": {"recipe": "atari"}}'}, "spec.entrypoint.recipe"),
        ({C.ENV_JOB_NAME: "x", C.ENV_JOB_SPEC: json.dumps(SPEC), C.ENV_ATTEMPT: "two"}, "RLJOB_ATTEMPT='two'"),
    ],
)
def test_driver_env_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        driver_env(env)
    assert message in " ".join(err.value.lines)


def test_pod_resources() -> None:
    r = pod_resources({C.ENV_CPU: "4", C.ENV_GPUS: "1", C.ENV_MEMORY: "8589934592", C.ENV_SHM_BYTES: "2147483648"})
    assert (r.cpu, r.gpus, r.memory_bytes, r.shm_bytes) == (4, 1, 8589934592, 2147483648)
    assert pod_resources({}).cpu == 1
    with pytest.raises(ConfigError, match=r"RLJOB_CPU='2\.5' is not an integer"):
        pod_resources({C.ENV_CPU: "2.5"})
