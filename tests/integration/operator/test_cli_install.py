"""`pip install rljob` without extras, for real: the wheel in a fresh virtualenv drives the test control plane as
`rljob` and as `kubectl rljob`, holds neither Ray nor torch, and `rljob run` says in one line what to install.

Needs PyPI for the base install's dependencies (pydantic, pyyaml, kubernetes); pip's cache under
${RLJOB_CACHE:-~/.cache/rljob}/pip makes later runs fast.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.tooling import ROOT, build_wheel

CACHE = Path(os.environ.get("RLJOB_CACHE") or Path.home() / ".cache" / "rljob")
# Distributions that only the extras bring (numpy with them): a base install that pulled one in is no longer small.
EXTRAS_ONLY = ("ray", "torch", "kopf", "prometheus-client", "gymnasium", "ale-py", "opencv-python-headless",
               "matplotlib", "tensorboardx", "pillow", "numpy")


@pytest.fixture(scope="module")
def cli_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh virtualenv with the rljob wheel installed from it, no extras."""
    wheel = build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist"))
    venv = tmp_path_factory.mktemp("cli-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--cache-dir", str(CACHE / "pip"), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"pip install {wheel.name} failed:\n{done.stdout}\n{done.stderr}"
    return venv / "bin"


def command(cli_bin: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs one of the venv's commands the way a shell would: the venv's bin first on PATH, not the test's Python."""
    base = {k: v for k, v in (env or os.environ).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    base["PATH"] = f"{cli_bin}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, env=base, cwd=ROOT)


def test_the_base_install_holds_no_extras_package(cli_bin: Path) -> None:
    listed = command(cli_bin, "python", "-c",
                     "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))")
    installed = {name.strip().lower().replace("_", "-") for name in listed.stdout.split()}
    assert {"rljob", "kubernetes", "pydantic", "pyyaml"} <= installed, installed
    assert not installed & set(EXTRAS_ONLY)


def test_help_as_rljob_and_as_the_kubectl_plugin(cli_bin: Path) -> None:
    rljob = command(cli_bin, "rljob", "--help")
    assert rljob.returncode == 0 and rljob.stdout.startswith("usage: rljob ")
    plugin = command(cli_bin, "kubectl-rljob", "--help")
    assert plugin.returncode == 0 and plugin.stdout.startswith("usage: kubectl rljob ")
    for name in ("submit", "list", "status", "logs", "fetch", "dashboard", "delete", "suspend", "play", "run"):
        assert name in rljob.stdout and name in plugin.stdout


def test_cluster_commands_against_the_control_plane(
    cli_bin: Path, control_plane: ControlPlane, crd_installed: None, namespace: str
) -> None:
    env = control_plane.env()  # KUBECONFIG, and kubectl on PATH for the plugin
    ns = ("-n", namespace)
    submitted = command(cli_bin, "rljob", "submit", "--recipe", "cartpole", "--name", "bare", *ns, env=env)
    assert submitted.returncode == 0, submitted.stderr
    listed = command(cli_bin, "rljob", "list", *ns, "-o", "name", env=env)
    assert listed.returncode == 0 and listed.stdout == "rltrainingjob.rljob.dev/bare\n", listed.stderr
    plugin = command(cli_bin, "kubectl", "rljob", "list", *ns, "-o", "name", env=env)
    assert plugin.returncode == 0 and plugin.stdout == listed.stdout, plugin.stderr
    status = command(cli_bin, "rljob", "status", "bare", *ns, env=env)
    assert status.returncode == 0 and "bare" in status.stdout, status.stderr
    for control in ("suspend", "resume"):
        done = command(cli_bin, "rljob", control, "bare", *ns, env=env)
        assert done.returncode == 0, done.stderr
    # No volume, no head pod: refusals in one line each, no traceback of a missing module.
    fetched = command(cli_bin, "rljob", "fetch", "bare", *ns, env=env)
    assert fetched.returncode == 1 and "has no checkpoint volume" in fetched.stderr and fetched.stderr.count("\n") == 1
    logs = command(cli_bin, "rljob", "logs", "bare", *ns, env=env)
    assert "Traceback" not in logs.stderr, logs.stderr
    deleted = command(cli_bin, "rljob", "delete", "bare", *ns, env=env)
    assert deleted.returncode == 0, deleted.stderr


def test_run_and_play_say_which_extra_to_install(cli_bin: Path, tmp_path: Path) -> None:
    run = command(cli_bin, "rljob", "run", "-f", "examples/pong-local.yaml")
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("rljob run: error: this command needs the trainer extra (")
    assert run.stderr.endswith("pip install 'rljob[trainer]'\n")
    play = command(cli_bin, "rljob", "play", str(tmp_path))
    assert play.returncode == 1 and play.stderr.count("\n") == 1
    assert play.stderr.endswith("pip install 'rljob[play]'\n")
