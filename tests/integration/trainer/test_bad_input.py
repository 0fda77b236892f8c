"""Bad input ends with exit code 2 and one clear line per problem, never a traceback, before Ray starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rljob.api import constants as C

from .conftest import rljob, write_job


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"entrypoint": {"recipe": "atari"}}, "spec.entrypoint.recipe"),
        ({"entrypoint": {"script": "missing.py"}}, "spec.entrypoint.script: 'missing.py' not found"),
        ({"entrypoint": {"recipe": "pong"}, "stop": {"envSteps": "lots"}}, "spec.stop.envSteps"),
        ({"entrypoint": {"recipe": "pong", "args": ["--env", "ALE/NoSuchGame-v5"]}},
         "not an installed Atari environment"),
        ({"entrypoint": {"recipe": "pong", "args": ["--lr", "fast"]}},
         "recipe pong: error: argument --lr: invalid positive float value: 'fast'"),
        ({"entrypoint": {"recipe": "cartpole", "args": ["--turbo"]}},
         "recipe cartpole: error: unrecognized arguments: --turbo"),
        ({"entrypoint": {"recipe": "pong", "args": ["--envs-per-env-runner", "5"]}},
         "the lean env runner steps its envs in two halves, so it needs an even number >= 2 (got 5)"),
        ({"entrypoint": {"recipe": "pong"}, "unknownField": 1}, "spec.unknownField: unknown field"),
    ],
)
def test_rljob_run_rejects(tmp_path: Path, spec: dict[str, object], expected: str) -> None:
    job = write_job(tmp_path / "job.yaml", spec)
    done = rljob("run", "-f", str(job), "--output", str(tmp_path / "out"), timeout=60)
    assert done.returncode == C.EXIT_CONFIG_ERROR, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert expected in done.stderr
    assert done.stderr.startswith("rljob run: error: ")
    assert not (tmp_path / "out").exists()


def test_a_gpu_share_without_a_gpu_is_refused_before_training(tmp_path: Path) -> None:
    """Known only once Ray has counted the cluster's GPUs; still one line and exit 2, never a hang."""
    job = write_job(tmp_path / "job.yaml", {"entrypoint": {"recipe": "pong", "args": ["--gpus-per-env-runner", "0.25"]},
                                            "workers": {"replicas": 0}})
    done = rljob("run", "-f", str(job), "--output", str(tmp_path / "out"), timeout=180)
    assert done.returncode == C.EXIT_CONFIG_ERROR, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "rljob run: error: --gpus-per-env-runner 0.25: the cluster has no GPU" in done.stderr


def test_missing_manifest(tmp_path: Path) -> None:
    done = rljob("run", "-f", str(tmp_path / "nope.yaml"), timeout=60)
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--num-env-runners", "many"], "argument --num-env-runners: invalid non-negative int value: 'many'"),
        (["--envs-per-env-runner", "9"], "needs an even number >= 2 (got 9)"),
    ],
)
def test_pod_driver_rejects_bad_recipe_args_before_connecting(tmp_path: Path, args: list[str], expected: str) -> None:
    spec = {"entrypoint": {"recipe": "pong", "args": args}}
    env = {**os.environ, C.ENV_JOB_NAME: "bad", C.ENV_JOB_SPEC: json.dumps(spec), "RAY_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "rljob.trainer.driver"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == C.EXIT_CONFIG_ERROR
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
