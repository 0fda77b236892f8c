"""What the commands that compute need beyond the base install, and the one line that says how to get it.

`pip install rljob` is the cluster client alone (submit, list, status, logs, fetch, dashboard); training on
this machine needs the `trainer` extra (Ray, torch, ALE), watching a policy play only the `play` extra (torch
and ALE, no Ray). A command checks for its modules before importing any of them, so a missing package is one
line naming the extra to install, not a traceback from deep inside an import. The extras named here are
pyproject.toml's (a unit test holds them together).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping

# Importable module -> the distribution that provides it, for the modules each extra's commands import.
TRAINER: Mapping[str, str] = {
    "ray": "ray[rllib]",
    "torch": "torch",
    "gymnasium": "gymnasium",
    "ale_py": "ale-py",
    "cv2": "opencv-python-headless",
    "matplotlib": "matplotlib",
    "tensorboardX": "tensorboardX",
    "PIL": "pillow",
}
PLAY: Mapping[str, str] = {
    "torch": "torch",
    "gymnasium": "gymnasium",
    "ale_py": "ale-py",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
}
EXTRAS: Mapping[str, Mapping[str, str]] = {"trainer": TRAINER, "play": PLAY}


def missing(modules: Mapping[str, str]) -> list[str]:
    """The distributions whose modules cannot be found here, without importing anything."""
    return [dist for module, dist in modules.items() if importlib.util.find_spec(module) is None]


def missing_extra(extra: str) -> str | None:
    """None when the extra's modules are all here, else the line to print: what is missing and what to install."""
    absent = missing(EXTRAS[extra])
    if not absent:
        return None
    return f"this command needs the {extra} extra ({', '.join(absent)} missing): pip install 'rljob[{extra}]'"
