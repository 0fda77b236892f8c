"""The words of the RLTrainingJob API: phases, condition types, reasons and event types, as types.

Every module that sets or reads them imports them from here, and the CRD's descriptions are derived
from them, so `kubectl explain`, the operator and the tests cannot disagree about a spelling.
"""
from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

W = TypeVar("W", bound=StrEnum)


class Phase(StrEnum):
    """Where a job is in its life (status.phase)."""

    PENDING = "Pending"
    INITIALIZING = "Initializing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


TERMINAL_PHASES = (Phase.SUCCEEDED, Phase.FAILED)


class ConditionType(StrEnum):
    """The conditions in status.conditions."""

    CLUSTER_READY = "ClusterReady"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class Reason(StrEnum):
    """Why a job is where it is (status.reason, a condition's reason, and the reason of the event that said so)."""

    ACCEPTED = "Accepted"
    STARTING = "Starting"
    CLUSTER_STARTING = "ClusterStarting"
    CLUSTER_READY = "ClusterReady"
    DRIVER_RUNNING = "DriverRunning"
    DRIVER_SUCCEEDED = "DriverSucceeded"
    SUCCEEDED = "Succeeded"
    DRIVER_FAILED = "DriverFailed"
    ATTEMPT_FAILED = "AttemptFailed"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    CLUSTER_COORDINATION_TIMEOUT = "ClusterCoordinationTimeout"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    WORKERS_NOT_READY = "WorkersNotReady"
    # ClusterReady=False while a pod of the cluster cannot start; the pod's own reason and message are in the message.
    UNSCHEDULABLE = "Unschedulable"  # the scheduler finds no node (PodScheduled=False)
    CONTAINERS_NOT_STARTING = "ContainersNotStarting"  # a container waits in an error (ImagePullBackOff, ...)
    WORKERS_SCALED = "WorkersScaled"
    CHILDREN_RESTORED = "ChildrenRestored"  # a Service or NetworkPolicy of a live job was deleted: created again
    CLUSTER_RECOVERED = "ClusterRecovered"
    CLUSTER_DEGRADED = "ClusterDegraded"
    CREATE_FAILED = "CreateFailed"
    WAITING_FOR_OLD_CHILDREN = "WaitingForOldChildren"
    VALIDATION_FAILED = "ValidationFailed"
    NETWORK_ISOLATION_REQUIRED = "NetworkIsolationRequired"
    QUEUED = "Queued"  # waiting for Kueue to admit the whole Ray cluster
    ADMITTED = "Admitted"  # Kueue admitted it: the cluster starts
    EVICTED = "Evicted"  # Kueue took the admission back (preemption, a stopped queue): pods removed, queued again


def known(enum: type[W], value: str) -> W | str:
    """`value` as the member of `enum` it spells, else `value` itself.

    Statuses are also written by others (a newer operator with words this one lacks, a person with kubectl): reading
    such a word must neither fail nor lose it, so that the job is still served and a write keeps what was there."""
    try:
        return enum(value)
    except ValueError:
        return value


def words(enum: type[StrEnum]) -> str:
    """`Pending, Initializing, ... or Suspended`: for descriptions."""
    values = [m.value for m in enum]
    return ", ".join(values[:-1]) + " or " + values[-1]


class EventType(StrEnum):
    """The type of an Event the operator posts on a job (core/v1 Event.type)."""

    NORMAL = "Normal"
    WARNING = "Warning"


class KueueCondition(StrEnum):
    """The condition types of a Kueue Workload the operator reads and writes (Kueue's words, spelled once here)."""

    QUOTA_RESERVED = "QuotaReserved"
    ADMITTED = "Admitted"
    EVICTED = "Evicted"
    FINISHED = "Finished"
