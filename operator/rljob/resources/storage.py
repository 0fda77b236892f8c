"""The checkpoint claim, when the job asks the operator to create one (checkpoint.size)."""
from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from .meta import object_meta, type_meta


def checkpoint_claim(job: RLTrainingJob) -> dict[str, Any] | None:
    ckpt = job.spec.checkpoint
    if not ckpt or not ckpt.size:
        return None
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],  # only the head mounts it
        "resources": {"requests": {"storage": str(ckpt.size)}},
    }
    if ckpt.storage_class_name:
        spec["storageClassName"] = ckpt.storage_class_name
    return {
        **type_meta(c.CLAIM),
        "metadata": object_meta(job, names.checkpoint_claim(job.name), c.COMPONENT_STORAGE),
        "spec": spec,
    }
