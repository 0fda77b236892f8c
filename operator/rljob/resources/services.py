"""The head Service: the stable address workers join and the operator scrapes."""
from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from .head import HEAD_PORTS
from .meta import object_meta


def head_selector(job: RLTrainingJob) -> dict[str, str]:
    return {c.LABEL_JOB: job.name, c.LABEL_ROLE: c.ROLE_HEAD}


def head_service(job: RLTrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(job, names.head_service(job.name), c.ROLE_HEAD),
        "spec": {
            "type": "ClusterIP",
            "selector": head_selector(job),
            "ports": [
                {"name": c.PORT_NAMES[p], "port": p, "targetPort": p, "protocol": "TCP"} for p in HEAD_PORTS
            ],
        },
    }
