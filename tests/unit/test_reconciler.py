"""The reconciler around its work queue: what a job's changes queue, the lanes, failures and waits, the leader gate.

The tests wait on what the reconciler did (an event set by each reconcile), never on the clock."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from rljob import resources
from rljob.controller.kube import ApiException
from rljob.controller.objects import Key
from rljob.controller.observe import PodObservation
from rljob.controller.reconciler import Reconciler
from tests.builders import minimal_job, running_status, ts

WAIT_SECONDS = 5.0  # a bound on every wait: a reconciler that never gets there fails the test instead of hanging it


class Recording(Reconciler):
    """Records each reconcile; `script` says what the next ones do (wait for an event to be set, raise)."""

    def __init__(self, concurrency: int = 4, **kw: Any) -> None:
        super().__init__(kube=None, ctx=resources.BuildContext(), concurrency=concurrency, **kw)  # type: ignore[arg-type]
        self.calls: list[Key] = []
        self.finished = 0  # reconciles that returned or raised, acting or not
        self.script: list[Any] = []
        self.running = 0
        self.max_running_per_key = 0
        self._changed = asyncio.Event()

    async def reconcile(self, key: Key) -> dict[str, Any] | None:
        try:
            if not self.may_act():
                return None
            self.calls.append(key)
            self._changed.set()
            self.running += 1
            self.max_running_per_key = max(self.max_running_per_key, self.running)
            try:
                action = self.script.pop(0) if self.script else None
                if isinstance(action, asyncio.Event):
                    await action.wait()
                elif isinstance(action, BaseException):
                    raise action
                return None
            finally:
                self.running -= 1
        finally:
            self.finished += 1
            self._changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT_SECONDS)

    async def until(self, finished: int) -> None:
        """`finished` reconciles have ended, and what followed each (its hook, its requeue) is done."""
        await self.wait_for(lambda: self.finished >= finished)

    async def settled(self, finished: int) -> None:
        """... and nothing is queued or running: no further reconcile can come without a new event."""
        await self.until(finished)
        assert len(self.queue) == 0 and self.running == 0


def job(name: str, rv: int = 1) -> dict[str, Any]:
    """A job at version `rv`, each version a change a decision reads (its generation)."""
    return minimal_job(name, namespace="ns", generation=rv, metadata={"resourceVersion": str(rv)})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_events_for_a_queued_key_collapse_into_one_reconcile() -> None:
    async def scenario() -> list[Any]:
        rec = Recording()
        for rv in range(5):
            rec.upsert_job(job("a", rv))
        rec.upsert_job(job("b"))
        rec.start()
        await rec.settled(2)
        await rec.stop()
        return rec.calls

    calls = run(scenario())
    assert sorted(calls) == [("ns", "a"), ("ns", "b")]


def test_a_key_that_changes_while_reconciling_runs_again_afterwards_never_twice_at_once() -> None:
    async def scenario() -> Recording:
        rec = Recording()
        rec.script = [release := asyncio.Event()]  # the first reconcile of "a" waits until released
        rec.upsert_job(job("a"))
        rec.start()
        await rec.wait_for(lambda: bool(rec.calls))
        rec.upsert_job(job("a", 2))  # arrives mid-reconcile: marked dirty
        rec.upsert_job(job("a", 3))
        release.set()
        await rec.settled(2)
        await rec.stop()
        return rec

    rec = run(scenario())
    assert rec.calls == [("ns", "a"), ("ns", "a")] and rec.max_running_per_key == 1
    assert rec.jobs[("ns", "a")]["metadata"]["resourceVersion"] == "3"


def test_a_job_whose_cluster_exists_goes_before_new_jobs_and_each_lane_keeps_its_order() -> None:
    """A job that only awaits a status write (its pods just turned Ready) must not wait behind a burst of new
    jobs, each a dozen creations; among themselves, both kinds keep their order of arrival."""
    async def scenario() -> list[tuple[str, str]]:
        pods = {("ns", "head-created"): [PodObservation("head-created-head-1", "head", 1, "Pending")]}
        rec = Recording(concurrency=1, pods=pods)
        for name in ("new-1", "new-2"):
            rec.upsert_job(job(name))
        for name, phase in (("up-1", "Running"), ("pending", "Pending"), ("up-2", "Initializing")):
            rec.upsert_job({**job(name), "status": {"phase": phase}})
        rec.upsert_job({**job("up-odd"), "status": {"phase": "Running", "attempts": "two"}})  # its phase still reads
        rec.upsert_job({**job("head-created"), "status": {"phase": "Pending"}})  # its head pod's event
        rec.upsert_job(job("new-3"))
        rec.start()
        await rec.settled(8)
        await rec.stop()
        return rec.calls

    assert [name for _, name in run(scenario())] == [
        "up-1", "up-2", "up-odd", "head-created", "new-1", "new-2", "pending", "new-3"]


def test_a_queued_new_job_whose_pods_appear_moves_up_and_is_reconciled_once() -> None:
    """Queued as a new job (by its own Pending write, before its head pod's event came), then its pods appear: it must
    not wait behind the new jobs queued before it, whose creations would keep its Ready pods from being seen."""
    async def scenario() -> list[tuple[str, str]]:
        pods: dict[Key, list[PodObservation]] = {}
        rec = Recording(concurrency=1, pods=pods)
        for name in ("new-1", "new-2", "late-pods", "new-3"):
            rec.upsert_job(job(name))
        pods[("ns", "late-pods")] = [PodObservation("late-pods-head-1", "head", 1, "Running", ready=True)]
        rec.pods_changed(("ns", "late-pods"))  # its head pod's event
        rec.pods_changed(("ns", "late-pods"))
        rec.start()
        await rec.settled(4)
        await rec.stop()
        return rec.calls

    assert [name for _, name in run(scenario())] == ["late-pods", "new-1", "new-2", "new-3"]


def test_failures_back_off_and_a_conflict_left_after_its_retries_is_a_failure_too() -> None:
    outcomes: list[bool] = []

    async def scenario() -> None:
        rec = Recording(on_reconciled=lambda key, before, body, seconds, failed: outcomes.append(failed))
        rec.script = [RuntimeError("boom"), ApiException(status=409, reason="Conflict")]
        rec.upsert_job(job("a"))
        rec.start()
        await rec.settled(1)
        due = rec.queue.due(("ns", "a"))
        now = asyncio.get_running_loop().time()
        assert due is not None and 0.5 < due - now <= 1.0  # the retry after a failure waits 1 s (0.5 s x 2^1)
        assert rec.queue.failures(("ns", "a")) == 1
        rec.upsert_job(job("a", 2))  # a change comes before the retry: reconciled at once
        await rec.settled(2)
        # ... a conflict that reconcile's own retries did not resolve is a failure too
        assert rec.queue.failures(("ns", "a")) == 2 and rec.queue.due(("ns", "a")) == due  # the earlier retry stays
        await rec.stop()

    run(scenario())
    assert outcomes == [True, True]


class ConflictingKube:
    """A job whose every status write conflicts `conflicts` times: each conflict's re-read finds a newer version."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts, self.reads = conflicts, 0

    async def get(self, api_version: str, kind: str, namespace: str, name: str, cached: bool = False) -> dict[str, Any]:
        self.reads += 1
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": str(10 + self.reads),
                             "generation": 1}}


