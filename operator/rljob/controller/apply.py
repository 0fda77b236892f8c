"""Carries out a Decision with API calls, and nothing else: every choice was made in phases.step."""
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
from ..api.vocabulary import EventType, Reason
from . import conditions as cond
from . import kueue, observe
from .kube import ApiException, Kube, error_text, object_path
from .objects import controller_uid, resource_version
from .pacing import StatusPacer
from .phases import Decision

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Problem:
    """Why a job stays where it is after creating children failed: the API server refused one (CreateFailed:
    quota, admission), or its name is still taken by a deleted job's child that the garbage collector is
    removing (WaitingForOldChildren)."""

    reason: Reason
    message: str


async def apply(
    kube: Kube, ctx: resources.BuildContext, job: RLTrainingJob, body: dict[str, Any], decision: Decision,
    workload: observe.WorkloadObservation | None = None, pacer: StatusPacer | None = None,
    observed: observe.Observed | None = None,
) -> dict[str, Any] | None:
    """Returns the job's new body when its status was patched (fresher than the watch), else None.

    `job` is the job as its pods are built: for a job Kueue admitted, with its flavors' placement added. `pacer`
    may hold back a status write that only changes a count of ready workers (it requeues the job). Deletes carry the
    uid of the object the decision saw (`observed`), so that a namesake created since is never deleted for it."""
    uids = {p.name: p.uid for p in observed.pods} if observed is not None else {}
    workers_uid = observed.workers.uid if observed is not None and observed.workers.exists else ""
    ns = job.namespace
    status = decision.status
    problems: list[Problem] = []
    new_body: dict[str, Any] | None = None
    written = False

    if decision.capture_log:  # before the pod may go
        tail = await kube.pod_log_tail(ns, decision.capture_log, LOG_TAIL_LINES)
        if tail:
            status = _amended(job, status, driver_log_tail=tail[-LOG_TAIL_CHARS:])
            if decision.capture_attempt is not None:
                status = status.model_copy(update={
                    "attempt_logs": with_attempt_log(status.attempt_logs, decision.capture_attempt, tail)})
    if status is not None and (decision.delete_pods or decision.delete_workers):
        # The decision is written first, and only onto the version of the job it was made from: a replica
        # that acts on a stale view (a frozen former leader) gets a conflict here and deletes nothing.
        new_body = await _write_status(kube, job, status, body)
        written = True

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

    if decision.ensure_children:
        # Independent of each other, so created concurrently; all of them before any pod exists,
        # so no pod ever runs without its NetworkPolicies.
        static = resources.static_children(job, ctx)
        for found in await asyncio.gather(*(_create(kube, obj) for obj in static)):
            problems += found
        if not problems:
            problems += await _create(kube, resources.workers_statefulset(job, ctx))
    events = decision.events
    if decision.create_head is not None and not problems:
        current = status if status is not None else job.status
        pod = resources.head_pod(job, ctx, decision.create_head, _coordination_deadline(job, current))
        problems += await _create(kube, pod)
        if not problems and decision.head_created is not None:
            status, events, written = decision.head_created, [*events, *decision.head_created_events], False
    for pod_name in decision.delete_pods:
        await kube.delete("v1", "Pod", ns, pod_name, uid=uids.get(pod_name, ""))
    if decision.delete_workers:
        await kube.delete("apps/v1", "StatefulSet", ns, names.workers(job.name), uid=workers_uid)
    if decision.scale_workers is not None:
        await kube.merge_patch(object_path("apps/v1", "StatefulSet", ns, names.workers(job.name)),
                               {"spec": {"replicas": decision.scale_workers}})

    if problems:
        # Stay where we are, say why, and retry: a quota or an admission policy may change, a deleted job's
        # children go. No pod was created after a refused NetworkPolicy, Service or claim.
        refused = [p for p in problems if p.reason == Reason.CREATE_FAILED]
        reason = Reason.CREATE_FAILED if refused else Reason.WAITING_FOR_OLD_CHILDREN
        message = "; ".join(p.message for p in (refused or problems))[:2000]
        status = _amended(job, status, reason=reason, message=message)
        # On every look, as Kubernetes' own controllers do: the same event is counted up on one Event object
        # (Kube.event), so `kubectl describe` shows how long and how often it has been tried, not a list of copies.
        await kube.event(body, EventType.WARNING if refused else EventType.NORMAL, reason, message)
        written = False
    if status is not None and not written:
        new_body = await _write_status(kube, job, status, new_body or body, pacer) or new_body
    involved = new_body or body

    async def post_events() -> None:  # one after another: `kubectl describe` lists them in this order
        for event in events:
            await kube.event(involved, event.type, event.reason, event.message)

    if decision.job_labels:  # beside the events: neither waits on the other
        path = object_path(c.API_VERSION, c.KIND, ns, job.name)
        _, labelled = await asyncio.gather(post_events(), kube.merge_patch(path, {"metadata": {"labels": decision.job_labels}}))
        if new_body is None or resource_version(labelled["metadata"]) > resource_version(new_body["metadata"]):
            new_body = labelled
    else:
        await post_events()
    if decision.delete_job:
        await kube.delete(c.API_VERSION, c.KIND, ns, job.name, uid=job.metadata.uid or "")
    if problems:
        raise ChildCreationFailed(status.message if status is not None else "", waiting=not refused)
    return new_body


