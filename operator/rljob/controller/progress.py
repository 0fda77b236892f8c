"""The operator reads each running head's progress and writes it to the job's status.progress.

The job holds no credentials: its driver serves its progress on the head (constants.PROGRESS_PATH on the metrics
port, which the job's NetworkPolicy opens to the operator's namespace), as a Ray head serves its job API to
KubeRay, and leaves the last record as the head container's termination message. What a head answers is the
user's code talking, so it is untrusted input: a short timeout, at most MAX_PROGRESS_BYTES read, parsed strictly
(api.models.parse_progress), and counters that never go backwards (a retry that resumes from an older checkpoint
does not take iterations or env steps back). A garbage, huge, slow or hostile answer changes nothing but that
job's progress, and costs one bounded request.

One loop serves every job: each is read once per interval (with jitter, so that jobs started together do not stay
in step), at most `concurrency` at a time, and only while its head is up; a job whose head is not running is not
scheduled until its pods change. A progress write is a status merge patch of `progress` alone, without a version
precondition (it overwrites only what this reader wrote), and it is no reason to decide anything again.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..api import constants as c
from ..api.models import Progress, parse_progress
from .kube import ApiException, Kube, error_text, object_path
from .objects import Key
from .observe import PodObservation

log = logging.getLogger(__name__)

# Figures that count up across attempts: a resumed attempt continues them, it never takes them back.
COUNTERS = ("iteration", "env_steps", "time_total_seconds")
MAX_HEAD_BYTES = 8192  # the status line and headers of a head's answer


@dataclass(frozen=True)
class ProgressSettings:
    interval_seconds: float = 10.0  # 0: never read (an operator that cannot reach the pods' IPs)
    jitter: float = 0.2  # each interval is stretched or shrunk by up to this fraction
    timeout_seconds: float = 2.0  # the whole request, connect to last byte
    concurrency: int = 16
    port: int = c.PORT_METRICS


def merged(old: Progress | None, new: Progress) -> Progress:
    """`new`, with the counters at least where `old` had them and figures `new` lacks kept from `old` (a resumed
    attempt that has finished no episode yet still shows the last known return)."""
    if old is None:
        return new
    update: dict[str, Any] = {}
    for name in Progress.model_fields:
        before, now = getattr(old, name), getattr(new, name)
        if now is None or (name in COUNTERS and before is not None and before > now):
            update[name] = before
    return new.model_copy(update=update) if update else new


def current_progress(body: Mapping[str, Any]) -> Progress | None:
    """The job's status.progress as stored; None when absent or not a record this version reads."""
    raw = (body.get("status") or {}).get("progress")
    if not isinstance(raw, dict):
        return None
    try:
        return Progress.model_validate(raw, strict=False)
    except ValidationError:
        return None


def source(body: Mapping[str, Any], pods: Iterable[PodObservation]) -> tuple[str, PodObservation | None]:
    """Where this job's progress is now: ("read", the running head of its current attempt), ("final", the latest
    finished head that left a record), or ("", None): nowhere yet."""
    uid = (body.get("metadata") or {}).get("uid")
    status = body.get("status") or {}
    attempt = status.get("attempts")
    heads = [p for p in pods if p.role == c.ROLE_HEAD and (uid is None or p.controller_uid in (None, uid))]
    for pod in heads:
        if pod.attempt == attempt and pod.phase == "Running" and pod.ip and not pod.deleting:
            return "read", pod
    finished = [p for p in heads if p.progress is not None]
    if finished:
        return "final", max(finished, key=lambda p: p.attempt or 0)
    return "", None


