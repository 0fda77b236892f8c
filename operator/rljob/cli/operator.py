"""`rljob operator`: runs the controller (kopf) against the current kubeconfig or in-cluster config."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import socket
import sys
from typing import TYPE_CHECKING

from ..api import constants as c

if TYPE_CHECKING:
    from ..controller.config import OperatorConfig
    from ..controller.credentials import Credentials


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("operator", help="run the RLTrainingJob operator", description=(
        "Run the operator: watch RLTrainingJobs and build their Ray clusters. Uses the in-cluster service "
        "account when run in a pod, else $KUBECONFIG or ~/.kube/config."))
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch only this namespace (repeatable; glob patterns allowed)")
    p.add_argument("--default-image", default=os.environ.get(c.ENV_DEFAULT_IMAGE, c.DEFAULT_IMAGE),
                   help=f"runtime image for jobs that name none (env {c.ENV_DEFAULT_IMAGE}; default %(default)s)")
    p.add_argument("--operator-namespace", default=os.environ.get(c.ENV_OPERATOR_NAMESPACE, "rljob-system"),
                   help="namespace the operator runs in: job NetworkPolicies admit scrapes from it (default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=_env_port("RLJOB_METRICS_PORT", 8080),
                   help="Prometheus metrics port, 0 to disable (default %(default)s)")
    p.add_argument("--health-port", type=int, default=8081,
                   help="port of the liveness (/healthz) and readiness (/readyz) endpoints, 0 to disable (default %(default)s)")
    p.add_argument("--no-cluster-scan", action="store_true",
                   help="make no cluster-scoped list or watch, for an operator with Roles only: refuse namespace "
                   "patterns, which are served by cluster-wide watches (exact --namespace names are watched each on "
                   "its own, with or without this flag)")
    p.add_argument("--leader-elect", action="store_true",
                   help="elect a leader among several replicas through a Lease in --operator-namespace: only the "
                   "holder reconciles; the others stand by (without it the operator acts alone)")
    p.add_argument("--leader-election-id", default="rljob-operator", metavar="NAME",
                   help="name of the leader-election Lease (default %(default)s)")
    net = p.add_argument_group("job networks")
    net.add_argument("--dns-namespace", default="kube-system", help="namespace of the cluster's DNS pods (default %(default)s)")
    net.add_argument("--dns-selector", default="k8s-app=kube-dns", metavar="K=V,...",
                     help="labels of the cluster's DNS pods, the only ones jobs may query on port 53; empty: any "
                     "destination on port 53 (NodeLocal DNSCache, host resolvers) (default %(default)s)")
    net.add_argument("--cluster-cidr", action="append", default=[], metavar="CIDR",
                     help="the cluster's pod and Service ranges (repeatable): network.allowInternetEgress leaves them out")
    net.add_argument("--metrics-scrape-namespace", action="append", default=[], metavar="NS",
                     help="a namespace (your Prometheus') whose pods may scrape the job heads' metrics ports, like the "
                     "operator's own (repeatable)")
    net.add_argument("--require-network-isolation", action="store_true",
                     help="refuse jobs with network.isolation false (they end Failed, NetworkIsolationRequired)")
    p.add_argument("--kueue", action="store_true",
                   help="admit jobs labelled kueue.x-k8s.io/queue-name through Kueue: one Workload per job (head and workers "
                        "together); Kueue's CRDs must be installed and Kueue configured with the external framework "
                        f"{c.KUEUE_FRAMEWORK}")
    p.add_argument("--concurrency", type=int, default=16, help="jobs reconciled at once (default %(default)s)")
    p.add_argument("--progress-interval", type=_positive_seconds, default=10.0, metavar="SECONDS",
                   help="how often each running head's progress is read (with 20%% jitter; default %(default)s); 0: never, "
                   "for an operator that cannot reach the pods' IPs (status.progress then stays empty)")
    p.add_argument("--log-level", default=os.environ.get("RLJOB_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"], help="(default %(default)s)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
    p.set_defaults(func=run)


def _env_port(name: str, default: int) -> int:
    """A port from the environment; Kubernetes' service links put 'tcp://host:port' in *_PORT variables."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    tail = value.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else default


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != 0 and not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} must be 0 (never) or between 0.1 and 3600 seconds")
    return value


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"rljob operator: --dns-selector: {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def check_scope(args: argparse.Namespace) -> None:
    """Patterns are served through cluster-wide watches, exact names through a watch in each namespace."""
    from ..controller.informer import is_pattern

    if not args.no_cluster_scan:
        return
    if not args.namespace:
        raise SystemExit("rljob operator: --no-cluster-scan needs --namespace (an operator for every namespace follows them)")
    patterns = [ns for ns in args.namespace if is_pattern(ns)]
    if patterns:
        raise SystemExit(f"rljob operator: --no-cluster-scan takes exact --namespace names, not patterns: {patterns}")


