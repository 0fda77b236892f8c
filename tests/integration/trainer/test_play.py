"""`rljob play` on the checkpoint of a real (tiny) Pong run, the evaluation `rljob run` ends with, and refusals."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .conftest import TINY_PONG_ARGS, rljob, write_job

MEAN = re.compile(r"mean return ([-+]?\d+\.\d+) \+- (\d+\.\d+) over (\d+) games? \(min ([-+]?\d+), max ([-+]?\d+); (\d+) won, (\d+) lost")


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
    """Twenty seeded games by default, their figures in evaluation.json beside a GIF of one more game."""
    out, stdout = pong_run
    line = next(line for line in stdout.splitlines() if line.startswith("evaluation: "))
    match = MEAN.search(line)
    assert match and match.group(3) == "20", line
    assert "seeds 0-19" in line
    assert line.endswith(str(out / "evaluation.gif"))
    assert gif_frames(out / "evaluation.gif") > 1
    card = json.loads((out / "evaluation.json").read_text())
    assert f"evaluation results: {out / 'evaluation.json'}" in stdout
    assert card["games"] == len(card["returns"]) == len(card["lengths"]) == 20
    assert card["iteration"] == 2 and card["seed"] == 0
    # Pong's score is between -21 and 21; 400 greedy steps of an untrained policy lose a few points at most.
    assert all(-21.0 <= r <= 21.0 for r in card["returns"]) and all(n == 400 for n in card["lengths"])
    assert card["cut_off"] == 20
    assert card["mean_return"] == pytest.approx(sum(card["returns"]) / 20, abs=1e-3)
    assert float(match.group(1)) == pytest.approx(card["mean_return"], abs=0.01)
    assert card["wins"] + card["losses"] <= 20 and card["wins"] == sum(r > 0 for r in card["returns"])


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
    games = [line for line in lines if line.startswith("game ")]
    assert [line.split(":")[0] for line in games] == ["game 1 (seed 0)", "game 2 (seed 1)"], lines
    assert all(line.endswith("in 150 steps (cut off)") for line in games), lines
    returns = [float(line.split()[5]) for line in games]
    match = MEAN.search(played.stdout)
    assert match and match.group(3) == "2"
    assert float(match.group(1)) == pytest.approx(sum(returns) / 2, abs=0.01)
    assert "sampled actions" in played.stdout
    # 150 steps, every second one kept, plus the first screen.
    assert 2 <= gif_frames(gif) <= 76
    assert re.search(rf"GIF of one more game \(seed 0, return [-+]\d+, 76 frames\): {re.escape(str(gif))}", played.stdout)

    import torch

    policy = torch.jit.load(str(exported))
    logits = policy(torch.zeros((3, 4, 64, 64), dtype=torch.uint8))
    assert tuple(logits.shape) == (3, 6)  # Pong's six actions, for each of the three observations


def test_play_needs_no_ray(pong_run: tuple[Path, str], tmp_path: Path) -> None:
    """The trained checkpoint played where `ray` cannot be imported, as after `pip install 'rljob[play]'`."""
    out, _ = pong_run
    code = ("import sys\nsys.modules['ray'] = None\nfrom rljob.cli import main\ncode = main(sys.argv[1:])\n"
            "assert not [m for m in sys.modules if m.startswith('ray.')]\nsys.exit(code)")
    played = subprocess.run([sys.executable, "-c", code, "play", str(out), "--games", "2", "--max-steps", "100",
                             "--gif", str(tmp_path / "game.gif")],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path, env=dict(os.environ))
    assert played.returncode == 0, played.stdout + played.stderr
    match = MEAN.search(played.stdout)
    assert match and match.group(3) == "2"
    assert gif_frames(tmp_path / "game.gif") > 1


def test_play_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    missing = rljob("play", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"rljob play: error: {tmp_path / 'nowhere'}: no such file or directory"

    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    empty = rljob("play", str(tmp_path / "empty-run"))
    assert empty.returncode == 2
    assert len(empty.stderr.strip().splitlines()) == 1
    assert "no checkpoint here" in empty.stderr and "Traceback" not in empty.stderr
