"""`rljob run`: Pong for two iterations then a resumed run that continues from iteration 2; Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import TINY_PONG_ARGS, rljob, write_job


def progress(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]


def test_pong_runs_checkpoints_and_resumes(tmp_path: Path) -> None:
    job = write_job(
        tmp_path / "pong.yaml",
        {
            "entrypoint": {"recipe": "pong", "args": TINY_PONG_ARGS},
            "stop": {"episodeReturnMean": 21},
            "checkpoint": {"everyIterations": 1, "keep": 2},
        },
        name="tiny-pong",
    )
    # The default output, runs/<name>/ relative to the working directory, as `make demo` uses it.
    out = tmp_path / "runs" / "tiny-pong"

    first = rljob("run", "-f", str(job), "--max-iterations", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    records = progress(out)
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(isinstance(r["env_steps"], int) and r["env_steps"] > 0 for r in records)
    assert records[-1]["checkpoint"] == str(out / "checkpoints" / "iteration-000002")
    # Where each iteration's time went: the runner's sampling, the learner's updates (APPO: asynchronous, so not
    # necessarily in every iteration), and the checkpoint saved after it.
    assert all(r["timers"]["iteration_s"] > 0 and r["timers"]["sample_s"] > 0 for r in records), records
    assert all(r["timers"]["checkpoint_s"] > 0 for r in records)
    assert any(r["timers"].get("learn_s", 0) > 0 for r in records)
    assert (out / "checkpoints" / "iteration-000002" / "rljob.json").is_file()
    assert (out / "reward_curve.png").stat().st_size > 0
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "stopped: ran 2 iterations (--max-iterations)" in first.stdout

    again = rljob("run", "-f", str(job), "--max-iterations", "1", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a run" in again.stderr and "--resume" in again.stderr

    resumed = rljob("run", "-f", str(job), "--resume", "--max-iterations", "1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming after iteration 2" in resumed.stdout
    records = progress(out)
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert int(records[2]["env_steps"]) > int(records[1]["env_steps"])  # the lifetime count continues
    assert float(records[2]["time_total_s"]) > float(records[1]["time_total_s"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iteration-000002", "iteration-000003"]


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    job = write_job(
        tmp_path / "cartpole.yaml",
        {"entrypoint": {"recipe": "cartpole", "args": ["--train-batch-size", "200", "--num-epochs", "1",
                                                      "--num-env-runners", "1", "--min-iteration-seconds", "1"]},
         "checkpoint": {"everyIterations": 1000}},
        name="interrupted",
    )
    out = tmp_path / "out"
    code = "import sys; from rljob.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "run", "-f", str(job), "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    deadline = time.monotonic() + 180
    while not (out / "progress.jsonl").is_file() or not (out / "progress.jsonl").read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "stopped: interrupted" in stdout
    last = progress(out)[-1]
    assert (out / "checkpoints" / f"iteration-{int(last['iteration']):06d}" / "rljob.json").is_file()


def test_ppo_times_its_learner_and_its_value_pass(tmp_path: Path) -> None:
    """PPO learns in the driver between rounds of sampling: each iteration has both, and GAE's value pass."""
    job = write_job(tmp_path / "ppo.yaml", {"entrypoint": {"recipe": "pong", "args": [*TINY_PONG_ARGS, "--algorithm", "PPO",
                                                                                      "--minibatch-size", "32"]}},
                    name="tiny-ppo")
    out = tmp_path / "out"
    done = rljob("run", "-f", str(job), "--max-iterations", "2", "--output", str(out), env={"RLJOB_EVAL_EPISODES": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    for record in progress(out):
        timers = record["timers"]
        assert timers["learn_s"] > 0 and timers["value_pass_s"] > 0 and timers["sample_s"] > 0, record
        assert timers["learn_s"] + timers["value_pass_s"] + timers["sample_s"] < timers["iteration_s"]
