"""How often a job's status may be written when all that changed is its count of ready workers.

While a cluster comes up, each worker that turns ready changes status.workers ("3/10"): written at once, a job
of ten workers would cost ten status writes within seconds, each one a watch event for every client of the job
and another reconcile here, all on an API server that is creating the very pods being counted. A count-only change
is written at most once per interval per job; the reconcile that would write it sooner is run again when the
interval ends. Everything else (a phase, a condition, a message, a count that comes with either) is written at
once, so `kubectl get rltj` lags a count by at most the interval and never a transition.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

Key = tuple[str, str]

# status fields (as written) whose change alone may wait
COUNT_FIELDS = frozenset({"workers", "readyWorkers"})
COUNT_INTERVAL_SECONDS = 2.0


class StatusPacer:
    def __init__(
        self,
        requeue: Callable[[Key, float], None],
        interval: float = COUNT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requeue, self.interval, self.clock = requeue, interval, clock
        self._written: dict[Key, float] = {}

    def hold(self, key: Key, patch: Mapping[str, Any]) -> bool:
        """True when this status patch is to wait (the job is requeued for when it may go)."""
        if not patch or not patch.keys() <= COUNT_FIELDS:
            return False
        last = self._written.get(key)
        if last is None:
            return False
        remaining = last + self.interval - self.clock()
        if remaining <= 0:
            return False
        self.requeue(key, remaining)
        return True

    def written(self, key: Key) -> None:
        self._written[key] = self.clock()

    def forget(self, key: Key) -> None:
        self._written.pop(key, None)
