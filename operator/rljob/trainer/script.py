"""A user script entrypoint: `python SCRIPT ARGS...` in the same environment as the driver.

The script connects with `ray.init(address="auto")`, which finds the cluster through RAY_ADDRESS,
so an RLlib script written for any Ray cluster runs unchanged; its exit code is the job's outcome.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ConfigError
from .interrupts import StopRequest

log = logging.getLogger(__name__)


def resolve_script(script: str, source_dir: Path) -> Path:
    """The script's path: relative to the source directory, or absolute (a script in the image)."""
    path = Path(script)
    if not path.is_absolute():
        path = source_dir / path
    if not path.is_file():
        where = f" (looked in {source_dir})" if not Path(script).is_absolute() else ""
        raise ConfigError(f"spec.entrypoint.script: {script!r} not found{where}")
    return path


def script_command(path: Path, args: Sequence[str], python: str = sys.executable) -> list[str]:
    return [python, str(path), *args]


def run_script(path: Path, args: Sequence[str], env: Mapping[str, str], stop: StopRequest) -> int:
    """Runs the script to completion, passing each stop signal on to it exactly once.

    The script gets its own session so that a terminal's Ctrl-C reaches it once, through us, instead
    of twice (directly and forwarded), which would abort it instead of letting it save.
    """
    command = script_command(path, args)
    log.info("running script: %s", " ".join(command))
    child = subprocess.Popen(command, env=dict(env), cwd=str(path.parent), start_new_session=True)
    forwarded = False
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # a second Ctrl-C
            child.send_signal(signal.SIGINT)
        if stop.signum is not None and not forwarded:
            child.send_signal(stop.signum)
            forwarded = True
    if code < 0:  # killed by a signal: report it the way a shell would
        code = 128 - code
    log.info("script exited with code %d", code)
    return code


def script_env(base: Mapping[str, str], ray_address: str | None) -> dict[str, str]:
    env = dict(base)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