def test_a_conflicting_write_is_decided_again_on_the_job_read_afresh_a_bounded_number_of_times() -> None:
    from rljob.controller import reconciler as module

    async def scenario(conflicts: int) -> tuple[list[str], ConflictingKube, Exception | None]:
        kube = ConflictingKube(conflicts)
        rec = Reconciler(kube, resources.BuildContext())  # type: ignore[arg-type]
        rec.jobs[("ns", "a")] = job("a")
        seen: list[str] = []

        async def once(key: tuple[str, str]) -> dict[str, Any] | None:
            seen.append(rec.jobs[key]["metadata"]["resourceVersion"])  # the view this decision is made on
            if len(seen) <= kube.conflicts:
                raise ApiException(status=409, reason="Conflict")
            return rec.jobs[key]

        rec._reconcile_once = once  # type: ignore[method-assign]
        try:
            await rec.reconcile(("ns", "a"))
            return seen, kube, None
        except ApiException as exc:
            return seen, kube, exc

    seen, kube, error = run(scenario(2))
    assert error is None and seen == ["1", "11", "12"] and kube.reads == 2  # each retry on a fresh read
    seen, kube, error = run(scenario(100))  # a writer that never stops: the decision gives up, it is not starved
    assert isinstance(error, ApiException) and error.status == 409
    assert len(seen) == module.MAX_CONFLICT_RETRIES + 1 and kube.reads == module.MAX_CONFLICT_RETRIES


