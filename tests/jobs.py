"""Job manifests for tests, built from a minimal valid one."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def minimal_job(name: str = "demo", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "rljob.dev/v1alpha1",
        "kind": "RLTrainingJob",
        "metadata": {"name": name, "namespace": "ns1"},
        "spec": {"entrypoint": {"recipe": "pong"}},
    }
    body["spec"].update(copy.deepcopy(spec))
    return body
