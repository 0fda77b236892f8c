"""The head Service: the stable name workers join and the operator scrapes.

Headless, as KubeRay's head Service is by default: the name resolves to the head pod itself, so no cluster IP is
allocated (the API server hands those out one at a time, a few per second: in a burst of jobs it held every job's
pods back) and NetworkPolicies see the head's own address, with no Service translation in between. Not-ready
addresses are published, so workers find the head as soon as it has an IP and wait for its GCS themselves.
"""
from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from .head import HEAD_PORTS
from .meta import object_meta, type_meta


def head_selector(job: RLTrainingJob) -> dict[str, str]:
    return {c.LABEL_JOB: job.name, c.LABEL_ROLE: c.ROLE_HEAD}


def head_service(job: RLTrainingJob) -> dict[str, Any]:
    return {
        **type_meta(c.SERVICE),
        "metadata": object_meta(job, names.head_service(job.name), c.ROLE_HEAD),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": head_selector(job),
            "ports": [
                {"name": c.PORT_NAMES[p], "port": p, "targetPort": p, "protocol": "TCP"} for p in HEAD_PORTS
            ],
        },
    }
