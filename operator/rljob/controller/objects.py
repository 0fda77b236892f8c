"""How the controller names and reads any Kubernetes object: its key, its resourceVersion, its owners.

Every stream, cache and queue keys a job (and a job's children, by the job they belong to) the same way,
and reads the same metadata the same way, here.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import constants as c

Key = tuple[str, str]
"""(namespace, name) of a job: what the work queue, the caches and the progress reader are keyed by."""


def resource_version(meta: Mapping[str, Any]) -> int:
    """An object's resourceVersion as a number (0 when absent or not a number), to tell newer from older copies.

    Kubernetes calls resourceVersions opaque; the API servers this operator talks to (etcd's revisions) give
    increasing integers, which is what comparing copies of one object from one watch relies on.
    """
    try:
        return int(meta.get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def controlling_owner_uid(meta: Mapping[str, Any]) -> str:
    """The uid of the object's controlling owner, whatever its kind (a worker pod's StatefulSet); '' for none."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The job instance a child belongs to: its controller-uid label, else its controlling owner's uid if a job."""
    uid = (meta.get("labels") or {}).get(c.LABEL_CONTROLLER_UID)
    if uid:
        return str(uid)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == c.KIND and ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None
