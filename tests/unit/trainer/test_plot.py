"""reward_curve.png: the return, and the policy's entropy below it once the learner reports one."""
from __future__ import annotations

import struct
from pathlib import Path

from rljob.trainer.plot import plot_reward_curve, read_progress
from rljob.trainer.progress import ProgressRecord


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def records(with_entropy: bool) -> list[ProgressRecord]:
    return [
        ProgressRecord(i, -21.0 + i / 10, i * 1000, 500.0, i * 2.0, learner={"entropy": 1.79 - i / 100} if with_entropy else {})
        for i in range(1, 20)
    ]


def test_the_entropy_gets_a_panel_of_its_own(tmp_path: Path) -> None:
    plain = plot_reward_curve(records(False), tmp_path / "plain.png", "pong")
    both = plot_reward_curve(records(True), tmp_path / "both.png", "pong")
    assert png_size(plain) == (800, 450)
    assert png_size(both) == (800, 600)


def test_no_episode_yet_still_draws(tmp_path: Path) -> None:
    empty = [ProgressRecord(1, None, 1000, 500.0, 2.0, learner={"entropy": 1.79})]
    assert png_size(plot_reward_curve(empty, tmp_path / "c.png", "pong")) == (800, 600)


def test_read_progress_skips_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    lines = [r.json_line() for r in records(True)[:3]]
    path.write_text("\n".join(lines) + '\n{"iteration": 4, "episo')
    back = read_progress(path)
    assert [r.iteration for r in back] == [1, 2, 3] and back[0].learner["entropy"] == 1.78
