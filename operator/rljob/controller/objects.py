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


def key_of(job: Mapping[str, Any]) -> Key:
    """A job's own key, from its body."""
    meta = job.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def job_key(child: Mapping[str, Any]) -> Key | None:
    """The key of the job a child belongs to, from its rljob.dev/job label; None for an object of no job."""
    meta = child.get("metadata") or {}
    job = (meta.get("labels") or {}).get(c.LABEL_JOB)
    return (meta.get("namespace", ""), job) if job else None


def resource_version(obj: Mapping[str, Any]) -> int:
    """An object's resourceVersion as a number (0 when absent or not a number), to tell newer from older copies.

    Kubernetes calls resourceVersions opaque; the API servers this operator talks to (etcd's revisions) give
    increasing integers, which is what comparing copies of one object from one watch relies on.
    """
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def controlling_owner_uid(meta: Mapping[str, Any]) -> str:
    """The uid of the object's controlling owner, whatever its kind (a worker pod's StatefulSet); '' for none."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def owning_job_uid(meta: Mapping[str, Any]) -> str | None:
    """The job instance a child belongs to: its controller-uid label, else its controlling owner's uid if that is a
    job; None when neither says (a child of an operator version that set neither)."""
    uid = (meta.get("labels") or {}).get(c.LABEL_CONTROLLER_UID)
    if uid:
        return str(uid)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == c.KIND and ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None
