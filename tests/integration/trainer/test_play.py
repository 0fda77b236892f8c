"""`rljob play` on the checkpoint of a real (tiny) Pong run, the evaluation `rljob run` ends with, and refusals."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from .conftest import TINY_PONG_ARGS, rljob, write_job

MEAN = re.compile(r"mean return ([-+]?\d+\.\d+) over (\d+) episodes?")


def gif_frames(path: Path) -> int:
    with Image.open(path) as image:
        assert image.format == "GIF"
        return int(image.n_frames)


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two tiny Pong iterations; the end-of-training evaluation capped at 400 steps to keep it to seconds."""
    tmp = tmp_path_factory.mktemp("play")
    job = write_job(
        tmp / "pong.yaml",
        {"entrypoint": {"recipe": "pong", "args": TINY_PONG_ARGS}, "checkpoint": {"everyIterations": 1, "keep": 1}},
        name="play-pong",
    )
    out = tmp / "run"
    done = rljob("run", "-f", str(job), "--max-iterations", "2", "--output", str(out),
                 env={"RLJOB_EVAL_MAX_STEPS": "400"})
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_run_ends_with_an_evaluation_and_its_gif(pong_run: tuple[Path, str]) -> None:
    out, stdout = pong_run
    line = next(line for line in stdout.splitlines() if line.startswith("evaluation: "))
    match = MEAN.search(line)
    assert match and match.group(2) == "1", line
    # Pong's score is between -21 and 21; 400 greedy steps of an untrained policy lose a few points at most.
    assert -21.0 <= float(match.group(1)) <= 21.0
    assert line.endswith(str(out / "evaluation.gif"))
    assert gif_frames(out / "evaluation.gif") > 1


def test_play_a_run_folder(pong_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = pong_run
    gif = tmp_path / "game.gif"
    exported = tmp_path / "policy.pt"
    played = rljob("play", str(out), "--episodes", "2", "--max-steps", "150", "--sample", "--gif", str(gif),
                   "--export", "torchscript", "--export-path", str(exported), cwd=tmp_path)
    assert played.returncode == 0, played.stdout + played.stderr
    assert "Traceback" not in played.stderr
    lines = played.stdout.splitlines()
    # The run folder means its latest checkpoint, the one of iteration 2.
    assert lines[0] == f"pong checkpoint {out / 'checkpoints' / 'iteration-000002'} (iteration 2)"
    episodes = [line for line in lines if line.startswith("episode ")]
    assert len(episodes) == 2 and all(line.endswith("in 150 steps (cut off)") for line in episodes), lines
    returns = [float(line.split()[3]) for line in episodes]
    match = MEAN.search(played.stdout)
    assert match and match.group(2) == "2"
    assert float(match.group(1)) == pytest.approx(sum(returns) / 2, abs=0.01)
    assert "sampled actions" in played.stdout
    # 150 steps, every second one kept, plus the first screen.
    assert 2 <= gif_frames(gif) <= 76
    assert f"GIF of episode 1 (76 frames): {gif}" in played.stdout

    import torch

    policy = torch.jit.load(str(exported))
    logits = policy(torch.zeros((3, 4, 64, 64), dtype=torch.uint8))
    assert tuple(logits.shape) == (3, 6)  # Pong's six actions, for each of the three observations


def test_play_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    missing = rljob("play", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"rljob play: error: {tmp_path / 'nowhere'}: no such file or directory"

    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    empty = rljob("play", str(tmp_path / "empty-run"))
    assert empty.returncode == 2
    assert len(empty.stderr.strip().splitlines()) == 1
    assert "no checkpoint here" in empty.stderr and "Traceback" not in empty.stderr