def test_a_change_of_progress_alone_is_no_reason_to_decide_again() -> None:
    async def scenario() -> Recording:
        rec = Recording()
        body = job("a")
        rec.upsert_job(body)
        rec.start()
        await rec.settled(1)
        for rv, iteration in ((2, 1), (3, 2), (4, 3)):  # the progress reader's writes, as the watch shows them
            rec.upsert_job({**body, "metadata": {**body["metadata"], "resourceVersion": str(rv)},
                            "status": {"progress": {"iteration": iteration}}})
        assert len(rec.queue) == 0 and rec.jobs[("ns", "a")]["status"]["progress"]["iteration"] == 3
        rec.upsert_job({**body, "metadata": {**body["metadata"], "resourceVersion": "5"},
                        "status": {"progress": {"iteration": 3}, "phase": "Running"}})  # anything else is
        assert len(rec.queue) == 1
        await rec.settled(2)
        await rec.stop()
        return rec

    rec = run(scenario())
    assert rec.calls == [("ns", "a"), ("ns", "a")]


def test_a_failing_post_reconcile_hook_costs_neither_a_worker_nor_the_next_reconcile() -> None:
    async def scenario() -> Recording:
        def hook(*_: Any) -> None:
            raise ValueError("a malformed timestamp")

        rec = Recording(concurrency=1, on_reconciled=hook)
        rec.start()
        rec.upsert_job(job("a"))
        await rec.settled(1)
        rec.upsert_job(job("a", 2))  # the hook failed after the first reconcile: the worker still serves
        await rec.settled(2)
        assert rec.calls == [("ns", "a"), ("ns", "a")] and rec.healthy() and rec.queue.restarts == 0
        await rec.stop()
        assert not rec.healthy()
        return rec

    run(scenario())


def test_waiting_for_a_deleted_jobs_children_is_no_failure_and_events_meanwhile_do_not_stretch_the_wait() -> None:
    from rljob.controller.apply import ChildCreationFailed

    outcomes: list[bool] = []

    async def scenario() -> Recording:
        rec = Recording(on_reconciled=lambda key, before, body, seconds, failed: outcomes.append(failed))
        waiting = ChildCreationFailed("Pod a-head-1 already exists and belongs to an earlier job", waiting=True)
        rec.script = [waiting] * 6
        rec.upsert_job(job("a"))
        rec.start()
        for rv in range(2, 6):  # the old instance's pod events, each a reconcile that still finds the names taken
            await rec.settled(rv - 1)
            rec.upsert_job(job("a", rv))
        await rec.settled(5)
        assert len(rec.calls) == 5 and rec.queue.failures(("ns", "a")) == 0
        due = rec.queue.due(("ns", "a"))
        assert due is not None and 1.5 < due - asyncio.get_running_loop().time() <= 2.0  # looked at again in 2 s
        await rec.stop()
        return rec

    run(scenario())
    assert outcomes == [False] * 5
    refused = ChildCreationFailed("cannot create Pod a-head-1: exceeded quota")
    assert not refused.waiting  # a refusal backs off as any failure


def test_a_standby_reconciles_nothing_and_a_new_leader_starts_with_every_known_job() -> None:
    leading = [False]

    async def scenario() -> Recording:
        rec = Recording(may_act=lambda: leading[0])
        rec.upsert_job(job("a"))
        rec.upsert_job(job("b"))  # queued while standing by; no workers run
        assert rec.finished == 0 and len(rec.queue) == 2
        leading[0] = True
        rec.start()
        await rec.settled(2)
        leading[0] = False  # lost the lease: whatever is queued or fires later does nothing
        rec.enqueue(("ns", "a"))
        await rec.settled(3)
        await rec.stop()
        return rec

    rec = run(scenario())
    assert sorted(rec.calls) == [("ns", "a"), ("ns", "b")]


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any], str | None]] = []
        self.events: list[tuple[str, str]] = []

    async def patch_job_status(self, ns: str, name: str, status: dict[str, Any], decided_on: Any = None) -> dict[str, Any]:
        self.patches.append((name, status, (decided_on or {}).get("metadata", {}).get("resourceVersion")))
        return {"metadata": {"namespace": ns, "name": name, "resourceVersion": "99"}, "status": status}

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


