"""Checkpoint layout on the checkpoint volume: discovery, atomic saving and pruning.

    <dir>/iteration-000012/            an RLlib checkpoint (Algorithm.save_to_path)
    <dir>/iteration-000012/rljob.json  what the driver needs to resume: counters RLlib does not restore

A checkpoint is written under a temporary name and renamed into place, so a head pod killed in the
middle of saving leaves a partial directory that discovery ignores, never a corrupt "latest".
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .progress import ProgressRecord, rfc3339

log = logging.getLogger(__name__)

META_FILE = "rljob.json"
PREFIX = "iteration-"
PARTIAL_PREFIX = ".partial-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A finished checkpoint and the counters to continue from."""

    path: Path
    iteration: int
    env_steps: int
    time_total_s: float
    recipe: str
    attempt: int | None = None
    saved_at: str | None = None


def checkpoint_name(iteration: int) -> str:
    return f"{PREFIX}{iteration:06d}"


def iteration_of(path: str | Path | None) -> int | None:
    """The iteration in a checkpoint folder's name, for reports that only carry the path."""
    match = _NAME.match(Path(path).name) if path else None
    return int(match.group(1)) if match else None


def read_info(path: Path) -> CheckpointInfo | None:
    """The checkpoint at `path`, or None when it is incomplete or not ours."""
    match = _NAME.match(path.name)
    meta = path / META_FILE
    if not match or not path.is_dir() or not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
        return CheckpointInfo(
            path=path,
            iteration=int(data["iteration"]),
            env_steps=int(data.get("env_steps", 0)),
            time_total_s=float(data.get("time_total_s", 0.0)),
            recipe=str(data.get("recipe", "")),
            attempt=data.get("attempt"),
            saved_at=data.get("saved_at"),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring checkpoint %s: unreadable %s (%s)", path, META_FILE, exc)
        return None


def list_checkpoints(directory: Path) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    found = [info for p in directory.iterdir() if (info := read_info(p)) is not None]
    return sorted(found, key=lambda c: c.iteration)


def latest(directory: Path) -> CheckpointInfo | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save(save_to_path: Callable[[str], Any], directory: Path, record: ProgressRecord, recipe: str) -> CheckpointInfo:
    """Saves through `save_to_path` (the algorithm's) into a temporary folder, then renames it."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(record.iteration)
    if read_info(final) is not None:
        return read_info(final)  # type: ignore[return-value]
    partial = directory / f"{PARTIAL_PREFIX}{final.name}"
    shutil.rmtree(partial, ignore_errors=True)
    save_to_path(str(partial.resolve()))  # RLlib takes a relative path for a URI without a scheme
    info = CheckpointInfo(
        path=final,
        iteration=record.iteration,
        env_steps=record.env_steps,
        time_total_s=record.time_total_s,
        recipe=recipe,
        attempt=record.attempt,
        saved_at=rfc3339(record.timestamp),
    )
    meta = {k: v for k, v in asdict(info).items() if k != "path"}
    (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return info


def prune(directory: Path, keep: int) -> list[Path]:
    """Deletes all but the `keep` newest checkpoints and any leftover partial ones."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for stale in directory.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    for info in list_checkpoints(directory)[: -keep if keep > 0 else None]:
        shutil.rmtree(info.path, ignore_errors=True)
        removed.append(info.path)
    return removed
