"""One object assembles the operator: `Operator` is built from the `OperatorConfig` before kopf starts, and owns
every long-lived part (the API client, the streams, the reconciler and its work queue, the leader elector, the
progress reader, the upgrade clean-up, the metrics and the probes). kopf receives it as its memo and its start-up,
clean-up and login handlers only call its methods, so the parts are wired once, in one place, and a test can build
and drive an operator without kopf.

The streams are built first and call back into this object, which hands each event to the part it concerns; the
parts that need the streams' indexes (the reconciler, the progress reader) take them in their constructors. Nothing
reconciles until `start` has listed the children: the jobs are listed only after them, so the first reconcile of
a job already sees all of its pods (no duplicate head after an operator restart).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from ..api import constants as c
from ..resources.meta import selector_string
from . import informer, observe
from .config import OperatorConfig
from .health import HealthServer
from .kube import ApiException, Kube, resource
from .leader import LeaderElector
from .legacy import LegacyCleanup
from .metrics import OperatorMetrics
from .objects import Key, job_key
from .observe import PodObservation
from .progress import ProgressReader
from .reconciler import KEPT_CHILDREN, Reconciler

log = logging.getLogger(__name__)
MANAGED = {c.LABEL_APP_MANAGED_BY: c.MANAGED_BY}


class Operator:
    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        namespaces = config.namespaces
        self.kube = Kube(config.credentials)
        self.elector = LeaderElector(self.kube, config.lease) if config.lease is not None else None
        if self.elector is not None:
            # Every write but the Lease's own stops while the Lease is not held with margin, however late a decision
            # made while this replica led reaches the client.
            self.kube.may_write = self.elector.may_write

        selector = selector_string(MANAGED)
        self.pods: informer.Informer[observe.PodObservation] = informer.Informer(
            self.kube, *resource(*c.POD), selector, _keyed(observe.observe_pod), namespaces, on_change=self._pods_changed)
        self.statefulsets: informer.Informer[observe.WorkersObservation] = informer.Informer(
            self.kube, *resource(*c.STATEFULSET), selector, _keyed(observe.observe_workers), namespaces,
            on_change=self._child_changed)
        self.workloads: informer.Informer[observe.WorkloadObservation] | None = None
        if config.kueue:
            self.workloads = informer.Informer(
                self.kube, *resource(*c.WORKLOAD), selector, _keyed(observe.observe_workload),
                namespaces, on_change=self._child_changed)
        self.departures = [
            informer.Departures(self.kube, *resource(api_version, kind), kind, selector, self._child_gone, namespaces)
            for api_version, kind in KEPT_CHILDREN
        ]
        self.job_feed = informer.JobFeed(self.kube, *resource(c.API_VERSION, c.KIND), self._job_changed,
                                         self._job_deleted, namespaces)

        self.metrics = OperatorMetrics(self._exported_jobs, self._progress_reads) if config.metrics_port else None
        self.reconciler = Reconciler(
            self.kube, config.build, concurrency=config.concurrency,
            on_reconciled=self.metrics.observe_reconcile if self.metrics is not None else None,
            pods=self.pods.index, workers=self.statefulsets.index,
            # Queued jobs wait for their Workload from the first reconcile on; None: the integration is off.
            workloads=self.workloads.index if self.workloads is not None else None,
            present=self._present,
            # Decisions stop, as writes do, while the Lease is not held with margin.
            may_act=self.elector.may_write if self.elector is not None else _always,
        )
        self.progress = ProgressReader(self.kube, self.reconciler.jobs, self._pods_of,
                                       self.reconciler.upsert_job_quietly, config.progress,
                                       may_act=self.reconciler.may_act)
        self.legacy = LegacyCleanup(self.kube, self._pods_of, namespaces)
        self.health = HealthServer(config.health_port, check=self.not_working) if config.health_port else None
        self._leading: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ── what kopf calls ────────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        """kopf's start-up handler, which kopf runs again after a failure: what it lists is listed afresh, and what
        it starts (the leading, the probes, the metrics endpoint) is started once."""
        if self.metrics is not None and self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_port)
        await self._stop_streams()
        await self._sync_streams()  # the children now; the jobs follow in the background
        if self.elector is None:
            if not self.reconciler.started:
                self._lead()
        elif self._leading is None:
            self._leading = asyncio.create_task(self._lead_when_elected(self.elector), name="rljob-leader-election")
        log.info("rljob operator started: default image %s; progress read from the heads every %.0f s",
                 self.config.build.default_image, self.config.progress.interval_seconds)
        if self.health is not None and not self.health.serving:
            self.health.set_ready(True, "reconciling" if self.elector is None else "leader election candidate")
            await self.health.start()
        # What start-up made (modules, kopf's registries, the reconciler) lives as long as the process: moved out of
        # the cyclic collector's generations, so that its full passes during a burst of watch events walk only what
        # the events made.
        gc.freeze()

    async def stop(self) -> None:
        """kopf's clean-up handler: readiness fails first (the metrics Service drops this replica), then everything
        stops, and the Lease is handed back so that a standby takes over at once instead of after its duration."""
        if self.health is not None:
            self.health.set_ready(False, "stopping")
        if self._leading is not None:
            self._leading.cancel()
            self._leading = None
        await self.progress.stop()
        for task in list(self._background):
            task.cancel()
        await self._stop_streams()
        await self.reconciler.stop()
        if self.elector is not None:
            await self.elector.release()
        await self.kube.close()
        if self.health is not None:
            await self.health.stop()

    def not_working(self) -> str | None:
        """Why a started replica is not working (readiness fails), or None. A standby is working: it stands by."""
        rec = self.reconciler
        if not rec.may_act() or not rec.started:
            return None
        if not rec.healthy():
            return "reconcile workers stopped"
        if self.progress.enabled and not self.progress.running:
            return "the progress reader stopped"
        return None

    # ── leading ────────────────────────────────────────────────────────────────────────────────

    def _lead(self) -> None:
        """From here on this process reconciles every job it knows of, then every change, reads the heads' progress, and
        removes what jobs of the previous version had only for their drivers' own status writes."""
        self.reconciler.start()
        self.progress.start()
        self._in_background(self.legacy.scan(), "rljob-upgrade-scan")

    async def _lead_when_elected(self, elector: LeaderElector) -> None:
        """A standby only tries to take the Lease: its caches follow the cluster meanwhile, but nothing is reconciled."""
        await elector.acquire()
        self._lead()
        await elector.keep(on_lost=_stop_acting)

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A task that is kept (not collected while it runs) and whose failure is logged."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s failed: %s", name, t.exception())

        task.add_done_callback(done)

    # ── the streams ────────────────────────────────────────────────────────────────────────────

    def _children(self) -> list[informer.Informer[Any]]:
        return [self.pods, self.statefulsets, *([self.workloads] if self.workloads is not None else [])]

    async def _sync_streams(self) -> None:
        """The jobs' pods and StatefulSets (and Kueue Workloads) are listed before the reconciler starts; the jobs
        themselves after them, so that the first reconcile of a job already sees all of its children."""
        children = self._children()
        try:
            await asyncio.gather(self.pods.sync(), self.statefulsets.sync(), self._sync_workloads())
        except BaseException:
            await asyncio.gather(*(child.stop() for child in children))
            raise
        try:
            # Listed before the jobs: a live job's first reconcile creates again what went while no operator ran.
            await asyncio.gather(*(stream.sync() for stream in self.departures))
        except BaseException:
            await asyncio.gather(*(stream.stop() for stream in [*children, *self.departures]))
            raise
        self.job_feed.start()  # in the background: with the CRD not (yet) installed, it says so and tries again

    async def _sync_workloads(self) -> None:
        if self.workloads is None:
            return
        try:
            await self.workloads.sync()
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.warning("--kueue: the API server does not serve %s workloads (is Kueue installed?); queued jobs wait "
                        "until it does", c.KUEUE_API_VERSION)
            self.workloads.start()

    async def _stop_streams(self) -> None:
        for stream in [*self._children(), self.job_feed, *self.departures]:
            await stream.stop()

    def _pods_of(self, key: Key) -> Iterable[PodObservation]:
        return self.pods.index.get(key, ())

    def _pods_changed(self, key: Key) -> None:
        self.reconciler.pods_changed(key)
        self.progress.touch(key)  # a new head is read soon, a finished one's record at once
        if self.legacy.pods_changed(key):
            self._in_background(self.legacy.settle(key), f"rljob-upgrade-{key[0]}/{key[1]}")

    def _child_changed(self, key: Key) -> None:
        self.reconciler.enqueue(key)

    def _child_gone(self, key: Key, uid: str | None, what: str) -> None:
        self.reconciler.child_gone(key, uid, what)

    def _present(self, key: Key) -> set[str]:
        return set().union(*(stream.present(key) for stream in self.departures))

    def _job_changed(self, body: Mapping[str, Any]) -> None:
        self.reconciler.upsert_job(body)

    def _job_deleted(self, key: Key, uid: str | None) -> None:
        self.reconciler.remove_job(key, uid)
        if self.metrics is not None:
            self.metrics.forget_job(key)
        self.progress.forget(key)

    # ── what the metrics read at scrape time ───────────────────────────────────────────────────

    def _exported_jobs(self) -> list[tuple[Key, dict[str, Any]]]:
        """Only the replica that leads exports its jobs: a standby's cache holds the same jobs, and a dashboard's `sum`
        over both replicas would count each twice."""
        return list(self.reconciler.jobs.items()) if self.reconciler.may_act() else []

    def _progress_reads(self) -> tuple[int, int]:
        return self.progress.reads, self.progress.failures


def _always() -> bool:
    return True


def _stop_acting() -> None:
    """Lost the Lease: exit at once, as controller-runtime does; a graceful stop could still act on stale state."""
    logging.shutdown()
    os._exit(1)


def _keyed(reduce: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], tuple[Any, Any] | None]:
    def keyed(body: Mapping[str, Any]) -> tuple[Any, Any] | None:
        key = job_key(body)
        return (key, reduce(body)) if key else None

    return keyed
