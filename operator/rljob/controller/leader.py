"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection (controller-runtime, KubeRay).

With several replicas, one holds the Lease and runs the controller; the others keep their watches and
caches current (so that a takeover starts from a warm cache) and try to take the Lease, but reconcile
nothing and write nothing. A leader that cannot renew within the
renew deadline (a network partition, a SIGSTOP, a long GC pause) stops acting at once and exits, so
that two replicas never act together: its successor takes over only after the lease duration, which
is longer than the renew deadline.

Expiry is judged by this replica's own clock, from when it last saw the Lease record change (as
client-go does), never by comparing timestamps written by another machine's clock.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .kube import ApiException, Kube

log = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_seconds: float = 15.0  # a standby takes over after the record stood still this long
    renew_deadline_seconds: float = 10.0  # a leader that could not renew for this long stops acting
    retry_seconds: float = 2.0  # how often the leader renews and a standby tries
    # Writes stop this long before the renew deadline: a write sent just before it may take this long to land.
    write_margin_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError("leader election needs retry < renew deadline < lease duration")
        if not 0 <= self.write_margin_seconds < self.renew_deadline_seconds:
            raise ValueError("leader election needs 0 <= write margin < renew deadline")


def _micro_time(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElector:
    kube: Kube
    settings: LeaseSettings
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    _renewed_at: float | None = None  # our clock at our last successful acquire or renew
    _observed: tuple[str, float] | None = field(default=None)  # (the record's resourceVersion, our clock when it changed)

    @property
    def path(self) -> str:
        return LEASES.format(namespace=self.settings.namespace)

    def is_leader(self) -> bool:
        """True only while our last renewal is younger than the renew deadline: the check before every decision."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.settings.renew_deadline_seconds

    def may_write(self) -> bool:
        """The check before every write: leading, with the write margin still ahead of the renew deadline.

        Renewals are stamped with the time their request was sent, not answered: a renewal that took long is credited
        from before it started, so a slow answer never stretches how long this replica believes it leads."""
        s = self.settings
        return self._renewed_at is not None and \
            self.clock() - self._renewed_at < s.renew_deadline_seconds - s.write_margin_seconds

    async def try_acquire_or_renew(self) -> bool:
        s = self.settings
        sent = self.clock()  # the renewal counts from here: the Lease record's renewTime is no earlier
        now = self.wall()
        spec = {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": int(s.lease_seconds),
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        try:
            lease = await self.kube.request("GET", f"{self.path}/{s.name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": s.name, "namespace": s.namespace}, "spec": spec}
            try:
                await self.kube.request("POST", self.path, body)
            except ApiException as create_exc:
                if create_exc.status == 409:  # another replica created it first
                    return False
                raise
            return self._won(sent)
        meta, current = lease["metadata"], lease.get("spec") or {}
        rv = meta.get("resourceVersion", "")
        if self._observed is None or self._observed[0] != rv:
            self._observed = (rv, self.clock())
        holder = current.get("holderIdentity") or ""
        duration = float(current.get("leaseDurationSeconds") or s.lease_seconds)
        if holder and holder != s.identity and self.clock() - self._observed[1] < duration:
            return False  # held, and renewed within its duration as far as we have seen
        if holder == s.identity:
            spec["acquireTime"] = current.get("acquireTime") or spec["acquireTime"]
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        else:
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = spec
        try:
            await self.kube.request("PUT", f"{self.path}/{s.name}", lease)  # resourceVersion: compare-and-swap
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        if holder != s.identity:
            log.info("leader election: took the Lease %s/%s from %r", s.namespace, s.name, holder or "nobody")
        return self._won(sent)

    def _won(self, sent: float) -> bool:
        self._renewed_at = sent
        return True

    async def acquire(self) -> None:
        """Returns once this replica holds the Lease; meanwhile it does nothing else."""
        s = self.settings
        log.info("leader election: waiting for the Lease %s/%s as %s", s.namespace, s.name, s.identity)
        while True:
            try:
                if await self.try_acquire_or_renew():
                    log.info("leader election: this replica (%s) leads", s.identity)
                    return
            except Exception as exc:  # the API server may be briefly unreachable: keep trying
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.settings.retry_seconds)

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renews until a renewal fails for the renew deadline, then calls `on_lost` (which should end the process)."""
        while True:
            await asyncio.sleep(self.settings.retry_seconds)
            try:
                # A renewal that hangs is given up at the renew deadline, as client-go's is: by then this replica
                # writes nothing anyway (may_write), and it must not wait on an answer that may never come.
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), self.settings.renew_deadline_seconds)
            except Exception as exc:
                log.warning("leader election: renewing failed: %s", exc)
                renewed = False
            if not renewed and not self.is_leader():
                self._renewed_at = None
                log.error("leader election: lost the Lease %s/%s; stopping", self.settings.namespace, self.settings.name)
                on_lost()
                return

    async def release(self) -> None:
        """On a clean shutdown: hand the Lease back so that a standby takes over at once."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease: dict[str, Any] = await self.kube.request("GET", f"{self.path}/{self.settings.name}")
            if (lease.get("spec") or {}).get("holderIdentity") == self.settings.identity:
                lease["spec"]["holderIdentity"] = ""
                await self.kube.request("PUT", f"{self.path}/{self.settings.name}", lease)
        except Exception as exc:
            log.info("leader election: could not release the Lease: %s", exc)
