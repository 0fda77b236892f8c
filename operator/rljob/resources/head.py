"""The head pod: Ray's GCS plus the training driver, whose exit decides the attempt's outcome."""
from __future__ import annotations

import json
from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from . import pods
from .context import BuildContext
from .meta import object_meta, pod_size_hash, type_meta

HEAD_PORTS = (c.PORT_GCS, c.PORT_DASHBOARD, c.PORT_CLIENT, c.PORT_RAY_METRICS, c.PORT_METRICS)


def image(job: RLTrainingJob, ctx: BuildContext) -> str:
    return job.spec.image or ctx.default_image


def head_pod(job: RLTrainingJob, ctx: BuildContext, attempt: int, coordination_deadline: str) -> dict[str, Any]:
    """`coordination_deadline` (RFC 3339) bounds the driver's wait for workers to the job's timeout."""
    spec = job.spec
    env = pods.common_env(job) + pods.ray_env(spec.head) + [
        {"name": c.ENV_ATTEMPT, "value": str(attempt)},
        {"name": c.ENV_EXPECTED_WORKERS, "value": str(spec.workers.replicas)},
        {"name": c.ENV_COORDINATION_DEADLINE, "value": coordination_deadline},
        {"name": c.ENV_CHECKPOINT_DIR, "value": c.CHECKPOINT_MOUNT},
        {"name": c.ENV_METRICS_PORT, "value": str(c.PORT_METRICS)},
        {"name": c.ENV_JOB_SPEC, "value": json.dumps(spec.wire(), sort_keys=True, separators=(",", ":"))},
    ]
    mounts = [*pods.base_mounts(), {"name": pods.VOLUME_CHECKPOINTS, "mountPath": c.CHECKPOINT_MOUNT}]
    volumes = [*pods.base_volumes(spec.head), checkpoint_volume(job)]
    if spec.source and spec.source.config_map:
        env.append({"name": c.ENV_SOURCE_DIR, "value": c.SOURCE_MOUNT})
        mounts.append({"name": pods.VOLUME_SOURCE, "mountPath": c.SOURCE_MOUNT, "readOnly": True})
        volumes.append({"name": pods.VOLUME_SOURCE, "configMap": {"name": spec.source.config_map.name}})
    container = {
        "name": c.CONTAINER_NAME_HEAD,
        "image": image(job, ctx),
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["rljob", "pod", "head"],
        "env": env,
        "ports": pods.container_ports(*HEAD_PORTS),
        "resources": pods.resources(spec.head),
        "securityContext": pods.CONTAINER_SECURITY_CONTEXT,
        # Ready once the GCS accepts connections: that is when workers can join.
        "readinessProbe": {"tcpSocket": {"port": c.PORT_GCS}, "periodSeconds": 5, "failureThreshold": 3},
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        **type_meta(c.POD),
        "metadata": {
            **object_meta(job, names.head_pod(job.name, attempt), c.ROLE_HEAD,
                          **{c.LABEL_ROLE: c.ROLE_HEAD, c.LABEL_ATTEMPT: str(attempt)}),
            "annotations": {c.ANNOTATION_POD_SIZE: pod_size_hash(job)},
        },
        "spec": {
            # Never: the driver's exit code is the attempt's outcome; retries are the operator's (backoffLimit).
            "restartPolicy": "Never",
            # No Kubernetes credentials in a job: the namespace's default ServiceAccount, its token not mounted. The
            # operator reads the driver's progress from the head over HTTP (port 9400) instead.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pods.POD_SECURITY_CONTEXT,
            "terminationGracePeriodSeconds": 60,
            "containers": [container],
            "volumes": volumes,
            **pods.scheduling(job, spec.head),
        },
    }


def checkpoint_volume(job: RLTrainingJob) -> dict[str, Any]:
    ckpt = job.spec.checkpoint
    if ckpt and ckpt.claim_name:
        return {"name": pods.VOLUME_CHECKPOINTS, "persistentVolumeClaim": {"claimName": ckpt.claim_name}}
    if ckpt and ckpt.size:
        return {"name": pods.VOLUME_CHECKPOINTS, "persistentVolumeClaim": {"claimName": names.checkpoint_claim(job.name)}}
    return {"name": pods.VOLUME_CHECKPOINTS, "emptyDir": {}}
