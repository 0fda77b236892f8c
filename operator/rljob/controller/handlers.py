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
from dataclasses import dataclass
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
from .reconciler import Reconciler

log = logging.getLogger(__name__)
MANAGED = {c.LABEL_APP_MANAGED_BY: c.MANAGED_BY}
# The kinds of a job's children, besides its pods and StatefulSet, created again when deleted while it lives
# (apiVersion, kind). Not its checkpoint claim: Kubernetes keeps a claim in use, and one deleted on purpose is a
# person's choice to start afresh, which the next attempt makes.
KEPT_CHILDREN = (
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)


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
    # Where drivers reach the API (CIDR, port), given by the installer; empty: discovered, or not.
    api_server: tuple[tuple[str, int], ...] = ()
    # Read the `kubernetes` EndpointSlices in `default` at start-up (needs a Role there).
    discover_api_server: bool = True
    metrics_scrape_namespaces: tuple[str, ...] = ()
    health_port: int | None = None
    # Admit jobs labelled kueue.x-k8s.io/queue-name through Kueue Workloads (register_kueue() adds the watch).
    kueue: bool = False
    # The namespaces (or kopf patterns) served, as given to kopf; empty: all of them.
    namespaces: tuple[str, ...] = ()
    # Read once by `rljob operator` (a clear error before kopf starts); None: read at start-up.
    credentials: Credentials | None = None


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

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        self.port, self.host = port, host
        self.ready = False
        self.reason = "starting"
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
        return web.json_response({"ready": self.ready, "reason": self.reason}, status=200 if self.ready else 503)

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
        api_server=await api_server_endpoints(kube),
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
    for old in _state.pop("informers", []):  # (kopf retries a failed start-up handler)
        await old.stop()
    _state["informers"] = await start_streams(kube, rec)  # children listed now; the jobs follow in the background
    _state["reconciler"] = rec
    if CONFIG.lease is None:
        _lead()
    else:
        elector = LeaderElector(kube, CONFIG.lease)
        rec.may_act = elector.is_leader
        _state["elector"] = elector
        _state["leader"] = asyncio.create_task(_lead_when_elected(elector), name="rljob-leader-election")
    log.info("rljob operator started: default image %s, API server endpoints %s",
             ctx.default_image, [f"{e.cidr}:{e.port}" for e in ctx.api_server] or "unknown (ports 443/6443 allowed)")
    if CONFIG.health_port and "health" not in _state:  # (kopf retries a failed start-up handler)
        health = HealthServer(CONFIG.health_port)
        health.set_ready(True, "reconciling" if CONFIG.lease is None else "leader election candidate")
        await health.start()
        _state["health"] = health
    # What start-up made (modules, kopf's registries, the reconciler) lives as long as the process: moved out of
    # the cyclic collector's generations, so that its full passes during a burst of watch events walk only what
    # the events made.
    gc.freeze()


def _lead() -> None:
    """From here on this process reconciles: every job it knows of, then every change."""
    reconciler().start()


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

    def deleted(key: tuple[str, str], uid: str | None) -> None:
        rec.remove_job(key, uid)
        metrics.forget_job(key)

    jobs = informer.JobFeed(kube, f"/apis/{c.API_VERSION}", c.PLURAL, rec.upsert_job, deleted, CONFIG.namespaces)
    jobs.start()  # in the background: with the CRD not (yet) installed, it says so and tries again
    departures = [informer.Departures(kube, *resource(api_version, kind), kind, selector, rec.child_gone, CONFIG.namespaces)
                  for api_version, kind in KEPT_CHILDREN]
    for stream in departures:
        stream.start()  # in the background too: a child deleted before its list is looked at is simply not seen
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


async def api_server_endpoints(kube: Kube) -> tuple[resources.ApiServerEndpoint, ...]:
    """Given by the installer, else read from the cluster, else unknown (the drivers may reach 443/6443 anywhere)."""
    if CONFIG.api_server:
        return tuple(resources.ApiServerEndpoint(cidr=cidr, port=port) for cidr, port in CONFIG.api_server)
    if not CONFIG.discover_api_server:
        log.warning("the API server's addresses are neither given (--api-server-endpoint) nor read: job drivers may "
                    "reach ports 443/6443 at any address")
        return ()
    return await discover_api_server(kube)


async def discover_api_server(kube: Kube) -> tuple[resources.ApiServerEndpoint, ...]:
    """The `kubernetes` Service's endpoints, so the driver's egress policy can name them exactly."""
    try:
        data = await kube.request(
            "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            query=[("labelSelector", "kubernetes.io/service-name=kubernetes")],
        )
    except Exception as exc:
        log.info("cannot read the API server's endpoints (%s); allowing ports 443/6443 for the driver", exc)
        return ()
    out = []
    for item in data.get("items", []):
        ports = [p.get("port") for p in item.get("ports") or [] if p.get("port")]
        for ep in item.get("endpoints") or []:
            for address in ep.get("addresses") or []:
                suffix = "/128" if ":" in address else "/32"
                out += [resources.ApiServerEndpoint(cidr=address + suffix, port=int(port)) for port in ports]
    return tuple(out)
