"""What `submit` and `render` check before anything reaches a cluster: the namespace a dry run shows, and
recipe arguments (plain strings to the CRD, so only the recipe's own parser can refuse a typo)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rljob.cli import main
from tests.builders import minimal_job

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: team-a
  context: {cluster: c, user: u, namespace: team-a}
- name: team-b
  context: {cluster: c, user: u, namespace: team-b}
- name: plain
  context: {cluster: c, user: u}
current-context: team-a
"""


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def dry_run_namespaces(capsys: pytest.CaptureFixture[str], *flags: str) -> set[str]:
    assert main(["submit", "--recipe", "cartpole", "--name", "dry", "--dry-run", *flags]) == 0
    return {doc["metadata"]["namespace"] for doc in yaml.safe_load_all(capsys.readouterr().out)}


def test_dry_run_uses_the_current_contexts_namespace(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run_namespaces(capsys) == {"team-a"}


def test_dry_run_follows_context_then_namespace_flags(kubeconfig: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run_namespaces(capsys, "--context", "team-b") == {"team-b"}
    assert dry_run_namespaces(capsys, "--context", "plain") == {"default"}
    assert dry_run_namespaces(capsys, "--context", "team-b", "-n", "mine") == {"mine"}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('hi')\n")
    assert main(["submit", "--entry", "train.py", "--source-dir", str(tmp_path / "src"), "--name", "dry", "--dry-run",
                 "--kubeconfig", str(kubeconfig)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "RLTrainingJob"]
    assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}


def test_dry_run_without_any_kubeconfig_says_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert dry_run_namespaces(capsys) == {"default"}


def test_submit_refuses_arguments_the_recipe_does_not_take(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Not even a dry run: the refusal comes before the cluster would be contacted.
    assert main(["submit", "--recipe", "pong", "--name", "x", "--", "--bogus", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "rljob: spec.entrypoint.args: recipe pong: error: unrecognized arguments: --bogus 1\n"
    assert main(["submit", "--recipe", "cartpole", "--dry-run", "--", "--lr", "fast"]) == 2
    assert "argument --lr: invalid positive float value: 'fast'" in capsys.readouterr().err


def test_the_refusal_comes_before_any_cluster_is_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["submit", "--recipe", "pong", "--name", "x", "--", "--bogus", "1"]) == 2
    assert capsys.readouterr().err == "rljob: spec.entrypoint.args: recipe pong: error: unrecognized arguments: --bogus 1\n"
    assert main(["submit", "--recipe", "pong", "--name", "x"]) == 2  # valid: now the missing kubeconfig is the problem
    assert capsys.readouterr().err.startswith("rljob: no usable kubeconfig")


def test_submit_passes_a_scripts_arguments_through(kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train.py").write_text("")
    assert main(["submit", "--entry", "train.py", "--source-dir", str(tmp_path), "--dry-run", "--", "--bogus", "1"]) == 0
    job = list(yaml.safe_load_all(capsys.readouterr().out))[-1]
    assert job["spec"]["entrypoint"]["args"] == ["--bogus", "1"]


def write_job(path: Path, args: list[str], recipe: str = "pong") -> Path:
    path.write_text(yaml.safe_dump(minimal_job("j", entrypoint={"recipe": recipe, "args": args})))
    return path


def test_render_refuses_arguments_the_recipe_does_not_take(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_job(tmp_path / "job.yaml", ["--bogus", "1"])
    assert main(["render", "-f", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{path}: spec.entrypoint.args: recipe pong: error: unrecognized arguments: --bogus 1\n"
    assert main(["render", "-f", str(write_job(tmp_path / "ok.yaml", ["--lr", "0.001"]))]) == 0
    assert "kind: Pod" in capsys.readouterr().out


# Run in a fresh interpreter in which the trainer's heavy dependencies cannot be imported, as in an install with
# only the `operator` extra: the checks must work there.
WITHOUT_TRAINER_DEPS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('ray', 'torch', 'gymnasium', 'ale_py', 'numpy', 'tensorboardX'):
            raise ImportError('not installed: ' + name)
sys.meta_path.insert(0, Block())
from rljob.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["submit", "--recipe", "pong", "--dry-run", "--", "--bogus", "1"], ["render", "-f", "JOB"]])
def test_the_check_needs_no_trainer_dependencies(tmp_path: Path, command: list[str]) -> None:
    job = write_job(tmp_path / "job.yaml", ["--bogus", "1"])
    argv = [str(job) if a == "JOB" else a for a in command]
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRAINER_DEPS, *argv], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("recipe pong: error: unrecognized arguments: --bogus 1")
    assert len(done.stderr.strip().splitlines()) == 1
