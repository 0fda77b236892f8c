"""Checkpoint discovery, atomic saving and pruning (with a stand-in for Algorithm.save_to_path)."""
from __future__ import annotations

from pathlib import Path

from rljob.trainer import checkpoints
from rljob.trainer.progress import ProgressRecord


def fake_save(path: str) -> None:
    Path(path).mkdir(parents=True)
    (Path(path) / "algorithm_state.pkl").write_bytes(b"state")


def rec(iteration: int) -> ProgressRecord:
    return ProgressRecord(iteration, -20.0, iteration * 100, 10.0, iteration * 5.0, attempt=1, timestamp=0.0)


def test_save_and_discover(tmp_path: Path) -> None:
    info = checkpoints.save(fake_save, tmp_path, rec(2), "pong")
    assert info.path == tmp_path / "iteration-000002"
    assert (info.path / "algorithm_state.pkl").is_file()
    latest = checkpoints.latest(tmp_path)
    assert latest is not None
    assert (latest.iteration, latest.env_steps, latest.time_total_s, latest.recipe) == (2, 200, 10.0, "pong")


def test_latest_is_by_iteration_and_ignores_partial_and_foreign(tmp_path: Path) -> None:
    for i in (9, 10, 2):
        checkpoints.save(fake_save, tmp_path, rec(i), "pong")
    (tmp_path / ".partial-iteration-000011").mkdir()  # a save killed midway
    (tmp_path / "iteration-000012").mkdir()  # no rljob.json: not ours or incomplete
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "progress.jsonl").write_text("")
    latest = checkpoints.latest(tmp_path)
    assert latest is not None and latest.iteration == 10
    assert [c.iteration for c in checkpoints.list_checkpoints(tmp_path)] == [2, 9, 10]


def test_corrupt_metadata_is_skipped(tmp_path: Path) -> None:
    checkpoints.save(fake_save, tmp_path, rec(1), "pong")
    bad = checkpoints.save(fake_save, tmp_path, rec(2), "pong")
    (bad.path / checkpoints.META_FILE).write_text("{not json")
    latest = checkpoints.latest(tmp_path)
    assert latest is not None and latest.iteration == 1


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for i in range(1, 6):
        checkpoints.save(fake_save, tmp_path, rec(i), "pong")
    (tmp_path / ".partial-iteration-000006").mkdir()
    checkpoints.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iteration-000004", "iteration-000005"]


def test_saving_the_same_iteration_twice_keeps_the_first(tmp_path: Path) -> None:
    first = checkpoints.save(fake_save, tmp_path, rec(3), "pong")
    again = checkpoints.save(lambda p: (_ for _ in ()).throw(AssertionError("saved twice")), tmp_path, rec(3), "pong")
    assert again.path == first.path


def test_missing_directory(tmp_path: Path) -> None:
    assert checkpoints.latest(tmp_path / "none") is None
    assert checkpoints.prune(tmp_path / "none", 1) == []