def config_from(args: argparse.Namespace, creds: Credentials) -> OperatorConfig:
    """The operator's configuration from its flags, checked once: a bad value ends the command here."""
    from .. import resources
    from ..controller.config import OperatorConfig
    from ..controller.leader import LeaseSettings
    from ..controller.progress import ProgressSettings

    lease = None
    if args.leader_elect:
        # A random part too: unique across restarts of one pod.
        lease = LeaseSettings(name=args.leader_election_id, namespace=args.operator_namespace,
                              identity=f"{identity()}_{secrets.token_hex(4)}")
    try:
        return OperatorConfig(
            credentials=creds,
            build=resources.BuildContext(
                default_image=args.default_image,
                operator_namespace=args.operator_namespace,
                dns_namespace=args.dns_namespace,
                dns_labels=_labels(args.dns_selector),
                cluster_cidrs=tuple(str(ipaddress.ip_network(cidr, strict=True)) for cidr in args.cluster_cidr),
                require_isolation=args.require_network_isolation,
                metrics_scrape_namespaces=tuple(dict.fromkeys(args.metrics_scrape_namespace)),
            ),
            namespaces=tuple(args.namespace),
            concurrency=args.concurrency,
            metrics_port=args.metrics_port or None,
            health_port=args.health_port or None,
            lease=lease,
            kueue=args.kueue,
            progress=ProgressSettings(interval_seconds=args.progress_interval),
        )
    except ValueError as exc:
        raise SystemExit(f"rljob operator: {exc}") from None


def identity() -> str:
    """The pod's name (POD_ID, set by the chart), else the host's: kopf would otherwise ask the password database,
    which has no entry for the image's non-root user."""
    return os.environ.get("POD_ID") or socket.gethostname()


def run(args: argparse.Namespace) -> int:
    check_scope(args)
    from ..controller import credentials

    try:
        creds = credentials.load(args.kubeconfig)
    except credentials.CredentialsError as exc:
        raise SystemExit(f"rljob operator: {exc}") from None
    config = config_from(args, creds)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if args.log_level != "debug":
        # kopf reports every watch event's handler at INFO; the operator's own log says what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # kopf imports the official client whenever it is installed, only to recognise its model objects; the
    # operator reads its credentials itself (controller.credentials) and never hands kopf such objects.
    # Unloaded, it leaves about 9 MB of memory and 275 modules out.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[assignment]
    import kopf

    from ..controller import handlers
    from ..controller.operator import Operator

    # kopf hosts the process and hands the operator, as its memo, to the handlers it calls. It always runs
    # standalone: the Lease, not kopf's peering, decides who acts (controller/leader.py). The health endpoints are
    # the operator's own (controller/health.py): kopf's serves one path only, and readiness needs a second.
    kopf.run(
        registry=handlers.registry(),
        memo=Operator(config),
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        standalone=True,
        identity=identity(),
    )
    return 0
