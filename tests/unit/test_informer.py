"""The pod and StatefulSet caches: what a list and each watch event do to a job's view, when a job is queued,
and how a watch resumes, lists again after 410 Gone, and survives errors."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rljob.api import constants as c
from rljob.controller import informer, observe
from rljob.controller.informer import Informer, namespace_matches
from rljob.controller.kube import ApiException
from rljob.controller.objects import job_key
from tests.builders import minimal_job


def pod(name: str, job: str = "j", ns: str = "ns", uid: str = "", rv: int = 1, phase: str = "Pending",
        node: str = "", ready: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "resourceVersion": str(rv),
                     "labels": {c.LABEL_JOB: job, c.LABEL_ROLE: c.ROLE_WORKER, c.LABEL_APP_MANAGED_BY: c.MANAGED_BY}},
        "spec": {"nodeName": node},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def keyed(body: Any) -> Any:
    key = job_key(body)
    return (key, observe.observe_pod(body)) if key else None


class FakeKube:
    """Pages for lists; for each watch, a script of events, an exception, or a wait for cancellation."""

    def __init__(self) -> None:
        self.lists: list[list[dict[str, Any]]] = []
        self.list_version = "10"
        self.watches: list[Any] = []
        self.watch_queries: list[dict[str, str]] = []
        self.list_calls = 0

    async def request(self, method: str, path: str, query: list[tuple[str, str]] | None = None) -> Any:
        self.list_calls += 1
        items = self.lists.pop(0) if self.lists else []
        return {"metadata": {"resourceVersion": self.list_version}, "items": items}

    async def watch(self, path: str, query: list[tuple[str, str]], read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        self.watch_queries.append(dict(query))
        script = self.watches.pop(0) if self.watches else None
        if script is None:
            await asyncio.Event().wait()
        if isinstance(script, BaseException):
            raise script
        for event in script:
            yield event


def make(kube: FakeKube, queued: list[Any], namespaces: tuple[str, ...] = ()) -> Informer[Any]:
    return Informer(kube, "/api/v1", "pods", "sel", keyed, namespaces, on_change=queued.append)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_list_fills_the_index_by_job_and_queues_each_job() -> None:
    async def scenario() -> tuple[Any, list[Any]]:
        kube, queued = FakeKube(), []
        kube.lists = [[pod("a-1", "a"), pod("a-2", "a"), pod("b-1", "b")]]
        inf = make(kube, queued)
        await inf.sync()
        await inf.stop()
        return inf.index, queued

    index, queued = run(scenario())
    assert sorted(p.name for p in index[("ns", "a")]) == ["a-1", "a-2"]
    assert [p.name for p in index.get(("ns", "b"), ())] == ["b-1"]
    assert index.get(("ns", "c"), ()) == ()
    assert sorted(set(queued)) == [("ns", "a"), ("ns", "b")]


def test_an_event_that_changes_nothing_a_decision_reads_queues_nothing() -> None:
    inf, queued = make(FakeKube(), []), []
    inf.on_change = queued.append
    scope = inf.scopes[0]
    inf.handle(scope, "ADDED", pod("p", rv=1))
    inf.handle(scope, "MODIFIED", pod("p", rv=2, node="n1"))  # bound to a node: same record
    inf.handle(scope, "MODIFIED", pod("p", rv=3, phase="Running", node="n1", ready=True))
    inf.handle(scope, "DELETED", pod("p", rv=4))
    inf.handle(scope, "DELETED", pod("p", rv=4))  # twice: nothing left to remove
    assert queued == [("ns", "j")] * 3
    assert ("ns", "j") not in inf.index


def test_the_latest_version_is_kept_even_when_it_changes_no_decision() -> None:
    inf = make(FakeKube(), [])
    scope = inf.scopes[0]
    inf.apply(scope, "ADDED", pod("p", rv=1))
    inf.apply(scope, "MODIFIED", pod("p", rv=7, node="n1"))
    assert inf.index[("ns", "j")][0].resource_version == 7


def test_a_pod_whose_job_label_changes_moves_between_jobs() -> None:
    inf, queued = make(FakeKube(), []), []
    inf.on_change = queued.append
    scope = inf.scopes[0]
    inf.handle(scope, "ADDED", pod("p", "a"))
    inf.handle(scope, "MODIFIED", pod("p", "b", rv=2))
    assert ("ns", "a") not in inf.index and [p.name for p in inf.index[("ns", "b")]] == ["p"]
    assert queued == [("ns", "a"), ("ns", "a"), ("ns", "b")]
    unlabelled = pod("p", rv=3)
    del unlabelled["metadata"]["labels"][c.LABEL_JOB]
    inf.handle(scope, "MODIFIED", unlabelled)
    assert ("ns", "b") not in inf.index and queued[-1] == ("ns", "b")


def test_a_watch_resumes_from_the_last_version_and_bookmarks_move_it() -> None:
    async def scenario() -> tuple[FakeKube, Informer[Any]]:
        kube, queued = FakeKube(), []
        kube.watches = [
            [{"type": "ADDED", "object": pod("p", rv=11)},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],  # the server ends the watch
            None,
        ]
        inf = make(kube, queued)
        await inf.sync()
        for _ in range(50):
            await asyncio.sleep(0.01)
            if len(kube.watch_queries) == 2:
                break
        await inf.stop()
        return kube, inf

    kube, inf = run(scenario())
    assert [q["resourceVersion"] for q in kube.watch_queries] == ["10", "15"]
    assert all(q["allowWatchBookmarks"] == "true" and q["labelSelector"] == "sel" for q in kube.watch_queries)
    assert kube.list_calls == 1
    assert [p.name for p in inf.index[("ns", "j")]] == ["p"]


@pytest.mark.parametrize("gone", [
    [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}],
    ApiException(410, "Gone"),
])
def test_a_version_that_is_gone_lists_again_and_queues_what_changed_meanwhile(gone: Any) -> None:
    async def scenario() -> tuple[FakeKube, Informer[Any], list[Any]]:
        kube, queued = FakeKube(), []
        kube.lists = [[pod("a-1", "a"), pod("b-1", "b"), pod("c-1", "c")],
                      [pod("a-1", "a"), pod("b-1", "b", rv=20, phase="Running", ready=True)]]  # c's deleted, b's Ready
        kube.watches = [gone, None]
        inf = make(kube, queued)
        await inf.sync()
        queued.clear()
        kube.list_version = "30"
        for _ in range(50):
            await asyncio.sleep(0.01)
            if len(kube.watch_queries) == 2:
                break
        await inf.stop()
        return kube, inf, queued

    kube, inf, queued = run(scenario())
    assert kube.list_calls == 2
    assert kube.watch_queries[-1]["resourceVersion"] == "30"
    assert sorted(queued) == [("ns", "b"), ("ns", "c")]
    assert ("ns", "c") not in inf.index and inf.index[("ns", "b")][0].ready


def test_a_failing_watch_is_retried_from_the_same_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer, "RETRY_MIN_SECONDS", 0.01)

    async def scenario() -> FakeKube:
        kube = FakeKube()
        kube.watches = [ApiException(500, "Internal"), ConnectionResetError("reset"), None]
        inf = make(kube, [])
        await inf.sync()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(kube.watch_queries) == 3:
                break
        await inf.stop()
        return kube

    kube = run(scenario())
    assert [q["resourceVersion"] for q in kube.watch_queries] == ["10", "10", "10"]
    assert kube.list_calls == 1


def test_exact_namespaces_get_a_stream_each_and_patterns_one_filtered_stream() -> None:
    exact = make(FakeKube(), [], ("team-a", "team-b"))
    assert [s.path for s in exact.scopes] == ["/api/v1/namespaces/team-a/pods", "/api/v1/namespaces/team-b/pods"]
    everywhere = make(FakeKube(), [])
    assert [s.path for s in everywhere.scopes] == ["/api/v1/pods"]
    patterned = make(FakeKube(), [], ("team-*", "ops"))
    assert [s.path for s in patterned.scopes] == ["/api/v1/pods"]
    scope = patterned.scopes[0]
    assert patterned.apply(scope, "ADDED", pod("p", ns="team-x")) == ("team-x", "j")
    assert patterned.apply(scope, "ADDED", pod("q", ns="ops")) == ("ops", "j")
    assert patterned.apply(scope, "ADDED", pod("r", ns="other")) is None
    assert ("other", "j") not in patterned.index


@pytest.mark.parametrize(("name", "pattern", "expected"), [
    ("team-a", "team-a", True),
    ("team-a", "team-*", True),
    ("ops", "team-*", False),
    ("myapp-test", "myapp-*, !*-pr-*, *pr-123", True),
    ("myapp-pr-456", "myapp-*, !*-pr-*, *pr-123", False),
    ("myapp-pr-123", "myapp-*, !*-pr-*, *pr-123", True),
    ("otherapp-pr-123", "myapp-*, !*-pr-*, *pr-123", False),
    ("otherapp-pr-123", "!*-pr-*, *pr-123", True),
    ("anything", "!kube-*", True),
    ("kube-system", "!kube-*", False),
])
def test_namespace_patterns_follow_kopf(name: str, pattern: str, expected: bool) -> None:
    import kopf._cogs.structs.references as kopf_references  # the rule the jobs' own watch follows

    assert namespace_matches(name, pattern) is expected
    assert kopf_references.match_namespace(name, pattern) is expected


def job(name: str, uid: str, rv: int = 1) -> dict[str, Any]:
    """The job `uid` as its watch delivers it at resourceVersion `rv`."""
    return minimal_job(name, namespace="ns", uid=uid, metadata={"resourceVersion": str(rv)})


def test_jobs_go_whole_to_the_reconciler_and_a_namesake_created_while_away_follows_its_deletion() -> None:
    calls: list[tuple[str, Any]] = []
    feed = informer.JobFeed(FakeKube(), "/apis/rljob.dev/v1alpha1", "rltrainingjobs",  # type: ignore[arg-type]
                            on_upsert=lambda body: calls.append(("upsert", body["metadata"]["uid"])),
                            on_delete=lambda key, uid: calls.append(("delete", (key, uid))))
    scope = feed.scopes[0]
    feed.replace(scope, [job("a", "u1"), job("b", "u2")])
    feed.apply(scope, "MODIFIED", job("a", "u1", rv=2))
    feed.apply(scope, "DELETED", job("b", "u2", rv=3))
    assert calls == [("upsert", "u1"), ("upsert", "u2"), ("upsert", "u1"), ("delete", (("ns", "b"), "u2"))]
    calls.clear()
    # a was deleted and created again while the watch was away: no last state says how, so no uid to release by.
    feed.replace(scope, [job("a", "u3")])
    assert calls == [("delete", (("ns", "a"), None)), ("upsert", "u3")]


def test_a_job_deleted_through_finalizers_leaves_its_children_to_the_garbage_collector() -> None:
    """`kubectl delete --cascade=orphan` (or foreground): the last state has a deletionTimestamp; the orphaned
    children must stay, so the deletion carries no uid to release them by. A plain delete carries it."""
    calls: list[tuple[Any, Any]] = []
    feed = informer.JobFeed(FakeKube(), "/apis/rljob.dev/v1alpha1", "rltrainingjobs",  # type: ignore[arg-type]
                            on_upsert=lambda body: None, on_delete=lambda key, uid: calls.append((key, uid)))
    scope = feed.scopes[0]
    feed.replace(scope, [job("kept", "u1"), job("plain", "u2")])
    orphaned = job("kept", "u1", rv=3)
    orphaned["metadata"].update(deletionTimestamp="2026-12-04T23:35:18Z", finalizers=["orphan"])
    feed.apply(scope, "DELETED", orphaned)
    feed.apply(scope, "DELETED", job("plain", "u2", rv=4))
    assert calls == [(("ns", "kept"), None), (("ns", "plain"), "u2")]


def test_a_job_feed_without_its_crd_keeps_trying_until_it_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer, "RETRY_MIN_SECONDS", 0.01)

    class NoCrdYet(FakeKube):
        async def request(self, method: str, path: str, query: list[tuple[str, str]] | None = None) -> Any:
            self.list_calls += 1
            if self.list_calls < 3:
                raise ApiException(404, "Not Found")
            return {"metadata": {"resourceVersion": "5"}, "items": [job("a", "u1")]}

    async def scenario() -> tuple[NoCrdYet, list[Any]]:
        kube, upserts = NoCrdYet(), []
        feed = informer.JobFeed(kube, "/apis/rljob.dev/v1alpha1", "rltrainingjobs",  # type: ignore[arg-type]
                                on_upsert=upserts.append, on_delete=lambda key, uid: None)
        feed.start()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if kube.watch_queries:
                break
        await feed.stop()
        return kube, upserts

    kube, upserts = run(scenario())
    assert kube.list_calls == 3 and [u["metadata"]["name"] for u in upserts] == ["a"]
    assert kube.watch_queries[0]["resourceVersion"] == "5" and "labelSelector" not in kube.watch_queries[0]


def test_departures_report_a_deleted_child_of_a_job_with_its_owner() -> None:
    gone: list[tuple[Any, Any, str]] = []
    stream = informer.Departures(FakeKube(), "/apis/networking.k8s.io/v1", "networkpolicies",  # type: ignore[arg-type]
                                 "NetworkPolicy", "", on_gone=lambda key, uid, what: gone.append((key, uid, what)))
    scope = stream.scopes[0]

    def policy(name: str, uid: str, job: str | None = "j", owner: str = "job-uid") -> dict[str, Any]:
        labels = {"rljob.dev/job": job, "rljob.dev/controller-uid": owner} if job else {}
        return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": labels}}

    stream.replace(scope, [policy("j-isolation", "p1"), policy("other", "p9", job=None)])
    stream.apply(scope, "ADDED", policy("j-head", "p2"))
    assert stream.apply(scope, "DELETED", policy("j-isolation", "p1")) is None  # no reconcile of its own: on_gone's
    stream.apply(scope, "DELETED", policy("other", "p9", job=None))  # not a job's: nothing
    stream.replace(scope, [])  # j-head went while the watch was away: no last state, so no owner to name
    assert gone == [(("ns", "j"), "job-uid", "NetworkPolicy j-isolation"), (("ns", "j"), None, "NetworkPolicy j-head")]
    assert not scope.members and not stream.names
    assert stream.present(("ns", "j")) == set()


def test_what_departures_hold_tells_which_kept_children_exist() -> None:
    stream = informer.Departures(FakeKube(), "/api/v1", "services", "Service", "",  # type: ignore[arg-type]
                                 on_gone=lambda *_: None)
    scope = stream.scopes[0]
    svc = {"metadata": {"name": "j-head", "namespace": "ns", "uid": "s1", "labels": {"rljob.dev/job": "j"}},
           "spec": {"clusterIP": "None", "ports": [{"port": 6379}] * 50}}
    stream.replace(scope, [stream.digest(svc)])
    assert stream.present(("ns", "j")) == {"Service j-head"} and stream.present(("ns", "k")) == set()
    stream.apply(scope, "DELETED", svc)
    assert stream.present(("ns", "j")) == set()


def test_a_list_holds_each_object_reduced_until_the_whole_list_is_in() -> None:
    """A list after 410 Gone in a burst is thousands of pods: only their records are kept, not whole pages."""
    async def scenario() -> list[Any]:
        kube, queued = FakeKube(), []
        kube.lists = [[pod("a-1", "a", phase="Running"), pod("b-1", "b")]]
        inf = make(kube, queued)
        kept: list[Any] = []
        original = inf.replace

        def replace(scope: Any, items: list[Any]) -> set[Any]:
            kept.extend(items)
            return original(scope, items)

        inf.replace = replace  # type: ignore[method-assign]
        await inf.sync()
        await inf.stop()
        assert sorted(p.name for p in inf.index[("ns", "a")]) == ["a-1"] and inf.index[("ns", "a")][0].phase == "Running"
        return kept

    kept = run(scenario())
    assert len(kept) == 2 and all("spec" not in item and "status" not in item for item in kept), kept
