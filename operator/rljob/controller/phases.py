"""The phase machine: pure functions of (job, observed children, now) → Decision. `step` decides for a job that
parses, `invalid` for one that does not, and `blocked` what a pass whose creations failed writes instead.

    phase          observation                                   → next phase    reason / event
    ─────────────  ────────────────────────────────────────────  ─────────────  ─────────────────────────────
    (new)          spec.suspend                                  Suspended      Suspended
    (new)          -                                             Pending        Accepted (children created)
    Pending        the pass created this attempt's head pod      Initializing   ClusterStarting (one status write)
    any active     spec.suspend                                  Suspended      Suspended (pods deleted)
    any active     activeSeconds + (now - startTime) > budget    Failed         DeadlineExceeded (pods deleted)
    Pending/Init   now > attemptStartTime + coordination timeout Failed         ClusterCoordinationTimeout
    Pending        an earlier attempt's head still runs          Pending        (deleted; head created once gone)
    Pending        head pod of this attempt exists               Initializing   ClusterStarting
    Init/Running   head pod Succeeded                            Succeeded      DriverSucceeded (workers deleted)
    Init/Running   head pod Failed/gone, exit code 2             Failed         DriverFailed (config error: no retry)
    Init/Running   head pod Failed/gone, failures < backoffLimit Pending        AttemptFailed (next attempt)
    Init/Running   head pod Failed/gone, no backoff left         Failed         BackoffLimitExceeded
    Initializing   head ready and all workers ready              Running        ClusterReady
    Initializing   a pod of the attempt cannot start             Initializing   ClusterReady=False Unschedulable /
                                                                                ContainersNotStarting (warning)
    Running        workers not all ready                         Running        ClusterReady=False WorkersNotReady
    Running        ... for DEGRADED_AFTER (60 s)                 Running        ClusterReady=False ClusterDegraded (warning)
    Init/Running   its Service or a NetworkPolicy gone        -              ChildrenRestored (created again)
    Suspended      spec.suspend false                            Pending        Resumed (new attempt)
    Init/Running   pods built before an edit of head or workers  Pending        Resumed (pods replaced, new attempt)
    any            deleted, finalizers hold it                   -              nothing: the collector's turn (logged)
    any            does not parse (`invalid`)                    Failed         ValidationFailed (pods deleted)
    not finished   isolation off, the operator requires it       Failed         NetworkIsolationRequired (pods deleted)
    any            creating a child refused (`blocked`)          unchanged      CreateFailed (warning; retried, backing off)
    any            a child's name held by a deleted job's child  unchanged      WaitingForOldChildren (looked at again soon)
  With Kueue (a job labelled kueue.x-k8s.io/queue-name, operator run with --kueue): one Workload per job
    (new)          -                                             Suspended      Queued (Workload created)
    Suspended      Workload admitted                             Pending        Admitted (new attempt)
    any active     Workload evicted, gone or resized             Suspended      Evicted / Queued (pods deleted)
    Suspended      evicted, pods gone                            Suspended      (admission released: requeued)
    Succeeded/Failed  Workload not finished                      -              (Workload marked Finished)
    Succeeded/Failed  ttlSecondsAfterFinished elapsed            (deleted)      -

Time-based rules read timestamps from status, never in-memory timers, so they hold across
operator restarts. Status values are absolute (attempts = N+1, not "increment"), so applying a
decision twice is harmless.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api import constants as c
from ..api import names
from ..api.models import JobStatus, RLTrainingJob
from ..api.vocabulary import TERMINAL_PHASES, ConditionType, EventType, Phase, Reason
from ..resources.meta import pod_size_hash, selector_string
from ..resources.workers import worker_selector
from ..resources.workload import pod_set_counts
from . import conditions as cond
from .observe import POD_UNSCHEDULABLE, Observed, PodObservation

# How often to look again while waiting on something that has no event (a deadline ahead).
POLL_SECONDS = 30.0
# Status timestamps have one-second resolution and are truncated: the real start lies within the
# recorded second, so deadlines count from its end and never fire early.
TIMESTAMP_RESOLUTION = timedelta(seconds=1)
# How long a running cluster may be short of ready pods before it is ClusterDegraded (a warning): longer than a head
# takes to stop Ray after its driver finished (the pod's stop grace, 40 s, and its readiness probe's 15 s).
DEGRADED_AFTER = timedelta(seconds=60)
# A refusal's or a failed creation's message at most: the API server's own errors (every field a validation names)
# can be long, and the status and the event show them whole up to here.
PROBLEMS_MESSAGE_CHARS = 2000
ISOLATION_REQUIRED = ("spec.network.isolation is false, but this cluster's operator requires isolated jobs "
                      "(--require-network-isolation): re-create the job without it")


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str


@dataclass(frozen=True)
class CreateProblem:
    """A child that a pass could not create, as apply found it: the API server refused it (`refused`: a quota, an
    admission policy, validation), or its name is taken by an object that is not this job instance's (a deleted
    job's child that the garbage collector has yet to remove)."""

    refused: bool
    message: str


