"""A small async facade over the Kubernetes REST API.

The official client is synchronous; every call runs in a dedicated thread pool so the operator's
event loop never blocks on the network (50 jobs applied at once must not serialize). Objects are
plain dicts, addressed by apiVersion/kind through one table of REST paths.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import constants as c

log = logging.getLogger(__name__)

# (apiVersion, kind) → (path prefix, plural). Namespaced resources only.
_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    (c.API_VERSION, c.KIND): (f"/apis/{c.API_VERSION}", c.PLURAL),
}


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    prefix, plural = _PATHS[(api_version, kind)]
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None, threads: int = 32) -> None:
        if api_client is None:
            api_client = new_api_client(threads)
        self.client = api_client
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    def _call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> bytes:
        """One blocking HTTP call; raises ApiException (with the server's message) on a non-2xx answer."""
        serialized = self.client.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json, */*"},
            body=body, auth_settings=["BearerToken"],
        )
        resp = self.client.call_api(*serialized)
        data = resp.read() or b""
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=data.decode("utf-8", "replace"), data=None)
        return data

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        """A JSON API call, run in the thread pool."""
        data = await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: self._call(method, path, body, content_type, query))
        return json.loads(data) if data else None

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Creates; (body, True) when created, (the existing body, False) when one by that name exists.

        The existing body is None when it was deleted between the two calls: the next reconcile creates it.
        """
        meta = obj["metadata"]
        path = collection_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        try:
            return await self.request("POST", path, obj, query=[("fieldManager", c.FIELD_MANAGER)]), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        try:
            return await self.request("GET", object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])), False
        except ApiException as exc:
            if exc.status == 404:
                return None, False
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        path = object_path(api_version, kind, namespace, name)
        try:
            await self.request("DELETE", path, {"propagationPolicy": propagation})
            return True
        except ApiException as exc:
            if exc.status == 404:
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
        path = object_path("v1", "Pod", namespace, name) + "/log"
        try:
            data = await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: self._call("GET", path, query=[("tailLines", str(lines))]))
            return data.decode("utf-8", "replace")
        except ApiException as exc:
            log.info("no log for %s/%s: %s", namespace, name, exc.reason)
            return None

    async def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the job, as `kubectl describe rltj` and `kubectl get events` show them."""
        meta = involved["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": c.API_VERSION, "kind": c.KIND, "name": meta["name"], "namespace": meta["namespace"],
                "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": c.MANAGED_BY},
            "reportingComponent": f"{c.GROUP}/operator",
            "reportingInstance": c.MANAGED_BY,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.request("POST", collection_path("v1", "Event", meta["namespace"]), body)
        except ApiException as exc:  # events are best effort; never fail a reconcile for them
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc.reason)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def new_api_client(pool_size: int = 32) -> client.ApiClient:
    """From the in-cluster service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration=cfg)


def error_text(exc: Exception) -> str:
    """The API server's own message, which names the field or the policy that refused."""
    if isinstance(exc, ApiException):
        try:
            return json.loads(exc.body or "{}").get("message") or f"{exc.status} {exc.reason}"
        except ValueError:
            return f"{exc.status} {exc.reason}"
    return str(exc)
