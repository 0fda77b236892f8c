"""Per-job identity for the driver: it may read and patch this one job's status, nothing else."""
from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from .meta import object_meta


def service_account(job: RLTrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(job, names.service_account(job.name), c.COMPONENT_RBAC),
        # Only pods that ask for the token (the head) get it.
        "automountServiceAccountToken": False,
    }


def progress_role(job: RLTrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": object_meta(job, names.progress_role(job.name), c.COMPONENT_RBAC),
        "rules": [
            {
                "apiGroups": [c.GROUP],
                "resources": [f"{c.PLURAL}/status"],
                "resourceNames": [job.name],
                "verbs": ["get", "patch"],
            }
        ],
    }


def progress_role_binding(job: RLTrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": object_meta(job, names.progress_role(job.name), c.COMPONENT_RBAC),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.progress_role(job.name)},
        "subjects": [{"kind": "ServiceAccount", "name": names.service_account(job.name), "namespace": job.namespace}],
    }