@dataclass(frozen=True)
class Blocked:
    """What a pass whose creations failed writes and posts in place of what it decided (`blocked`)."""

    status: JobStatus
    event: Event
    waiting: bool  # only names a deleted job's children still hold: looked at again soon, not backed off


@dataclass
class Decision:
    """What to do; the handlers apply it and nothing else."""

    status: JobStatus | None = None  # the job's whole status as it should be (progress aside); None: unchanged
    ensure_children: bool = False  # static children + worker StatefulSet (create if missing)
    create_head: int | None = None  # attempt whose head pod to create
    delete_pods: list[str] = field(default_factory=list)
    delete_workers: bool = False
    scale_workers: int | None = None
    capture_log: str | None = None  # a finished head pod whose log tail to keep in status
    capture_attempt: int | None = None  # the attempt that pod ran (its tail is kept per attempt too)
    delete_job: bool = False
    job_labels: dict[str, str] | None = None  # labels to merge into the job's own metadata
    # Kueue: the job's Workload.
    ensure_workload: bool = False  # create it if missing
    workload_active: bool | None = None  # set its spec.active (False: out of the queue while the user suspends)
    replace_workload: bool = False  # delete it (its pod sets no longer match the job); the next pass creates it
    release_workload: tuple[str, str] | None = None  # evicted and stopped: give the quota back (reason, message)
    finish_workload: tuple[str, str] | None = None  # the job ended: Finished (reason, message) frees the quota
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # What `status` and `events` become once this pass's head pod is created: Initializing at once, so that a new job
    # is written once (not Pending and then Initializing) and reconciled once less. While creating is refused or
    # waits for a deleted job's children, `status` (Pending, with why) is written instead.
    head_created: JobStatus | None = None
    head_created_events: list[Event] = field(default_factory=list)
    # For the operator's log: why a pass that changes nothing does nothing, for a job whose state calls for no event
    # (one being deleted). The reconciler logs it when it differs from the job's last one: a person who wonders why
    # a job is not retried, and a test that waits for proof that the operator looked, read it there.
    note: str | None = None


def step(job: RLTrainingJob, observed: Observed, now: datetime) -> Decision:
    status = job.status.operator_fields() if job.status is not None else JobStatus()
    phase = status.phase
    if observed.require_isolation and not job.spec.network.isolation and phase not in TERMINAL_PHASES:
        # Also a job that started before (an operator restarted with the rule), and one being deleted.
        return _refuse(status, job.metadata.generation, Reason.NETWORK_ISOLATION_REQUIRED, ISOLATION_REQUIRED, observed, now)
    if job.metadata.deletion_timestamp:
        # Deleted, and held by finalizers (`kubectl delete --cascade=foreground`, or anyone's): the garbage collector
        # takes the children, and nothing is created, retried or reported failed in their place.
        return Decision(note=deleting_note(observed))
    machine = _Machine(job, observed, now, status)
    if phase is None:
        decision = machine.new()
    elif phase in TERMINAL_PHASES:
        decision = machine.finished()
    elif phase == Phase.SUSPENDED:
        decision = machine.suspended()
    else:
        decision = machine.active()
    if job.metadata.labels.get(c.LABEL_EXPERIMENT) != job.spec.experiment and not decision.delete_job:
        # So that `kubectl get rltj -l rljob.dev/experiment=NAME` finds the job itself, not only its children.
        decision.job_labels = {c.LABEL_EXPERIMENT: job.spec.experiment}
    return decision


def deleting_note(observed: Observed) -> str:
    """What the log says of a job held by finalizers after its deletion: that it still has pods, then that it has
    none (when a live job's head going would be a failed attempt), and no line per pod. Whether its children go or
    are orphaned is the deleter's choice, which the garbage collector carries out."""
    pods = "its pods remain" if observed.pods else "no pods left"
    return f"is being deleted ({pods}): nothing to do, its children are left to the garbage collector"


def invalid(status: JobStatus, generation: int | None, problems: Sequence[str], observed: Observed, now: datetime) -> Decision:
    """A job that does not parse (`problems`, one per field): it breaks a rule the API server cannot express, or one
    this version added since the job was created. `status` is what could be read of its own."""
    return _refuse(status.operator_fields(), generation, Reason.VALIDATION_FAILED, "; ".join(problems), observed, now)