def test_an_admin_can_require_isolated_jobs() -> None:
    from tests.builders import minimal_job

    kube = FakeKube()
    rec = Reconciler(kube, resources.BuildContext(require_isolation=True))  # type: ignore[arg-type]
    body = minimal_job("open", network={"isolation": False})
    body["metadata"].update(uid="u1", generation=1, resourceVersion="7")
    rec.jobs[("ns1", "open")] = body
    asyncio.run(rec.reconcile(("ns1", "open")))
    ((_, status, rv),) = kube.patches
    assert status["phase"] == "Failed" and status["reason"] == "NetworkIsolationRequired" and rv == "7"
    assert "network.isolation is false" in status["message"] and kube.events == [("Warning", "NetworkIsolationRequired")]


class ReleasingKube:
    def __init__(self, service_owner: str = "job-1", expect: int = 0) -> None:
        self.deleted: list[tuple[str, str, str]] = []
        self.service_owner = service_owner
        self.expect, self.all_deleted = expect, asyncio.Event()  # set once `expect` objects are deleted

    async def get(self, api_version: str, kind: str, namespace: str, name: str, cached: bool = False) -> dict[str, Any] | None:
        assert (kind, name, cached) == ("Service", "gone-head", True)
        owner = {"apiVersion": "rljob.dev/v1alpha1", "kind": "RLTrainingJob", "name": "gone", "uid": self.service_owner,
                 "controller": True}
        return {"metadata": {"name": name, "namespace": namespace, "uid": "svc-" + self.service_owner,
                             "ownerReferences": [owner]}}

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background",
                     uid: str = "") -> bool:
        self.deleted.append((kind, name, uid))
        if len(self.deleted) >= self.expect:
            self.all_deleted.set()
        return True


def test_a_deleted_jobs_workers_then_pods_go_at_once_each_by_its_own_uid() -> None:
    from rljob.controller.observe import PodObservation, WorkersObservation

    key = ("ns1", "gone")
    pods = [PodObservation("gone-head-1", "head", 1, "Running", controller_uid="job-1", uid="p1"),
            PodObservation("gone-workers-0", "worker", None, "Running", controller_uid="job-1", uid="p2"),
            PodObservation("gone-workers-1", "worker", None, "Running", controller_uid="job-1", uid="p3", deleting=True),
            PodObservation("gone-head-1", "head", 1, "Pending", controller_uid="job-2", uid="p9")]  # the new job's
    workers = [WorkersObservation(exists=True, controller_uid="job-1", name="gone-workers", uid="s1")]

    async def scenario(may_act: bool, service_owner: str = "job-1", expect: int = 0) -> list[tuple[str, str, str]]:
        kube = ReleasingKube(service_owner, expect)
        rec = Reconciler(kube, resources.BuildContext(), concurrency=1,  # type: ignore[arg-type]
                         pods={key: pods}, workers={key: workers}, may_act=lambda: may_act)
        rec.start()
        rec.remove_job(key, "job-1")
        rec.remove_job(("ns1", "unknown"))  # no uid: nothing to select by, the garbage collector does it
        if expect:
            await asyncio.wait_for(kube.all_deleted.wait(), 5.0)
        await rec.stop()
        return kube.deleted

    # The head's Service before its pod (no Endpoints rewritten as the pod goes), by its own uid.
    assert asyncio.run(scenario(True, expect=4)) == [("Service", "gone-head", "svc-job-1"),
        ("StatefulSet", "gone-workers", "s1"), ("Pod", "gone-head-1", "p1"), ("Pod", "gone-workers-0", "p2")]
    # A Service of that name that is a new job's stays.
    assert asyncio.run(scenario(True, service_owner="job-2", expect=3)) == [
        ("StatefulSet", "gone-workers", "s1"), ("Pod", "gone-head-1", "p1"), ("Pod", "gone-workers-0", "p2")]
    assert asyncio.run(scenario(False)) == []  # a standby writes nothing (and starts no release to wait for)


class Lines(logging.Handler):
    """The reconciler's log lines, each with the objects `kube` had deleted by the time it was written."""

    def __init__(self, kube: ReleasingKube) -> None:
        super().__init__(logging.INFO)
        self.kube, self.written = kube, asyncio.Event()
        self.lines: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), len(self.kube.deleted)))
        self.written.set()


