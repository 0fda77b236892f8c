"""`rljob logs NAME --ray`: Ray's own logs from the head and every worker pod of a job, as `kubectl ray log` does.

The driver's log is the head container's output, but what went wrong in Ray (a raylet killed for memory, a worker
process that crashed, the GCS) is written under the session's log folder in each pod's /tmp, which only an exec
reaches. For each pod the command packs that folder with the image's own Python (forward.fetch_folder, kubectl exec
when kubectl is installed, else the client's exec), unpacks it under DEST/<pod>/ray, and saves the container's log
beside it as DEST/<pod>/<container>.log (and the previous container's, after a restart). A pod whose copy fails is
reported and the others are still copied.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import constants as c
from .cluster import CliError, Cluster, explain
from .forward import fetch_folder, unpack_archive

# `ray start` runs without --temp-dir (rljob.trainer.pod), so Ray writes under /tmp/ray, which is the pods' /tmp
# emptyDir (resources.pods); session_latest links to the current session.
RAY_LOG_DIR = f"{c.TMP_MOUNT}/ray/session_latest/logs"
RAY_SUBDIR = "ray"
CONTAINERS = {c.ROLE_HEAD: c.CONTAINER_NAME_HEAD, c.ROLE_WORKER: c.CONTAINER_NAME_WORKER}


@dataclass(frozen=True)
class JobPod:
    """One of the job's Ray pods, as far as copying its logs goes."""

    name: str
    container: str
    running: bool  # an exec needs a running container: a finished pod has its container log only
    restarted: bool  # the container ran before: its previous log is there too


@dataclass
class PodLogs:
    """What was copied from one pod, for the summary line."""

    pod: str
    ray_files: int = 0
    container_logs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why something is missing: said, not an error
    problems: list[str] = field(default_factory=list)  # what failed


# The seams to the cluster: a pod folder packed as tar.gz (None: no such folder), and a container's log.
FetchFolder = Callable[[str, str, str], bytes | None]
ReadLog = Callable[[str, str, bool], str]


def pod_folder(dest: Path, pod: str) -> Path:
    """DEST/<pod>. Names come from the API server (DNS subdomains); one that is not a plain name is refused, so
    that no name can place files outside DEST."""
    if not pod or pod.startswith(".") or "/" in pod or "\\" in pod:
        raise CliError(f"refusing pod name {pod!r}: not a plain file name")
    return dest / pod


def job_pods(items: list[Any]) -> list[JobPod]:
    """The job's head and worker pods (kubernetes client V1Pod objects) in name order."""
    pods = []
    for pod in sorted(items, key=lambda p: p.metadata.name):
        role = (pod.metadata.labels or {}).get(c.LABEL_ROLE)
        if role not in CONTAINERS:
            continue
        container = CONTAINERS[role]
        statuses = [s for s in (pod.status.container_statuses or []) if s.name == container]
        running = pod.status.phase == "Running" and bool(statuses) and statuses[0].state is not None \
            and statuses[0].state.running is not None
        restarted = bool(statuses) and (statuses[0].restart_count or 0) > 0
        pods.append(JobPod(pod.metadata.name, container, running, restarted))
    return pods


def collect(pods: list[JobPod], dest: Path, fetch: FetchFolder, read_log: ReadLog) -> list[PodLogs]:
    """Copies every pod's logs under DEST/<pod>; each pod's failures are recorded in its summary, not raised."""
    out = []
    for pod in pods:
        got = PodLogs(pod.name)
        out.append(got)
        try:
            folder = pod_folder(dest, pod.name)
        except CliError as exc:
            got.problems.append(str(exc))
            continue
        for previous in (False, True) if pod.restarted else (False,):
            target = folder / f"{pod.container}{'.previous' if previous else ''}.log"
            try:
                text = read_log(pod.name, pod.container, previous)
            except CliError as exc:
                got.problems.append(str(exc))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            got.container_logs.append(target.name)
        if not pod.running:
            got.notes.append("not running: Ray's logs went with its container")
            continue
        try:
            archive = fetch(pod.name, pod.container, RAY_LOG_DIR)
        except CliError as exc:
            got.problems.append(str(exc))
            continue
        if archive is None:
            got.notes.append(f"no {RAY_LOG_DIR} (Ray not started yet)")
            continue
        try:
            got.ray_files = unpack_archive(archive, folder / RAY_SUBDIR)
        except CliError as exc:
            got.problems.append(str(exc))
    return out


def summary_line(got: PodLogs, dest: Path) -> str:
    """One line per pod: what is where, and what is missing and why."""
    parts = []
    if got.ray_files:
        parts.append(f"{got.ray_files} Ray log file(s) in {dest / got.pod / RAY_SUBDIR}")
    if got.container_logs:
        parts.append("container log " + ", ".join(str(dest / got.pod / name) for name in got.container_logs))
    parts += got.notes + [f"failed: {p}" for p in got.problems]
    return f"{got.pod}: " + "; ".join(parts or ["nothing copied"])


def ray_logs_cmd(cluster: Cluster, args: argparse.Namespace, job: dict[str, Any]) -> int:
    """Copies the logs of every pod the job has now; exit 1 when a pod's copy failed (the others are kept)."""
    from kubernetes.client.exceptions import ApiException

    name = job["metadata"]["name"]
    selector = f"{c.LABEL_JOB}={name},{c.LABEL_ROLE} in ({c.ROLE_HEAD},{c.ROLE_WORKER})"
    if job["metadata"].get("uid"):
        selector += f",{c.LABEL_CONTROLLER_UID}={job['metadata']['uid']}"  # not a deleted namesake's leftovers
    core = cluster.core()
    listed = cluster.call(f"list pods of {name}", core.list_namespaced_pod, cluster.namespace, label_selector=selector)
    pods = job_pods(listed.items)
    if not pods:
        phase = (job.get("status") or {}).get("phase") or "Pending"
        raise CliError(f"{c.SINGULAR} {name} has no pods ({phase}): Ray's logs live in its pods and went with them")
    dest: Path = args.dest or Path(f"{name}-ray-logs")

    def read_log(pod: str, container: str, previous: bool) -> str:
        try:
            return str(core.read_namespaced_pod_log(pod, cluster.namespace, container=container, previous=previous))
        except ApiException as exc:
            raise CliError(f"log of {pod}{' (previous)' if previous else ''}: {explain(exc, cluster)}") from None

    def fetch(pod: str, container: str, remote_dir: str) -> bytes | None:
        return fetch_folder(cluster, args, pod, remote_dir, container)

    results = collect(pods, dest, fetch, read_log)
    for got in results:
        print(summary_line(got, dest), file=sys.stderr if got.problems else sys.stdout, flush=True)
    return 1 if any(got.problems for got in results) else 0
