"""`rljob completion`: the generated bash script loads in a real bash and completes from the parser."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rljob.cli import build_parser, main
from rljob.cli.completion import bash_script, describe

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

# Completes the words given as arguments as bash would after a Tab, and prints the candidates one a line.
COMPLETE = """
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_rljob
printf '%s\\n' "${COMPREPLY[@]}"
"""


def complete(script: Path, *words: str) -> list[str]:
    done = subprocess.run(["bash", "-c", COMPLETE, "complete", str(script), *words], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "rljob.bash"
    path.write_text(bash_script(build_parser()))
    return path


def test_the_script_sources_and_registers_the_function(script: Path) -> None:
    done = subprocess.run(["bash", "-c", f'source "{script}" && complete -p rljob'], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "complete -o default -F _rljob rljob"


def test_subcommand_names(script: Path) -> None:
    assert complete(script, "rljob", "su") == ["submit", "suspend"]
    everything = complete(script, "rljob", "")
    assert {"list", "status", "scale", "resume", "dashboard", "tensorboard", "completion"} <= set(everything)
    assert everything == [cmd.name for cmd in describe(build_parser())[1]]


def test_options_and_their_values(script: Path) -> None:
    assert complete(script, "rljob", "list", "--wa") == ["--watch"]
    assert complete(script, "rljob", "list", "-o", "") == ["wide", "json", "yaml", "name"]
    assert complete(script, "rljob", "status", "-n", "ns", "--output", "y") == ["yaml"]
    assert complete(script, "rljob", "scale", "--w") == ["--workers"]
    assert complete(script, "rljob", "submit", "--recipe", "") == ["pong", "cartpole"]
    assert complete(script, "rljob", "recipes", "p") == ["pong"]
    assert complete(script, "rljob", "completion", "") == ["bash", "zsh"]
    assert complete(script, "rljob", "submit", "--workers", "") == []  # a number: nothing to offer


def test_job_names_come_from_rljob_list(tmp_path: Path) -> None:
    """The script asks `rljob list -o name` with the namespace flags already typed; a stand-in shows what it asked."""
    fake = tmp_path / "rljob"
    fake.write_text('#!/bin/sh\necho "$*" > "$(dirname "$0")/asked"\n'
                    'printf "rltrainingjob.rljob.dev/pong-1\\nrltrainingjob.rljob.dev/cart\\n"\n')
    fake.chmod(0o755)
    script = tmp_path / "rljob.bash"
    script.write_text(bash_script(build_parser()))
    assert complete(script, str(fake), "status", "-n", "team-a", "po") == ["pong-1"]
    assert (tmp_path / "asked").read_text().strip() == "list -o name -n team-a"
    assert complete(script, str(fake), "delete", "pong-1", "") == ["pong-1", "cart"]


def test_zsh_script_loads_bash_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    assert "bashcompinit" in out and "complete -o default -F _rljob rljob" in out
    if shutil.which("zsh"):  # where zsh is installed, the script must also load there
        done = subprocess.run(["zsh", "-c", out + "\nwhence -w _rljob"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "function" in done.stdout, done.stderr
