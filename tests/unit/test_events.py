"""Which Event an occurrence belongs to: repeats raise the first one's count; the memory is bounded."""
from __future__ import annotations

from rljob.controller.events import EventAggregator

KEY = ("ns", "uid-1", "Warning", "ClusterDegraded", "2/3 workers ready")


def test_repeats_of_the_same_event_raise_the_first_ones_count() -> None:
    events = EventAggregator()
    first = events.occur(KEY, "a")
    assert (first.name, first.count, first.first) == ("a", 1, True)
    for n in range(2, 11):
        again = events.occur(KEY, f"new-{n}")
        assert (again.name, again.count, again.first) == ("a", n, False)


def test_another_message_type_reason_or_object_is_another_event() -> None:
    events = EventAggregator()
    events.occur(KEY, "a")
    for i, other in enumerate([("ns", "uid-2", *KEY[2:]), (*KEY[:2], "Normal", *KEY[3:]), (*KEY[:3], "Other", KEY[4]),
                               (*KEY[:4], "3/3 workers ready"), ("other-ns", *KEY[1:])]):
        assert events.occur(other, f"b{i}").first, other


def test_a_forgotten_event_is_posted_anew() -> None:
    events = EventAggregator()
    events.occur(KEY, "a")
    events.occur(KEY, "a")
    events.forget(KEY)
    assert events.occur(KEY, "b").name == "b"


def test_the_least_recently_seen_are_forgotten_first() -> None:
    events = EventAggregator(capacity=2)
    keys = [(*KEY[:4], f"message {i}") for i in range(3)]
    events.occur(keys[0], "k0")
    events.occur(keys[1], "k1")
    events.occur(keys[0], "k0")  # seen again: now the most recent
    events.occur(keys[2], "k2")  # over capacity: keys[1] goes
    assert not events.occur(keys[0], "x").first
    assert events.occur(keys[1], "k1-again").first