def test_a_deleted_job_leaves_one_line_in_the_log_written_once_its_children_are_dealt_with(
        caplog: pytest.LogCaptureFixture) -> None:
    """Whether the operator saw a job go, and what it did with its children: a person asks that of the log, and a
    test waits for it as proof that the operator has acted. Said after the deletes it made, not before."""
    from rljob.controller.observe import WorkersObservation

    caplog.set_level(logging.INFO, logger="rljob.controller.reconciler")
    key = ("ns1", "gone")
    pods = [PodObservation("gone-head-1", "head", 1, "Running", controller_uid="job-1", uid="p1"),
            PodObservation("gone-workers-0", "worker", None, "Running", controller_uid="job-1", uid="p2")]
    workers = [WorkersObservation(exists=True, controller_uid="job-1", name="gone-workers", uid="s1")]

    async def scenario(may_act: bool, *removed: tuple[Key, str | None]) -> list[tuple[str, int]]:
        kube = ReleasingKube()
        lines = Lines(kube)
        logging.getLogger("rljob.controller.reconciler").addHandler(lines)
        try:
            rec = Reconciler(kube, resources.BuildContext(), concurrency=1,  # type: ignore[arg-type]
                             pods={key: pods}, workers={key: workers}, may_act=lambda: may_act)
            rec.start()
            for gone, uid in removed:
                rec.remove_job(gone, uid)
            if may_act:
                await asyncio.wait_for(lines.written.wait(), WAIT_SECONDS)
            await rec.stop()
            return lines.lines
        finally:
            logging.getLogger("rljob.controller.reconciler").removeHandler(lines)

    # Deleted plainly: its head Service, workers and pods first (4 deletes), then the line.
    assert asyncio.run(scenario(True, (key, "job-1"))) == [
        ("ns1/gone is gone; 1 StatefulSet(s) and 2 pod(s) of it deleted at once, the rest left to the garbage "
         "collector", 4)]
    # Deleted through finalizers (`--cascade=orphan` or `foreground`), or while the watch was away: nothing deleted.
    assert asyncio.run(scenario(True, (key, None))) == [
        ("ns1/gone is gone; its children are left to the garbage collector", 0)]
    # An instance that has none of these children left (a new one's are another uid's): nothing deleted either.
    assert asyncio.run(scenario(True, (key, "job-0"))) == [
        ("ns1/gone is gone; its children are left to the garbage collector", 0)]
    assert asyncio.run(scenario(False, (key, "job-1"), (key, None))) == []  # a standby acts on nothing, and says so


def test_a_job_held_by_finalizers_after_its_deletion_is_left_alone_and_the_log_says_so_once_per_change(
        caplog: pytest.LogCaptureFixture) -> None:
    """A job deleted through finalizers (foreground, anyone's) is reconciled on every event of its pods, and does
    nothing: the log says so when there is something new to say (its last pod gone), not on every pass."""
    caplog.set_level(logging.INFO, logger="rljob.controller.reconciler")
    key = ("ns1", "fg")
    kube = FakeKube()
    pods = {key: [PodObservation("fg-head-1", "head", 1, "Running", controller_uid="u1", uid="p1", deleting=True)]}
    rec = Reconciler(kube, resources.BuildContext(), pods=pods)  # type: ignore[arg-type]
    body = minimal_job("fg", status=running_status(headPod="fg-head-1"))
    body["metadata"].update(uid="u1", generation=2, resourceVersion="7", deletionTimestamp=ts(5),
                            finalizers=["foregroundDeletion", "example.com/hold"])

    def reconcile() -> list[str]:
        rec.jobs[key] = body
        caplog.clear()
        asyncio.run(rec.reconcile(key))
        return [r.getMessage() for r in caplog.records]

    remain = "ns1/fg is being deleted (its pods remain): nothing to do, its children are left to the garbage collector"
    assert reconcile() == [remain]
    assert reconcile() == []
    pods[key] = []  # the collector deleted the head: a live job's failed attempt, nothing here
    left = "ns1/fg is being deleted (no pods left): nothing to do, its children are left to the garbage collector"
    assert reconcile() == [left]
    assert reconcile() == []
    assert kube.patches == [] and kube.events == []
    rec.remove_job(key)  # gone; a job of that name made since is a new one, which has its own say
    assert reconcile() == [left]


