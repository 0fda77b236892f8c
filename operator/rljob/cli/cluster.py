"""Cluster access for the user-facing commands: the current kubeconfig and namespace, like kubectl,
and one clear line instead of a traceback when the cluster or the CRD is not there.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..api import constants as c


class CliError(Exception):
    """Printed as one line, exit code 1."""


def add_cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig context's, else default)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")


@dataclass
class Cluster:
    api: Any  # kubernetes.client.ApiClient
    namespace: str
    host: str

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs one API call, turning connection and API errors into a CliError that names the cause."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise CliError(f"{what}: {explain(exc, self)}") from None
        except (HTTPError, OSError) as exc:
            raise CliError(f"cannot reach the cluster at {self.host}: {type(exc).__name__}: {exc}") from None


def explain(exc: Any, cluster: Cluster) -> str:
    message = ""
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message", "")
        details = body.get("details") or {}
    except (TypeError, ValueError):
        details = {}
    if exc.status == 404 and details.get("group") == c.GROUP and not details.get("name"):
        return (f"the {c.KIND} CRD is not installed in this cluster ({cluster.host}): "
                "kubectl apply -f crds/ (or install the Helm chart)")
    if exc.status == 404 and "the server could not find the requested resource" in (message or ""):
        return f"the {c.KIND} CRD is not installed in this cluster ({cluster.host}): kubectl apply -f crds/ (or install the Helm chart)"
    return message or f"{exc.status} {exc.reason}"


def connect(args: argparse.Namespace) -> Cluster:
    try:
        from kubernetes import client, config
    except ImportError:
        raise CliError("the Kubernetes client, a dependency of rljob, is missing here: pip install kubernetes") from None
    cfg = client.Configuration()
    namespace = args.namespace
    try:
        if args.kubeconfig or args.context or not _in_cluster():
            config.load_kube_config(config_file=_config_file(args), context=args.context, client_configuration=cfg)
            if namespace is None:
                namespace = _context_namespace(config, args)
        else:
            config.load_incluster_config(client_configuration=cfg)
            namespace = namespace or Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except (config.ConfigException, OSError, TypeError) as exc:
        raise CliError(f"no usable kubeconfig: {exc}") from None
    cfg.retries = 1
    return Cluster(api=client.ApiClient(cfg), namespace=namespace or "default", host=cfg.host)


def _config_file(args: argparse.Namespace) -> str | None:
    """--kubeconfig, else $KUBECONFIG as it is now: the client reads the variable once, when it is imported."""
    import os

    return args.kubeconfig or os.environ.get("KUBECONFIG") or None


def _context_namespace(config: Any, args: argparse.Namespace) -> str | None:
    """The namespace the kubeconfig context names (the one --context picks, else the current one)."""
    contexts, active = config.list_kube_config_contexts(config_file=_config_file(args))
    if args.context:
        active = next((x for x in contexts if x["name"] == args.context), active)
    return ((active or {}).get("context") or {}).get("namespace")


def target_namespace(args: argparse.Namespace) -> str:
    """The namespace a command would use, read without contacting the cluster (for --dry-run): -n, else the
    kubeconfig context's, else the pod's own when running in one, else default, as kubectl decides it."""
    if args.namespace:
        return str(args.namespace)
    try:
        from kubernetes import config
    except ImportError:
        return "default"
    if args.kubeconfig or args.context or not _in_cluster():
        try:
            return _context_namespace(config, args) or "default"
        except (config.ConfigException, OSError, TypeError):
            return "default"  # no kubeconfig at all: a dry run still shows the manifest
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")


def guarded(fn: Callable[[Cluster, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A subcommand that talks to the cluster: connected first, and a CliError printed as one line (exit 1)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(connect(args), args)
        except CliError as exc:
            print(f"rljob: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1

    return run


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"rljob: {message}", file=sys.stderr)
    sys.exit(code)


def get_job(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.call(
        f"get {c.SINGULAR} {cluster.namespace}/{name}",
        cluster.custom().get_namespaced_custom_object, c.GROUP, c.VERSION, cluster.namespace, c.PLURAL, name,
    )


def list_jobs(cluster: Cluster, label_selector: str = "", all_namespaces: bool = False) -> list[dict[str, Any]]:
    api = cluster.custom()
    if all_namespaces:
        out = cluster.call(f"list {c.PLURAL}", api.list_cluster_custom_object, c.GROUP, c.VERSION, c.PLURAL,
                           label_selector=label_selector)
    else:
        out = cluster.call(f"list {c.PLURAL}", api.list_namespaced_custom_object, c.GROUP, c.VERSION, cluster.namespace,
                           c.PLURAL, label_selector=label_selector)
    return out.get("items", [])
