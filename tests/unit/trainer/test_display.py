"""The display: plain lines off a terminal, and the status text."""
from __future__ import annotations

import io

from rljob.trainer.display import Display, clock_text, status_text
from rljob.trainer.progress import ProgressRecord
from rljob.trainer.sinks import Outcome, RunHeader
from rljob.trainer.stop import StopCriteria


def test_clock_text() -> None:
    assert clock_text(None) == "--:--"
    assert clock_text(65) == "01:05"
    assert clock_text(3725) == "1:02:05"


def test_status_text() -> None:
    text = status_text(ProgressRecord(3, -20.5, 12345, 321.0, 30.0), 30.0, 90.0)
    assert "iter     3" in text and "-20.50" in text and "12,345" in text and "321 steps/s" in text
    assert "elapsed 00:30" in text and "ETA 01:30" in text
    assert "n/a" in status_text(ProgressRecord(1, None, 0, 0.0, 1.0), 1.0, None)
    assert "entropy" not in text


def test_status_text_shows_the_policy_entropy_once_the_learner_reports_it() -> None:
    text = status_text(ProgressRecord(3, -20.5, 12345, 321.0, 30.0, learner={"entropy": 1.6512, "vf_loss": 0.1}), 30.0, None)
    assert "return  -20.50 | entropy 1.651 | env steps" in text


def test_plain_lines() -> None:
    out = io.StringIO()
    now = [0.0]
    d = Display(out, StopCriteria(iterations=10), live=False, clock=lambda: now[0])
    d.start(RunHeader("pong", "pong", "APPO", 3, "10 iterations", None))
    now[0] = 10.0
    d.record(ProgressRecord(1, None, 100, 10.0, 10.0))
    d.close(Outcome(0, "done"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "pong: recipe pong (APPO), 3 env runners"
    assert lines[1] == "stops at: 10 iterations"
    assert lines[2].startswith("iter     1") and "ETA 01:30" in lines[2]
    assert "\r" not in out.getvalue()


def test_status_text_shows_where_the_iteration_went() -> None:
    timers = {"iteration_s": 4.0, "learn_s": 2.0, "value_pass_s": 0.2, "sample_s": 1.4}
    text = status_text(ProgressRecord(3, -20.5, 12345, 321.0, 30.0, timers=timers), 30.0, None)
    assert "| learn 50% value pass 5% sample 35% |" in text
