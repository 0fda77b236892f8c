"""Helpers for the trainer tests: real Ray and RLlib on the CPU, through the entry points users run.

Every test here is marked ``trainer``. They need no GPU and no Kubernetes; each run uses tiny
settings (one env runner, a tiny network, small batches) so the whole set fits in a few minutes on
two cores.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.trainer)


def rljob(*args: str, cwd: Path | None = None, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the `rljob` command as users do, in a subprocess (exit codes and stderr are part of the contract)."""
    code = "import sys; from rljob.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False,
    )


def write_job(path: Path, spec: dict[str, object], name: str = "test-job") -> Path:
    doc = {"apiVersion": "rljob.dev/v1alpha1", "kind": "RLTrainingJob", "metadata": {"name": name}, "spec": spec}
    path.write_text(yaml.safe_dump(doc))
    return path


# Pong on a CPU in seconds: one env runner with two envs (the lean runner steps them in halves), a tiny network, 64-step batches, and
# iterations that end as soon as 64 steps were sampled.
TINY_PONG_ARGS = [
    "--model", "tiny", "--num-env-runners", "1", "--envs-per-env-runner", "2",
    "--train-batch-size", "64", "--rollout-fragment-length", "32",
    "--min-iteration-seconds", "0", "--min-iteration-steps", "64",
    "--circular-buffer-num-batches", "1", "--broadcast-interval", "1", "--seed", "1",
]


