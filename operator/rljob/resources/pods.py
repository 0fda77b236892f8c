"""What head and worker pods share: security contexts, volumes, environment, resources."""
from __future__ import annotations

import json
import math
from typing import Any

from ..api import constants as c
from ..api.models import HeadSpec, RLTrainingJob
from ..api.quantity import parse_quantity

# Pod Security "restricted": non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp.
RUN_AS_USER = 1000
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}

VOLUME_SHM = "shm"
VOLUME_TMP = "tmp"
VOLUME_CHECKPOINTS = "checkpoints"
VOLUME_SOURCE = "source"


def resources(node: HeadSpec) -> dict[str, Any]:
    """Requests equal limits: Guaranteed QoS, so a busy node does not evict a training run first."""
    amounts: dict[str, Any] = {"cpu": str(node.cpu), "memory": str(node.memory)}
    if node.gpus:
        amounts[c.GPU_RESOURCE] = str(node.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def ray_env(node: HeadSpec) -> list[dict[str, Any]]:
    """The pod's size as plain integers, so Ray is told exactly what the pod may use."""
    env = [
        {"name": c.ENV_CPU, "value": str(max(1, math.ceil(parse_quantity(node.cpu))))},
        {"name": c.ENV_MEMORY, "value": str(int(parse_quantity(node.memory)))},
        {"name": c.ENV_GPUS, "value": str(node.gpus)},
        {"name": c.ENV_SHM_BYTES, "value": str(int(parse_quantity(node.shm_size)))},
    ]
    if not node.gpus:
        # A CPU pod on a GPU node must not see the node's GPUs through the NVIDIA runtime's defaults.
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    return env


def common_env(job: RLTrainingJob) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": c.ENV_JOB_NAME, "value": job.name},
        {"name": c.ENV_NAMESPACE, "value": job.namespace},
        {"name": c.ENV_HEAD_ADDRESS, "value": f"{job.name}-head"},
        {"name": "HOME", "value": c.CONTAINER_HOME},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
    ]
    env.extend(e.wire() for e in job.spec.env)
    return env


def pip_env(job: RLTrainingJob) -> list[dict[str, Any]]:
    if not job.spec.pip_packages:
        return []
    return [{"name": c.ENV_PIP_PACKAGES, "value": json.dumps(list(job.spec.pip_packages))}]


def base_volumes(node: HeadSpec) -> list[dict[str, Any]]:
    return [
        {"name": VOLUME_SHM, "emptyDir": {"medium": "Memory", "sizeLimit": str(node.shm_size)}},
        {"name": VOLUME_TMP, "emptyDir": {}},
    ]


def base_mounts() -> list[dict[str, Any]]:
    return [
        {"name": VOLUME_SHM, "mountPath": c.SHM_MOUNT},
        {"name": VOLUME_TMP, "mountPath": c.TMP_MOUNT},
    ]


def scheduling(job: RLTrainingJob, node: HeadSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.node_selector:
        out["nodeSelector"] = dict(node.node_selector)
    if node.tolerations:
        out["tolerations"] = [t.wire() for t in node.tolerations]
    if node.affinity:
        out["affinity"] = node.affinity
    if job.spec.image_pull_secrets:
        out["imagePullSecrets"] = [s.wire() for s in job.spec.image_pull_secrets]
    return out


def container_ports(*ports: int) -> list[dict[str, Any]]:
    return [{"name": c.PORT_NAMES[p], "containerPort": p, "protocol": "TCP"} for p in ports]
