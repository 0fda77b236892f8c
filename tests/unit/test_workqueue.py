"""The keyed work queue: one entry per key, a key added while processed runs again after, never twice at once; lanes;
delayed adds keep the earliest; backoff per key; workers that end are replaced.

The tests wait on what the workers did (an event set by the processing function), never on the clock."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from rljob.controller.objects import Key
from rljob.controller.workqueue import MAX_BACKOFF_SECONDS, WorkQueue

WAIT_SECONDS = 5.0  # a bound on every wait: a broken queue fails the test instead of hanging it


def key(name: str) -> Key:
    return ("ns", name)


class Processor:
    """Records the keys processed; `gates` holds a key's processing until the test opens its gate; `raises`, what the
    next processing of a key raises."""

    def __init__(self) -> None:
        self.calls: list[Key] = []
        self.running: dict[Key, int] = {}
        self.most_at_once: dict[Key, int] = {}
        self.gates: dict[Key, asyncio.Event] = {}
        self.raises: dict[Key, BaseException] = {}
        self._changed = asyncio.Event()

    async def __call__(self, k: Key) -> None:
        self.calls.append(k)
        self.running[k] = self.running.get(k, 0) + 1
        self.most_at_once[k] = max(self.most_at_once.get(k, 0), self.running[k])
        self._changed.set()
        try:
            gate = self.gates.get(k)
            if gate is not None:
                await gate.wait()
            if k in self.raises:
                raise self.raises.pop(k)
        finally:
            self.running[k] -= 1

    async def until(self, calls: int) -> None:
        async def wait() -> None:
            while len(self.calls) < calls:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT_SECONDS)


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(scenario())


async def settled(queue: WorkQueue, processor: Processor, calls: int) -> None:
    """`calls` processings happened, and nothing is queued or running: no further one can come."""
    await processor.until(calls)
    assert len(queue) == 0 and not any(processor.running.values())


def test_a_key_added_many_times_before_a_worker_takes_it_is_processed_once() -> None:
    async def scenario() -> list[Key]:
        queue, processor = WorkQueue(concurrency=4), Processor()
        for _ in range(5):
            queue.add(key("a"))
        queue.add(key("b"))
        assert len(queue) == 2
        queue.start(processor)
        await settled(queue, processor, 2)
        await queue.stop()
        return processor.calls

    assert sorted(run(scenario)) == [key("a"), key("b")]


def test_a_key_added_while_processed_runs_again_once_afterwards_never_twice_at_once() -> None:
    async def scenario() -> Processor:
        queue, processor = WorkQueue(concurrency=4), Processor()
        processor.gates[key("a")] = gate = asyncio.Event()
        queue.add(key("a"))
        queue.start(processor)
        await processor.until(1)
        queue.add(key("a"))  # arrives while it is processed: marked to run again, not queued beside it
        queue.add(key("a"))
        assert len(queue) == 0 and processor.calls == [key("a")]
        gate.set()
        await settled(queue, processor, 2)
        await queue.stop()
        return processor

    processor = run(scenario)
    assert processor.calls == [key("a"), key("a")] and processor.most_at_once[key("a")] == 1


def test_a_lower_lane_goes_first_and_each_lane_keeps_its_order_of_arrival() -> None:
    lanes = {"up-1": 0, "up-2": 0, "new-1": 1, "new-2": 1, "new-3": 1}

    async def scenario() -> list[Key]:
        queue, processor = WorkQueue(lane=lambda k: lanes[k[1]], concurrency=1), Processor()
        for name in ("new-1", "up-1", "new-2", "up-2", "new-3"):
            queue.add(key(name))
        queue.start(processor)
        await settled(queue, processor, 5)
        await queue.stop()
        return processor.calls

    assert [name for _, name in run(scenario)] == ["up-1", "up-2", "new-1", "new-2", "new-3"]


def test_a_queued_key_whose_lane_drops_moves_up_and_is_processed_once() -> None:
    lanes = {"new-1": 1, "new-2": 1, "late-pods": 1, "new-3": 1}

    async def scenario() -> list[Key]:
        queue, processor = WorkQueue(lane=lambda k: lanes[k[1]], concurrency=1), Processor()
        for name in lanes:
            queue.add(key(name))
        lanes["late-pods"] = 0  # its pods appeared
        queue.add(key("late-pods"))
        queue.add(key("late-pods"))
        assert len(queue) == 4
        queue.start(processor)
        await settled(queue, processor, 4)
        await queue.stop()
        return processor.calls

    assert [name for _, name in run(scenario)] == ["late-pods", "new-1", "new-2", "new-3"]


def test_of_two_delayed_adds_the_earlier_is_kept() -> None:
    async def scenario() -> tuple[list[Key], float | None]:
        queue, processor = WorkQueue(), Processor()
        queue.start(processor)
        now = asyncio.get_running_loop().time()
        queue.add(key("a"), 30.0)
        queue.add(key("a"), 0.01)  # earlier: replaces the later one
        queue.add(key("a"), 60.0)  # later than the pending one: ignored
        due = queue.due(key("a"))
        assert due is not None and now < due <= now + 1.0 and len(queue) == 0
        await settled(queue, processor, 1)
        left = queue.due(key("a"))  # the one timer fired; none is left to fire again
        await queue.stop()
        return processor.calls, left

    calls, left = run(scenario)
    assert calls == [key("a")] and left is None


def test_a_removed_key_loses_its_delayed_add_and_its_failures() -> None:
    async def scenario() -> tuple[float | None, int, float]:
        queue = WorkQueue()
        queue.backoff(key("a"))
        queue.add(key("a"), 30.0)
        queue.remove(key("a"))
        return queue.due(key("a")), queue.failures(key("a")), queue.backoff(key("a"))

    assert run(scenario) == (None, 0, 1.0)


def test_failures_back_off_exponentially_per_key_up_to_a_minute_and_forget_starts_afresh() -> None:
    queue = WorkQueue()
    delays = [queue.backoff(key("a")) for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]
    assert queue.backoff(key("b")) == 1.0 and queue.failures(key("a")) == 9
    queue.forget(key("a"))
    assert queue.failures(key("a")) == 0 and queue.backoff(key("a")) == 1.0


def test_a_key_whose_processing_raises_is_logged_and_the_worker_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Processor:
        queue, processor = WorkQueue(concurrency=1), Processor()
        processor.raises[key("a")] = RuntimeError("boom")
        queue.add(key("a"))
        queue.add(key("b"))
        queue.start(processor)
        await settled(queue, processor, 2)
        assert queue.healthy() and queue.restarts == 0
        await queue.stop()
        return processor

    assert run(scenario).calls == [key("a"), key("b")]
    assert "reconcile ns/a: unexpected error" in caplog.text


class WorkerEnds(BaseException):
    """Not an error a worker catches: its task ends, as one would if the queue itself broke."""


def test_a_worker_that_ends_is_started_again_and_stop_ends_them_all() -> None:
    async def scenario() -> None:
        queue, processor = WorkQueue(concurrency=1), Processor()
        processor.raises[key("a")] = WorkerEnds()
        queue.add(key("a"))
        queue.start(processor)
        await processor.until(1)
        queue.add(key("b"))  # the only worker ended: only its replacement can process this
        await settled(queue, processor, 2)
        assert queue.restarts == 1 and queue.healthy() and queue.started
        await queue.stop()
        assert not queue.healthy() and not queue.started

    run(scenario)


def test_start_is_idempotent_and_a_queue_needs_a_worker() -> None:
    async def scenario() -> int:
        queue, processor = WorkQueue(concurrency=2), Processor()
        queue.start(processor)
        queue.start(processor)  # (kopf runs a failed start-up again)
        queue.add(key("a"))
        await settled(queue, processor, 1)
        await queue.stop()
        return len(processor.calls)

    assert run(scenario) == 1
    with pytest.raises(ValueError, match="at least one worker"):
        WorkQueue(concurrency=0)


def test_the_workers_bound_how_many_keys_are_processed_at_once() -> None:
    """A key's processing holds its worker: with one worker, a held key keeps the next waiting in the queue."""
    async def scenario() -> None:
        queue, processor = WorkQueue(concurrency=1), Processor()
        processor.gates[key("a")] = gate = asyncio.Event()
        queue.add(key("a"))
        queue.add(key("b"))
        queue.start(processor)
        await processor.until(1)
        assert processor.calls == [key("a")] and len(queue) == 1
        gate.set()
        await settled(queue, processor, 2)
        await queue.stop()

    run(scenario)
