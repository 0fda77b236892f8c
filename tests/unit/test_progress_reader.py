"""The operator's side of progress: what a head answers is untrusted input, parsed strictly and bounded; counters
never go backwards; a garbage, huge or slow answer changes nothing but costs one bounded request."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from rljob.api import constants as c
from rljob.api.models import Progress, parse_progress, termination_progress
from rljob.controller.observe import PodObservation, observe_pod
from rljob.controller.progress import ProgressReader, ProgressSettings, merged, source

GOOD = {"attempt": 1, "iteration": 7, "episodeReturnMean": -20.5, "envSteps": 7000, "envStepsPerSecond": 350.0,
        "timeTotalSeconds": 70.0, "lastCheckpoint": "/rljob/checkpoints/iteration-000007",
        "updateTime": "2026-12-07T08:00:00Z"}
EVALUATION = {"games": 20, "meanReturn": 18.4, "stdReturn": 1.2, "minReturn": 15.0, "maxReturn": 21.0, "wins": 20,
              "losses": 0, "cutOff": 0, "seed": 0, "iteration": 7}


@pytest.mark.parametrize(("raw", "problem"), [
    (b"not json", "Invalid JSON"),
    (b"[1, 2]", "should be an object"),
    (json.dumps({"iteration": "7"}).encode(), "valid integer"),
    (json.dumps({"iteration": 7.0}).encode(), "valid integer"),
    (json.dumps({"iteration": True}).encode(), "valid integer"),
    (json.dumps({"iteration": -1}).encode(), "greater than or equal to 0"),
    (json.dumps({"envSteps": 10**16}).encode(), "less than or equal"),
    (b'{"episodeReturnMean": NaN}', "less than or equal"),
    (b'{"episodeReturnMean": 1e300}', "less than or equal"),
    (json.dumps({"lastCheckpoint": "x" * 2000}).encode(), "at most 1024"),
    (json.dumps({"updateTime": "yesterday"}).encode(), "not an RFC 3339 time"),
    (json.dumps({"updateTime": "2026-12-07"}).encode(), "not an RFC 3339 time"),  # the API server's date-time refuses
    (json.dumps({"updateTime": "2026-12-07T08:00:00"}).encode(), "not an RFC 3339 time"),  # these, which Python takes
    (json.dumps({"updateTime": "2026-12-07 08:00:00Z"}).encode(), "not an RFC 3339 time"),
    (json.dumps({"lastCheckpoint": "x" * 5000}).encode(), "more than the 4096"),
    (json.dumps({"evaluation": {**EVALUATION, "games": 0}}).encode(), "greater than or equal to 1"),
    (json.dumps({"evaluation": {**EVALUATION, "wins": "20"}}).encode(), "valid integer"),
    (json.dumps({"evaluation": {**EVALUATION, "stdReturn": -1}}).encode(), "greater than or equal to 0"),
    (json.dumps({"evaluation": {k: v for k, v in EVALUATION.items() if k != "meanReturn"}}).encode(), "Field required"),
])  # fmt: skip
def test_what_a_head_may_not_answer(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_progress(raw)


def test_a_valid_record_parses_and_unknown_fields_are_ignored() -> None:
    progress = parse_progress(json.dumps({**GOOD, "somethingNew": 1}).encode())
    assert progress.wire() == GOOD
    assert parse_progress(json.dumps({"episodeReturnMean": -21}).encode()).episode_return_mean == -21.0


def test_the_termination_message_carries_a_record_or_is_left_alone() -> None:
    assert termination_progress(json.dumps({c.TERMINATION_PROGRESS_KEY: GOOD})) == Progress.model_validate(GOOD)
    for other in (None, "", "Traceback (most recent call last):", json.dumps({"progress": {"iteration": -3}}),
                  json.dumps({"progress": "7"}), json.dumps([1]), "{" * 5000):
        assert termination_progress(other) is None, other


def test_the_final_record_carries_the_evaluation_and_a_later_read_keeps_it() -> None:
    final = termination_progress(json.dumps({c.TERMINATION_PROGRESS_KEY: {**GOOD, "evaluation": EVALUATION}}))
    assert final is not None and final.wire()["evaluation"] == EVALUATION
    assert merged(final, Progress.model_validate(GOOD)).wire()["evaluation"] == EVALUATION


def test_observing_a_finished_head_takes_its_record_and_no_message_for_people() -> None:
    def pod(role: str) -> dict[str, Any]:
        return {
            "metadata": {"name": f"j-{role}-1", "namespace": "ns", "uid": "p1",
                         "labels": {c.LABEL_JOB: "j", c.LABEL_ROLE: role, c.LABEL_ATTEMPT: "1"}},
            "spec": {"serviceAccountName": "default"},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.7", "containerStatuses": [{"state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "message": json.dumps({"progress": GOOD})}}}]},
        }

    head = observe_pod(pod(c.ROLE_HEAD))
    assert head.progress == Progress.model_validate(GOOD) and head.message is None and head.ip == "10.0.0.7"
    assert not head.legacy
    assert observe_pod(pod(c.ROLE_WORKER)).progress is None  # only a head's message is a record
    old = pod(c.ROLE_HEAD)
    old["spec"]["serviceAccountName"] = "j-driver"
    assert observe_pod(old).legacy  # the previous version's head, which runs as the job's own identity


def test_counters_never_go_back_and_unknown_figures_keep_the_last_known() -> None:
    before = Progress.model_validate(GOOD)
    resumed = Progress(attempt=2, iteration=5, env_steps=5000, time_total_seconds=50.0, env_steps_per_second=400.0)
    now = merged(before, resumed)
    assert (now.attempt, now.iteration, now.env_steps, now.time_total_seconds) == (2, 7, 7000, 70.0)
    assert now.env_steps_per_second == 400.0 and now.episode_return_mean == -20.5  # not reported yet: kept
    assert merged(None, resumed) == resumed
    assert merged(now, Progress(iteration=9)).iteration == 9


def head(attempt: int, phase: str = "Running", ip: str = "127.0.0.1", **kw: Any) -> PodObservation:
    return PodObservation(name=f"j-head-{attempt}", role=c.ROLE_HEAD, attempt=attempt, phase=phase, ip=ip,
                          controller_uid="u1", **kw)


def test_progress_is_read_from_the_current_attempts_running_head_else_taken_from_the_latest_finished_one() -> None:
    body = {"metadata": {"uid": "u1"}, "status": {"attempts": 2}}
    record = Progress(iteration=3)
    assert source(body, [head(1, "Failed", progress=record), head(2)]) == ("read", head(2))
    assert source(body, [head(1, "Failed", progress=record), head(2, "Pending", ip="")]) == ("final", head(1, "Failed", progress=record))
    assert source(body, [head(2, "Running", ip="")]) == ("", None)  # no address yet
    assert source(body, [head(1)]) == ("", None)  # an earlier attempt's head still running is not this attempt's
    namesake = PodObservation(name="j-head-2", role=c.ROLE_HEAD, attempt=2, phase="Running", ip="127.0.0.1",
                              controller_uid="another")
    assert source(body, [namesake]) == ("", None)  # a deleted namesake's head


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((path, patch))
        return {"metadata": {"namespace": "ns", "name": "j", "uid": "u1", "resourceVersion": "2"},
                "status": {"attempts": 1, "progress": patch["status"]["progress"]}}


Answer = Callable[[web.Request], Any]


async def serve(answer: Answer) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get(c.PROGRESS_PATH, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def visit(answer: Answer, status: dict[str, Any] | None = None, leading: bool = True) -> tuple[FakeKube, ProgressReader, list[int]]:
    """One visit of one job whose head answers with `answer`."""
    kube, asked = FakeKube(), []

    async def counted(request: web.Request) -> Any:
        asked.append(1)
        return await answer(request)

    async def scenario() -> ProgressReader:
        runner, port = await serve(counted)
        body = {"metadata": {"namespace": "ns", "name": "j", "uid": "u1"}, "status": {"attempts": 1, **(status or {})}}
        jobs = {("ns", "j"): body}
        reader = ProgressReader(kube, jobs, lambda key: [head(1)], lambda b: jobs.__setitem__(("ns", "j"), b),  # type: ignore[arg-type]
                                ProgressSettings(timeout_seconds=0.5, port=port), may_act=lambda: leading)
        try:
            assert await reader.visit(("ns", "j"))  # a running head: read again later, whatever it answered
        finally:
            await reader.stop()
            await runner.cleanup()
        return reader

    return kube, asyncio.run(scenario()), asked


def test_a_good_answer_is_written_as_status_progress_of_this_job_instance() -> None:
    async def good(_: web.Request) -> web.Response:
        return web.json_response(GOOD)

    kube, reader, _ = visit(good)
    ((path, patch),) = kube.patches
    assert path == f"/apis/{c.API_VERSION}/namespaces/ns/{c.PLURAL}/j/status"
    assert patch == {"status": {"progress": GOOD}, "metadata": {"uid": "u1"}}
    kube, reader, _ = visit(good, status={"progress": GOOD})
    assert kube.patches == [] and reader.reads == 1  # nothing new: nothing written


def test_before_the_first_iteration_nothing_is_written() -> None:
    async def empty(_: web.Request) -> web.Response:
        return web.json_response({})

    kube, reader, _ = visit(empty)
    assert kube.patches == [] and reader.failures == 0


def test_a_running_head_whose_attempt_the_status_does_not_name_yet_is_looked_at_again() -> None:
    """The head's pod can be seen Running before the job's update that names its attempt (two watches, in no set
    order). That update touches nothing in the reader, so the visit must ask to come back: else the job's progress
    stayed empty until its pods changed again (seen under load as a job never read)."""
    async def good(_: web.Request) -> web.Response:
        return web.json_response(GOOD)

    kube, reader, asked = visit(good, status={"attempts": None})
    assert asked == [] and reader.reads == 0 and kube.patches == []  # not this attempt's head yet: not read


async def garbage(_: web.Request) -> web.Response:
    return web.Response(body=b"\x00\xffnot json at all")


async def huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
    await response.prepare(request)
    for _ in range(10 * 1024):
        await response.write(b"x" * 1024)
    return response


async def slow(_: web.Request) -> web.Response:
    await asyncio.sleep(3)  # six times the reader's timeout in these tests
    return web.json_response(GOOD)


async def out_of_range(_: web.Request) -> web.Response:
    return web.json_response({**GOOD, "iteration": -5})


async def error(_: web.Request) -> web.Response:
    return web.json_response(GOOD, status=500)


@pytest.mark.parametrize("answer", [garbage, huge, slow, out_of_range, error])
def test_a_bad_answer_changes_nothing(answer: Answer) -> None:
    kube, reader, asked = visit(answer, status={"progress": GOOD})
    assert asked == [1] and reader.failures == 1 and kube.patches == []


def test_a_standby_asks_no_head() -> None:
    async def good(_: web.Request) -> web.Response:
        return web.json_response(GOOD)

    kube, _, asked = visit(good, leading=False)
    assert asked == [] and kube.patches == []


def test_one_loop_reads_each_running_head_again_after_its_interval() -> None:
    kube, reads = FakeKube(), []

    async def scenario() -> None:
        async def good(_: web.Request) -> web.Response:
            reads.append(1)
            return web.json_response({**GOOD, "iteration": len(reads)})

        runner, port = await serve(good)
        jobs = {("ns", "j"): {"metadata": {"namespace": "ns", "name": "j", "uid": "u1"}, "status": {"attempts": 1}}}
        stored: list[dict[str, Any]] = []
        reader = ProgressReader(kube, jobs, lambda key: [head(1)], stored.append,  # type: ignore[arg-type]
                                ProgressSettings(interval_seconds=0.05, port=port))
        reader.start()
        try:
            for _ in range(400):
                if len(kube.patches) >= 3:
                    break
                await asyncio.sleep(0.01)
        finally:
            await reader.stop()
            await runner.cleanup()
        assert [p["status"]["progress"]["iteration"] for _, p in kube.patches][:3] == [1, 2, 3]
        assert len(stored) == len(kube.patches)

    asyncio.run(scenario())
