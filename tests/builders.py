"""The objects tests build: RLTrainingJobs (as the API server holds them, and parsed as the operator reads them),
the statuses the operator writes, its observations of pods, and the timestamps they carry.

One place for them, so that a change to what a valid job needs is made once; a test module that builds a job some
other way says why next to its builder.
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from rljob.api import JobStatus, RLTrainingJob, parse_job
from rljob.controller.observe import PodObservation, WorkersObservation
from rljob.controller.phases import Decision

# The instant the pure-function tests decide at, and stamp statuses with.
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class _Delete:
    """A table value meaning "remove this key". Its repr is fixed because test ids are built from reprs, and
    pytest-xdist requires every worker to collect the same ids (an ``object()`` prints its address)."""

    def __repr__(self) -> str:
        return "DELETE"


#: Put at a path of a manifest in a table of cases: the key is removed instead of set.
DELETE: Any = _Delete()


# Requests every kwok node of the test control plane fits, so that a job's head and two workers are scheduled.
SMALL_HEAD = {"cpu": "1", "memory": "2Gi", "shmSize": "512Mi"}
SMALL_WORKERS = {"replicas": 2, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"}


def ts(seconds: float = 0) -> str:
    """T0 plus `seconds`, as the API server writes a timestamp (whole seconds, Z)."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def minimal_job(
    name: str = "demo",
    *,
    namespace: str = "ns1",
    uid: str | None = None,
    generation: int | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """The smallest valid job (the pong recipe, every default), with `spec`'s fields on top. The metadata the API
    server adds (uid, generation, anything else in `metadata`) and a status are there only when asked for: a job
    being submitted has none of them."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid is not None:
        meta["uid"] = uid
    if generation is not None:
        meta["generation"] = generation
    meta.update(copy.deepcopy(metadata or {}))
    body: dict[str, Any] = {
        "apiVersion": "rljob.dev/v1alpha1",
        "kind": "RLTrainingJob",
        "metadata": meta,
        "spec": {"entrypoint": {"recipe": "pong"}},
    }
    body["spec"].update(copy.deepcopy(spec))
    if status is not None:
        body["status"] = copy.deepcopy(status)
    return body


def parsed_job(
    status: dict[str, Any] | None = None, *, name: str = "demo", uid: str | None = "u1", generation: int = 1, **fields: Any
) -> RLTrainingJob:
    """A job as the operator reads it from the API server, with the status the operator last wrote (the phase
    machine's input): parsed, with the uid its children are owned by and the generation its status observes."""
    return parse_job(minimal_job(name, uid=uid, generation=generation, status=status, **fields))


def small_job(name: str, namespace: str, *, metadata: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A job whose head and two workers fit the test control plane's kwok nodes; `spec` overrides any of it."""
    return minimal_job(name, namespace=namespace, metadata=metadata, **{"workers": SMALL_WORKERS, "head": SMALL_HEAD, **spec})


def running_status(**extra: Any) -> dict[str, Any]:
    """The status of `minimal_job`'s job in its first attempt, its cluster ready since T0."""
    return {"phase": "Running", "attempts": 1, "failedAttempts": 0, "startTime": ts(), "attemptStartTime": ts(),
            "observedGeneration": 1, "workers": "2/2", "readyWorkers": 2, "headPod": "demo-head-1",
            "conditions": [{"type": "ClusterReady", "status": "True", "reason": "ClusterReady", "message": "",
                            "lastTransitionTime": ts(), "observedGeneration": 1}], **extra}


def merged(d: Decision, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status on the wire after the decision: what the merge patch the operator writes would leave."""
    out = dict(old or {})
    if d.status is None:
        return out
    for k, v in d.status.merge_patch(JobStatus.model_validate(out)).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def head(attempt: int = 1, phase: str = "Running", ready: bool = True, **kw: Any) -> PodObservation:
    """The operator's observation of `minimal_job`'s head pod of `attempt`."""
    return PodObservation(name=f"demo-head-{attempt}", role="head", attempt=attempt, phase=phase, ready=ready, **kw)


def workers(ready: int = 2, replicas: int = 2, exists: bool = True) -> WorkersObservation:
    """The operator's observation of a job's worker StatefulSet and its pods."""
    return WorkersObservation(exists=exists, replicas=replicas, ready=ready)
