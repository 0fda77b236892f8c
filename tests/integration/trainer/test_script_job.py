"""A script entrypoint through `rljob run`: it reaches the local Ray with ray.init(address="auto")."""
from __future__ import annotations

from pathlib import Path

from .conftest import REPO, rljob, write_job

CHECK_SCRIPT = '''
import os, sys
import ray

ray.init(address="auto")
print("cpus", ray.cluster_resources().get("CPU"))
print("args", sys.argv[1:])
print("checkpoint dir", os.environ.get("RLJOB_CHECKPOINT_DIR"))
sys.exit(int(sys.argv[1]))
'''


def test_script_runs_against_the_local_cluster_and_its_exit_code_is_the_outcome(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "check.py").write_text(CHECK_SCRIPT)
    job = write_job(source / "job.yaml", {"entrypoint": {"script": "check.py", "args": ["7"]}})
    done = rljob("run", "-f", str(job), "--output", str(tmp_path / "out"))
    assert done.returncode == 7, done.stdout + done.stderr
    assert "args ['7']" in done.stdout
    assert "cpus " in done.stdout and "cpus None" not in done.stdout
    assert f"checkpoint dir {tmp_path / 'out' / 'checkpoints'}" in done.stdout


def test_the_example_rllib_script_runs_unchanged(tmp_path: Path) -> None:
    """examples/custom-script/pong_impala.py (IMPALA, Tune, a stop dict) in its smoke setting."""
    job = write_job(
        tmp_path / "job.yaml",
        {"entrypoint": {"script": "pong_impala.py", "args": ["--smoke", "--num-env-runners", "1"]}},
    )
    source = REPO / "examples" / "custom-script"
    done = rljob("run", "-f", str(job), "--source-dir", str(source), "--output", str(tmp_path / "out"), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "done: iteration 1" in done.stdout
    assert any((tmp_path / "out" / "checkpoints" / "pong-impala").iterdir())