def test_the_cached_job_leaves_managed_fields_and_the_last_applied_manifest_out() -> None:
    async def scenario() -> None:
        rec = Recording()
        body = job("a", 5)
        body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
        body["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}', "team": "rl"}
        body["spec"] = {"experiment": "x"}
        rec.upsert_job(body)
        rec.upsert_job_quietly({**job("b", 2), "spec": {}})
        cached = rec.jobs[("ns", "a")]
        assert "managedFields" not in cached["metadata"] and cached["metadata"]["resourceVersion"] == "5"
        assert cached["metadata"]["annotations"] == {"team": "rl"}
        assert cached["spec"] == {"experiment": "x"}
        assert "managedFields" in body["metadata"]  # the caller's (kopf's) body is not changed
        assert len(body["metadata"]["annotations"]) == 2
        assert rec.jobs[("ns", "b")]["spec"] == {}

    run(scenario())


def test_a_count_of_ready_workers_alone_is_written_at_most_once_per_interval_a_transition_at_once() -> None:
    from rljob.controller.observe import WorkersObservation
    from rljob.controller.pacing import StatusPacer
    from tests.builders import minimal_job

    key = ("ns1", "pace")
    now = [100.0]
    requeued: list[float] = []
    kube = FakeKube()
    pods: dict[Key, list[PodObservation]] = {}
    workers = {key: [WorkersObservation(exists=True, replicas=3, controller_uid="u1", name="pace-workers", uid="s1")]}
    pacer = StatusPacer(requeue=lambda k, delay: requeued.append(delay), settle=1.0, interval=2.0, clock=lambda: now[0])
    rec = Reconciler(kube, resources.BuildContext(),  # type: ignore[arg-type]
                     clock=lambda: datetime(2026, 12, 3, 0, 0, 10, tzinfo=timezone.utc), pods=pods, workers=workers, pacer=pacer)
    body = minimal_job("pace", workers={"replicas": 3}, experiment="e")
    body["metadata"].update(uid="u1", generation=1, resourceVersion="7", labels={"rljob.dev/experiment": "e"})
    started = "2026-12-03T00:00:00Z"
    body["status"] = {"phase": "Initializing", "attempts": 1, "observedGeneration": 1, "startTime": started, "attemptStartTime": started,
                      "workers": "0/3", "readyWorkers": 0, "workerSelector": "rljob.dev/job=pace,rljob.dev/role=worker"}
    rec.jobs[key] = body

    def observe(ready_workers: int, head_ready: bool = False) -> None:
        head = PodObservation("pace-head-1", "head", 1, "Running", ready=head_ready, controller_uid="u1", uid="h")
        workers = [PodObservation(f"pace-workers-{i}", "worker", None, "Running", ready=i < ready_workers,
                                  controller_uid="u1", uid=f"w{i}", owner_uid="s1") for i in range(3)]
        pods[key] = [head, *workers]

    def reconcile() -> dict[str, Any] | None:
        patches = len(kube.patches)
        rec.jobs[key] = body
        asyncio.run(rec.reconcile(key))
        if len(kube.patches) == patches:
            return None
        body["status"].update(kube.patches[-1][1])  # as the watch delivers our write
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        rec.jobs[key] = body
        return kube.patches[-1][1]

    observe(1)
    assert reconcile() is None and requeued == [1.0]  # a count waits to settle; the job runs again then
    now[0] += 1.0
    assert reconcile() == {"readyWorkers": 1, "workers": "1/3"}
    now[0] += 0.5
    observe(2)
    assert reconcile() is None and requeued == [1.0, 1.5]  # and comes no sooner than 2 s after the last write
    now[0] += 1.5
    assert reconcile() == {"readyWorkers": 2, "workers": "2/3"}
    now[0] += 0.1
    observe(3, head_ready=True)
    patch = reconcile()  # a transition is written at once, the count with it
    assert patch is not None and patch["phase"] == "Running" and patch["workers"] == "3/3"
    assert requeued == [1.0, 1.5]


def test_parsed_models_are_kept_for_the_most_recently_reconciled_jobs_only() -> None:
    from rljob.controller import reconciler as module
    from tests.builders import minimal_job

    rec = Reconciler(None, resources.BuildContext())  # type: ignore[arg-type]
    bodies = {}
    for i in range(module.PARSED_JOBS_KEPT + 20):
        body = minimal_job(f"j{i}")
        body["metadata"].update(uid=f"u{i}", resourceVersion="3")
        bodies[("ns1", f"j{i}")] = body
    first = rec._parse(("ns1", "j0"), bodies[("ns1", "j0")])
    for key, body in bodies.items():
        rec._parse(key, body)
        assert rec._parse(("ns1", "j0"), bodies[("ns1", "j0")]) is first  # used again: kept
    assert len(rec._parsed) == module.PARSED_JOBS_KEPT
    assert ("ns1", "j1") not in rec._parsed  # the least recently used went
    again = rec._parse(("ns1", "j1"), bodies[("ns1", "j1")])
    assert again.metadata.name == "j1" and rec._parse(("ns1", "j1"), bodies[("ns1", "j1")]) is again


class CreatingKube(FakeKube):
    """Creates what it is asked to (refusing the kinds in `refuse` as a quota would); records the rest."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.created: list[tuple[str, str]] = []
        self.refuse = refuse

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        if obj["kind"] in self.refuse:
            raise ApiException(403, "Forbidden", '{"kind": "Status", "message": "exceeded quota: pods"}')
        self.created.append((obj["kind"], obj["metadata"]["name"]))
        return None, True

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:  # the job's label
        *_, namespace, _, name = path.split("/")
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"}}


def test_a_new_job_is_written_once_as_initializing_and_its_head_counts_as_there_until_the_watch_shows_it() -> None:
    from rljob.controller.observe import WorkersObservation
    from rljob.controller.pacing import StatusPacer
    from tests.builders import minimal_job

    key = ("ns1", "fresh")
    kube = CreatingKube()
    pods: dict[Key, list[PodObservation]] = {}
    workers: dict[Key, list[WorkersObservation]] = {}
    rec = Reconciler(kube, resources.BuildContext(),  # type: ignore[arg-type]
                     clock=lambda: datetime(2026, 12, 4, 0, 0, 10, tzinfo=timezone.utc), pods=pods, workers=workers,
                     pacer=StatusPacer(requeue=lambda key, delay: None, settle=0, interval=0))  # a count alone would go at once
    body = minimal_job("fresh", workers={"replicas": 2}, backoffLimit=2)
    body["metadata"].update(uid="u1", generation=1, resourceVersion="7")

    def reconcile() -> None:
        rec.jobs[key] = body
        asyncio.run(rec.reconcile(key))
        body["status"] = {**(body.get("status") or {}), **kube.patches[-1][1]}  # as the watch delivers our write
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)

    reconcile()
    assert ("Pod", "fresh-head-1") in kube.created and ("StatefulSet", "fresh-workers") in kube.created
    ((_, status, rv),) = kube.patches
    assert status["phase"] == "Initializing" and status["reason"] == "ClusterStarting" and status["attempts"] == 1 and rv == "7"
    assert kube.events == [("Normal", "Accepted"), ("Normal", "ClusterStarting")]

    # Our own write comes back before the head pod's event (the StatefulSet's is in): the head is not taken for gone,
    # and the count of ready workers, written with the phase, is not written again.
    workers[key] = [WorkersObservation(exists=True, replicas=2, controller_uid="u1", name="fresh-workers", uid="s1")]
    reconcile()
    assert len(kube.patches) == 1 and len(kube.created) == len(set(kube.created))

    # Its event, then its deletion: now it is gone, and the attempt fails as for any lost head.
    head = PodObservation("fresh-head-1", "head", 1, "Pending", controller_uid="u1", uid="p1", owner_uid="u1")
    pods[key] = [head]
    rec.pods_changed(key)
    del pods[key]
    rec.pods_changed(key)
    reconcile()
    status = kube.patches[-1][1]
    assert status["phase"] == "Pending" and status["reason"] == "AttemptFailed" and "disappeared" in status["message"]


def test_a_refused_head_leaves_the_job_pending_with_the_reason_and_nothing_expected() -> None:
    from rljob.controller.apply import ChildCreationFailed
    from tests.builders import minimal_job

    key = ("ns1", "quota")
    kube = CreatingKube(refuse=("Pod",))
    rec = Reconciler(kube, resources.BuildContext())  # type: ignore[arg-type]
    body = minimal_job("quota")
    body["metadata"].update(uid="u1", generation=1, resourceVersion="7")
    rec.jobs[key] = body
    try:
        asyncio.run(rec.reconcile(key))
        raise AssertionError("a refused head must fail the pass")
    except ChildCreationFailed:
        pass
    ((_, status, _),) = kube.patches
    assert status["phase"] == "Pending" and status["reason"] == "CreateFailed" and "exceeded quota" in status["message"]
    assert [reason for _, reason in kube.events] == ["CreateFailed", "Accepted"] and len(rec.expected) == 0


class TearingDownKube(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[tuple[str, str, str]] = []

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background",
                     uid: str = "") -> bool:
        self.deleted.append((kind, name, uid))
        return True


def test_a_job_refused_after_it_started_loses_its_pods() -> None:
    """An operator restarted with --require-network-isolation: a running open job ends, and its cluster goes."""
    from rljob.controller.observe import WorkersObservation
    from tests.builders import minimal_job

    key = ("ns1", "open")
    kube = TearingDownKube()
    pods = {key: [PodObservation("open-head-1", "head", 1, "Running", controller_uid="u1", uid="p1"),
                  PodObservation("open-head-0", "head", 0, "Succeeded", controller_uid="u1", uid="p0")]}
    workers = {key: [WorkersObservation(exists=True, replicas=2, controller_uid="u1", name="open-workers", uid="s1")]}
    rec = Reconciler(kube, resources.BuildContext(require_isolation=True), pods=pods, workers=workers)  # type: ignore[arg-type]
    body = minimal_job("open", network={"isolation": False})
    body["metadata"].update(uid="u1", generation=1, resourceVersion="7")
    body["status"] = {"phase": "Running", "attempts": 1}
    rec.jobs[key] = body
    asyncio.run(rec.reconcile(key))
    ((_, status, _),) = kube.patches
    assert status["phase"] == "Failed" and status["reason"] == "NetworkIsolationRequired"
    # The head first, as every decision deletes, then the workers; the finished head stays (it holds nothing).
    assert kube.deleted == [("Pod", "open-head-1", "p1"), ("StatefulSet", "open-workers", "s1")]


def test_a_job_that_does_not_parse_is_failed_by_its_body_and_loses_its_pods() -> None:
    """A rule this version added since the job was created: the job is read as far as it can be, and ended."""
    from rljob.controller.observe import WorkersObservation
    from tests.builders import minimal_job

    key = ("ns1", "old")
    kube = TearingDownKube()
    pods = {key: [PodObservation("old-head-1", "head", 1, "Running", controller_uid="u1", uid="p1"),
                  PodObservation("old-head-1", "head", 1, "Running", controller_uid="u0", uid="p0")]}  # another instance's
    workers = {key: [WorkersObservation(exists=True, replicas=2, controller_uid="u1", name="old-workers", uid="s1")]}
    rec = Reconciler(kube, resources.BuildContext(), pods=pods, workers=workers,  # type: ignore[arg-type]
                     clock=lambda: datetime(2026, 12, 4, 0, 0, 10, tzinfo=timezone.utc))
    body = minimal_job("old", entrypoint={"recipe": "no-such-recipe"})
    body["metadata"].update(uid="u1", generation=4, resourceVersion="7")
    body["status"] = {"phase": "Running", "attempts": 1, "reason": "SomeNewerReason", "progress": {"iteration": 9}}
    rec.jobs[key] = body
    asyncio.run(rec.reconcile(key))
    ((_, status, rv),) = kube.patches
    assert (status["phase"], status["reason"], rv) == ("Failed", "ValidationFailed", "7")
    assert "spec.entrypoint.recipe" in status["message"] and "progress" not in status
    assert (status["observedGeneration"], status["completionTime"]) == (4, "2026-12-04T00:00:10Z")
    assert kube.events == [("Warning", "ValidationFailed")]
    assert kube.deleted == [("Pod", "old-head-1", "p1"), ("StatefulSet", "old-workers", "s1")]
    body["status"] = {**body["status"], **status}  # as the watch delivers our write
    body["metadata"]["resourceVersion"] = "8"
    rec.jobs[key] = body
    kube.deleted.clear()
    asyncio.run(rec.reconcile(key))
    assert len(kube.patches) == 1 and len(kube.events) == 1  # written once; the pods go on every pass
    assert kube.deleted == [("Pod", "old-head-1", "p1"), ("StatefulSet", "old-workers", "s1")]
