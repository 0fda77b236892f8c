"""The reconciler: the jobs' cache, what a change of a job or its children queues, and one reconcile of a job, from
its observation through its decision (controller.phases) to its writes (controller.apply).

Keys go through a WorkQueue (controller.workqueue): one reconcile per job at a time, a job changed meanwhile
reconciled again afterwards, delayed looks for the time-based rules, backoff on failure. Its lanes put a job whose
cluster already exists (it has pods, or is Initializing or Running), whose reconcile is at most a status write,
before a job whose children are still to be created.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from .. import resources
from ..api import constants as c
from ..api import names
from ..api.manifest import ManifestError, parse_job
from ..api.models import JobStatus, RLTrainingJob
from ..api.vocabulary import Phase
from . import kueue, observe, phases
from .apply import ChildCreationFailed, apply
from .expectations import HeadExpectations
from .kube import ApiException, Kube, error_text
from .objects import Key, key_of, owning_job_uid, resource_version
from .pacing import StatusPacer
from .phases import Decision
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

# A decision written onto a job that changed meanwhile (409) is made again on the job read afresh, this many times
# at most; then the reconcile counts as failed and backs off, so no writer can keep a decision from being made.
MAX_CONFLICT_RETRIES = 5
PARSED_JOBS_KEPT = 256
OLD_CHILDREN_POLL_SECONDS = 2.0
OLD_CHILDREN_MAX_POLL_SECONDS = 30.0
CLUSTER_UP_PHASES = (Phase.INITIALIZING, Phase.RUNNING)
# The children besides pods and the StatefulSet that are created again when deleted while their job lives
# (apiVersion, kind; the operator's departure streams watch them for deletions). Not the checkpoint claim: Kubernetes keeps a
# claim in use, and one deleted on purpose is a person's choice to start afresh, which the next attempt makes.
KEPT_CHILDREN = (c.SERVICE, c.NETWORK_POLICY)
KEPT_KINDS = tuple(kind for _, kind in KEPT_CHILDREN)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# What the log says of a deleted job's children that the operator does not delete itself (all of them, when the job
# was deleted through finalizers, as `--cascade=orphan` and `foreground` do: orphaned ones stay).
LEFT_TO_COLLECTOR = "its children are left to the garbage collector"


def _decision_view(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a job a decision reads: its identity, labels, annotations, spec and status but its progress. A change
    of anything else (the progress the operator writes, a resourceVersion) is no reason to decide again."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    return (
        meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"), meta.get("labels"), annotations,
        meta.get("finalizers"), body.get("spec"), {k: v for k, v in status.items() if k != "progress"},
    )


def cached_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The job as the reconciler keeps it: without metadata.managedFields, which no decision reads and which
    (one entry per field manager, the operator's status writes included) is often the bulk of a job's metadata,
    nor the copy of the whole manifest that `kubectl apply` keeps in an annotation.
    """
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if "managedFields" not in meta and LAST_APPLIED not in annotations:
        return dict(body)
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    if LAST_APPLIED in annotations:
        kept["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**body, "metadata": kept}


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        ctx: resources.BuildContext,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        on_reconciled: Callable[[Key, JobStatus | None, JobStatus | None, float, bool], None] | None = None,
        *,
        pods: Mapping[Key, Iterable[observe.PodObservation]] | None = None,
        workers: Mapping[Key, Iterable[observe.WorkersObservation]] | None = None,
        workloads: Mapping[Key, Iterable[observe.WorkloadObservation]] | None = None,
        present: Callable[[Key], set[str]] | None = None,
        may_act: Callable[[], bool] = lambda: True,
        pacer: StatusPacer | None = None,
    ) -> None:
        self.kube, self.ctx, self.clock = kube, ctx, clock
        self.jobs: dict[Key, dict[str, Any]] = {}
        # The streams' indexes of each job's children, read as they are when a job is reconciled.
        self.pods: Mapping[Key, Iterable[observe.PodObservation]] = pods if pods is not None else {}
        self.workers: Mapping[Key, Iterable[observe.WorkersObservation]] = workers if workers is not None else {}
        # Kueue: jobs labelled with a queue name are admitted through a Workload (None: the integration is off).
        self.workloads = workloads
        self.flavors = kueue.Flavors(kube)
        self.on_reconciled = on_reconciled
        # The kept children ("Service x") that exist, from the departure streams' lists; None: not known. A job seen
        # for the first time since start-up gets back any that went while the operator was not running.
        self.present = present
        # Leader election's check before every reconcile: a replica that is not (or no longer) the leader
        # neither reads its cache into decisions nor writes.
        self.may_act = may_act
        self.queue = WorkQueue(self._lane, concurrency)
        self._checked: set[Key] = set()
        self._waiting: dict[Key, float] = {}  # since when a job waits for a deleted job's children to go
        self._gone: dict[Key, set[str]] = {}  # children of live jobs seen deleted, to create again ("Service x")
        self._parsed: OrderedDict[Key, tuple[int, RLTrainingJob]] = OrderedDict()  # least recently used first
        self._statuses: dict[Key, tuple[Mapping[str, Any], JobStatus]] = {}  # (the cached body, its status read)
        self._notes: dict[Key, str] = {}  # the last Decision.note logged of each job, so that a repeat is not logged
        self.pacer = pacer if pacer is not None else StatusPacer(requeue=self.enqueue)
        self.expected = HeadExpectations()  # head pods created, not yet shown by the pod watch
        self._releases: set[asyncio.Task[None]] = set()

    # ── feeding ────────────────────────────────────────────────────────────────────────────────

    def upsert_job(self, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        old = self.jobs.get(key)
        if old is not None and resource_version(body) < resource_version(old):
            self.enqueue(key)
            return
        self.jobs[key] = cached_body(body)
        if old is None or _decision_view(old) != _decision_view(body):
            self.enqueue(key)

    def pods_changed(self, key: Key) -> None:
        """The pod watch changed a job's pods."""
        self.expected.seen(key, self.pods.get(key, ()))
        self.enqueue(key)

    def child_gone(self, key: Key, uid: str | None, what: str) -> None:
        """A Service or NetworkPolicy of `key` was deleted; `uid`, the job instance it belonged to (None:
        not known). A deleted job's children going with it, or an earlier instance's, are no reason to act."""
        body = self.jobs.get(key)
        if body is None or (uid is not None and uid != (body.get("metadata") or {}).get("uid")):
            return
        self._gone.setdefault(key, set()).add(what)
        self.enqueue(key)

    def remove_job(self, key: Key, uid: str | None = None) -> None:
        self.jobs.pop(key, None)
        self._gone.pop(key, None)
        self._checked.discard(key)
        self._parsed.pop(key, None)
        self._statuses.pop(key, None)
        self.expected.forget(key)
        self.pacer.forget(key)
        self._waiting.pop(key, None)
        self._notes.pop(key, None)
        self.queue.remove(key)
        if not (self.queue.started and self.may_act()):
            return  # a standby acts on nothing, and says nothing of it
        if uid:
            task = asyncio.create_task(self._release(key, uid), name=f"rljob-release-{key[0]}/{key[1]}")
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
        else:
            log.info("%s/%s is gone; %s", *key, LEFT_TO_COLLECTOR)

    async def _release(self, key: Key, uid: str) -> None:
        """A deleted job's head Service, workers and pods, deleted at once by name: the garbage collector would take
        its turn (one call per object, at its controller manager's request rate), so a large job frees its GPUs and
        CPUs sooner. The garbage collector still removes everything else, and these too when the operator is not
        running. Only the deleted instance's children, each by its own uid: a new job of the same name keeps its."""
        statefulsets = [w for w in self.workers.get(key, ()) if w.controller_uid == uid and not w.deleting]
        pods = [p for p in self.pods.get(key, ()) if p.controller_uid == uid and not p.deleting]
        if not statefulsets and not pods:
            log.info("%s/%s is gone; %s", *key, LEFT_TO_COLLECTOR)
            return
        # The head's Service before a head pod: else the endpoint controllers rewrite the Service's Endpoints and
        # EndpointSlice as the pod terminates and again as it goes (2.4 writes per job in the benchmark's burst), for
        # objects the collector deletes a moment later. Read from the watch cache, deleted only by its uid if it is
        # this job instance's: a new job of the same name keeps its own. A failure here still lets the pods go.
        if any(p.role == c.ROLE_HEAD for p in pods):
            try:
                service = await self.kube.get(*c.SERVICE, key[0], names.head_service(key[1]), cached=True)
                meta = (service or {}).get("metadata") or {}
                if meta.get("uid") and owning_job_uid(meta) == uid:
                    await self.kube.delete(*c.SERVICE, key[0], meta["name"], uid=meta["uid"])
            except Exception as exc:  # best effort, as below
                log.info("deleting the head Service of deleted job %s/%s: %s", *key, error_text(exc))
        try:
            # The StatefulSet first, or its controller would replace the pods deleted next.
            for sts in statefulsets:
                await self.kube.delete(*c.STATEFULSET, key[0], sts.name, uid=sts.uid)
            await asyncio.gather(*(self.kube.delete(*c.POD, key[0], p.name, uid=p.uid) for p in pods))
        except Exception as exc:  # best effort: the garbage collector does it anyway
            log.info("%s/%s is gone; releasing its pods failed, %s: %s", *key, LEFT_TO_COLLECTOR, error_text(exc))
            return
        # Said once its deletes are made, so that the line is proof of what the operator did with the job's children.
        log.info("%s/%s is gone; %d StatefulSet(s) and %d pod(s) of it deleted at once, the rest left to the garbage "
                 "collector", *key, len(statefulsets), len(pods))

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        self.queue.add(key, delay)

    def _lane(self, key: Key) -> int:
        """0: the job's children exist (it has pods), a reconcile is at most a status write; 1: anything else."""
        if next(iter(self.pods.get(key, ())), None) is not None:
            return 0
        status = self.status(key)
        return 0 if status is not None and status.phase in CLUSTER_UP_PHASES else 1

    def status(self, key: Key) -> JobStatus | None:
        """The cached job's status (None: no such job), read once per version of the job, when first asked for: the
        lanes ask on every event of the job's pods, most of them for a job that has not changed since."""
        body = self.jobs.get(key)
        if body is None:
            self._statuses.pop(key, None)
            return None
        cached = self._statuses.get(key)
        if cached is not None and cached[0] is body:
            return cached[1]
        status = JobStatus.read(body.get("status"))
        self._statuses[key] = (body, status)
        return status

    # ── running ────────────────────────────────────────────────────────────────────────────────

    def start(self) -> None:
        """Starts the workers; every job known by now is reconciled (a new leader's first pass over its cache)."""
        if not self.queue.started:
            self.queue.start(self._reconcile_safely)
            for key in list(self.jobs):
                self.enqueue(key)

    @property
    def started(self) -> bool:
        return self.queue.started

    def healthy(self) -> bool:
        """Every worker is alive (readiness): a process whose reconciling stopped must not look ready."""
        return self.queue.healthy()

    async def stop(self) -> None:
        await self.queue.stop()

    async def _reconcile_safely(self, key: Key) -> None:
        started = time.monotonic()
        before, body, failed = self.status(key), None, False
        try:
            body = await self.reconcile(key)
            self.queue.forget(key)
            self._waiting.pop(key, None)
        except asyncio.CancelledError:
            raise
        except ChildCreationFailed as exc:
            if exc.waiting:
                self._wait_for_old_children(key, exc)
            else:
                failed = True
                self._backoff(key, exc)
        except Exception as exc:
            failed = True
            self._backoff(key, exc)
        if self.on_reconciled:
            try:
                after = self.status(key) if key in self.jobs or body is None else JobStatus.read(body.get("status"))
                self.on_reconciled(key, before, after, time.monotonic() - started, failed)
            except Exception:  # a hook (metrics) never costs a worker or a decision
                log.exception("reconcile %s/%s: the post-reconcile hook failed", *key)

    def _wait_for_old_children(self, key: Key, exc: ChildCreationFailed) -> None:
        """Not a failure: the garbage collector is removing a deleted job's children, whose NetworkPolicies and
        Service are watched here for deletions only, so only looking again tells when the names are free. The
        wait between looks grows with the time waited, not with the reconciles meanwhile: counted as failures,
        the old instance's pod events took the backoff to a minute within seconds, and a re-created job waited
        that long after its names were free."""
        self.queue.forget(key)
        now = time.monotonic()
        since = self._waiting.setdefault(key, now)
        delay = min(OLD_CHILDREN_MAX_POLL_SECONDS, max(OLD_CHILDREN_POLL_SECONDS, (now - since) / 4))
        log.log(logging.INFO if since == now else logging.DEBUG, "reconcile %s/%s: %s; looking again in %.0fs",
                *key, exc, delay)
        if key in self.jobs:
            self.enqueue(key, delay)

    def _backoff(self, key: Key, exc: Exception) -> None:
        delay = self.queue.backoff(key)
        level = logging.INFO if isinstance(exc, ChildCreationFailed) else logging.WARNING
        log.log(level, "reconcile %s/%s failed (retry in %.0fs): %s", *key, delay, error_text(exc),
                exc_info=not isinstance(exc, ChildCreationFailed))
        if key in self.jobs:
            self.enqueue(key, delay)

    async def reconcile(self, key: Key) -> dict[str, Any] | None:
        """One decision, carried out. A write refused because the job changed after it was read (409) is decided
        again on the job read afresh, up to MAX_CONFLICT_RETRIES times; then the conflict is raised (a failure)."""
        for retry in range(MAX_CONFLICT_RETRIES + 1):
            try:
                return await self._reconcile_once(key)
            except ApiException as exc:
                if exc.status != 409 or retry == MAX_CONFLICT_RETRIES:
                    if exc.status == 409:
                        log.warning("reconcile %s/%s: the job kept changing under %d decisions; backing off",
                                    *key, retry + 1)
                    raise
            fresh = await self.kube.get(c.API_VERSION, c.KIND, *key)
            if fresh is None or key not in self.jobs:
                return None
            log.debug("reconcile %s/%s: the job changed meanwhile; deciding again on the fresh one", *key)
            self.upsert_job_quietly(fresh)
        return None

    async def _reconcile_once(self, key: Key) -> dict[str, Any] | None:
        body = self.jobs.get(key)
        if body is None or not self.may_act():
            return None
        meta = body.get("metadata") or {}
        try:
            job = self._parse(key, body)
        except ManifestError as exc:
            observed = self._observed(key, meta.get("uid"))
            decision = phases.invalid(JobStatus.read(body.get("status")), meta.get("generation"), exc.problems,
                                      observed, self.clock())
            return await self._carry_out(key, None, body, observed, decision)
        self._restore_missing_children(key, job)
        gone = tuple(sorted(self._gone.get(key, ())))
        observed = self._observed(key, job.metadata.uid, gone)
        decision = phases.step(job, observed, self.clock())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("reconcile %s/%s (generation %s, suspend %s): phase %s -> %s; workload %s", *key,
                      job.metadata.generation, job.spec.suspend, job.status.phase if job.status else None,
                      decision.status.phase if decision.status else "(unchanged)", observed.workload)
        new_body = await self._carry_out(key, job, body, observed, decision)
        self._log_note(key, decision.note)
        if gone and key in self._gone:  # created again (or no longer needed); a deletion seen meanwhile stays
            left = self._gone[key] - set(gone)
            if left:
                self._gone[key] = left
            else:
                del self._gone[key]
        return new_body

    def _log_note(self, key: Key, note: str | None) -> None:
        """Logs why a pass did nothing (Decision.note), after it was carried out, and only when it changed: a job
        being deleted is reconciled on every event of its pods."""
        if note is None:
            self._notes.pop(key, None)
        elif self._notes.get(key) != note:
            self._notes[key] = note
            log.info("%s/%s %s", *key, note)

    def _observed(self, key: Key, uid: str | None, gone: tuple[str, ...] = ()) -> observe.Observed:
        """What the phase machine sees of job instance `uid` besides the job: its children in the streams' indexes
        (with a head just created that the pod watch has yet to show), and the operator's own rules."""
        observed = observe.merge(
            self.expected.with_expected(key, self.pods.get(key, ())), self.workers.get(key, ()), uid,
            workloads=self.workloads.get(key, ()) if self.workloads is not None else (), kueue=self.workloads is not None,
        )
        return replace(observed, children_gone=gone, require_isolation=self.ctx.require_isolation)

    async def _carry_out(
        self, key: Key, job: RLTrainingJob | None, body: dict[str, Any], observed: observe.Observed, decision: Decision,
    ) -> dict[str, Any] | None:
        """Applies the decision (`job` None: the job does not parse), keeps what it wrote and schedules the next look."""
        placed = job
        if job is not None and (decision.ensure_children or decision.create_head is not None) \
                and observed.workload is not None and observed.workload.admitted \
                and job.metadata.labels.get(c.KUEUE_QUEUE_LABEL):
            placed = await self.flavors.admitted(job, observed.workload)  # where Kueue's flavors put the pods
        if job is not None and decision.create_head is not None:
            self.expected.expect(key, names.head_pod(job.name, decision.create_head), decision.create_head, job.metadata.uid or "")
        try:
            new_body = await apply(self.kube, self.ctx, placed, body, decision, observed.workload, self.pacer, observed)
        except BaseException:
            if decision.create_head is not None:
                self.expected.forget(key)  # the job stays Pending: the next pass looks for its head again
            raise
        if new_body is not None and key in self.jobs:
            self.upsert_job_quietly(new_body)
        if decision.requeue_after is not None and key in self.jobs:
            self.enqueue(key, decision.requeue_after)
        return new_body or body

    def _parse(self, key: Key, body: dict[str, Any]) -> RLTrainingJob:
        """The job's model, validated once per resourceVersion: a job's pods change far more often than the job,
        and every decision only reads the model. Only the most recently reconciled jobs' models are kept (a model
        is about 10 KB, twice its body): the pod events of a burst come for the jobs just created, and a quiet job
        parsed again costs a fraction of a millisecond."""
        version = resource_version(body)
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == version and version:
            self._parsed.move_to_end(key)
            return cached[1]
        job = parse_job(body, f"{c.KIND} {key[0]}/{key[1]}")
        self._parsed[key] = (version, job)
        self._parsed.move_to_end(key)
        while len(self._parsed) > PARSED_JOBS_KEPT:
            self._parsed.popitem(last=False)
        return job

    def upsert_job_quietly(self, body: Mapping[str, Any]) -> None:
        """Our own write is newer than the watch: keep it, but it is not a reason to reconcile again."""
        key = key_of(body)
        old = self.jobs.get(key)
        if old is None or resource_version(body) >= resource_version(old):
            self.jobs[key] = cached_body(body)

    def _restore_missing_children(self, key: Key, job: RLTrainingJob) -> None:
        """The first time this process reconciles a live job, the kept children the departure streams' lists lack
        (deleted while no operator ran, so no deletion was seen) are created again, as those deleted later are."""
        if self.present is None or key in self._checked:
            return
        self._checked.add(key)
        if job.status is None or job.status.phase not in CLUSTER_UP_PHASES:
            return  # a job whose children are still to be created, or that ended, has nothing to restore
        present = self.present(key)
        missing = {f"{o['kind']} {o['metadata']['name']}" for o in resources.static_children(job, self.ctx)
                   if o["kind"] in KEPT_KINDS} - present
        if missing:
            self._gone.setdefault(key, set()).update(missing)
