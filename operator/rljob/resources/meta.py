"""Labels, ownerReferences and metadata shared by every child: added in this one place."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import constants as c
from ..api.models import RLTrainingJob


def type_meta(kind: tuple[str, str]) -> dict[str, str]:
    """An object's apiVersion and kind, from the (apiVersion, kind) pair constants names it by: the operator creates,
    watches and deletes each kind of child by that same pair."""
    api_version, name = kind
    return {"apiVersion": api_version, "kind": name}


def selector_string(labels: dict[str, str]) -> str:
    """Equality labels as a label selector's text (`kubectl -l`, a list's labelSelector, a scale's selector)."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def selector_labels(job: RLTrainingJob) -> dict[str, str]:
    """The labels that find all of a job's children (and NetworkPolicies select its pods by)."""
    return {c.LABEL_JOB: job.name}


def labels(job: RLTrainingJob, component: str, **extra: str) -> dict[str, str]:
    out = {
        c.LABEL_APP_NAME: c.APP_NAME,
        c.LABEL_APP_INSTANCE: job.name,
        c.LABEL_APP_COMPONENT: component,
        c.LABEL_APP_PART_OF: c.APP_NAME,
        c.LABEL_APP_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_JOB: job.name,
        c.LABEL_EXPERIMENT: job.spec.experiment,
    }
    if job.metadata.uid:
        out[c.LABEL_CONTROLLER_UID] = job.metadata.uid
    out.update(extra)
    return out


def pod_size_hash(job: RLTrainingJob) -> str:
    """What of head and workers may change while the job is suspended and shapes its running pods: their resources
    and affinity (replicas scale in place). Not nodeSelector and tolerations, to which Kueue adds its flavors' own
    when it admits the job: the pods' placement is the queue's to decide then."""
    parts = {role: {k: v for k, v in node.wire().items() if k not in ("replicas", "nodeSelector", "tolerations")}
             for role, node in (("head", job.spec.head), ("workers", job.spec.workers))}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def owner_reference(job: RLTrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": job.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(job: RLTrainingJob, name: str, component: str, **extra_labels: str) -> dict[str, Any]:
    """Metadata for a child. Without a uid (`rljob render` of a file) there is no owner to reference yet."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": job.namespace,
        "labels": labels(job, component, **extra_labels),
    }
    if job.metadata.uid:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta
