"""One object assembles the operator: its configuration is checked once, the `Operator` is built from it without a
cluster or an event loop, kopf's handlers only hand their work to the operator kopf holds as its memo, and each
stream's events reach the parts they concern."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import pytest

from rljob import resources
from rljob.api import JobStatus
from rljob.api.vocabulary import Phase
from rljob.controller import handlers
from rljob.controller.config import OperatorConfig
from rljob.controller.credentials import Credentials
from rljob.controller.leader import LeaseSettings
from rljob.controller.operator import Operator
from rljob.controller.progress import ProgressSettings
from tests.builders import minimal_job

CREDS = Credentials(server="https://127.0.0.1:6443", token="t")


def config(**changes: Any) -> OperatorConfig:
    return OperatorConfig(credentials=CREDS, **changes)


def exported(op: Operator) -> list[tuple[str, str]]:
    """The jobs a scrape of the operator's metrics shows: those with an rljob_job_info series."""
    assert op.metrics is not None
    return [(s.labels["namespace"], s.labels["rltrainingjob"])
            for family in op.metrics.registry.collect() for s in family.samples if s.name == "rljob_job_info"]


@pytest.mark.parametrize(("changes", "problem"), [
    ({"concurrency": 0}, "--concurrency must be at least 1"),
    ({"metrics_port": 70000}, "--metrics-port must be 0 (off) or a port"),
    ({"health_port": -1}, "--health-port must be 0 (off) or a port"),
    ({"metrics_port": 8080, "health_port": 8080}, "are both 8080"),
    ({"namespaces": ("team-a", "")}, "--namespace must not be empty"),
    ({"build": resources.BuildContext(cluster_cidrs=("10.0.0.1/8",))}, "--cluster-cidr 10.0.0.1/8: 10.0.0.1/8 has host bits"),
])
def test_a_configuration_is_checked_once_when_it_is_made(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        config(**changes)


def test_a_configuration_cannot_be_changed_afterwards() -> None:
    made = config(concurrency=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.concurrency = 8  # type: ignore[misc]


def test_the_operator_is_built_from_its_configuration_alone() -> None:
    """Without a cluster or an event loop: kopf starts later, and `rljob operator` builds the operator first."""
    alone = Operator(config(concurrency=3, build=resources.BuildContext(default_image="img:1")))
    assert alone.reconciler.ctx.default_image == "img:1" and alone.reconciler.queue.concurrency == 3
    assert alone.elector is None and alone.kube.may_write is None and alone.reconciler.may_act()
    assert alone.metrics is None and alone.health is None
    assert alone.workloads is None and alone.reconciler.workloads is None
    assert alone.reconciler.pods is alone.pods.index and alone.reconciler.workers is alone.statefulsets.index

    lease = LeaseSettings(name="rljob-operator", namespace="rljob-system", identity="me")
    full = Operator(config(lease=lease, kueue=True, metrics_port=9090, health_port=9091,
                           progress=ProgressSettings(interval_seconds=0)))
    assert full.elector is not None and full.kube.may_write == full.elector.may_write
    assert not full.reconciler.may_act()  # a candidate decides nothing before it holds the Lease
    assert full.workloads is not None and full.reconciler.workloads is full.workloads.index
    assert full.metrics is not None and full.health is not None and full.health.port == 9091
    assert not full.progress.enabled


def test_kopf_gets_three_handlers_that_hand_their_work_to_the_operator_in_its_memo() -> None:
    # (kopf's registries list their handlers only through their private parts)
    registry = handlers.registry()
    assert {h.id: h.activity.value for h in registry._activities.get_all_handlers()} == {
        "login": "authentication", "startup": "startup", "cleanup": "cleanup"}
    assert not (registry._changing.get_all_handlers() or registry._watching.get_all_handlers()
                or registry._spawning.get_all_handlers() or registry._webhooks.get_all_handlers())
    assert not any(h.fn in (handlers.login, handlers.startup, handlers.cleanup)
                   for h in kopf.get_default_registry()._activities.get_all_handlers())  # importing registered nothing

    class Memo:
        def __init__(self) -> None:
            self.config, self.calls = config(), []

        async def start(self) -> None:
            self.calls.append("start")

        async def stop(self) -> None:
            self.calls.append("stop")

    async def scenario() -> tuple[Memo, kopf.OperatorSettings, kopf.ConnectionInfo]:
        memo, settings = Memo(), kopf.OperatorSettings()
        info = await handlers.login(memo=memo)  # type: ignore[arg-type]
        await handlers.startup(memo=memo, settings=settings)  # type: ignore[arg-type]
        await handlers.cleanup(memo=memo)  # type: ignore[arg-type]
        return memo, settings, info

    memo, settings, info = asyncio.run(scenario())
    assert memo.calls == ["start", "stop"]
    assert info.server == CREDS.server and info.token == "t" and info.scheme == "Bearer"
    # kopf serves no resource and posts no event: the operator's streams and events are its own.
    assert settings.scanning.disabled and not settings.posting.enabled


def test_a_jobs_events_reach_the_reconciler_and_its_deletion_every_part_that_keeps_the_job() -> None:
    async def scenario() -> None:
        op = Operator(config(metrics_port=9090))
        assert op.metrics is not None
        key = ("ns", "done")
        scope = op.job_feed.scopes[0]
        finished = minimal_job("done", namespace="ns", uid="u1", generation=1, metadata={"resourceVersion": "1"}, status={
            "phase": "Succeeded", "startTime": "2026-12-01T10:00:00Z", "completionTime": "2026-12-01T11:00:00Z"})
        op.job_feed.apply(scope, "ADDED", finished)
        assert key in op.reconciler.jobs and len(op.reconciler.queue) == 1
        op.metrics.observe_reconcile(key, op.reconciler.status(key), op.reconciler.status(key), 0.01, False)
        op.progress.touch(key)
        assert exported(op) == [key]

        op.job_feed.apply(scope, "DELETED", finished)
        assert key not in op.reconciler.jobs and exported(op) == []
        # Forgotten by the metrics: the same name created again, and seen to finish, is counted.
        count = "rljob_job_duration_seconds_count"
        before = op.metrics.registry.get_sample_value(count, {"phase": "Succeeded"}) or 0.0
        fresh = JobStatus.model_validate({"phase": "Running", "startTime": "2026-12-01T12:00:00Z"})
        op.metrics.observe_reconcile(key, fresh, fresh.model_copy(update={
            "phase": Phase.SUCCEEDED, "completion_time": "2026-12-01T12:30:00Z"}), 0.01, False)
        assert op.metrics.registry.get_sample_value(count, {"phase": "Succeeded"}) == before + 1

    asyncio.run(scenario())


def test_readiness_fails_only_when_a_started_leader_stops_working() -> None:
    async def scenario() -> list[str | None]:
        op = Operator(config())
        seen = [op.not_working()]  # not started: starting is no failure
        op.reconciler.start()
        op.progress.start()
        seen.append(op.not_working())
        await op.progress.stop()  # the reader ended while the reconciler works on
        seen.append(op.not_working())
        await op.reconciler.stop()
        return seen

    assert asyncio.run(scenario()) == [None, None, "the progress reader stopped"]
