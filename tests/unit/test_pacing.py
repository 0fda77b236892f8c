"""Status pacing: which status patches wait, for how long, and what ends a wait."""
from __future__ import annotations

from rljob.controller.pacing import StatusPacer

KEY = ("ns1", "job")


def pacer(now: list[float], requeued: list[float]) -> StatusPacer:
    return StatusPacer(requeue=lambda key, delay: requeued.append(delay), settle=1.0, interval=2.0, clock=lambda: now[0])


def test_a_count_settles_then_waits_for_the_interval_and_anything_else_goes_at_once() -> None:
    now, requeued = [10.0], []
    p = pacer(now, requeued)
    assert not p.hold(KEY, {"phase": "Initializing", "workers": "0/3"})  # a transition: at once
    p.written(KEY)
    assert p.hold(KEY, {"workers": "1/3", "readyWorkers": 1}) and requeued == [2.0]  # 2 s after the last write
    now[0] = 12.0
    assert not p.hold(KEY, {"workers": "1/3", "readyWorkers": 1})
    p.written(KEY)
    now[0] = 30.0
    assert p.hold(KEY, {"workers": "2/3", "readyWorkers": 2}) and requeued == [2.0, 1.0]  # long after: settles 1 s
    assert not p.hold(KEY, {"phase": "Running", "workers": "3/3", "readyWorkers": 3})  # a count with a transition
    assert not p.hold(("ns1", "other"), {"message": "m"})


def test_a_count_that_goes_back_ends_its_wait() -> None:
    now, requeued = [0.0], []
    p = pacer(now, requeued)
    assert p.hold(KEY, {"workers": "1/3", "readyWorkers": 1})
    now[0] = 0.5
    assert not p.hold(KEY, {})  # back to what is written: nothing waits
    now[0] = 5.0
    assert p.hold(KEY, {"workers": "2/3", "readyWorkers": 2}) and requeued == [1.0, 1.0]  # settling from now, not from 0
    p.written(KEY)
    p.forget(KEY)  # the job was deleted; a new one of the same name starts with no record
    now[0] = 5.5
    assert p.hold(KEY, {"workers": "1/3", "readyWorkers": 1}) and requeued[-1] == 1.0  # settling only, no interval
