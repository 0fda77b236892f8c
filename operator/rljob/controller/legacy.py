"""Upgrading from the version whose heads reported progress themselves: what their jobs had only for that goes.

That version gave each job a ServiceAccount (NAME-driver), a Role and RoleBinding (NAME-progress-reporter) and, in
the head's NetworkPolicy, egress to the API server. Now the operator reads progress from the head, and a job holds
no credentials. Those objects are removed from each job created before, and the head policy's egress with them, but
only once no head of that job still runs as that identity: a head started by the previous version keeps reporting
its progress that way until its attempt ends (a pod's identity cannot change), and its training is never cut short.

The objects are listed once when this replica starts to lead (by label: a few cheap lists, whatever the number of
jobs); a job whose old head still runs is settled when its pods change.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..api import constants as c
from ..api import names
from .informer import Stream
from .kube import ApiException, Kube, error_text, object_path, resource
from .objects import Key, owning_job_uid
from .observe import PodObservation

log = logging.getLogger(__name__)

IDENTITY_KINDS = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)


@dataclass
class Leftovers:
    """One job's objects from the previous version: (apiVersion, kind, name, uid) to delete, head policies to narrow."""

    deletes: list[tuple[str, str, str, str]] = field(default_factory=list)
    policies: list[tuple[str, str]] = field(default_factory=list)  # (name, uid)


class LegacyCleanup:
    def __init__(self, kube: Kube, pods: Callable[[Key], Iterable[PodObservation]], namespaces: tuple[str, ...] = ()) -> None:
        self.kube, self.pods, self.namespaces = kube, pods, namespaces
        self.pending: dict[Key, Leftovers] = {}
        self.removed = 0

    async def scan(self) -> None:
        """Lists what jobs of the previous version still have; then settles every job it can."""
        managed = f"{c.LABEL_APP_MANAGED_BY}={c.MANAGED_BY}"
        for api_version, kind in IDENTITY_KINDS:
            for obj in await self._list(api_version, kind, f"{managed},{c.LABEL_APP_COMPONENT}={c.COMPONENT_RBAC}"):
                meta = obj["metadata"]
                key = self._owner(meta)
                if key is not None and meta["name"] in (names.service_account(key[1]), names.progress_role(key[1])):
                    self.pending.setdefault(key, Leftovers()).deletes.append((api_version, kind, meta["name"], meta["uid"]))
        for obj in await self._list(*c.NETWORK_POLICY, f"{managed},{c.LABEL_APP_COMPONENT}={c.COMPONENT_NETWORK}"):
            meta, spec = obj["metadata"], obj.get("spec") or {}
            key = self._owner(meta)
            if key is not None and meta["name"] == names.network_policy(key[1], c.NETWORK_POLICY_HEAD) \
                    and (spec.get("egress") or "Egress" in (spec.get("policyTypes") or [])):
                self.pending.setdefault(key, Leftovers()).policies.append((meta["name"], meta["uid"]))
        if self.pending:
            log.info("upgrade: %d job(s) still have the previous version's driver identity or API-server egress",
                     len(self.pending))
        for key in list(self.pending):
            await self.settle(key)

    def _owner(self, meta: dict) -> Key | None:
        job = (meta.get("labels") or {}).get(c.LABEL_JOB)
        if not job or owning_job_uid(meta) is None:
            return None  # not a job's child: not ours to delete
        return meta.get("namespace", ""), job

    async def _list(self, api_version: str, kind: str, selector: str) -> list[dict]:
        prefix, plural = resource(api_version, kind)
        stream = Stream(self.kube, prefix, plural, selector, self.namespaces)
        items: list[dict] = []
        for scope in stream.scopes:
            token = ""
            while True:
                query = [("labelSelector", selector), ("limit", "500")] + ([("continue", token)] if token else [])
                try:
                    page = await self.kube.request("GET", scope.path, query=query)
                except ApiException as exc:
                    log.warning("upgrade: cannot list %s (%s); the previous version's objects stay", scope.path,
                                error_text(exc))
                    break
                items += [o for o in page.get("items") or [] if stream.serves((o.get("metadata") or {}).get("namespace", ""))]
                token = (page.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
        return items

    def pods_changed(self, key: Key) -> bool:
        """True when `key` has leftovers waiting for its old head to end (the caller then awaits settle)."""
        return key in self.pending

    async def settle(self, key: Key) -> None:
        """Removes the job's leftovers, unless a head of the previous version still runs (it reports through them)."""
        left = self.pending.get(key)
        if left is None:
            return
        if any(p.legacy and p.role == c.ROLE_HEAD and not p.finished for p in self.pods(key)):
            return
        ns = key[0]
        for name, uid in left.policies:
            patch = {"metadata": {"uid": uid}, "spec": {"policyTypes": ["Ingress"], "egress": None}}
            try:
                await self.kube.merge_patch(object_path(*c.NETWORK_POLICY, ns, name), patch)
            except ApiException as exc:
                if exc.status not in (404, 409, 422):
                    raise
        for api_version, kind, name, uid in left.deletes:
            await self.kube.delete(api_version, kind, ns, name, uid=uid)
            self.removed += 1
        del self.pending[key]
        log.info("upgrade: %s/%s no longer has the previous version's driver identity or API-server egress", *key)
