"""A user script entrypoint: `python SCRIPT ARGS...` in the same environment as the driver.

The script connects with `ray.init(address="auto")`, which finds the cluster through RAY_ADDRESS,
so an RLlib script written for any Ray cluster runs unchanged; its exit code is the job's outcome.
"""
from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..api.constants import SOURCE_ARCHIVE_KEY
from .errors import ConfigError
from .interrupts import StopRequest

log = logging.getLogger(__name__)


def unpack_source(source_dir: Path, dest: Path) -> Path:
    """The directory to run scripts from: `source_dir`, or a writable copy with the archive unpacked.

    `rljob submit` packs nested or binary source trees into one ConfigMap key (SOURCE_ARCHIVE_KEY),
    because ConfigMap keys are flat file names; the mounted ConfigMap is read-only, so the tree is
    unpacked (with the other keys copied beside it) into `dest`.
    """
    archive = source_dir / SOURCE_ARCHIVE_KEY
    if not archive.is_file():
        return source_dir
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")  # refuses absolute paths, '..' and devices
            else:  # pragma: no cover - Python before 3.10.12/3.11.4
                for member in tar.getmembers():
                    if member.name.startswith("/") or ".." in Path(member.name).parts:
                        raise tarfile.TarError(f"unsafe path {member.name!r}")
                tar.extractall(dest)
    except (tarfile.TarError, OSError) as exc:
        raise ConfigError(f"source: cannot unpack {SOURCE_ARCHIVE_KEY}: {exc}") from None
    for item in source_dir.iterdir():
        if item.name != SOURCE_ARCHIVE_KEY and not item.name.startswith("..") and item.is_file():
            target = dest / item.name
            if not target.exists():
                shutil.copyfile(item, target)
    log.info("unpacked %s into %s", archive, dest)
    return dest


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