class ProgressReader:
    """Schedules and reads the heads; `touch` is called whenever a job's pods change."""

    def __init__(
        self,
        kube: Kube,
        jobs: Mapping[Key, dict[str, Any]],
        pods: Callable[[Key], Iterable[PodObservation]],
        store: Callable[[dict[str, Any]], None],
        settings: ProgressSettings = ProgressSettings(),
        may_act: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.kube, self.jobs, self.pods, self.store, self.settings = kube, jobs, pods, store, settings
        self.may_act, self.clock = may_act, clock
        self.rng = rng or random.Random()
        self._due: list[tuple[float, Key]] = []  # a heap of (when, key)
        self._scheduled: dict[Key, float] = {}  # the live entry of each key
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.reads = self.failures = self.writes = 0  # for the operator's metrics and tests

    # ── scheduling ─────────────────────────────────────────────────────────────────────────────

    @property
    def enabled(self) -> bool:
        return self.settings.interval_seconds > 0

    def touch(self, key: Key) -> None:
        """The job's pods changed: read it soon (a new head, a finished one) unless it is due sooner anyway."""
        if self.enabled:
            self._schedule(key, self.clock() + self.rng.uniform(0.0, 1.0))

    def forget(self, key: Key) -> None:
        self._scheduled.pop(key, None)

    def _schedule(self, key: Key, when: float) -> None:
        current = self._scheduled.get(key)
        if current is not None and current <= when:
            return
        self._scheduled[key] = when
        heapq.heappush(self._due, (when, key))
        self._wake.set()

    def _next_interval(self) -> float:
        s = self.settings
        return s.interval_seconds * (1.0 + self.rng.uniform(-s.jitter, s.jitter))

    # ── running ────────────────────────────────────────────────────────────────────────────────

    def start(self) -> None:
        if not self.enabled:
            log.warning("progress is not read from the heads (--progress-interval 0): status.progress stays empty")
            return
        if self._task is None:
            for key in list(self.jobs):
                self.touch(key)
            self._task = asyncio.create_task(self._run(), name="rljob-progress-reader")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.settings.concurrency)
        while True:
            while not self._due:
                self._wake.clear()
                await self._wake.wait()
            when, key = self._due[0]
            delay = when - self.clock()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue  # something may have been scheduled sooner
            heapq.heappop(self._due)
            if self._scheduled.get(key) != when:
                continue  # an entry left behind by an earlier (or forgotten) schedule
            del self._scheduled[key]
            await slots.acquire()  # at most `concurrency` reads at once; the loop waits rather than piling up
            task = asyncio.create_task(self._visit(key), name=f"rljob-progress-{key[0]}/{key[1]}")
            self._inflight.add(task)
            task.add_done_callback(lambda t: (self._inflight.discard(t), slots.release()))

    async def _visit(self, key: Key) -> None:
        try:
            again = await self.visit(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one job's answer stop the loop
            log.warning("progress of %s/%s: %s", *key, error_text(exc))
            again = True
        if again and key in self.jobs:
            self._schedule(key, self.clock() + self._next_interval())

    async def visit(self, key: Key) -> bool:
        """Reads (or takes the final record of) one job and writes what changed; True: read it again later."""
        body = self.jobs.get(key)
        if body is None:
            return False
        if not self.may_act():
            return True  # a standby keeps the schedule, and reads once it leads
        pods = list(self.pods(key))
        kind, pod = source(body, pods)
        if pod is None:
            # Nothing to read yet; the next pod change schedules it again. But a head seen Running before the job's
            # own update that names its attempt (two watches, in no set order) gets no further pod change: that
            # update touches nothing here, so such a job is looked at again after the interval.
            return any(p.role == c.ROLE_HEAD and p.phase == "Running" and p.ip and not p.deleting for p in pods)
        if kind == "final":
            assert pod.progress is not None
            try:
                await self._write(key, body, pod.progress)
            except ApiException as exc:
                if exc.status in (409, 429) or exc.status >= 500:
                    raise  # passing: tried again after the interval
                log.warning("the last progress of %s/%s was refused: %s", *key, error_text(exc))
            return False
        self.reads += 1
        try:
            progress = await self.read(pod.ip)
        except (OSError, TimeoutError, ValueError) as exc:
            self.failures += 1
            log.debug("progress of %s/%s from %s: %s", *key, pod.name, _short(exc))
            return True
        if progress is not None:
            await self._write(key, body, progress)
        return True

    async def read(self, ip: str) -> Progress | None:
        """GET the head's progress; None before its first iteration. Raises on anything but a valid record.

        One HTTP/1.0 request on a connection of its own, read to its end within the timeout and MAX_HEAD_BYTES plus
        MAX_PROGRESS_BYTES: the whole exchange is bounded in time and size before anything of it is parsed. Plain
        streams rather than an HTTP client: a driver's endpoint answers one small document, and at 1000 heads the
        client's own machinery was most of the cost of a read."""
        return await asyncio.wait_for(self._get(ip), self.settings.timeout_seconds)

    async def _get(self, ip: str) -> Progress | None:
        reader, writer = await asyncio.open_connection(ip, self.settings.port, limit=MAX_HEAD_BYTES)
        try:
            host = f"[{ip}]" if ":" in ip else ip
            writer.write(f"GET {c.PROGRESS_PATH} HTTP/1.0\r\nHost: {host}:{self.settings.port}\r\n"
                         "Accept: application/json\r\n\r\n".encode())
            answer = bytearray()
            while len(answer) <= MAX_HEAD_BYTES + c.MAX_PROGRESS_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                answer += chunk
            else:
                raise ValueError(f"an answer of more than {MAX_HEAD_BYTES + c.MAX_PROGRESS_BYTES} bytes")
        finally:
            writer.close()
        head, sep, body = bytes(answer).partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if not sep or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP answer")
        if status_line[1] == b"204":
            return None
        if status_line[1] != b"200":
            raise ValueError(f"HTTP {status_line[1].decode('ascii', 'replace')[:3]}")
        if len(body) > c.MAX_PROGRESS_BYTES:
            raise ValueError(f"an answer of more than {c.MAX_PROGRESS_BYTES} bytes")
        if body.strip() in (b"", b"{}"):
            return None
        return parse_progress(body)

    async def _write(self, key: Key, body: dict[str, Any], progress: Progress) -> None:
        old = current_progress(body)
        new = merged(old, progress)
        if new == old:
            return
        path = object_path(c.API_VERSION, c.KIND, key[0], key[1]) + "/status"
        # Only this job instance's status: a namesake created meanwhile must not get the old one's figures.
        uid = (body.get("metadata") or {}).get("uid")
        patch: dict[str, Any] = {"status": {"progress": new.wire()}}
        if uid:
            patch["metadata"] = {"uid": uid}
        written = await self.kube.merge_patch(path, patch)
        self.writes += 1
        if written:
            self.store(written)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