def with_attempt_log(logs: list[AttemptLog] | None, attempt: int, tail: str) -> list[AttemptLog]:
    """The kept tails with this attempt's (in place of one kept before: a decision may be carried out twice), the
    latest MAX_ATTEMPT_LOGS attempts only. A cut tail starts at a whole line."""
    if len(tail) > ATTEMPT_LOG_CHARS:
        tail = tail[-ATTEMPT_LOG_CHARS:]
        tail = tail[tail.index("\n") + 1:] if "\n" in tail[:-1] else tail
    kept = [entry for entry in logs or [] if entry.attempt != attempt]
    kept.append(AttemptLog(attempt=attempt, log_tail=tail))
    return sorted(kept, key=lambda entry: entry.attempt)[-MAX_ATTEMPT_LOGS:]


def _amended(job: RLTrainingJob, status: JobStatus | None, **fields: Any) -> JobStatus:
    """The decided status (or, when the phase machine changed nothing, the job's own) with `fields` set."""
    base = status if status is not None else (job.status.operator_fields() if job.status else JobStatus())
    return base.model_copy(update=fields)


async def _write_status(
    kube: Kube, job: RLTrainingJob, status: JobStatus, decided_on: dict[str, Any], pacer: StatusPacer | None = None,
) -> dict[str, Any] | None:
    """Writes what differs from the status the decision was made on; nothing when nothing does, or when the pacer
    holds a count-only change back."""
    patch = status.merge_patch(job.status)
    key = (job.namespace, job.name)
    if (pacer is not None and pacer.hold(key, patch)) or not patch:
        return None
    written = await kube.patch_job_status(job.namespace, job.name, patch, decided_on)
    if pacer is not None:
        pacer.written(key)
    return written


class ChildCreationFailed(Exception):
    """Children could not be created. Refused ones (`waiting` false) are retried with backoff; names still held
    by a deleted job's children (`waiting`) are looked at again soon, as nothing else would say when they go."""

    def __init__(self, message: str, waiting: bool = False) -> None:
        super().__init__(message)
        self.waiting = waiting


async def _create(kube: Kube, obj: dict[str, Any], retries_on_404: int = 5) -> list[Problem]:
    """Creates `obj`; one that exists already counts as created only when it belongs to this job instance."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    for attempt in range(retries_on_404 + 1):
        try:
            existing, created = await kube.create(obj)
            if created:
                log.info("created %s %s/%s", kind, obj["metadata"]["namespace"], name)
                return []
            uid = controller_uid(obj["metadata"])
            holder = controller_uid(existing["metadata"]) if existing else uid
            if uid is not None and holder != uid:
                whose = f"an earlier {c.KIND} of this name (uid {holder})" if holder else "no job (it was not created by rljob)"
                return [Problem(
                    Reason.WAITING_FOR_OLD_CHILDREN,
                    f"{kind} {name} already exists and belongs to {whose}; waiting until it is deleted",
                )]
            return []
        except ApiException as exc:
            if exc.status == 404 and attempt < retries_on_404:
                # What the object refers to was created a moment ago (a Role for its binding) and the
                # API server's authorizer cache has not seen it yet.
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if exc.status in (400, 403, 404, 422):  # admission, quota, validation: report, do not crash
                return [Problem(Reason.CREATE_FAILED, f"cannot create {kind} {name}: {error_text(exc)}")]
            raise
    return []


def _coordination_deadline(job: RLTrainingJob, status: JobStatus | None) -> str:
    started = cond.parse_timestamp(status.attempt_start_time if status is not None else None)
    if started is None:
        return ""
    return cond.timestamp(started + timedelta(seconds=job.spec.cluster_coordination_timeout_seconds))
