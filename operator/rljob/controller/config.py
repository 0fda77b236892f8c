"""The operator's configuration: everything `rljob operator`'s flags decide, checked once and never changed.

The command line builds one `OperatorConfig` before kopf starts, so a bad value is an error at the prompt (or in the
pod's log) rather than a start-up handler that kopf retries forever; the `Operator` is built from it and reads it
only. Nothing else configures the operator: no module holds settings that code elsewhere sets.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..resources import BuildContext
from .credentials import Credentials
from .leader import LeaseSettings
from .progress import ProgressSettings

MAX_PORT = 65535


@dataclass(frozen=True)
class OperatorConfig:
    # How the operator reaches the API server. Read by the command before kopf starts, so that a broken kubeconfig
    # is reported at once; the files it names (a rotated token) are read again whenever the server answers 401.
    credentials: Credentials
    # What every job's children are built with: the default image, the operator's namespace (its pods may scrape
    # the heads), the DNS pods jobs may query, the cluster's own ranges, the isolation rule and the scrapers.
    build: BuildContext = field(default_factory=BuildContext)
    # The namespaces served, exact names or glob patterns, as kopf takes them; empty: every namespace.
    namespaces: tuple[str, ...] = ()
    # Jobs reconciled at once: the work queue's workers.
    concurrency: int = 16
    # The Prometheus endpoint's port; None: no metrics are kept or served.
    metrics_port: int | None = None
    # The port of /healthz and /readyz; None: no probes are served.
    health_port: int | None = None
    # Leader election among replicas through a Lease; None: this process is the only one and acts at once.
    lease: LeaseSettings | None = None
    # Admit jobs labelled kueue.x-k8s.io/queue-name through Kueue Workloads, which are then watched beside the pods.
    kueue: bool = False
    # How often and how the running heads' progress is read.
    progress: ProgressSettings = field(default_factory=ProgressSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.concurrency < 1:
            problems.append(f"--concurrency must be at least 1, not {self.concurrency}")
        for flag, port in (("--metrics-port", self.metrics_port), ("--health-port", self.health_port)):
            if port is not None and not 0 < port <= MAX_PORT:
                problems.append(f"{flag} must be 0 (off) or a port up to {MAX_PORT}, not {port}")
        if self.metrics_port is not None and self.metrics_port == self.health_port:
            problems.append(f"--metrics-port and --health-port are both {self.metrics_port}")
        if any(not ns for ns in self.namespaces):
            problems.append("--namespace must not be empty")
        for cidr in self.build.cluster_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                problems.append(f"--cluster-cidr {cidr}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