def _refuse(old: JobStatus, generation: int | None, reason: Reason, message: str, observed: Observed, now: datetime) -> Decision:
    """Ends a job the operator will not run: its pods go on every pass, and nothing is created again. The status and
    the warning are written once: a job already Failed with this message is only torn down. No TTL, no log tail and
    no experiment label, which are for jobs that ran as they were meant to."""
    decision = Decision(delete_pods=[p.name for p in observed.live_heads()],
                        delete_workers=observed.workers.exists and not observed.workers.deleting)
    message = message[:PROBLEMS_MESSAGE_CHARS]
    if old.phase == Phase.FAILED and old.message == message:
        return decision
    new = old.model_copy(deep=True)
    new.phase, new.reason, new.message = Phase.FAILED, reason, message
    new.conditions = cond.set_condition(new.conditions, ConditionType.FAILED, True, reason, message, now, generation)
    for type_ in (ConditionType.RUNNING, ConditionType.CLUSTER_READY):
        if new.condition(type_) is not None:
            new.conditions = cond.set_condition(new.conditions, type_, False, reason, message, now, generation)
    new.observed_generation, new.completion_time = generation, cond.timestamp(now)
    decision.status = new
    decision.events = [Event(EventType.WARNING, reason, message)]
    return decision


def blocked(decided: JobStatus | None, current: JobStatus | None, problems: Sequence[CreateProblem]) -> Blocked:
    """A pass that could not create every child: the job stays where the decision put it (`decided`, or its `current`
    status when the decision changed nothing) and says why, and the pass is tried again (a quota or an admission
    policy may change; a deleted job's children go). A refusal is named before any wait: waiting does not end it.
    The event is posted on every look, as Kubernetes' own controllers do: Kube.event counts a repeat up on one Event,
    so `kubectl describe` shows how long and how often it has been tried, not a list of copies."""
    refused = [p for p in problems if p.refused]
    reason = Reason.CREATE_FAILED if refused else Reason.WAITING_FOR_OLD_CHILDREN
    message = "; ".join(p.message for p in (refused or problems))[:PROBLEMS_MESSAGE_CHARS]
    return Blocked(
        status=as_decided(decided, current).model_copy(update={"reason": reason, "message": message}),
        event=Event(EventType.WARNING if refused else EventType.NORMAL, reason, message),
        waiting=not refused,
    )


def as_decided(decided: JobStatus | None, current: JobStatus | None) -> JobStatus:
    """The status a pass writes: the one decided, or (when the decision changed nothing) the job's own, progress
    aside; what apply adds to it (a log tail, why a creation failed) is added to this."""
    if decided is not None:
        return decided
    return current.operator_fields() if current is not None else JobStatus()


