"""Thin kopf handlers: kopf hosts the process (start-up, clean-up, login, signals); the operator's own list-and-watch
streams (controller.informer) follow the jobs and their pods, StatefulSets and Kueue Workloads; the Reconciler decides
and acts.

Nothing here adds a finalizer or writes to the job for bookkeeping, so deleting a job never needs the operator, and
the job's annotations stay clean. The children are listed in the start-up handler, and the jobs only after that, so
the first reconcile of a job already sees all of its pods (no duplicate head after an operator restart).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web

from .. import resources
from ..api import constants as c
from ..resources.meta import selector_string
from . import credentials, informer, metrics, observe
from .credentials import Credentials
from .kube import ApiException, Kube, resource
from .leader import LeaderElector, LeaseSettings
from .legacy import LegacyCleanup
from .progress import ProgressReader, ProgressSettings
from .reconciler import KEPT_CHILDREN, Reconciler

log = logging.getLogger(__name__)
MANAGED = {c.LABEL_APP_MANAGED_BY: c.MANAGED_BY}


@dataclass
class OperatorConfig:
    default_image: str = c.DEFAULT_IMAGE
    operator_namespace: str = "rljob-system"
    concurrency: int = 16
    metrics_port: int | None = None
    lease: LeaseSettings | None = None  # leader election among replicas; None: this process acts alone
    dns_namespace: str = resources.BuildContext.dns_namespace
    dns_labels: tuple[tuple[str, str], ...] = resources.BuildContext.dns_labels
    cluster_cidrs: tuple[str, ...] = ()
    require_isolation: bool = False
    metrics_scrape_namespaces: tuple[str, ...] = ()
    health_port: int | None = None
    # Admit jobs labelled kueue.x-k8s.io/queue-name through Kueue Workloads (register_kueue() adds the watch).
    kueue: bool = False
    # The namespaces (or kopf patterns) served, as given to kopf; empty: all of them.
    namespaces: tuple[str, ...] = ()
    # Read once by `rljob operator` (a clear error before kopf starts); None: read at start-up.
    credentials: Credentials | None = None
    # How the heads' progress is read (controller.progress).
    progress: ProgressSettings = field(default_factory=ProgressSettings)


CONFIG = OperatorConfig()


def _credentials() -> Credentials:
    if CONFIG.credentials is None:
        CONFIG.credentials = credentials.load()
    return CONFIG.credentials


def connection_info(creds: Credentials) -> kopf.ConnectionInfo:
    """kopf's watches use the operator's own credentials (kopf's defaults would import the official client)."""
    token = creds.bearer_token()
    pair = creds.client_certificate()
    basic = token is None and creds.username is not None
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=None if creds.ca_data is not None else creds.ca_file,
        ca_data=creds.ca_data,
        insecure=creds.insecure or None,
        scheme="Bearer" if token else None,
        token=token,
        username=creds.username if basic else None,
        password=creds.password if basic else None,
        certificate_data=pair[0] if pair else None,
        private_key_data=pair[1] if pair else None,
        default_namespace=creds.namespace,
        expiration=creds.expires(),
    )


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    # On start and whenever the API server answers 401: a rotated token file is read again by then.
    return connection_info(_credentials())


class HealthServer:
    """/healthz (liveness: the event loop answers) and /readyz (readiness) on one port.

    It listens once the start-up has finished (the API server answered, the job network context is built, the
    reconciler exists and reconciles or stands by for the Lease), as kopf's own liveness endpoint did: a test or a
    probe that sees /healthz answer knows the operator has started. /readyz then says ready until the shutdown
    begins, and 503 from then on, so the metrics Service drops a stopping replica before it goes. A standby is
    ready too: it watches and caches, and a rollout of several replicas must not wait for the leader to leave.
    """

    def __init__(self, port: int, host: str = "0.0.0.0", check: Callable[[], str | None] = lambda: None) -> None:
        self.port, self.host = port, host
        self.ready = False
        self.reason = "starting"
        # Asked on every readiness probe: why this replica is not working although it started (None: it is).
        self.check = check
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def set_ready(self, ready: bool, reason: str) -> None:
        self.ready, self.reason = ready, reason

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        problem = self.check() if self.ready else None
        ready, reason = (False, problem) if problem else (self.ready, self.reason)
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


_state: dict[str, Any] = {}


