"""The operator as the Helm chart deploys it, run as a subprocess: the chart's ServiceAccount and RBAC applied (from
`helm template`), the chart's flags, and a kubeconfig holding only that ServiceAccount's token. What the RBAC tests
check the chart's grants with, and what the burst benchmark measures (an admin's client certificate would skip
authorization and pay a certificate check on every request: neither is how a cluster runs the operator).
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .controlplane import ControlPlane
from .operator_process import OPERATOR_NAMESPACE as OPERATOR_NS
from .operator_process import OperatorProcess

__all__ = ["CHART", "OPERATOR_NS", "RBAC_KINDS", "ChartOperator", "helm_env", "helm_template", "token_kubeconfig", "values_file"]

CHART = Path(__file__).resolve().parents[2] / "charts" / "rljob"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def helm_env(home: Path) -> dict[str, str]:
    """Helm's cache, configuration and data under `home`, not the user's."""
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data")}


def values_file(home: Path, release: str, values: dict[str, Any]) -> Path:
    path = home / f"{release}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def helm_template(cp: ControlPlane, release: str, values: dict[str, Any], home: Path, *extra: str) -> list[dict[str, Any]]:
    """The chart's objects for `values`, rendered for this control plane's Kubernetes version (offline, helm assumes
    the version it was built against, older than the chart's kubeVersion accepts)."""
    cmd = [cp.bin("helm"), "template", release, str(CHART), "--namespace", OPERATOR_NS, "-f", str(values_file(home, release, values)),
           "--kube-version", cp.raw("/version")["gitVersion"], *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=helm_env(home), timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"helm template failed: {res.stderr}")
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


def token_kubeconfig(cp: ControlPlane, namespace: str, service_account: str, path: Path, duration: str = "1h") -> Path:
    """A kubeconfig that holds only a ServiceAccount's token: its requests are authorized as that account's."""
    token = cp.kubectl("create", "token", service_account, "-n", namespace, f"--duration={duration}").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cp.server,
                                               "certificate-authority-data": base64.b64encode(cp.ca_crt.read_bytes()).decode()}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))
    return path


class ChartOperator:
    """The chart's identity and permissions applied to the cluster (or already installed by `helm install`: apply
    False), and an operator (:attr:`operator`, not started) that runs with them and the chart's flags. The
    ``rljob-system`` namespace must exist."""

    def __init__(self, cp: ControlPlane, release: str, values: dict[str, Any], workdir: Path, apply: bool = True) -> None:
        self.cp = cp
        self.objs = helm_template(cp, release, values, workdir)
        (deployment,) = [o for o in self.objs if o["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        self.service_account = pod["serviceAccountName"]
        self.user = f"system:serviceaccount:{OPERATOR_NS}:{self.service_account}"
        args = pod["containers"][0]["args"]
        if args[0] != "operator":
            raise RuntimeError(f"the chart's Deployment does not run `rljob operator`: {args}")
        # The chart's own flags, except the ports: the process picks free ones.
        self.args = tuple(a for a in args[1:] if not a.startswith(("--metrics-port", "--health-port")))
        if apply:
            cp.apply([o for o in self.objs if o["kind"] in RBAC_KINDS])
        self.kubeconfig = token_kubeconfig(cp, OPERATOR_NS, self.service_account, workdir / f"{release}.kubeconfig")
        self.operator = OperatorProcess(self.kubeconfig, workdir / f"{release}-operator.log", self.args)