class _Machine:
    def __init__(self, job: RLTrainingJob, observed: Observed, now: datetime, status: JobStatus) -> None:
        self.job, self.spec, self.obs, self.now, self.old = job, job.spec, observed, now, status
        self.generation = job.metadata.generation
        self.status = status.model_copy(deep=True)  # computed on a copy, compared with `old` at the end
        self.decision = Decision()

    # ── transitions ────────────────────────────────────────────────────────────────────────────

    def new(self) -> Decision:
        if self._queue() is not None:
            self.decision.ensure_workload = True
        if self.spec.suspend:
            return self._suspend(Reason.SUSPENDED, "created suspended: set spec.suspend to false to start")
        if self._queue() is not None:
            return self._suspend(Reason.QUEUED, self._queued_message())
        self._start_attempt(attempt=1, failures=0, fresh_start=True)
        self._phase(Phase.PENDING, Reason.ACCEPTED, "creating the Ray cluster")
        self._event(EventType.NORMAL, Reason.ACCEPTED, f"creating head pod and {self.spec.workers.replicas} worker(s)")
        return self._done()

    def suspended(self) -> Decision:
        if self._queue() is not None:
            return self._suspended_in_queue()
        if self.spec.suspend:
            self._remove_pods()
            self._observe_workers()
            return self._done()
        attempt = (self.old.attempts or 0) + 1
        self._start_attempt(attempt=attempt, failures=self.old.failed_attempts or 0, fresh_start=True)
        self._phase(Phase.PENDING, Reason.RESUMED, f"resuming with attempt {attempt}")
        self._set(ConditionType.SUSPENDED, False, Reason.RESUMED, "spec.suspend is false")
        self._event(EventType.NORMAL, Reason.RESUMED, f"starting attempt {attempt} from the latest checkpoint")
        return self._done()

    def active(self) -> Decision:
        phase = self.old.phase
        attempt = self.old.attempts or 1
        head = self.obs.head(attempt)
        self._observe_workers()
        if self.spec.suspend:
            self.status.active_seconds = self._active_seconds()  # the run budget pauses while suspended
            return self._suspend(Reason.SUSPENDED, "spec.suspend is true: pods removed, the job is kept")
        lost = self._admission_lost()
        if lost is not None:
            self.status.active_seconds = self._active_seconds()
            return self._suspend(*lost)
        if self._deadline_exceeded():
            return self._done()
        if phase in (Phase.INITIALIZING, Phase.RUNNING) or (head is not None and head.finished):
            if head is not None and head.succeeded:
                return self._succeed(head)
            if head is None or head.failed or head.deleting:
                return self._attempt_failed(attempt, head)
        stale = self._built_before_an_edit(attempt, head)
        if stale:
            return self._rebuild(attempt, stale)
        if phase in (Phase.PENDING, Phase.INITIALIZING) and self._coordination_timed_out(attempt, head):
            return self._done()
        if phase == Phase.PENDING:
            if head is None:
                self.decision.ensure_children = True
                self.decision.requeue_after = 2.0
                if not self._wait_for_earlier_heads(attempt):
                    self.decision.create_head = attempt
                return self._done()
            self._phase(Phase.INITIALIZING, Reason.CLUSTER_STARTING, self._waiting_for_cluster(head.name))
            self._event(EventType.NORMAL, Reason.CLUSTER_STARTING, _head_created(head.name))
        self._ensure_workers()
        ready = head is not None and head.ready and self._workers_ready()
        if self.old.phase != Phase.RUNNING and self.status.phase != Phase.RUNNING and ready:
            self.status.cluster_ready_time = cond.timestamp(self.now)
            replicas = self.spec.workers.replicas
            self._phase(Phase.RUNNING, Reason.CLUSTER_READY, f"Ray cluster ready: head and {replicas} worker(s); training")
            self._set(ConditionType.CLUSTER_READY, True, Reason.CLUSTER_READY, "head and all workers are ready")
            self._set(ConditionType.RUNNING, True, Reason.DRIVER_RUNNING, "the driver is training")
            self._event(EventType.NORMAL, Reason.CLUSTER_READY, f"head and {self.spec.workers.replicas} worker(s) ready; training")
        elif self.old.phase == Phase.RUNNING:
            self._track_cluster_health(ready, attempt)
        elif head is not None and not ready:
            self._report_startup_problems(attempt, head.name)
        return self._done()

    def finished(self) -> Decision:
        """Terminal: keep the record, release what still holds resources, honour the TTL."""
        wl = self.obs.workload
        if self._queue() is not None and wl is not None and not wl.finished and not wl.deleting:
            self.decision.finish_workload = (str(self.old.phase), self.old.message or str(self.old.phase))
        if self.obs.workers.exists and not self.obs.workers.deleting:
            self.decision.delete_workers = True
        # Whatever ended the job (a deadline, a refusal, a head deleted and replaced meanwhile), no head runs on.
        self.decision.delete_pods = [p.name for p in self.obs.live_heads()]
        ttl = self.spec.ttl_seconds_after_finished
        finished_at = cond.parse_timestamp(self.old.completion_time)
        if ttl is not None and finished_at is not None:
            remaining = (finished_at + timedelta(seconds=ttl) - self.now).total_seconds()
            if remaining <= 0:
                self.decision.delete_job = True
            else:
                self.decision.requeue_after = remaining
        return self._done()

    # ── Kueue ──────────────────────────────────────────────────────────────────────────────────

    def _queue(self) -> str | None:
        """The LocalQueue the job waits in, when this operator admits jobs through Kueue."""
        if not self.obs.kueue:
            return None
        return self.job.metadata.labels.get(c.KUEUE_QUEUE_LABEL) or None

    def _queued_message(self) -> str:
        return (f"waiting in Kueue queue {self._queue()} for the head and {self.spec.workers.replicas} worker(s) "
                "to be admitted together; no pod is created before")

    def _admission_lost(self) -> tuple[Reason, str] | None:
        """Why an active queued job must stop (Kueue evicted it, its Workload went, or the job no longer matches
        what was admitted), or None."""
        if self._queue() is None:
            return None
        wl = self.obs.workload
        if wl is not None and wl.evicted:
            return Reason.EVICTED, (f"Kueue evicted the job ({wl.evicted_reason}: {wl.evicted_message}): pods removed; "
                                    f"it waits in queue {self._queue()} and resumes from its latest checkpoint")
        if wl is None or wl.deleting or not wl.admitted:
            return Reason.QUEUED, "the job's Kueue Workload is gone or no longer admitted: pods removed; " + self._queued_message()
        if wl.counts != pod_set_counts(self.job):
            return Reason.QUEUED, (f"the workers changed to {self.spec.workers.replicas}: pods removed until Kueue admits "
                                   "the new size; " + self._queued_message())
        return None

    def _suspended_in_queue(self) -> Decision:
        """A suspended job that Kueue admits: out of the queue while the user holds it, started once admitted."""
        wl = self.obs.workload
        self._remove_pods()
        self._observe_workers()
        stopped = not self.obs.live_heads() and not self.obs.workers.exists
        if wl is None:
            self.decision.ensure_workload = True
            self.decision.requeue_after = 2.0
        elif wl.active == self.spec.suspend and not wl.deleting:
            self.decision.workload_active = not self.spec.suspend
        if self.spec.suspend:
            if self.old.reason != Reason.SUSPENDED:
                return self._suspend(Reason.SUSPENDED, "spec.suspend is true: the job left the Kueue queue, pods removed")
            return self._done()
        if wl is None or wl.deleting:
            return self._wait_in_queue()
        if wl.counts != pod_set_counts(self.job):
            if stopped:
                self.decision.replace_workload = True  # Kueue's pod sets cannot change: a new Workload, queued anew
            self._requeue(2.0)
            return self._wait_in_queue()
        if wl.evicted and wl.quota_reserved:  # (without a reservation, Evicted is history: an inactive Workload's)
            if stopped:
                self.decision.release_workload = (wl.evicted_reason or Reason.EVICTED, wl.evicted_message)
            self._requeue(2.0)
            return self._wait_in_queue()
        if wl.admitted and stopped:
            attempt = (self.old.attempts or 0) + 1
            self._start_attempt(attempt=attempt, failures=self.old.failed_attempts or 0, fresh_start=True)
            where = f"ClusterQueue {wl.cluster_queue}" if wl.cluster_queue else "Kueue"
            self._phase(Phase.PENDING, Reason.ADMITTED, f"admitted by {where}: starting attempt {attempt}")
            self._set(ConditionType.SUSPENDED, False, Reason.ADMITTED, f"admitted by {where}")
            self._event(EventType.NORMAL, Reason.ADMITTED, f"admitted by {where} with the head and {self.spec.workers.replicas} "
                        f"worker(s); starting attempt {attempt}" + (" from the latest checkpoint" if attempt > 1 else ""))
            return self._done()
        if wl.admitted:
            self._requeue(2.0)  # the previous attempt's pods are still going
        return self._wait_in_queue()

    def _wait_in_queue(self) -> Decision:
        if self.old.reason not in (Reason.QUEUED, Reason.EVICTED):
            return self._suspend(Reason.QUEUED, self._queued_message())
        return self._done()

    # ── pieces ─────────────────────────────────────────────────────────────────────────────────

    def _start_attempt(self, attempt: int, failures: int, fresh_start: bool) -> None:
        stamp = cond.timestamp(self.now)
        if fresh_start:
            self.status.start_time = stamp
            self.status.completion_time = None
        self.status.attempts, self.status.failed_attempts = attempt, failures
        self.status.attempt_start_time, self.status.head_pod = stamp, None
        self._set(ConditionType.CLUSTER_READY, False, Reason.STARTING, "the Ray cluster is being created")
        self.decision.ensure_children = True
        self.decision.requeue_after = 2.0
        if not self._wait_for_earlier_heads(attempt):
            self.decision.create_head = attempt

    def _built_before_an_edit(self, attempt: int, head: PodObservation | None) -> list[str]:
        """The live pods of this attempt built from other head or workers sizes than the spec's: the spec was edited
        while suspended and resumed before the operator acted on the suspension. Pods without the annotation (built
        by an earlier version of the operator) are taken as they are."""
        expected = pod_size_hash(self.job)
        stale = []
        if head is not None and head.size_hash and head.size_hash != expected and not head.finished and not head.deleting:
            stale.append(f"head pod {head.name}")
        w = self.obs.workers
        if w.exists and not w.deleting and w.size_hash and w.size_hash != expected:
            stale.append(f"StatefulSet {w.name}")
        return stale

    def _rebuild(self, attempt: int, stale: list[str]) -> Decision:
        """What a suspension would have done, then the resumption: the old pods go and a new attempt builds them from
        the spec as it is now (the run budget goes on; no failure is counted)."""
        self._remove_pods()
        self._start_attempt(attempt=attempt + 1, failures=self.old.failed_attempts or 0, fresh_start=False)
        what = ", ".join(stale)
        message = f"head or workers were edited while suspended: {what} built before the edit replaced by attempt {attempt + 1}"
        self._phase(Phase.PENDING, Reason.RESUMED, message)
        self._set(ConditionType.RUNNING, False, Reason.RESUMED, message)
        self._event(EventType.NORMAL, Reason.RESUMED, message)
        return self._done()

    def _wait_for_earlier_heads(self, attempt: int) -> bool:
        """True while an earlier attempt's head may still run (it is deleted); its successor waits for it."""
        earlier = self.obs.earlier_heads_still_running(attempt)
        if not earlier:
            return False
        self.decision.delete_pods += [p.name for p in earlier if not p.deleting and p.name not in self.decision.delete_pods]
        self.status.message = f"waiting for {', '.join(p.name for p in earlier)} to stop before attempt {attempt} starts"
        return True

    def _observe_workers(self, status: JobStatus | None = None) -> None:
        """The count of ready workers, into `status` (the computed one by default)."""
        status = status if status is not None else self.status
        status.ready_workers = self.obs.workers.ready if self.obs.workers.exists else 0
        status.workers = f"{status.ready_workers}/{self.spec.workers.replicas}"

    def _workers_ready(self) -> bool:
        desired = self.spec.workers.replicas
        return desired == 0 or (self.obs.workers.exists and self.obs.workers.ready >= desired)

    def _ensure_workers(self) -> None:
        if self.obs.children_gone:
            # Level, not edge: what the job owns is there while it runs (a NetworkPolicy removed by hand would leave
            # its pods unisolated; a removed head Service, new workers unable to find the head).
            self.decision.ensure_children = True
            self._event(EventType.WARNING, Reason.CHILDREN_RESTORED,
                        f"{', '.join(self.obs.children_gone)} deleted while the job runs: created again")
        w = self.obs.workers
        if not w.exists or w.deleting:
            self.decision.ensure_children = True
            self.decision.requeue_after = 2.0
        elif w.replicas != self.spec.workers.replicas:
            self.decision.scale_workers = self.spec.workers.replicas
            self._event(EventType.NORMAL, Reason.WORKERS_SCALED, f"workers scaled from {w.replicas} to {self.spec.workers.replicas}")

    def _track_cluster_health(self, ready: bool, attempt: int) -> None:
        """ClusterReady while Running. A cluster that stops being ready is WorkersNotReady at once, and only
        ClusterDegraded, with a warning, once that has lasted DEGRADED_AFTER: a driver that finished stops Ray, and its
        workers lose the head before the head pod is seen Succeeded, which is no degradation to warn about."""
        was = self.old.condition(ConditionType.CLUSTER_READY)
        was_ready = was is not None and was.status == "True"
        if ready and not was_ready:
            self.status.cluster_ready_time = cond.timestamp(self.now)
            self._set(ConditionType.CLUSTER_READY, True, Reason.CLUSTER_READY, "head and all workers are ready")
            if was is not None and was.reason == Reason.CLUSTER_DEGRADED:
                self._event(EventType.NORMAL, Reason.CLUSTER_RECOVERED, "all workers are ready again")
        elif not ready:
            # Kept current while degraded: the count, and why a replacement does not start (no node fits any more).
            msg = f"{self.status.workers} workers ready; the StatefulSet is replacing the others"
            problems = self.obs.startup_problems(attempt)
            if problems:
                msg += f"; {_problems_text(problems)}"
            since = cond.parse_timestamp(was.last_transition_time) if was is not None and not was_ready else None
            if was is not None and was.reason == Reason.CLUSTER_DEGRADED:
                self._set(ConditionType.CLUSTER_READY, False, Reason.CLUSTER_DEGRADED, msg)
            elif since is not None and self.now >= since + TIMESTAMP_RESOLUTION + DEGRADED_AFTER:
                self._set(ConditionType.CLUSTER_READY, False, Reason.CLUSTER_DEGRADED, msg)
                self._event(EventType.WARNING, Reason.CLUSTER_DEGRADED, msg)
            else:
                self._set(ConditionType.CLUSTER_READY, False, Reason.WORKERS_NOT_READY, msg)
                left = DEGRADED_AFTER if since is None else since + TIMESTAMP_RESOLUTION + DEGRADED_AFTER - self.now
                self._requeue(left.total_seconds())

    def _report_startup_problems(self, attempt: int, head: str) -> None:
        """While the cluster starts, what stops it (a pod no node fits, an image that does not pull) is in the job's
        message and ClusterReady's reason at once, with a warning event when that reason changes, rather than only in
        the coordination timeout's message, half an hour later."""
        problems = self.obs.startup_problems(attempt)
        was = self.old.condition(ConditionType.CLUSTER_READY)
        was_reason = was.reason if was is not None else None
        if problems:
            reason = (Reason.UNSCHEDULABLE if any(p.reason == POD_UNSCHEDULABLE for p in problems)
                      else Reason.CONTAINERS_NOT_STARTING)
            detail = _problems_text(problems)
            self.status.message = f"{self._waiting_for_cluster(head)}; {detail}"
            self._set(ConditionType.CLUSTER_READY, False, reason, detail)
            if was_reason != reason:
                self._event(EventType.WARNING, reason, detail)
        elif was_reason in (Reason.UNSCHEDULABLE, Reason.CONTAINERS_NOT_STARTING):
            self.status.message = self._waiting_for_cluster(head)
            self._set(ConditionType.CLUSTER_READY, False, Reason.STARTING, "the Ray cluster is being created")

    def _active_seconds(self) -> int:
        """Active time before this stretch plus this stretch: what the run budget has used up."""
        started = cond.parse_timestamp(self.old.start_time)
        stretch = (self.now - started).total_seconds() if started is not None else 0.0
        return (self.old.active_seconds or 0) + max(0, int(stretch))

    def _deadline_exceeded(self) -> bool:
        limit = self.spec.max_run_duration_seconds
        started = cond.parse_timestamp(self.old.start_time)
        if limit is None or started is None:
            return False
        budget = limit - (self.old.active_seconds or 0)
        remaining = (started + TIMESTAMP_RESOLUTION + timedelta(seconds=budget) - self.now).total_seconds()
        if remaining > 0:
            self._requeue(remaining)
            return False
        self._fail(
            Reason.DEADLINE_EXCEEDED,
            f"the job was active longer than maxRunDurationSeconds ({limit}s, all attempts, suspended time excluded): stopped",
        )
        self._remove_pods()
        return True

    def _coordination_timed_out(self, attempt: int, head: PodObservation | None) -> bool:
        limit = self.spec.cluster_coordination_timeout_seconds
        started = cond.parse_timestamp(self.old.attempt_start_time)
        if started is None:
            return False
        remaining = (started + TIMESTAMP_RESOLUTION + timedelta(seconds=limit) - self.now).total_seconds()
        if remaining > 0:
            self._requeue(remaining)
            return False
        missing = []
        if head is None or not head.ready:
            missing.append(f"head pod {head.name if head else '(not created)'} not ready")
        if not self._workers_ready():
            missing.append(f"{self.status.workers or f'0/{self.spec.workers.replicas}'} workers ready")
        problems = self.obs.startup_problems(attempt)
        detail = "; ".join(missing + ([_problems_text(problems)] if problems else []))
        self._fail(Reason.CLUSTER_COORDINATION_TIMEOUT, f"the Ray cluster was not up within {limit}s: {detail}")
        self._remove_pods()
        return True

    def _succeed(self, head: PodObservation) -> Decision:
        self._terminal(Phase.SUCCEEDED, Reason.DRIVER_SUCCEEDED, f"the driver in {head.name} finished successfully", head)
        self._set(ConditionType.COMPLETE, True, Reason.DRIVER_SUCCEEDED, "training finished")
        self._event(EventType.NORMAL, Reason.SUCCEEDED, f"training finished (head pod {head.name} exited 0)")
        return self._done()

    def _attempt_failed(self, attempt: int, head: PodObservation | None) -> Decision:
        failures = (self.old.failed_attempts or 0) + 1
        what = _describe_failure(attempt, head)
        if head is not None and head.exit_code == c.EXIT_CONFIG_ERROR:
            self._terminal(Phase.FAILED, Reason.DRIVER_FAILED, f"{what}: a configuration error, not retried", head)
            self.status.failed_attempts = failures
            self._set(ConditionType.FAILED, True, Reason.DRIVER_FAILED, self.status.message or "")
            self._event(EventType.WARNING, Reason.DRIVER_FAILED, self.status.message or "")
            return self._done()
        if failures > self.spec.backoff_limit:
            msg = f"{what}; backoffLimit {self.spec.backoff_limit} reached"
            self._terminal(Phase.FAILED, Reason.BACKOFF_LIMIT_EXCEEDED, msg, head)
            self.status.failed_attempts = failures
            self._set(ConditionType.FAILED, True, Reason.BACKOFF_LIMIT_EXCEEDED, msg)
            self._event(EventType.WARNING, Reason.BACKOFF_LIMIT_EXCEEDED, msg)
            return self._done()
        if head is not None and head.failed:
            self.decision.capture_log, self.decision.capture_attempt = head.name, attempt
        if head is not None and not head.finished:
            self.decision.delete_pods.append(head.name)
        if head is not None and head.exit_code is not None:
            self.status.last_exit_code = head.exit_code
        self._start_attempt(attempt=attempt + 1, failures=failures, fresh_start=False)
        self._phase(Phase.PENDING, Reason.ATTEMPT_FAILED, f"{what}; starting attempt {attempt + 1} of {self.spec.backoff_limit + 1}")
        self._set(ConditionType.RUNNING, False, Reason.ATTEMPT_FAILED, what)
        self._event(EventType.WARNING, Reason.ATTEMPT_FAILED, f"{what}; starting attempt {attempt + 1} from the latest checkpoint")
        return self._done()

    def _terminal(self, phase: Phase, reason: Reason, message: str, head: PodObservation | None) -> None:
        self._phase(phase, reason, message)
        self.status.completion_time = cond.timestamp(self.now)
        if head is not None:
            if head.exit_code is not None:
                self.status.last_exit_code = head.exit_code
            if head.finished:
                self.decision.capture_log = head.name
                self.decision.capture_attempt = head.attempt if head.attempt is not None else self.status.attempts
        self._set(ConditionType.RUNNING, False, reason, message)
        self._set(ConditionType.CLUSTER_READY, False, reason, "the Ray cluster was released")
        self.decision.delete_workers = self.obs.workers.exists
        ttl = self.spec.ttl_seconds_after_finished
        if ttl is not None:
            self.decision.requeue_after = max(float(ttl), 0.5)

    def _fail(self, reason: Reason, message: str) -> None:
        self._terminal(Phase.FAILED, reason, message, None)
        self._set(ConditionType.FAILED, True, reason, message)
        self._event(EventType.WARNING, reason, message)

    def _suspend(self, reason: Reason, message: str) -> Decision:
        self._phase(Phase.SUSPENDED, reason, message)
        self._set(ConditionType.SUSPENDED, True, reason, message)
        self._set(ConditionType.RUNNING, False, reason, message)
        self._set(ConditionType.CLUSTER_READY, False, reason, "pods removed while suspended")
        self._observe_workers()
        self._remove_pods()
        self._event(EventType.WARNING if reason == Reason.EVICTED else EventType.NORMAL, reason, message)
        return self._done()

    def _remove_pods(self) -> None:
        self.decision.delete_pods = [p.name for p in self.obs.live_heads()]
        if self.obs.workers.exists and not self.obs.workers.deleting:
            self.decision.delete_workers = True

    def _phase(self, phase: Phase, reason: Reason, message: str) -> None:
        self.status.phase, self.status.reason, self.status.message = phase, reason, message
        attempt = self.status.attempts
        if attempt and phase != Phase.SUSPENDED:
            self.status.head_pod = names.head_pod(self.job.name, attempt)

    def _set(self, type_: ConditionType, value: bool, reason: Reason, message: str) -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, value, reason, message, self.now, self.generation)

    def _event(self, type_: EventType, reason: Reason, message: str) -> None:
        self.decision.events.append(Event(type_, reason, message))

    def _requeue(self, seconds: float) -> None:
        seconds = max(0.5, min(seconds, POLL_SECONDS))
        current = self.decision.requeue_after
        self.decision.requeue_after = seconds if current is None else min(current, seconds)

    def _done(self) -> Decision:
        self.status.observed_generation = self.generation
        if self.status != self.old:
            # With whatever is written anyway (never a write of its own): jobs from before it get it at their next change.
            self.status.worker_selector = selector_string(worker_selector(self.job))
            self.decision.status = self.status
        attempt = self.decision.create_head
        if attempt is not None and self.status.phase == Phase.PENDING and self.status.reason != Reason.ATTEMPT_FAILED:
            # (A failed attempt's Pending, with what failed, is written first: the next one's head comes after.)
            head = names.head_pod(self.job.name, attempt)
            created = self.status.model_copy(deep=True)
            created.phase, created.reason = Phase.INITIALIZING, Reason.CLUSTER_STARTING
            created.message = self._waiting_for_cluster(head)
            # The count from the start, as the move to Initializing always carried it: else the next pass writes it alone.
            self._observe_workers(created)
            self.decision.head_created = created
            self.decision.head_created_events = [Event(EventType.NORMAL, Reason.CLUSTER_STARTING, _head_created(head))]
        return self.decision

    def _waiting_for_cluster(self, head: str) -> str:
        return f"waiting for head pod {head} and {self.spec.workers.replicas} worker(s)"


def _problems_text(problems: list[PodObservation], shown: int = 2) -> str:
    text = "; ".join(p.startup_problem or p.name for p in problems[:shown])
    if len(problems) > shown:
        text += f"; and {len(problems) - shown} more pod(s)"
    return text


def _head_created(head: str) -> str:
    return f"head pod {head} created; waiting for the Ray cluster"


def _describe_failure(attempt: int, head: PodObservation | None) -> str:
    if head is None:
        return f"attempt {attempt}: the head pod disappeared"
    if head.deleting and not head.finished:
        return f"attempt {attempt}: the head pod {head.name} was deleted"
    detail = f"exit code {head.exit_code}" if head.exit_code is not None else (head.reason or "failed")
    if head.reason and head.exit_code is not None:
        detail += f", {head.reason}"
    return f"attempt {attempt}: the driver in {head.name} failed ({detail})"