def reconciler() -> Reconciler:
    return _state["reconciler"]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # we post our own, meaningful events
    settings.networking.request_timeout = 60
    # kopf serves no resource here (the operator's own streams do): it has no CRD or Namespace to follow, and the
    # operator needs no permission for them.
    settings.scanning.disabled = True
    kube = Kube(_credentials())
    ctx = resources.BuildContext(
        default_image=CONFIG.default_image,
        operator_namespace=CONFIG.operator_namespace,
        dns_namespace=CONFIG.dns_namespace,
        dns_labels=CONFIG.dns_labels,
        cluster_cidrs=CONFIG.cluster_cidrs,
        require_isolation=CONFIG.require_isolation,
        metrics_scrape_namespaces=CONFIG.metrics_scrape_namespaces,
    )
    on_reconciled = None
    if CONFIG.metrics_port:
        metrics.serve(CONFIG.metrics_port)
        on_reconciled = metrics.observe_reconcile
    rec = Reconciler(kube, ctx, concurrency=CONFIG.concurrency, on_reconciled=on_reconciled)
    if CONFIG.kueue:
        rec.workloads = {}  # queued jobs wait for their Workload from the first reconcile on
    elector = LeaderElector(kube, CONFIG.lease) if CONFIG.lease is not None else None
    if elector is not None:
        # Decisions and every write (kube.may_write) stop while the Lease is not held with margin.
        rec.may_act = kube.may_write = elector.may_write
    reader = ProgressReader(kube, rec.jobs, lambda key: rec.pods.get(key, ()), rec.upsert_job_quietly,
                            CONFIG.progress, may_act=rec.may_act)
    cleanup = LegacyCleanup(kube, lambda key: rec.pods.get(key, ()), CONFIG.namespaces)

    def pods_changed(key: tuple[str, str]) -> None:
        reader.touch(key)
        if cleanup.pods_changed(key):
            _background(cleanup.settle(key), f"rljob-upgrade-{key[0]}/{key[1]}")

    rec.on_pods_changed = pods_changed
    for old in _state.pop("informers", []):  # (kopf retries a failed start-up handler)
        await old.stop()
    _state["informers"] = await start_streams(kube, rec)  # children listed now; the jobs follow in the background
    _state.update(reconciler=rec, progress=reader, cleanup=cleanup)
    if elector is None:
        _lead()
    else:
        _state["elector"] = elector
        _state["leader"] = asyncio.create_task(_lead_when_elected(elector), name="rljob-leader-election")
    log.info("rljob operator started: default image %s; progress read from the heads every %.0f s",
             ctx.default_image, CONFIG.progress.interval_seconds)
    if CONFIG.health_port and "health" not in _state:  # (kopf retries a failed start-up handler)
        health = HealthServer(CONFIG.health_port, check=_not_working)
        health.set_ready(True, "reconciling" if CONFIG.lease is None else "leader election candidate")
        await health.start()
        _state["health"] = health
    # What start-up made (modules, kopf's registries, the reconciler) lives as long as the process: moved out of
    # the cyclic collector's generations, so that its full passes during a burst of watch events walk only what
    # the events made.
    gc.freeze()


def _lead() -> None:
    """From here on this process reconciles every job it knows of, then every change, reads the heads' progress, and
    removes what jobs of the previous version had only for their drivers' own status writes."""
    reconciler().start()
    _state["progress"].start()
    _background(_state["cleanup"].scan(), "rljob-upgrade-scan")


def _background(work: Any, name: str) -> None:
    """A task that is kept (not collected while it runs) and whose failure is logged."""
    tasks: set[asyncio.Task[None]] = _state.setdefault("background", set())
    task = asyncio.create_task(work, name=name)
    tasks.add(task)

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("%s failed: %s", name, t.exception())

    task.add_done_callback(done)


def _not_working() -> str | None:
    """Why a started replica is not working (readiness fails), or None. A standby is working: it stands by."""
    rec: Reconciler | None = _state.get("reconciler")
    if rec is None or not rec.may_act() or not rec.started:
        return None
    if not rec.healthy():
        return "reconcile workers stopped"
    reader: ProgressReader | None = _state.get("progress")
    if reader is not None and reader.enabled and not reader.running:
        return "the progress reader stopped"
    return None


