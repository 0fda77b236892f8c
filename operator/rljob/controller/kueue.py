"""The operator's calls for Kueue: the Workload's writes a job controller owns, and the flavors' placement.

Kueue decides (quota, preemption, flavors); the operator carries its decisions out on the job, as Kueue's own
job integrations do: it creates the Workload, starts the job once admitted, stops it when evicted and then
releases the quota reservation, and marks the Workload Finished when the job ends.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone

from .. import resources
from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from ..resources import workload as wl
from . import conditions as cond
from .kube import ApiException, Kube, object_path
from .observe import WorkloadObservation

log = logging.getLogger(__name__)


def workload_path(namespace: str, job: str) -> str:
    return object_path(*c.WORKLOAD, namespace, names.workload(job))


class Flavors:
    """ResourceFlavors by name, read when a job is admitted; kept, since they rarely change and the head and
    workers of every admitted job need them."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._placements: dict[str, wl.Placement] = {}

    async def placement(self, name: str) -> wl.Placement:
        if name not in self._placements:
            body = await self.kube.request("GET", f"/apis/{c.KUEUE_API_VERSION}/resourceflavors/{name}")
            self._placements[name] = wl.flavor_placement(body)
        return self._placements[name]

    async def admitted(self, job: RLTrainingJob, workload: WorkloadObservation) -> RLTrainingJob:
        """The job with the node labels and tolerations of the flavors Kueue assigned to each pod set."""
        placements: dict[str, wl.Placement] = {}
        for pod_set, flavors in workload.flavors:
            placements[pod_set] = wl.merge_placements([await self.placement(f) for f in flavors])
        return wl.admitted(job, placements)


async def ensure(kube: Kube, ctx: resources.BuildContext, job: RLTrainingJob) -> None:
    obj = wl.workload(job, ctx, active=not job.spec.suspend)
    _, created = await kube.create(obj)
    if created:
        log.info("created Workload %s/%s for Kueue queue %s", job.namespace, obj["metadata"]["name"], wl.queue_name(job))


async def set_active(kube: Kube, job: RLTrainingJob, active: bool) -> None:
    await kube.merge_patch(workload_path(job.namespace, job.name), {"spec": {"active": active}})


async def replace(kube: Kube, job: RLTrainingJob, workload: WorkloadObservation | None) -> None:
    await kube.delete(*c.WORKLOAD, job.namespace, names.workload(job.name),
                      uid=workload.uid if workload is not None else "")


async def write_status(kube: Kube, job: RLTrainingJob, build: str, reason: str, message: str) -> None:
    """Read, amend and write the Workload's status (`build`: "finished" or "released"); on a conflict the next
    reconcile, woken by the Workload's own event, tries again."""
    path = workload_path(job.namespace, job.name)
    try:
        body: Mapping = await kube.request("GET", path)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    now = cond.timestamp(datetime.now(timezone.utc))
    patch = (wl.finished_patch if build == "finished" else wl.released_patch)(body, reason, message, now)
    await kube.merge_patch(path + "/status", patch)
