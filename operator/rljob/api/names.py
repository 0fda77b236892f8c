"""Deterministic child names: the operator finds what it created by name, so restarts make no duplicates."""
from __future__ import annotations


def head_pod(job: str, attempt: int) -> str:
    return f"{job}-head-{attempt}"


def head_service(job: str) -> str:
    return f"{job}-head"


def workers(job: str) -> str:
    """The worker StatefulSet; its pods are NAME-workers-<ordinal>."""
    return f"{job}-workers"


DRIVER_SUFFIX = "-driver"


def service_account(job: str) -> str:
    """The previous version's per-job ServiceAccount (its driver's identity); jobs now hold no credentials, and the
    operator deletes this from jobs created before, on upgrade."""
    return f"{job}{DRIVER_SUFFIX}"


def progress_role(job: str) -> str:
    """The previous version's per-job Role and RoleBinding (the driver's status patch); removed on upgrade."""
    return f"{job}-progress-reporter"


def checkpoint_claim(job: str) -> str:
    return f"{job}-checkpoints"


def network_policy(job: str, purpose: str) -> str:
    return f"{job}-{purpose}"


def workload(job: str) -> str:
    """The Kueue Workload that admits the job's Ray cluster as one unit."""
    return f"rltrainingjob-{job}"
