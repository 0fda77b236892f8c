"""Leader election on a Lease, against an in-memory API server that does compare-and-swap like the real one."""
from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from rljob.controller.kube import ApiException
from rljob.controller.leader import LeaderElector, LeaseSettings


class LeaseStore:
    """GET/POST/PUT of one Lease; PUT with a stale resourceVersion is a 409, as optimistic concurrency is."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.reachable = True

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        if not self.reachable:
            raise ApiException(status=503, reason="unreachable")
        if method == "GET":
            if self.lease is None:
                raise ApiException(status=404, reason="NotFound")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise ApiException(status=409, reason="AlreadyExists")
        elif method == "PUT":
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
        self.rv += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(store: LeaseStore, clock: Clock, who: str) -> LeaderElector:
    return LeaderElector(store, LeaseSettings("rljob-operator", "rljob-system", who), clock=clock)  # type: ignore[arg-type]


def test_one_leader_and_a_standby_that_takes_over_only_after_the_lease_duration() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")

    async def scenario() -> None:
        assert await a.try_acquire_or_renew() and a.is_leader()
        assert not await b.try_acquire_or_renew() and not b.is_leader()
        clock.t += 5
        assert await a.try_acquire_or_renew()  # renewed; then a freezes
        clock.t += 1
        assert not await b.try_acquire_or_renew()  # b sees the record change, by its own clock
        clock.t += 14
        assert not await b.try_acquire_or_renew()  # 14 s since the record last changed: not expired yet
        assert not a.is_leader()  # but a has not renewed for 15 s > the renew deadline: it must not act
        clock.t += 2
        assert await b.try_acquire_or_renew() and b.is_leader()  # 16 s > 15 s: b takes over
        assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "b"
        assert store.lease["spec"]["leaseTransitions"] == 1
        assert not await a.try_acquire_or_renew()  # the former leader, thawed, cannot renew

    asyncio.run(scenario())


def test_a_leader_that_cannot_renew_stops_within_the_renew_deadline() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")
    lost: list[float] = []

    async def scenario() -> None:
        assert await a.try_acquire_or_renew()
        store.reachable = False

        async def fast_sleep(_: float) -> None:
            clock.t += 2.0

        real_sleep = asyncio.sleep
        asyncio.sleep = fast_sleep  # type: ignore[assignment]
        try:
            await a.keep(on_lost=lambda: lost.append(clock.t))
        finally:
            asyncio.sleep = real_sleep  # type: ignore[assignment]

    asyncio.run(scenario())
    assert lost and lost[0] - 1000.0 <= 10.0 and not a.is_leader()


def test_release_hands_the_lease_over_at_once() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")

    async def scenario() -> None:
        assert await a.try_acquire_or_renew()
        await a.release()
        assert await b.try_acquire_or_renew()

    asyncio.run(scenario())


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        LeaseSettings("l", "ns", "me", lease_seconds=10, renew_deadline_seconds=10)


def test_a_renewal_counts_from_when_it_was_sent_and_writes_stop_a_margin_before_the_deadline() -> None:
    """A slow renewal is credited from before it started: the time the answer took never extends the lead."""
    store, clock = LeaseStore(), Clock()
    slow = LeaderElector(store, LeaseSettings("rljob-operator", "rljob-system", "a", write_margin_seconds=2.0),  # type: ignore[arg-type]
                         clock=clock)
    original = store.request

    async def request(method: str, path: str, body: Any = None, **kw: Any) -> Any:
        if method == "PUT":
            clock.t += 7.0  # the renewal's answer takes 7 s of the 10 s renew deadline
        return await original(method, path, body, **kw)

    async def scenario() -> None:
        assert await slow.try_acquire_or_renew()  # created: no PUT
        store.request = request  # type: ignore[method-assign]
        sent = clock.t
        assert await slow.try_acquire_or_renew()  # renewed, 7 s after it was sent
        assert slow.is_leader() and clock.t - sent == 7.0
        assert slow.may_write()  # 7 s < 10 s - 2 s
        clock.t = sent + 8.5
        assert slow.is_leader() and not slow.may_write()  # within the deadline, but not with the margin: no writes
        clock.t = sent + 10.0
        assert not slow.is_leader() and not slow.may_write()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="write margin"):
        LeaseSettings("x", "y", "z", write_margin_seconds=10.0)


def test_a_hung_renewal_is_given_up_at_the_renew_deadline_and_the_lease_counts_as_lost() -> None:
    store = LeaseStore()
    settings = LeaseSettings("rljob-operator", "rljob-system", "a", lease_seconds=0.6, renew_deadline_seconds=0.3,
                             retry_seconds=0.05, write_margin_seconds=0.1)
    a = LeaderElector(store, settings)  # type: ignore[arg-type]
    original = store.request
    lost: list[bool] = []

    async def hang(method: str, path: str, body: Any = None, **kw: Any) -> Any:
        if method == "PUT":
            await asyncio.Event().wait()  # never answers
        return await original(method, path, body, **kw)

    async def scenario() -> None:
        assert await a.try_acquire_or_renew()
        store.request = hang  # type: ignore[method-assign]
        await asyncio.wait_for(a.keep(on_lost=lambda: lost.append(True)), timeout=30)

    asyncio.run(scenario())
    assert lost == [True] and not a.may_write()
