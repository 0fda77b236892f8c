"""Pure builders: RLTrainingJob → Kubernetes objects (plain dicts). No I/O; the operator and
`rljob render` call the same functions.
"""
from __future__ import annotations

from typing import Any

from ..api.models import RLTrainingJob
from .context import BuildContext
from .head import head_pod
from .network import network_policies
from .services import head_service
from .storage import checkpoint_claim
from .workers import workers_statefulset

__all__ = [
    "BuildContext",
    "build",
    "head_pod",
    "static_children",
    "workers_statefulset",
]


def static_children(job: RLTrainingJob, ctx: BuildContext) -> list[dict[str, Any]]:
    """Children that live as long as the job, whatever the attempt: storage, network, the head's Service."""
    out: list[dict[str, Any]] = []
    claim = checkpoint_claim(job)
    if claim:
        out.append(claim)
    out.extend(network_policies(job, ctx))
    out.append(head_service(job))
    return out


def build(job: RLTrainingJob, ctx: BuildContext, attempt: int = 1, coordination_deadline: str = "") -> list[dict[str, Any]]:
    """Every child of one attempt, in creation order (network and storage before the pods that use them)."""
    return [
        *static_children(job, ctx),
        workers_statefulset(job, ctx),
        head_pod(job, ctx, attempt, coordination_deadline),
    ]
