"""`rljob suspend | resume | scale`: the changes a live job accepts, without writing a kubectl patch.

Only `spec.suspend` and `spec.workers.replicas` are touched (both in the model's MUTABLE_FIELDS); the API server's
schema and CEL rules stay the judge of the values, and its refusal is printed as its one-line message.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..api import constants as c
from ..api.vocabulary import TERMINAL_PHASES
from .cluster import CliError, Cluster, add_cluster_flags, get_job, guarded


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suspend", help="remove a job's pods and keep the job (spec.suspend: true)",
                       description="Sets spec.suspend: the operator deletes the job's pods, keeps the job, its checkpoints "
                       "and its run budget (suspended time does not count). `rljob resume` starts a new attempt.")
    p.add_argument("name")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(suspend_cmd))

    p = sub.add_parser("resume", help="start a suspended job again, from its latest checkpoint (spec.suspend: false)")
    p.add_argument("name")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(resume_cmd))

    p = sub.add_parser("scale", help="change the number of worker pods of a job (spec.workers.replicas)")
    p.add_argument("name")
    p.add_argument("--workers", "--replicas", dest="workers", type=int, required=True, metavar="N",
                   help="worker pods the job should have")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(scale_cmd))



def _live(cluster: Cluster, name: str, verb: str) -> dict[str, Any]:
    """The job, unless it has ended: a finished job has no pods to remove, add or start again."""
    job = get_job(cluster, name)
    phase = (job.get("status") or {}).get("phase")
    if phase in TERMINAL_PHASES:
        raise CliError(f"cannot {verb} {c.SINGULAR} {name}: it has ended ({phase})")
    return job


def merge_patch(cluster: Cluster, name: str, spec: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
    """A merge patch of `spec`, pinned to the version read (a concurrent edit makes it fail, not be overwritten)."""
    body: dict[str, Any] = {"spec": spec}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return cluster.call(f"patch {c.SINGULAR} {name}", cluster.custom().patch_namespaced_custom_object,
                        c.GROUP, c.VERSION, cluster.namespace, c.PLURAL, name, body)


def _set_suspend(cluster: Cluster, name: str, value: bool) -> int:
    verb, done = ("suspend", "suspended") if value else ("resume", "resumed")
    job = _live(cluster, name, verb)
    if bool((job.get("spec") or {}).get("suspend")) == value:
        print(f"{c.SINGULAR}.{c.GROUP}/{name} {done} (no change)")
        return 0
    merge_patch(cluster, name, {"suspend": value}, job["metadata"].get("resourceVersion"))
    print(f"{c.SINGULAR}.{c.GROUP}/{name} {done}")
    return 0


def suspend_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    return _set_suspend(cluster, args.name, True)


def resume_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    return _set_suspend(cluster, args.name, False)


def scale_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    job = _live(cluster, args.name, "scale")
    current = ((job.get("spec") or {}).get("workers") or {}).get("replicas")
    if current == args.workers:
        print(f"{c.SINGULAR}.{c.GROUP}/{args.name} scaled (no change: {args.workers} workers)")
        return 0
    merge_patch(cluster, args.name, {"workers": {"replicas": args.workers}}, job["metadata"].get("resourceVersion"))
    print(f"{c.SINGULAR}.{c.GROUP}/{args.name} scaled to {args.workers} workers")
    return 0