async def _lead_when_elected(elector: LeaderElector) -> None:
    """A standby only tries to take the Lease: its caches follow the cluster meanwhile, but nothing is reconciled."""
    await elector.acquire()
    _lead()
    await elector.keep(on_lost=_stop_acting)


def _stop_acting() -> None:
    """Lost the Lease: exit at once, as controller-runtime does; a graceful stop could still act on stale state."""
    logging.shutdown()
    os._exit(1)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    health: HealthServer | None = _state.pop("health", None)
    if health is not None:
        health.set_ready(False, "stopping")
    task = _state.pop("leader", None)
    if task is not None:
        task.cancel()
    rec = _state.pop("reconciler", None)
    reader: ProgressReader | None = _state.pop("progress", None)
    if reader is not None:
        await reader.stop()
    for task in _state.pop("background", set()):
        task.cancel()
    elector: LeaderElector | None = _state.pop("elector", None)
    for watch in _state.pop("informers", []):
        await watch.stop()
    if rec is not None:
        await rec.stop()
        if elector is not None:
            await elector.release()  # a standby takes over at once instead of after the lease duration
        await rec.kube.close()
    if health is not None:
        await health.stop()


async def start_streams(kube: Kube, rec: Reconciler) -> list[informer.Stream]:
    """The jobs' pods and StatefulSets (and Kueue Workloads) are listed before the reconciler starts; the jobs
    themselves after them, so that the first reconcile of a job already sees all of its children."""
    selector = selector_string(MANAGED)
    pods = informer.Informer(kube, "/api/v1", "pods", selector, _keyed(observe.observe_pod),
                             CONFIG.namespaces, on_change=rec.pods_changed)
    statefulsets = informer.Informer(kube, "/apis/apps/v1", "statefulsets", selector, _keyed(observe.observe_workers),
                                     CONFIG.namespaces, on_change=rec.enqueue)
    children: list[informer.Informer[Any]] = [pods, statefulsets]
    workloads = None
    if CONFIG.kueue:
        workloads = informer.Informer(kube, f"/apis/{c.KUEUE_API_VERSION}", "workloads", selector,
                                      _keyed(observe.observe_workload), CONFIG.namespaces, on_change=rec.enqueue)
        children.append(workloads)
    try:
        await asyncio.gather(pods.sync(), statefulsets.sync(), _sync_workloads(workloads))
    except BaseException:
        await asyncio.gather(*(child.stop() for child in children))
        raise
    rec.pods, rec.workers = pods.index, statefulsets.index
    if workloads is not None:
        rec.workloads = workloads.index

    departures = [informer.Departures(kube, *resource(api_version, kind), kind, selector, rec.child_gone, CONFIG.namespaces)
                  for api_version, kind in KEPT_CHILDREN]
    try:
        # Listed before the jobs: a live job's first reconcile creates again what went while no operator ran.
        await asyncio.gather(*(stream.sync() for stream in departures))
    except BaseException:
        await asyncio.gather(*(stream.stop() for stream in [*children, *departures]))
        raise
    rec.present = lambda key: set().union(*(stream.present(key) for stream in departures))

    def deleted(key: tuple[str, str], uid: str | None) -> None:
        rec.remove_job(key, uid)
        metrics.forget_job(key)
        reader = _state.get("progress")
        if reader is not None:
            reader.forget(key)

    jobs = informer.JobFeed(kube, f"/apis/{c.API_VERSION}", c.PLURAL, rec.upsert_job, deleted, CONFIG.namespaces)
    jobs.start()  # in the background: with the CRD not (yet) installed, it says so and tries again
    return [*children, jobs, *departures]


async def _sync_workloads(workloads: informer.Informer[Any] | None) -> None:
    if workloads is None:
        return
    try:
        await workloads.sync()
    except ApiException as exc:
        if exc.status != 404:
            raise
        log.warning("--kueue: the API server does not serve %s workloads (is Kueue installed?); queued jobs wait "
                    "until it does", c.KUEUE_API_VERSION)
        workloads.start()


def _keyed(reduce: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], tuple[Any, Any] | None]:
    def keyed(body: Mapping[str, Any]) -> tuple[Any, Any] | None:
        key = observe.job_key(body)
        return (key, reduce(body)) if key else None

    return keyed


def register_kueue() -> None:
    """Admit labelled jobs through Kueue Workloads, watched beside the pods (Kueue's CRDs must be installed)."""
    CONFIG.kueue = True
