"""A keyed work queue in the manner of controller-runtime's: events add a job's key, a pool of workers processes
keys, one at a time per key, and a key added while it is being processed runs again afterwards. Adds with a delay
carry the time-based rules; failures back off exponentially per key.

Unlike controller-runtime's single FIFO, keys go in lanes: a lower lane goes first, and each lane keeps its order of
arrival. The reconciler puts a job whose cluster already exists (it has pods) in lane 0, since its reconcile is at
most a status write, and a job whose children are still to be created (a dozen creations) in lane 1. In a burst of
1000 jobs, a single FIFO kept jobs whose pods were all Ready behind every job applied after them, up to 85 s before
they were marked Running. The lane is asked when a key is added (a delayed key when it falls due), so a key queued
as new whose pods appear meanwhile moves up.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from .objects import Key

log = logging.getLogger(__name__)

BASE_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0


class WorkQueue:
    def __init__(
        self,
        lane: Callable[[Key], int] = lambda key: 0,
        concurrency: int = 16,
        base_backoff: float = BASE_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"a work queue needs at least one worker, not {concurrency}")
        self.lane, self.concurrency = lane, concurrency
        self.base_backoff, self.max_backoff = base_backoff, max_backoff
        self._queue: asyncio.PriorityQueue[tuple[int, int, Key]] = asyncio.PriorityQueue()  # (lane, arrival, key)
        self._arrivals = itertools.count()
        self._queued: dict[Key, int] = {}  # queued keys and the lane of their live entry
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.restarts = 0  # workers started again after they ended unexpectedly

    # ── adding ─────────────────────────────────────────────────────────────────────────────────

    def add(self, key: Key, delay: float = 0.0) -> None:
        """Queues `key` (after `delay` seconds). A key already queued stays queued once; one being processed runs
        again afterwards; of two delays the earlier wins (a later look is made by what the earlier one decides)."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            existing = self._timers.get(key)
            due = loop.time() + delay
            if existing and existing.when() <= due:
                return
            if existing:
                existing.cancel()
            self._timers[key] = loop.call_at(due, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)
            return
        lane, queued = self.lane(key), self._queued.get(key)
        if queued is None or lane < queued:
            # A key queued as a new job whose pods have appeared since moves up (its old entry is skipped): queued by
            # its own Pending write before its head pod's event arrived, a job otherwise waited behind every new
            # job's creations, its pods Ready for up to 40 s in a burst of 1000 before it was marked Running.
            self._queued[key] = lane
            self._queue.put_nowait((lane, next(self._arrivals), key))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def due(self, key: Key) -> float | None:
        """When `key`'s delayed add falls due, on the event loop's clock; None: none is pending."""
        timer = self._timers.get(key)
        return timer.when() if timer is not None else None

    def __len__(self) -> int:
        """Keys waiting for a worker (not those being processed, nor delayed ones)."""
        return len(self._queued)

    # ── backing off ────────────────────────────────────────────────────────────────────────────

    def backoff(self, key: Key) -> float:
        """Counts one more failure of `key`; how long it waits before its next try (0.5·2ⁿ s, up to a minute)."""
        n = self._failures[key] = self._failures.get(key, 0) + 1
        return min(self.max_backoff, self.base_backoff * 2**n)

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Key) -> None:
        """`key` succeeded (or is no longer failing): its next failure backs off from the start."""
        self._failures.pop(key, None)

    def remove(self, key: Key) -> None:
        """`key` is gone: its failures and its delayed add go with it (an entry already queued is processed and
        finds nothing to do)."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    # ── workers ────────────────────────────────────────────────────────────────────────────────

    def start(self, process: Callable[[Key], Awaitable[None]]) -> None:
        """Starts the workers, each calling `process` for one key at a time. `process` should handle its own
        failures: one that raises is logged, and the key is not retried unless it is added again."""
        if not self._tasks:
            self._tasks = [self._spawn(i, process) for i in range(self.concurrency)]

    def _spawn(self, index: int, process: Callable[[Key], Awaitable[None]]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._worker(process), name=f"rljob-reconciler-{index}")
        task.add_done_callback(lambda t: self._supervise(index, process, t))
        return task

    def _supervise(self, index: int, process: Callable[[Key], Awaitable[None]], task: asyncio.Task[None]) -> None:
        """A worker that ended other than by stop() is replaced: the queue must never lose its consumers."""
        if task.cancelled() or index >= len(self._tasks) or self._tasks[index] is not task:
            return
        log.error("reconcile worker %d ended (%r); starting it again", index, task.exception())
        self.restarts += 1
        self._tasks[index] = self._spawn(index, process)

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def healthy(self) -> bool:
        """Every worker is alive (readiness): a process whose reconciling stopped must not look ready."""
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self, process: Callable[[Key], Awaitable[None]]) -> None:
        while True:
            lane, _, key = await self._queue.get()
            if self._queued.get(key) != lane:
                continue  # an entry left behind when the key moved up a lane, or already processed
            del self._queued[key]
            self._active.add(key)
            try:
                await process(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # nothing a job does may end a worker
                log.exception("reconcile %s/%s: unexpected error", *key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
