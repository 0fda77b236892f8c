"""The worker StatefulSet: CPU pods that join the head and run env runners.

No Service governs it (its serviceName is empty, as the API allows): workers dial the head through the head's
Service, and Ray reaches each worker at the pod IP it registered with, so per-worker DNS names would serve
nobody. KubeRay's workers have none either. Without it the API server stores one object fewer per job, and the
controller manager no longer rewrites an EndpointSlice as each worker pod gets its IP.
"""
from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from . import pods
from .context import BuildContext
from .head import image
from .meta import labels, object_meta, pod_size_hash, type_meta


def worker_selector(job: RLTrainingJob) -> dict[str, str]:
    return {c.LABEL_JOB: job.name, c.LABEL_ROLE: c.ROLE_WORKER}


def workers_statefulset(job: RLTrainingJob, ctx: BuildContext) -> dict[str, Any]:
    spec = job.spec
    container = {
        "name": c.CONTAINER_NAME_WORKER,
        "image": image(job, ctx),
        "imagePullPolicy": spec.image_pull_policy,
        # Joins the head through its Service, retrying until it answers; rejoins when the head restarts.
        "command": ["rljob", "pod", "worker"],
        "env": [*pods.common_env(job), *pods.ray_env(spec.workers), *pods.pip_env(job)],
        "resources": pods.resources(spec.workers),
        "securityContext": pods.CONTAINER_SECURITY_CONTEXT,
        "readinessProbe": {"tcpSocket": {"port": c.PORT_NODE_MANAGER}, "periodSeconds": 5, "failureThreshold": 3},
        "volumeMounts": pods.base_mounts(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_labels = labels(job, c.ROLE_WORKER, **{c.LABEL_ROLE: c.ROLE_WORKER})
    return {
        **type_meta(c.STATEFULSET),
        "metadata": {
            **object_meta(job, names.workers(job.name), c.ROLE_WORKER, **{c.LABEL_ROLE: c.ROLE_WORKER}),
            "annotations": {c.ANNOTATION_POD_SIZE: pod_size_hash(job)},
        },
        "spec": {
            "replicas": spec.workers.replicas,
            # Parallel: workers are interchangeable; ordered start would only delay the cluster.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": worker_selector(job)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Always",
                    "automountServiceAccountToken": False,  # workers never talk to the Kubernetes API
                    "enableServiceLinks": False,
                    "securityContext": pods.POD_SECURITY_CONTEXT,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": pods.base_volumes(spec.workers),
                    **pods.scheduling(job, spec.workers),
                },
            },
        },
    }

