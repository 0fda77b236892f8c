"""Kueue itself, run against the integration control plane with its webhooks: the queueing controller that
platform teams put in front of their GPUs, built from the Go module proxy by hack/cluster-bins.sh.

hack/cluster-bins.sh leaves, beside the control plane's bin directory, `kueue-VERSION/kueue`, Kueue's CRDs
(`kueue-VERSION/crds/`) and its webhook configurations (`kueue-VERSION/webhooks.yaml`), VERSION being the one
hack/k8s/go.mod pins. This starts the binary outside the cluster
with a serving certificate for 127.0.0.1 and points the webhook configurations of Kueue's own API (queues, flavors,
workloads) at it; the webhooks of the job kinds Kueue integrates natively are left out, since no such integration is
enabled here and their pod and Deployment webhooks would see every object the other tests create.

Kueue v0.17 without its internal certificate management reads the certificate of its metrics endpoint from a fixed
path, /etc/kueue/metrics/certs (its Deployment mounts a Secret there), and exits without one; the internal
management instead issues certificates for the in-cluster Service name, which an API server outside a cluster cannot
resolve. So a certificate is written there when none is (root, as `make test` runs).
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from rljob.api import constants as c
from tests.cluster.controlplane import ControlPlane, wait_for

KUEUE_NAMESPACE = "kueue-system"
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


ROOT = Path(__file__).resolve().parents[1]


def kueue_version() -> str:
    for line in (ROOT / "hack" / "k8s" / "go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["require", "sigs.k8s.io/kueue"] or parts[:1] == ["sigs.k8s.io/kueue"]:
            return parts[-1]
    raise ValueError("hack/k8s/go.mod does not require sigs.k8s.io/kueue")


def kueue_dir(cp: ControlPlane) -> Path:
    return Path(cp.bin("kubectl")).resolve().parent.parent / f"kueue-{kueue_version()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def serving_certificate(directory: Path) -> bytes:
    """A CA and a certificate for 127.0.0.1 signed by it (tls.crt, tls.key: controller-runtime's names); returns the
    CA in PEM for the webhook configurations."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "30", "-subj", "/CN=kueue-test-ca", cwd=directory)
    (directory / "ext.cnf").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                                       "extendedKeyUsage = serverAuth\nbasicConstraints = critical, CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "tls.key",
             "-out", "tls.csr", "-subj", "/CN=127.0.0.1", cwd=directory)
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
             "-extfile", "ext.cnf", "-out", "tls.crt", cwd=directory)
    return (directory / "ca.crt").read_bytes()


def own_api_webhooks(manifest: str, port: int, ca: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, reduced to its own API's webhooks and pointed at https://127.0.0.1:port."""
    out = []
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            path = (hook.get("clientConfig") or {}).get("service", {}).get("path", "")
            if "kueue-x-k8s-io" not in path:
                continue
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": base64.b64encode(ca).decode()}
            hooks.append(hook)
        if hooks:
            doc["webhooks"] = hooks
            doc["metadata"] = {"name": f"rljob-test-{doc['metadata']['name']}"}
            out.append(doc)
    return out


class Kueue:
    """One Kueue controller manager process for a test module."""

    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.cp, self.workdir = cp, workdir
        self.home = kueue_dir(cp)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "kueue.log"
        self.webhook_configs: list[tuple[str, str]] = []

    def start(self) -> Kueue:
        binary = self.home / "kueue"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is missing: build it with `make cluster-bins`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.kubectl("apply", "--server-side", "-f", str(self.home / "crds"))
        for crd in sorted((self.home / "crds").glob("*.yaml")):
            name = yaml.safe_load(crd.read_text())["metadata"]["name"]
            self.cp.wait_established(name)
        self.cp.kubectl("create", "namespace", KUEUE_NAMESPACE, check=False)
        port, health, metrics = _free_port(), _free_port(), _free_port()
        ca = serving_certificate(self.workdir / "certs")
        if not (METRICS_CERT_DIR / "tls.crt").exists():
            try:
                METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
            except PermissionError as exc:
                raise PermissionError(f"Kueue needs a metrics certificate in {METRICS_CERT_DIR}: run as root") from exc
            for name in ("tls.crt", "tls.key"):
                shutil.copy(self.workdir / "certs" / name, METRICS_CERT_DIR / name)
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
            "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
            "webhook": {"port": port, "host": "127.0.0.1", "certDir": str(self.workdir / "certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"], "externalFrameworks": [c.KUEUE_FRAMEWORK]},
        }
        (self.workdir / "config.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), f"--config={self.workdir / 'config.yaml'}", f"--kubeconfig={self.cp.kubeconfig}",
                 "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=2"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(lambda: self._ready(health), timeout=120, description=f"Kueue ready (log: {self.log})")
        hooks = own_api_webhooks((self.home / "webhooks.yaml").read_text(), port, ca)
        self.cp.apply(hooks)
        self.webhook_configs = [(h["kind"], h["metadata"]["name"]) for h in hooks]
        return self

    def _ready(self, port: int) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Kueue exited with {self.proc.returncode}: {self.tail()}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
        except OSError:
            return False

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        for kind, name in self.webhook_configs:
            self.cp.kubectl("delete", kind.lower(), name, "--ignore-not-found", check=False)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

