"""A created head pod counts as there until the pod watch shows it, and no longer."""
from __future__ import annotations

from rljob.controller.expectations import HeadExpectations
from rljob.controller.observe import PodObservation

KEY = ("ns1", "demo")


def pod(name: str, phase: str = "Running") -> PodObservation:
    return PodObservation(name=name, role="head", attempt=1, phase=phase, controller_uid="u1", uid="p1")


def test_an_expected_head_is_added_as_pending_until_the_watch_shows_it() -> None:
    now = [0.0]
    expected = HeadExpectations(clock=lambda: now[0], seconds=300)
    expected.expect(KEY, "demo-head-1", 1, "u1")
    worker = PodObservation(name="demo-workers-0", role="worker", attempt=None, phase="Pending", controller_uid="u1")
    (_, added) = expected.with_expected(KEY, [worker])
    assert (added.name, added.role, added.attempt, added.phase, added.ready, added.controller_uid) == \
        ("demo-head-1", "head", 1, "Pending", False, "u1")
    assert expected.with_expected(("ns1", "other"), [worker]) == (worker,)
    seen = pod("demo-head-1")
    assert expected.with_expected(KEY, [worker, seen]) == (worker, seen) and len(expected) == 0


def test_a_head_seen_and_deleted_before_the_next_pass_is_not_expected_any_longer() -> None:
    expected = HeadExpectations()
    expected.expect(KEY, "demo-head-1", 1, "u1")
    expected.seen(KEY, [pod("demo-workers-0")])  # another pod's event: still expected
    assert len(expected) == 1
    expected.seen(KEY, [pod("demo-head-1")])  # its ADDED event
    assert expected.with_expected(KEY, []) == ()  # then its DELETED: gone, as the phase machine must see


def test_an_expectation_lapses_and_can_be_forgotten() -> None:
    now = [0.0]
    expected = HeadExpectations(clock=lambda: now[0], seconds=300)
    expected.expect(KEY, "demo-head-1", 1, "u1")
    now[0] = 299.0
    assert len(expected.with_expected(KEY, [])) == 1
    now[0] = 300.0
    assert expected.with_expected(KEY, []) == () and len(expected) == 0
    expected.expect(KEY, "demo-head-1", 1, "u1")
    expected.forget(KEY)
    assert expected.with_expected(KEY, []) == ()
