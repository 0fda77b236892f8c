"""The checkpoint reader pod `rljob fetch` starts: it mounts a job's checkpoint claim read-only and sleeps.

The command copies checkpoints out of it with `tar` over exec, then deletes it. A pod rather than a
copy through the head: the head is gone once a job has finished, and the claim outlives it. The pod
is the CLI's, not the operator's: it is owned by the job (deleting the job deletes it, should the
CLI die before cleaning up) but does not carry the operator's managed-by label, so the reconciler
never takes it for a head or a worker. It keeps the job's label, so the job's NetworkPolicies
isolate it like the job's own pods; it needs no network (exec goes through the kubelet), no
service account token, and it ends itself after `lifetime_s` whatever happens to the CLI.
"""
from __future__ import annotations

import re
import secrets
from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from . import pods
from .meta import owner_reference, type_meta

COMPONENT_FETCH = "checkpoint-reader"
MANAGED_BY_CLI = "rljob-cli"
CONTAINER_NAME = "reader"
DEFAULT_LIFETIME_S = 900
# tar of a few checkpoints: no more is needed, and a quota-limited namespace still admits it.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
_MAX_NAME = 63
# The project's runtime image, REGISTRY/runtime:VERSION-VARIANT (hack/images.sh): its operator image sits beside it.
_RUNTIME_IMAGE = re.compile(r"^(?P<registry>(?:[^@]+/)?)runtime:(?P<version>[^:/@]+)-(?:cpu|cuda)$")


def checkpoint_claim_name(job: RLTrainingJob) -> str | None:
    """The claim the head mounts for checkpoints: the job's own or an existing one; None for an emptyDir."""
    ckpt = job.spec.checkpoint
    if ckpt and ckpt.claim_name:
        return ckpt.claim_name
    if ckpt and ckpt.size:
        return names.checkpoint_claim(job.name)
    return None


def reader_image(job_image: str) -> str:
    """The operator's image from the registry the job's runtime image came from: sh, tar and sleep in a few hundred MB,
    where the runtime image has gigabytes to pull onto a node that may not hold it. A job on an image of its own
    (any other name) gets the operator image of this release from the project's registry.
    """
    m = _RUNTIME_IMAGE.match(job_image)
    return f"{m['registry']}operator:{m['version']}" if m else c.OPERATOR_IMAGE


def reader_pod_name(job: str, suffix: str | None = None) -> str:
    """`<job>-fetch-<5 random chars>`: several fetches of one job may run at once."""
    suffix = suffix or secrets.token_hex(3)[:5]
    return f"{job[: _MAX_NAME - len(suffix) - 7]}-fetch-{suffix}"


def reader_pod(
    job: RLTrainingJob,
    image: str,
    *,
    name: str | None = None,
    node_name: str | None = None,
    lifetime_s: int = DEFAULT_LIFETIME_S,
) -> dict[str, Any]:
    """The reader pod for `job`; raises ValueError when the job keeps its checkpoints in no claim.

    `node_name` pins it to the node of a running head: a ReadWriteOnce volume attached there can be
    mounted by a second pod on the same node only.
    """
    claim = checkpoint_claim_name(job)
    if claim is None:
        raise ValueError(f"{job.name} keeps its checkpoints in the head pod's emptyDir (spec.checkpoint has neither size nor claimName)")
    if not job.metadata.uid:
        raise ValueError(f"{job.name} has no uid: the reader pod must be owned by a job read from the cluster")
    spec = job.spec
    scheduling = pods.scheduling(job, spec.head)  # where the head could run, the volume can be reached
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": lifetime_s + 60,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 0,  # sleep has nothing to save
        # The head wrote the files as uid 1000, group 1000: read them as the same user, changing no ownership.
        "securityContext": {**pods.POD_SECURITY_CONTEXT, "fsGroupChangePolicy": "OnRootMismatch"},
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["sleep", str(lifetime_s)],
                "resources": RESOURCES,
                "securityContext": pods.CONTAINER_SECURITY_CONTEXT,
                "volumeMounts": [{"name": pods.VOLUME_CHECKPOINTS, "mountPath": c.CHECKPOINT_MOUNT, "readOnly": True}],
            }
        ],
        "volumes": [{"name": pods.VOLUME_CHECKPOINTS, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        **scheduling,
    }
    if node_name:
        pod_spec["nodeName"] = node_name
        pod_spec.pop("nodeSelector", None)
        pod_spec.pop("affinity", None)
    return {**type_meta(c.POD), "metadata": _reader_meta(job, name or reader_pod_name(job.name)), "spec": pod_spec}


def _reader_meta(job: RLTrainingJob, name: str) -> dict[str, Any]:
    """The CLI's pod, not the operator's: labelled as the job's (its selectors find it) but managed by the CLI, and
    owned by the job without controlling it, so the garbage collector takes it with the job and no controller adopts
    it."""
    owner = {**owner_reference(job), "controller": False, "blockOwnerDeletion": False}
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": {
            c.LABEL_APP_NAME: c.APP_NAME,
            c.LABEL_APP_INSTANCE: job.name,
            c.LABEL_APP_COMPONENT: COMPONENT_FETCH,
            c.LABEL_APP_PART_OF: c.APP_NAME,
            c.LABEL_APP_MANAGED_BY: MANAGED_BY_CLI,
            c.LABEL_JOB: job.name,
        },
        "ownerReferences": [owner],
    }
