"""Kueue: the Workload that admits a job's whole Ray cluster, and the job as admitted.

A Ray cluster is useful only whole (a head without its workers holds a GPU and trains nothing), so Kueue
sees one Workload with two pod sets, the head (1 pod, its GPUs) and the workers (N pods), and admits them
together or not at all. The templates are the very pods the operator will create, so Kueue counts their real
requests. Once admitted, the flavors Kueue chose place the pods: their node labels and tolerations are added
to the job's own before any pod is built.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob, Toleration
from ..api.vocabulary import KueueCondition
from .context import BuildContext
from .head import head_pod
from .meta import object_meta, type_meta
from .workers import workers_statefulset


def queue_name(job: RLTrainingJob) -> str | None:
    """The Kueue LocalQueue a job asks for (its `kueue.x-k8s.io/queue-name` label); None: Kueue is not involved."""
    return job.metadata.labels.get(c.KUEUE_QUEUE_LABEL) or None


def pod_set_counts(job: RLTrainingJob) -> tuple[tuple[str, int], ...]:
    """(pod set, pods) as the job's Workload asks: the head, and the workers when there are any. Kueue cannot change
    a Workload's pod sets, so a job whose counts differ from its Workload's needs a new one."""
    if job.spec.workers.replicas > 0:
        return (c.PODSET_HEAD, 1), (c.PODSET_WORKERS, job.spec.workers.replicas)
    return ((c.PODSET_HEAD, 1),)


def workload(job: RLTrainingJob, ctx: BuildContext, active: bool = True) -> dict[str, Any]:
    head = head_pod(job, ctx, attempt=1, coordination_deadline="")
    templates = {c.PODSET_HEAD: {"metadata": {"labels": head["metadata"]["labels"]}, "spec": head["spec"]}}
    if job.spec.workers.replicas > 0:
        templates[c.PODSET_WORKERS] = workers_statefulset(job, ctx)["spec"]["template"]
    pod_sets = [{"name": name, "count": count, "template": templates[name]} for name, count in pod_set_counts(job)]
    spec: dict[str, Any] = {"queueName": queue_name(job) or "", "podSets": pod_sets, "active": active}
    return {
        **type_meta(c.WORKLOAD),
        "metadata": object_meta(job, names.workload(job.name), c.COMPONENT_WORKLOAD),
        "spec": spec,
    }


@dataclass(frozen=True)
class Placement:
    """Where a pod set may run, from the ResourceFlavors Kueue assigned to it."""

    node_labels: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


def flavor_placement(flavor: Mapping[str, Any]) -> Placement:
    """A ResourceFlavor object → what it asks of the pods that use it (spec.nodeLabels, spec.tolerations)."""
    spec = flavor.get("spec") or {}
    return Placement(node_labels=dict(spec.get("nodeLabels") or {}), tolerations=tuple(spec.get("tolerations") or ()))


def merge_placements(placements: list[Placement]) -> Placement:
    labels: dict[str, str] = {}
    tolerations: list[Mapping[str, Any]] = []
    for p in placements:
        labels.update(p.node_labels)
        tolerations += [t for t in p.tolerations if t not in tolerations]
    return Placement(labels, tuple(tolerations))


def admitted(job: RLTrainingJob, placements: Mapping[str, Placement]) -> RLTrainingJob:
    """The job as Kueue admitted it: each pod set's flavor node labels and tolerations added to the role's own
    (the job's own win where both name a label, as Kueue does for its own job kinds)."""
    update: dict[str, Any] = {}
    for pod_set, role in ((c.PODSET_HEAD, job.spec.head), (c.PODSET_WORKERS, job.spec.workers)):
        placement = placements.get(pod_set)
        if placement is None or (not placement.node_labels and not placement.tolerations):
            continue
        own = [t.model_dump(by_alias=True, exclude_none=True) for t in role.tolerations]
        extra = [Toleration.model_validate(t) for t in placement.tolerations if t not in own]
        update[pod_set] = role.model_copy(update={
            "node_selector": {**placement.node_labels, **role.node_selector},
            "tolerations": [*role.tolerations, *extra],
        })
    if not update:
        return job
    spec = job.spec.model_copy(update={k: v for k, v in (("head", update.get(c.PODSET_HEAD)),
                                                          ("workers", update.get(c.PODSET_WORKERS))) if v is not None})
    return job.model_copy(update={"spec": spec})


# ── the Workload's status: what the job's controller writes (Kueue writes the rest) ─────────────────────────


def _with_condition(conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str, now: str,
                    generation: int | None) -> list[dict[str, Any]]:
    value = "True" if status else "False"
    out = [dict(x) for x in conditions if x.get("type") != type_]
    old = next((x for x in conditions if x.get("type") == type_), None)
    changed = old is None or old.get("status") != value
    new = {"type": str(type_), "status": value, "reason": reason, "message": message[:32768],
           "lastTransitionTime": now if changed else old.get("lastTransitionTime", now)}
    if generation is not None:
        new["observedGeneration"] = generation
    return [*out, new]


def finished_patch(workload_body: Mapping[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    """Marks the Workload Finished (reason Succeeded or Failed), so Kueue frees its quota for the next job.
    Carries the resourceVersion it was computed from: a concurrent write by Kueue makes it a conflict, not a loss."""
    meta = workload_body.get("metadata") or {}
    conditions = list((workload_body.get("status") or {}).get("conditions") or [])
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {
        "conditions": _with_condition(conditions, KueueCondition.FINISHED, True, reason, message or reason, now, meta.get("generation"))}}


# Evictions after which Kueue expects the job to be requeued at once (its own job kinds do the same).
REQUEUED_AFTER = ("Preempted", "NodeFailures")


def released_patch(workload_body: Mapping[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    """After an eviction, once the job's pods are gone: the quota reservation cleared (QuotaReserved and Admitted
    false, no admission), so Kueue counts the quota free and queues the Workload again."""
    meta = workload_body.get("metadata") or {}
    generation = meta.get("generation")
    conditions = list((workload_body.get("status") or {}).get("conditions") or [])
    conditions = _with_condition(conditions, KueueCondition.QUOTA_RESERVED, False, "Pending", message or reason, now, generation)
    if any(x.get("type") == KueueCondition.ADMITTED and x.get("status") == "True" for x in conditions):
        conditions = _with_condition(conditions, KueueCondition.ADMITTED, False, "NoReservation", "the quota reservation was released",
                                     now, generation)
    conditions = _with_condition(conditions, "Requeued", reason in REQUEUED_AFTER, reason, message or reason, now, generation)
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {"admission": None, "conditions": conditions}}
