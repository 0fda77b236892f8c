"""When a job's status may be written if all that changed is its count of ready workers.

While a cluster comes up, each worker that turns ready changes status.workers ("3/10"): written at once, a job
of ten workers would cost ten status writes within seconds, each one a watch event for every client of the job
and another reconcile here, all on an API server that is creating the very pods being counted. So a count-only
change waits, as the controller manager batches a Service's endpoint updates: it is written once it has waited
SETTLE_SECONDS (when the job's last pod turns ready within that time, the job's move to Running carries the
count instead) and no sooner than INTERVAL_SECONDS after the job's previous status write. The reconcile that
would have written it runs again when it may. Everything else (a phase, a condition, a message, and any count
that comes with one) is written at once: `kubectl get rltj` shows a count at most a few seconds late, and a
transition never late.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..api.models import JobStatus
from .objects import Key

# The status fields whose change alone may wait, by their names in a status patch.
COUNT_FIELDS = frozenset(JobStatus.model_fields[name].alias or name for name in ("workers", "ready_workers"))
SETTLE_SECONDS = 1.0
INTERVAL_SECONDS = 2.0


class StatusPacer:
    def __init__(
        self,
        requeue: Callable[[Key, float], None],
        settle: float = SETTLE_SECONDS,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requeue, self.settle, self.interval, self.clock = requeue, settle, interval, clock
        self._written: dict[Key, float] = {}
        self._waiting_since: dict[Key, float] = {}

    def hold(self, key: Key, patch: Mapping[str, Any]) -> bool:
        """True when this status patch is to wait (the job is requeued for when it may go). An empty one (the
        count went back to what is written) ends the wait."""
        if not patch:
            self._waiting_since.pop(key, None)
            return False
        if not patch.keys() <= COUNT_FIELDS:
            return False
        now = self.clock()
        due = self._waiting_since.setdefault(key, now) + self.settle
        last = self._written.get(key)
        if last is not None:
            due = max(due, last + self.interval)
        if now >= due:
            return False
        self.requeue(key, due - now)
        return True

    def written(self, key: Key) -> None:
        self._written[key] = self.clock()
        self._waiting_since.pop(key, None)

    def forget(self, key: Key) -> None:
        self._written.pop(key, None)
        self._waiting_since.pop(key, None)
