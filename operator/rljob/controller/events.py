"""Events aggregated the way client-go's recorder does: a repeat raises the count of the Event already posted.

A job whose workers come and go, or whose decision repeats while the API server refuses a write, would
otherwise add one Event object per occurrence, each with count 1: `kubectl describe` then lists the same
line over and over, and the namespace's events fill with copies. Here an Event is keyed by what makes it the
same event for a reader (the object, by uid, and the type, reason and message): the first occurrence is
created, each repeat patches that Event's count and lastTimestamp. The memory of posted events is bounded
(the least recently seen are forgotten first, and a forgotten or expired Event is simply created anew), and
lives in the recorder of one operator process: a new leader starts counting afresh, as client-go's does.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# Events posted that a repeat may still raise: far more distinct (job, reason, message) triples than any
# operator sees within the API server's event lifetime (one hour by default).
DEFAULT_CAPACITY = 4096

EventKey = tuple[str, str, str, str, str]  # namespace, object uid (or name), type, reason, message


@dataclass(frozen=True)
class Occurrence:
    """What to do for one occurrence: create `name` (count 1), or raise `name`'s count to `count`."""

    name: str
    count: int

    @property
    def first(self) -> bool:
        return self.count == 1


class EventAggregator:
    """Which Event an occurrence belongs to, and its count; the caller posts or patches accordingly."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._posted: OrderedDict[EventKey, Occurrence] = OrderedDict()

    def occur(self, key: EventKey, new_name: str) -> Occurrence:
        """The Event for another occurrence of `key`: the one already posted with its count raised, or `new_name`."""
        seen = self._posted.pop(key, None)
        now = Occurrence(new_name, 1) if seen is None else Occurrence(seen.name, seen.count + 1)
        self._posted[key] = now
        while len(self._posted) > self.capacity:
            self._posted.popitem(last=False)
        return now

    def forget(self, key: EventKey) -> None:
        """The Event is gone (expired, deleted) or could not be created: the next occurrence creates one anew."""
        self._posted.pop(key, None)
