"""Coordination deadline parsing and waiting for workers (fake clock, fake ray.nodes())."""
from __future__ import annotations

import pytest

from rljob.trainer.cluster import parse_deadline, summarize, wait_for_workers
from rljob.trainer.errors import ConfigError, CoordinationTimeout


def test_parse_deadline_formats() -> None:
    assert parse_deadline("1795000000") == 1795000000.0
    assert parse_deadline("2026-11-25T12:00:00Z") == 1795608000.0
    assert parse_deadline("2026-11-25T13:00:00+01:00") == 1795608000.0
    assert parse_deadline("2026-11-25T12:00:00") == 1795608000.0  # no zone: UTC
    with pytest.raises(ConfigError, match="RFC 3339"):
        parse_deadline("tomorrow")


def node(head: bool = False, cpus: float = 2, gpus: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}
    if head:
        resources["node:__internal_head__"] = 1.0
    return {"Alive": alive, "Resources": resources}


def test_summary() -> None:
    s = summarize([node(head=True, cpus=4, gpus=1), node(), node(), node(alive=False)])
    assert (s.nodes, s.workers, s.cpus, s.gpus, s.head_cpus) == (3, 2, 8.0, 1.0, 4.0)
    assert s.describe() == "Ray cluster ready: 3 nodes (1 head + 2 workers), 8 CPUs, 1 GPUs"


def test_waits_until_workers_join() -> None:
    views = iter([[node(head=True)], [node(head=True), node()], [node(head=True), node(), node()]])
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    s = wait_for_workers(2, 100.0, lambda: next(views), clock=lambda: now[0], sleep=sleep, poll_s=2.0)
    assert s.workers == 2 and now[0] == 4.0


def test_times_out_at_the_deadline() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(CoordinationTimeout) as err:
        wait_for_workers(3, 10.0, lambda: [node(head=True), node()], clock=lambda: now[0], sleep=sleep, poll_s=4.0)
    assert now[0] == 10.0
    assert "1 of 3 Ray workers joined" in err.value.lines[0]
    assert err.value.exit_code == 3


def test_zero_workers_needs_no_wait() -> None:
    assert wait_for_workers(0, None, lambda: [node(head=True)]).workers == 0
