"""The Argo CD health check for RLTrainingJob (charts/rljob/argocd/rltrainingjob-health.lua), run with lupa the way
Argo CD runs it: the live object in the global `obj`, the script's return value is the health.

Argo CD's interpreter (gopher-lua) speaks Lua 5.1, so the script is run with Lua 5.1 and with the newest Lua lupa
has, to catch anything that depends on one version.
"""
from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.builders import minimal_job
from tests.tooling import ROOT

SCRIPT = (ROOT / "charts" / "rljob" / "argocd" / "rltrainingjob-health.lua").read_text()
RUNTIMES = ["lupa.lua51", "lupa.lua54"]


def lua_runtime(module: str) -> Any:
    try:
        return importlib.import_module(module).LuaRuntime(unpack_returned_tuples=True)
    except ImportError:
        pytest.skip(f"{module} is not available")


def to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(module: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua_runtime(module)
    lua.globals().obj = to_lua(lua, obj)
    hs = lua.execute(SCRIPT)
    assert set(dict(hs.items())) <= {"status", "message"}
    return hs["status"], hs["message"]


def job(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    """The job as Argo CD reads it: its status observes `generation` unless the status says which it observed."""
    return minimal_job("pong", namespace="team-a", generation=generation,
                       status=None if status is None else {"observedGeneration": generation, **status})


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return request.param


def test_no_status_is_progressing(runtime: str) -> None:
    assert health(runtime, job())[0] == "Progressing"
    assert health(runtime, job({}))[0] == "Progressing"
    body = job({"conditions": []})
    del body["status"]["observedGeneration"]
    assert health(runtime, body)[0] == "Progressing"


@pytest.mark.parametrize("phase, reason", [("Pending", "Accepted"), ("Initializing", "ClusterStarting"), ("Pending", "AttemptFailed")])
def test_starting_is_progressing(runtime: str, phase: str, reason: str) -> None:
    status, message = health(runtime, job({
        "phase": phase, "reason": reason, "message": "waiting for head pod pong-head-1 and 4 worker(s)",
        "conditions": [cond("ClusterReady", "False", "Starting")],
    }))
    assert status == "Progressing" and message == f"{reason}: waiting for head pod pong-head-1 and 4 worker(s)"


def test_running_with_a_ready_cluster_is_healthy(runtime: str) -> None:
    status, message = health(runtime, job({
        "phase": "Running", "reason": "ClusterReady", "workers": "4/4",
        "conditions": [cond("ClusterReady", "True", "ClusterReady"), cond("Running", "True", "DriverRunning")],
        "progress": {"iteration": 112, "episodeReturnMean": -3.5},
    }))
    assert status == "Healthy"
    assert message.startswith("Training (workers 4/4, iteration 112") and "reward -3.5" in message


def test_running_with_lost_workers_is_degraded(runtime: str) -> None:
    status, message = health(runtime, job({
        "phase": "Running", "reason": "ClusterReady", "workers": "3/4",
        "conditions": [cond("ClusterReady", "False", "WorkersNotReady", "3/4 workers ready; the StatefulSet is replacing the others")],
    }))
    assert status == "Degraded"
    assert message == "Ray cluster not ready (WorkersNotReady): 3/4 workers ready; the StatefulSet is replacing the others"


def test_running_without_the_condition_is_progressing(runtime: str) -> None:
    assert health(runtime, job({"phase": "Running", "conditions": [cond("Running", "True")]}))[0] == "Progressing"


def test_succeeded_is_healthy(runtime: str) -> None:
    status, message = health(runtime, job({
        "phase": "Succeeded", "reason": "DriverSucceeded", "message": "the driver in pong-head-1 finished successfully",
        "conditions": [cond("Complete", "True", "DriverSucceeded")], "progress": {"iteration": 500, "episodeReturnMean": 18.25},
    }))
    assert status == "Healthy" and message.startswith("DriverSucceeded: the driver in pong-head-1 finished successfully")
    assert "reward 18.25" in message


@pytest.mark.parametrize("reason, message", [
    ("ClusterCoordinationTimeout", "the Ray cluster was not up within 1800s: 0/4 workers ready"),
    ("DeadlineExceeded", "the job was active longer than maxRunDurationSeconds (3600s, all attempts, suspended time excluded): stopped"),
    ("DriverFailed", "attempt 1: the driver in pong-head-1 failed (exit code 2): a configuration error, not retried"),
    ("BackoffLimitExceeded", "attempt 3: the driver in pong-head-3 failed (exit code 1); backoffLimit 2 reached"),
    ("ValidationFailed", "spec.workers.replicas: must be at most 1000"),
])
def test_failed_is_degraded_with_reason_and_message(runtime: str, reason: str, message: str) -> None:
    status, text = health(runtime, job({"phase": "Failed", "reason": reason, "message": message,
                                        "conditions": [cond("Failed", "True", reason, message)]}))
    assert status == "Degraded" and text == f"{reason}: {message}"


def test_failed_without_a_reason_still_says_failed(runtime: str) -> None:
    assert health(runtime, job({"phase": "Failed"})) == ("Degraded", "Failed")


def test_suspended(runtime: str) -> None:
    status, message = health(runtime, job({"phase": "Suspended", "reason": "Suspended",
                                           "message": "spec.suspend is true: pods removed, the job is kept"}))
    assert status == "Suspended" and "spec.suspend is true" in message


def test_a_spec_change_not_yet_seen_is_progressing(runtime: str) -> None:
    body = job({"phase": "Running", "conditions": [cond("ClusterReady", "True")]}, generation=3)
    body["status"]["observedGeneration"] = 2
    assert health(runtime, body) == ("Progressing", "Waiting for the rljob operator to act on spec generation 3")


def test_unknown_phase(runtime: str) -> None:
    assert health(runtime, job({"phase": "Exploding"}))[0] == "Unknown"


def test_every_phase_of_the_api_is_handled(runtime: str) -> None:
    from rljob.api.models import PHASES

    for phase in PHASES:
        assert health(runtime, job({"phase": phase}))[0] in {"Progressing", "Healthy", "Degraded", "Suspended"}, phase
