"""What the operator sees of a job's children, reduced to the facts the phase machine needs.

These functions turn raw pod and StatefulSet bodies into small frozen records; they are used by the
informers (controller.informer), so the records must be cheap and hashable-free of live references. Slotted: the indexes
hold one per pod and StatefulSet, thousands of them in a burst, and a slotted record has no dict of its own.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import Progress, termination_progress
from ..api.vocabulary import KueueCondition
from .objects import controlling_owner_uid, owning_job_uid, resource_version

# A pod's own phases (core/v1), not a job's: the two in which its containers have stopped for good.
POD_RUNNING, POD_SUCCEEDED, POD_FAILED = "Running", "Succeeded", "Failed"
POD_FINISHED = (POD_SUCCEEDED, POD_FAILED)
POD_UNSCHEDULABLE = "Unschedulable"  # the PodScheduled condition's reason when no node fits
# Container waiting reasons (the kubelet's) that mean a container is stuck, not on its way: each needs a person
# (an image name, a pull secret, a missing Secret or ConfigMap key, a crashing command). ContainerCreating and
# PodInitializing are on their way and not listed.
STUCK_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
})


@dataclass(frozen=True, slots=True)
class PodObservation:
    name: str
    role: str
    attempt: int | None
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    ready: bool = False
    deleting: bool = False
    exit_code: int | None = None
    # The container's terminated reason; else Unschedulable; else a stuck container's waiting reason (ImagePullBackOff).
    reason: str | None = None
    message: str | None = None
    resource_version: int = field(default=0, compare=False)  # a new version alone changes no decision
    controller_uid: str | None = None  # the job instance it belongs to; None for children of old operator versions
    uid: str = ""  # the pod's own
    owner_uid: str = ""  # its controlling owner's: the job for a head, the StatefulSet for a worker
    ip: str = field(default="", compare=False)  # where the operator reads a running head's progress
    progress: Progress | None = None  # the last progress a finished head left as its termination message
    # A head built by the previous version, which runs as its job's own ServiceAccount (controller.legacy)
    legacy: bool = field(default=False, compare=False)
    size_hash: str = ""  # the spec's head and workers sizes it was built from (constants.ANNOTATION_POD_SIZE)

    @property
    def succeeded(self) -> bool:
        return self.phase == POD_SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.phase == POD_FAILED

    @property
    def finished(self) -> bool:
        return self.phase in POD_FINISHED

    @property
    def startup_problem(self) -> str | None:
        """Why this pod cannot start (Unschedulable, or a stuck container's reason), for people; None: none known."""
        if self.deleting or self.finished or self.reason is None:
            return None
        if self.reason != POD_UNSCHEDULABLE and self.reason not in STUCK_WAITING_REASONS:
            return None
        return f"{self.name} {self.reason}: {self.message}" if self.message else f"{self.name} {self.reason}"


@dataclass(frozen=True, slots=True)
class WorkersObservation:
    exists: bool = False
    replicas: int = 0
    ready: int = 0  # ready worker pods: counted from the pods by merge(), else the StatefulSet's readyReplicas
    deleting: bool = False
    resource_version: int = field(default=0, compare=False)  # a new version alone changes no decision
    controller_uid: str | None = None
    name: str = ""
    uid: str = ""  # the StatefulSet's own
    size_hash: str = ""


@dataclass(frozen=True, slots=True)
class WorkloadObservation:
    """The job's Kueue Workload, reduced to Kueue's verdict on it."""

    name: str
    uid: str = ""
    controller_uid: str | None = None
    active: bool = True
    admitted: bool = False  # condition Admitted: quota reserved and every admission check passed
    quota_reserved: bool = False  # status.admission is set (Kueue holds quota for it)
    evicted: bool = False
    evicted_reason: str = ""
    evicted_message: str = ""
    finished: bool = False
    cluster_queue: str = ""
    flavors: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (pod set, the flavors of its resources), once admitted
    counts: tuple[tuple[str, int], ...] = ()  # (pod set, pods) as the Workload's spec asks
    queue_name: str = ""
    deleting: bool = False
    resource_version: int = field(default=0, compare=False)  # a new version alone changes no decision


@dataclass(frozen=True)
class Observed:
    """Everything the phase machine may look at besides the job itself."""

    pods: tuple[PodObservation, ...] = ()
    workers: WorkersObservation = field(default_factory=WorkersObservation)
    kueue: bool = False  # the operator admits jobs labelled with a Kueue queue name through Kueue
    require_isolation: bool = False  # the operator runs only jobs whose pods are isolated (--require-network-isolation)
    workload: WorkloadObservation | None = None  # the job's Workload, when Kueue admits it
    # Its other children (Service, NetworkPolicies, identity) seen deleted while it lives, e.g. "NetworkPolicy x".
    children_gone: tuple[str, ...] = ()

    def head(self, attempt: int) -> PodObservation | None:
        for pod in self.pods:
            if pod.role == c.ROLE_HEAD and pod.attempt == attempt:
                return pod
        return None

    def live_heads(self) -> list[PodObservation]:
        """Head pods still holding resources (any attempt), e.g. to delete on a timeout."""
        return [p for p in self.pods if p.role == c.ROLE_HEAD and not p.finished and not p.deleting]

    def earlier_heads_still_running(self, attempt: int) -> list[PodObservation]:
        """Heads of other attempts whose containers may still run, terminating ones included: a driver
        that is still writing its last checkpoint must be gone before the next one starts on the same volume."""
        return [p for p in self.pods if p.role == c.ROLE_HEAD and p.attempt != attempt and not p.finished]

    def startup_problems(self, attempt: int) -> list[PodObservation]:
        """The attempt's pods (its head, the workers) that cannot start, the head first: what a job waiting for its
        Ray cluster says it waits on, and what a coordination timeout names."""
        pods = [p for p in self.pods if (p.role == c.ROLE_HEAD and p.attempt == attempt) or p.role == c.ROLE_WORKER]
        pods.sort(key=lambda p: (p.role != c.ROLE_HEAD, p.name))
        return [p for p in pods if p.startup_problem is not None]


def observe_pod(body: Mapping[str, Any]) -> PodObservation:
    meta = body.get("metadata", {}) or {}
    labels = meta.get("labels", {}) or {}
    status = body.get("status", {}) or {}
    conditions = {cond.get("type"): cond for cond in status.get("conditions", []) or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    exit_code = reason = message = None
    progress = None
    for cs in status.get("containerStatuses", []) or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated:
            exit_code = terminated.get("exitCode")
            reason = terminated.get("reason")
            message = terminated.get("message")
            progress = termination_progress(message) if labels.get(c.LABEL_ROLE) == c.ROLE_HEAD else None
            if progress is not None:
                message = None  # the driver's record, not words for people
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == POD_UNSCHEDULABLE:
        reason, message = POD_UNSCHEDULABLE, scheduled.get("message")
    if reason is None:
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_WAITING_REASONS:
                reason, message = waiting["reason"], waiting.get("message")
                break
    if status.get("phase") == POD_FAILED and reason is None:
        reason, message = status.get("reason"), status.get("message")  # e.g. Evicted
    attempt_label = labels.get(c.LABEL_ATTEMPT)
    return PodObservation(
        name=meta.get("name", ""),
        role=labels.get(c.LABEL_ROLE, ""),
        attempt=int(attempt_label) if attempt_label and attempt_label.isdigit() else None,
        phase=status.get("phase") or "Pending",
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=exit_code,
        reason=reason,
        message=(message or "")[:500] or None,
        resource_version=resource_version(body),
        controller_uid=owning_job_uid(meta),
        uid=meta.get("uid", ""),
        owner_uid=controlling_owner_uid(meta),
        ip=str(status.get("podIP") or ""),
        progress=progress,
        legacy=(body.get("spec") or {}).get("serviceAccountName") == names.service_account(labels.get(c.LABEL_JOB, "")),
        size_hash=str((meta.get("annotations") or {}).get(c.ANNOTATION_POD_SIZE) or ""),
    )


def observe_workers(body: Mapping[str, Any]) -> WorkersObservation:
    meta = body.get("metadata", {}) or {}
    status = body.get("status", {}) or {}
    return WorkersObservation(
        exists=True,
        replicas=int((body.get("spec") or {}).get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=resource_version(body),
        controller_uid=owning_job_uid(meta),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        size_hash=str((meta.get("annotations") or {}).get(c.ANNOTATION_POD_SIZE) or ""),
    )


def observe_workload(body: Mapping[str, Any]) -> WorkloadObservation:
    meta = body.get("metadata", {}) or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    conditions = {c_["type"]: c_ for c_ in status.get("conditions") or [] if isinstance(c_, dict) and c_.get("type")}

    def true(kind: str) -> bool:
        return (conditions.get(kind) or {}).get("status") == "True"

    admission = status.get("admission") or {}
    flavors = tuple(
        (str(a.get("name", "")), tuple(sorted(set((a.get("flavors") or {}).values()))))
        for a in admission.get("podSetAssignments") or []
    )
    evicted = conditions.get(KueueCondition.EVICTED) or {}
    return WorkloadObservation(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        controller_uid=owning_job_uid(meta),
        active=spec.get("active", True) is not False,
        admitted=true(KueueCondition.ADMITTED),
        quota_reserved=bool(admission),
        evicted=true(KueueCondition.EVICTED),
        evicted_reason=str(evicted.get("reason") or ""),
        evicted_message=str(evicted.get("message") or ""),
        finished=true(KueueCondition.FINISHED),
        cluster_queue=str(admission.get("clusterQueue") or ""),
        flavors=flavors,
        counts=tuple((str(p.get("name", "")), int(p.get("count") or 0)) for p in spec.get("podSets") or []),
        queue_name=str(spec.get("queueName") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=resource_version(body),
    )


def merge(
    pods: Iterable[PodObservation],
    workers: Iterable[WorkersObservation],
    uid: str | None = None,
    workloads: Iterable[WorkloadObservation] = (),
    kueue: bool = False,
) -> Observed:
    """The children of the job instance `uid`; those of another instance are left out.

    Children are found by the job-name label, which a deleted job's leftovers share with a new job of
    the same name: its Succeeded head would otherwise end the new job, its terminating one fail it.
    """

    def ours(o: PodObservation | WorkersObservation | WorkloadObservation) -> bool:
        return uid is None or o.controller_uid is None or o.controller_uid == uid

    pods, workers = list(pods), [w for w in workers if w.exists]
    live_workers = [w for w in workers if ours(w)]
    live_workloads = [w for w in workloads if ours(w)]
    current = max(live_workers, key=lambda w: w.resource_version) if live_workers else WorkersObservation()
    return Observed(
        pods=tuple(sorted((p for p in pods if ours(p)), key=lambda p: p.name)),
        workers=_with_ready_pods(current, pods),
        kueue=kueue,
        workload=max(live_workloads, key=lambda w: w.resource_version) if live_workloads else None,
    )


def _with_ready_pods(workers: WorkersObservation, pods: Iterable[PodObservation]) -> WorkersObservation:
    """The StatefulSet with its ready pods counted from the pods themselves.

    Its status.readyReplicas says the same, but later: the StatefulSet controller writes it through the controller
    manager's client, whose request rate (20/s by default) it shares with creating every StatefulSet's pods. In a
    burst of 1000 jobs that put a job's Running 100 s (median) after its last pod was Ready. The pods' own events
    reach the operator at once, in both directions: a worker that fails counts at once too."""
    if not workers.exists or not workers.uid:
        return workers
    ready = sum(1 for p in pods if p.owner_uid == workers.uid and p.role == c.ROLE_WORKER and p.phase == POD_RUNNING
                and p.ready and not p.deleting)
    return workers if ready == workers.ready else replace(workers, ready=ready)
