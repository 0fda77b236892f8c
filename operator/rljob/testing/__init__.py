"""Test support for rljob: a real local Kubernetes control plane (see :mod:`rljob.testing.controlplane`).

The names below are loaded lazily so that ``python -m rljob.testing.controlplane`` does not import the
module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "K8S_VERSION",
    "ControlPlane",
    "ControlPlaneError",
    "MissingBinariesError",
    "find_bin_dir",
    "start_control_plane",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("rljob.testing.controlplane"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
