"""A small async facade over the Kubernetes REST API.

One aiohttp session (kopf's own HTTP library) on the operator's event loop: no thread pool beside kopf's,
no per-call thread hop, connections kept alive and shared by every reconcile. Credentials come from
controller.credentials (the pod's service account, or the kubeconfig with its exec plugins); the token is
asked for before each call, so that rotated tokens are picked up. Objects are plain dicts, addressed by
apiVersion/kind through one table of REST paths. The official client is not imported at all.
"""
from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import aiohttp

from ..api import constants as c
from ..api.vocabulary import EventType
from . import credentials
from .credentials import Credentials
from .events import EventAggregator

log = logging.getLogger(__name__)

# As kopf's own requests: long enough for a slow API server, short enough to retry a lost connection.
REQUEST_TIMEOUT_SECONDS = 60.0

EVENT = ("v1", "Event")
# (apiVersion, kind) → (path prefix, plural). Namespaced resources only.
_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    c.POD: ("/api/v1", "pods"),
    c.SERVICE: ("/api/v1", "services"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    c.CLAIM: ("/api/v1", "persistentvolumeclaims"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    EVENT: ("/api/v1", "events"),
    c.STATEFULSET: ("/apis/apps/v1", "statefulsets"),
    c.NETWORK_POLICY: ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    (c.API_VERSION, c.KIND): (f"/apis/{c.API_VERSION}", c.PLURAL),
    c.WORKLOAD: (f"/apis/{c.KUEUE_API_VERSION}", "workloads"),
}


# Requests that leader election itself makes: never held back by the write guard.
LEASE_PATH_PREFIX = "/apis/coordination.k8s.io/"


class NotLeading(Exception):
    """A write refused before it was sent: this replica does not hold the Lease with margin (Kube.may_write)."""


class ApiException(Exception):
    """A non-2xx answer: its status, reason, the server's body (a Status object as text) and headers.

    Named and shaped as the official client's, whose callers read the same four attributes.
    """

    def __init__(self, status: int = 0, reason: str = "", body: str | None = None, headers: Any = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers

    def __str__(self) -> str:
        return f"({self.status}) {self.reason}: {error_text(self)}" if self.body else f"({self.status}) {self.reason}"


def resource(api_version: str, kind: str) -> tuple[str, str]:
    """The path prefix and plural of a kind, as a watch across namespaces needs them."""
    return _PATHS[(api_version, kind)]


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    prefix, plural = resource(api_version, kind)
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


class Kube:
    def __init__(self, creds: Credentials | None = None, connections: int = 32) -> None:
        self.creds = creds if creds is not None else credentials.load()
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        # Asked before every write (all but GETs and the Lease's own requests): a replica that may no longer hold the
        # Lease sends nothing that acts, however late a decision made while it led reaches this point. None: alone.
        self.may_write: Callable[[], bool] | None = None
        self.events = EventAggregator()
        # How every request reaches the server: through the kubeconfig's or the environment's proxy, checking the
        # certificate against tls-server-name where the kubeconfig gives one. Decided once, as client-go does.
        self._route: dict[str, Any] = {}
        proxy = self.creds.proxy()
        if proxy:
            self._route["proxy"] = proxy
        if self.creds.tls_server_name:
            self._route["server_hostname"] = self.creds.tls_server_name

    def _open(self) -> aiohttp.ClientSession:
        """Opened on first use: a session belongs to the event loop that runs it."""
        connector = aiohttp.TCPConnector(limit=self.connections, ssl=self.creds.ssl_context())
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        )
        return self._session

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json, */*"}
        authorization = self.creds.authorization()  # cached; re-read when rotated or expired
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def _send(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> bytes:
        """One HTTP call; raises ApiException (status, reason and the server's message) on a non-2xx answer."""
        if method != "GET" and self.may_write is not None and not path.startswith(LEASE_PATH_PREFIX) \
                and not self.may_write():
            raise NotLeading(f"{method} {path} not sent: this replica does not hold the Lease with margin")
        session = self._session if self._session is not None else self._open()
        data = json.dumps(body).encode() if body is not None else None
        async with session.request(method, self.creds.server + path, params=query or None, data=data,
                                   headers=self._headers(content_type), **self._route) as resp:
            raw = await resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException(resp.status, resp.reason or "", raw.decode("utf-8", "replace"), resp.headers)
            return raw

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        """A JSON API call."""
        data = await self._send(method, path, body, content_type, query)
        return json.loads(data) if data else None

    async def watch(
        self, path: str, query: list[tuple[str, str]], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """A watch stream's events, one JSON object per line. On a session of its own without a connection limit: each
        watch holds a connection for minutes, and the reconciles' pool must not wait behind them."""
        if self._streams is None:
            self._streams = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self.creds.ssl_context()),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_SECONDS, sock_read=read_timeout),
            )
        async with self._streams.get(self.creds.server + path, params=query,
                                     headers=self._headers("application/json"), **self._route) as resp:
            if not 200 <= resp.status <= 299:
                raw = await resp.read()
                raise ApiException(resp.status, resp.reason or "", raw.decode("utf-8", "replace"), resp.headers)
            # Lines split by hand: aiohttp's own line reader refuses lines over 128 KB, and an object may be larger.
            rest = b""
            async for chunk in resp.content.iter_any():
                lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if rest.strip():
                yield json.loads(rest)

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Creates; (None, True) when created, (the existing body, False) when one by that name exists.

        The created object's body is not decoded: no caller reads it, and a burst would decode thousands of pods'
        for nothing. The existing body is None when it was deleted between the two calls: the
        next reconcile creates it.
        """
        meta = obj["metadata"]
        path = collection_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        try:
            await self._send("POST", path, obj, query=[("fieldManager", c.FIELD_MANAGER)])
            return None, True
        except ApiException as exc:
            if exc.status != 409:
                raise
        return await self.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]), False

    async def get(self, api_version: str, kind: str, namespace: str, name: str, cached: bool = False) -> dict[str, Any] | None:
        """An object, None when there is none. `cached` reads the API server's watch cache (resourceVersion=0: no
        read from etcd), possibly a moment old: good for choosing what to do next, with a uid precondition on the write."""
        try:
            query = [("resourceVersion", "0")] if cached else None
            return await self.request("GET", object_path(api_version, kind, namespace, name), query=query)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(
        self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background", uid: str = ""
    ) -> bool:
        """False when it is gone already, or (given `uid`) when the name now belongs to another object."""
        path = object_path(api_version, kind, namespace, name)
        options: dict[str, Any] = {"propagationPolicy": propagation}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._send("DELETE", path, options)  # (the answer, the object or a Status, is not read)
            return True
        except ApiException as exc:
            if exc.status == 404 or (uid and exc.status == 409):
                return False
            raise

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json",
                                  query=[("fieldManager", c.FIELD_MANAGER)])

    async def patch_job_status(
        self, namespace: str, name: str, status: dict[str, Any], decided_on: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A merge patch of status; given the job body it was `decided_on`, only while the job is still at that
        body's resourceVersion (else 409: the caller decides again on the fresh one)."""
        patch: dict[str, Any] = {"status": status}
        version = ((decided_on or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            patch["metadata"] = {"resourceVersion": version}
        return await self.merge_patch(object_path(c.API_VERSION, c.KIND, namespace, name) + "/status", patch)

    async def pod_log_tail(self, namespace: str, name: str, lines: int = 40) -> str | None:
        path = object_path(*c.POD, namespace, name) + "/log"
        try:
            data = await self._send("GET", path, query=[("tailLines", str(lines))])
            return data.decode("utf-8", "replace")
        except ApiException as exc:
            log.info("no log for %s/%s: %s", namespace, name, exc.reason)
            return None

    async def event(self, involved: dict[str, Any], type_: EventType, reason: str, message: str) -> None:
        """A core/v1 Event on the job, as `kubectl describe rltj` and `kubectl get events` show them.

        A repeat of the same event on the same job raises the count and lastTimestamp of the Event posted first
        (events.EventAggregator), as client-go's recorder does.
        """
        meta = involved["metadata"]
        namespace, message = meta["namespace"], message[:1024]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (namespace, str(meta.get("uid") or meta["name"]), type_, reason, message)
        occurrence = self.events.occur(key, f"{meta['name']}.{secrets.token_hex(8)}")
        try:
            if not occurrence.first:
                try:
                    await self.merge_patch(object_path(*EVENT, namespace, occurrence.name),
                                           {"count": occurrence.count, "lastTimestamp": now})
                    return
                except ApiException as exc:
                    if exc.status != 404:  # expired or deleted: post it anew below
                        raise
                    self.events.forget(key)
                    occurrence = self.events.occur(key, f"{meta['name']}.{secrets.token_hex(8)}")
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": occurrence.name, "namespace": namespace},
                "involvedObject": {
                    "apiVersion": c.API_VERSION, "kind": c.KIND, "name": meta["name"], "namespace": namespace,
                    "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "source": {"component": c.MANAGED_BY},
                "reportingComponent": f"{c.GROUP}/operator",
                "reportingInstance": c.MANAGED_BY,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            await self.request("POST", collection_path(*EVENT, namespace), body)
        except ApiException as exc:  # events are best effort; never fail a reconcile for them
            self.events.forget(key)
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, meta["name"], exc.reason)
        except BaseException:
            self.events.forget(key)  # not sent (NotLeading, a cancelled reconcile): the count must not run ahead
            raise

    async def close(self) -> None:
        for session in (self._session, self._streams):
            if session is not None:
                await session.close()
        self._session = self._streams = None


def error_text(exc: Exception) -> str:
    """The API server's own message, which names the field or the policy that refused."""
    if isinstance(exc, ApiException):
        try:
            status = json.loads(exc.body or "{}")
        except ValueError:
            status = None
        message = status.get("message") if isinstance(status, dict) else None
        return message or f"{exc.status} {exc.reason}"
    return str(exc)
