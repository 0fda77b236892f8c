"""Carries out a Decision with API calls, and nothing else: every choice was made in the phase machine (phases.step,
phases.invalid), and what a failed creation changes is its choice too (phases.blocked), made on what apply found."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .. import resources
from ..api import constants as c
from ..api import names
from ..api.models import ATTEMPT_LOG_CHARS, MAX_ATTEMPT_LOGS, AttemptLog, JobStatus, RLTrainingJob
from . import conditions as cond
from . import kueue, observe, phases
from .kube import ApiException, Kube, error_text, object_path
from .objects import owning_job_uid, resource_version
from .pacing import StatusPacer
from .phases import CreateProblem, Decision, Event

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Target:
    """The job a decision is carried out on, as the decision found it: its name, its instance and its status (None:
    it has none yet). Read from the parsed job, or from the body of one that does not parse."""

    namespace: str
    name: str
    uid: str
    status: JobStatus | None

    @classmethod
    def of(cls, job: RLTrainingJob | None, body: dict[str, Any]) -> Target:
        if job is not None:
            return cls(job.namespace, job.name, job.metadata.uid or "", job.status)
        meta = body.get("metadata") or {}
        raw = body.get("status")
        return cls(meta.get("namespace") or "default", meta["name"], meta.get("uid") or "",
                   JobStatus.read(raw) if raw is not None else None)


async def apply(
    kube: Kube, ctx: resources.BuildContext, job: RLTrainingJob | None, body: dict[str, Any], decision: Decision,
    workload: observe.WorkloadObservation | None = None, pacer: StatusPacer | None = None,
    observed: observe.Observed | None = None,
) -> dict[str, Any] | None:
    """Returns the job's new body when its status was patched (fresher than the watch), else None.

    `job` is the job as its pods are built: for a job Kueue admitted, with its flavors' placement added; None for a
    job that does not parse, whose decision (a refusal) builds nothing. `pacer` may hold back a status write that
    only changes a count of ready workers (it requeues the job). Deletes carry the uid of the object the decision saw
    (`observed`), so that a namesake created since is never deleted for it."""
    target = Target.of(job, body)
    status, events = decision.status, decision.events
    new_body: dict[str, Any] | None = None
    written = False
    if decision.capture_log:  # before the pod may go
        status = await _with_log_tail(kube, target, decision, status)
    if status is not None and (decision.delete_pods or decision.delete_workers):
        # The decision is written first, and only onto the version of the job it was made from: a replica
        # that acts on a stale view (a frozen former leader) gets a conflict here and deletes nothing.
        new_body = await _write_status(kube, target, status, body)
        written = True
    problems: list[CreateProblem] = []
    if job is not None:
        await _workload_writes(kube, ctx, job, decision, workload)
        problems = await _create_children(kube, ctx, job, decision, status)
        if not problems and decision.create_head is not None and decision.head_created is not None:
            status, events, written = decision.head_created, [*events, *decision.head_created_events], False
    elif _builds(decision):
        raise TypeError("a decision that builds children needs the parsed job")
    await _delete_and_scale(kube, target, decision, observed)
    setback = phases.blocked(status, target.status, problems) if problems else None
    if setback is not None:
        status, written = setback.status, False
        await kube.event(body, setback.event.type, setback.event.reason, setback.event.message)
    if status is not None and not written:
        new_body = await _write_status(kube, target, status, new_body or body, pacer) or new_body
    labelled = await _label_and_announce(kube, target, decision, events, new_body or body)
    if labelled is not None and (new_body is None or resource_version(labelled) > resource_version(new_body)):
        new_body = labelled
    if decision.delete_job:
        await kube.delete(c.API_VERSION, c.KIND, target.namespace, target.name, uid=target.uid)
    if setback is not None:
        # Stay where the job is, and retry: no pod was created after a refused NetworkPolicy, Service or claim.
        raise ChildCreationFailed(setback.status.message or "", waiting=setback.waiting)
    return new_body


def _builds(decision: Decision) -> bool:
    return (decision.ensure_children or decision.create_head is not None or decision.ensure_workload
            or decision.workload_active is not None or decision.replace_workload
            or decision.release_workload is not None or decision.finish_workload is not None)


async def _with_log_tail(kube: Kube, target: Target, decision: Decision, status: JobStatus | None) -> JobStatus | None:
    """The status with the finished head's log tail kept (as the last one, and as its attempt's)."""
    tail = await kube.pod_log_tail(target.namespace, decision.capture_log or "", LOG_TAIL_LINES)
    if not tail:
        return status
    base = phases.as_decided(status, target.status)
    update: dict[str, Any] = {"driver_log_tail": tail[-LOG_TAIL_CHARS:]}
    if decision.capture_attempt is not None:
        update["attempt_logs"] = with_attempt_log(base.attempt_logs, decision.capture_attempt, tail)
    return base.model_copy(update=update)


async def _workload_writes(
    kube: Kube, ctx: resources.BuildContext, job: RLTrainingJob, decision: Decision, workload: observe.WorkloadObservation | None,
) -> None:
    if decision.ensure_workload:
        await kueue.ensure(kube, ctx, job)
    if decision.workload_active is not None:
        await kueue.set_active(kube, job, decision.workload_active)
    if decision.replace_workload:
        await kueue.replace(kube, job, workload)
    if decision.release_workload is not None:
        await kueue.write_status(kube, job, "released", *decision.release_workload)
    if decision.finish_workload is not None:
        await kueue.write_status(kube, job, "finished", *decision.finish_workload)


async def _create_children(
    kube: Kube, ctx: resources.BuildContext, job: RLTrainingJob, decision: Decision, status: JobStatus | None,
) -> list[CreateProblem]:
    """The static children concurrently (independent of each other), then the workers, then the head: all of them
    before any pod exists, so that no pod ever runs without its NetworkPolicies. What was not created, and why."""
    problems: list[CreateProblem] = []
    if decision.ensure_children:
        for found in await asyncio.gather(*(_create(kube, obj) for obj in resources.static_children(job, ctx))):
            problems += found
        if not problems:
            problems += await _create(kube, resources.workers_statefulset(job, ctx))
    if decision.create_head is not None and not problems:
        current = status if status is not None else job.status
        problems += await _create(kube, resources.head_pod(job, ctx, decision.create_head, _coordination_deadline(job, current)))
    return problems


async def _delete_and_scale(kube: Kube, target: Target, decision: Decision, observed: observe.Observed | None) -> None:
    uids = {p.name: p.uid for p in observed.pods} if observed is not None else {}
    workers_uid = observed.workers.uid if observed is not None and observed.workers.exists else ""
    for pod_name in decision.delete_pods:
        await kube.delete(*c.POD, target.namespace, pod_name, uid=uids.get(pod_name, ""))
    if decision.delete_workers:
        await kube.delete(*c.STATEFULSET, target.namespace, names.workers(target.name), uid=workers_uid)
    if decision.scale_workers is not None:
        await kube.merge_patch(object_path(*c.STATEFULSET, target.namespace, names.workers(target.name)),
                               {"spec": {"replicas": decision.scale_workers}})


async def _label_and_announce(
    kube: Kube, target: Target, decision: Decision, events: list[Event], involved: dict[str, Any],
) -> dict[str, Any] | None:
    """Posts the events on `involved`, one after another (`kubectl describe` lists them in this order), and beside
    them (neither waits on the other) merges the job's labels; the labelled body, if labels were merged."""

    async def post_events() -> None:
        for event in events:
            await kube.event(involved, event.type, event.reason, event.message)

    if not decision.job_labels:
        await post_events()
        return None
    path = object_path(c.API_VERSION, c.KIND, target.namespace, target.name)
    _, labelled = await asyncio.gather(post_events(), kube.merge_patch(path, {"metadata": {"labels": decision.job_labels}}))
    return labelled


