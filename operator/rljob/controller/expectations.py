"""Head pods the operator has created and its pod watch has not shown yet.

A job is written Initializing in the pass that creates its head pod. The next pass can come before the pod's watch
event does (the status write is an event of its own), and a head that is not seen counts as gone: the attempt would
fail. So, as controller-runtime's and the Job controller's expectations do, a created head counts as there, Pending,
until the watch shows it, for at most EXPECTATION_SECONDS. The watch delivers a pod's creation before its deletion, so
a head deleted at once is seen, then gone, and not expected any longer.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..api import constants as c
from .objects import Key
from .observe import PodObservation

log = logging.getLogger(__name__)

# The Job controller's ExpectationsTimeout: long enough for a watch that is far behind, short enough that a head the
# watch never showed (gone while it was listing again) is noticed.
EXPECTATION_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class _Expected:
    pod: PodObservation
    until: float


class HeadExpectations:
    def __init__(self, clock: Callable[[], float] = time.monotonic, seconds: float = EXPECTATION_SECONDS) -> None:
        self.clock, self.seconds = clock, seconds
        self._by_key: dict[Key, _Expected] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def expect(self, key: Key, name: str, attempt: int, job_uid: str) -> None:
        """Set before the create call: the watch may show the pod before the call returns."""
        pod = PodObservation(name=name, role=c.ROLE_HEAD, attempt=attempt, phase="Pending",
                             controller_uid=job_uid or None, owner_uid=job_uid)
        self._by_key[key] = _Expected(pod, self.clock() + self.seconds)

    def forget(self, key: Key) -> None:
        self._by_key.pop(key, None)

    def seen(self, key: Key, pods: Iterable[PodObservation]) -> None:
        """The watch changed `key`'s pods: the expected head, once among them, is no longer expected."""
        expected = self._by_key.get(key)
        if expected is not None and any(p.name == expected.pod.name for p in pods):
            del self._by_key[key]

    def with_expected(self, key: Key, pods: Iterable[PodObservation]) -> tuple[PodObservation, ...]:
        """`pods` as the watch shows them, plus the expected head while it is not among them."""
        pods = tuple(pods)
        expected = self._by_key.get(key)
        if expected is None:
            return pods
        if any(p.name == expected.pod.name for p in pods):
            del self._by_key[key]
            return pods
        if self.clock() >= expected.until:
            del self._by_key[key]
            log.warning("%s/%s: head pod %s was created %.0fs ago and the pod watch has not shown it; counting it as "
                        "gone", *key, expected.pod.name, self.seconds)
            return pods
        return (*pods, expected.pod)