def with_attempt_log(logs: list[AttemptLog] | None, attempt: int, tail: str) -> list[AttemptLog]:
    """The kept tails with this attempt's (in place of one kept before: a decision may be carried out twice), the
    latest MAX_ATTEMPT_LOGS attempts only. A cut tail starts at a whole line."""
    if len(tail) > ATTEMPT_LOG_CHARS:
        tail = tail[-ATTEMPT_LOG_CHARS:]
        tail = tail[tail.index("\n") + 1:] if "\n" in tail[:-1] else tail
    kept = [entry for entry in logs or [] if entry.attempt != attempt]
    kept.append(AttemptLog(attempt=attempt, log_tail=tail))
    return sorted(kept, key=lambda entry: entry.attempt)[-MAX_ATTEMPT_LOGS:]


async def _write_status(
    kube: Kube, target: Target, status: JobStatus, decided_on: dict[str, Any], pacer: StatusPacer | None = None,
) -> dict[str, Any] | None:
    """Writes what differs from the status the decision was made on; nothing when nothing does, or when the pacer
    holds a count-only change back."""
    patch = status.merge_patch(target.status)
    key = (target.namespace, target.name)
    if (pacer is not None and pacer.hold(key, patch)) or not patch:
        return None
    written = await kube.patch_job_status(target.namespace, target.name, patch, decided_on)
    if pacer is not None:
        pacer.written(key)
    return written


class ChildCreationFailed(Exception):
    """Children could not be created. Refused ones (`waiting` false) are retried with backoff; names still held
    by a deleted job's children (`waiting`) are looked at again soon, as nothing else would say when they go."""

    def __init__(self, message: str, waiting: bool = False) -> None:
        super().__init__(message)
        self.waiting = waiting


async def _create(kube: Kube, obj: dict[str, Any], retries_on_404: int = 5) -> list[CreateProblem]:
    """Creates `obj`; one that exists already counts as created only when it belongs to this job instance."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    for attempt in range(retries_on_404 + 1):
        try:
            existing, created = await kube.create(obj)
            if created:
                log.info("created %s %s/%s", kind, obj["metadata"]["namespace"], name)
                return []
            uid = owning_job_uid(obj["metadata"])
            holder = owning_job_uid(existing["metadata"]) if existing else uid
            if uid is not None and holder != uid:
                whose = f"an earlier {c.KIND} of this name (uid {holder})" if holder else "no job (it was not created by rljob)"
                return [CreateProblem(
                    refused=False, message=f"{kind} {name} already exists and belongs to {whose}; waiting until it is deleted")]
            return []
        except ApiException as exc:
            if exc.status == 404 and attempt < retries_on_404:
                # What the object refers to was created a moment ago (a Role for its binding) and the
                # API server's authorizer cache has not seen it yet.
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if exc.status in (400, 403, 404, 422):  # admission, quota, validation: report, do not crash
                return [CreateProblem(refused=True, message=f"cannot create {kind} {name}: {error_text(exc)}")]
            raise
    return []


def _coordination_deadline(job: RLTrainingJob, status: JobStatus | None) -> str:
    started = cond.parse_timestamp(status.attempt_start_time if status is not None else None)
    if started is None:
        return ""
    return cond.timestamp(started + timedelta(seconds=job.spec.cluster_coordination_timeout_seconds))
