"""Reports progress to the job's `status.progress` through the pod's ServiceAccount.

Stdlib only (urllib + ssl): the runtime image should not need the kubernetes client for one PATCH.
Reporting is best effort by design: an API server hiccup, a missing RoleBinding or a deleted job must
never cost training time, so failures are logged, backed off exponentially and otherwise ignored.
"""
from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from ..api.constants import GROUP, PLURAL, VERSION
from .progress import ProgressRecord, status_patch

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
MAX_BACKOFF_S = 60.0


def status_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"


class StatusReporter:
    """PATCHes status.progress; `report` never raises.

    The token is read from its file on every request because projected ServiceAccount tokens are
    rotated by the kubelet while the pod runs.
    """

    def __init__(
        self,
        base_url: str,
        namespace: str,
        name: str,
        *,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = base_url.rstrip("/") + status_path(namespace, name)
        self.token_file = token_file
        self.timeout_s = timeout_s
        self.clock = clock
        self.failures = 0
        self.retry_at = 0.0
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    @classmethod
    def in_cluster(
        cls, namespace: str, name: str, env: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> StatusReporter | None:
        """The reporter for this pod, or None outside Kubernetes (no service host or no token)."""
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        token = sa_dir / "token"
        if not host or not token.is_file():
            return None
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        ca = sa_dir / "ca.crt"
        return cls(f"https://{host}:{port}", namespace, name, token_file=token, ca_file=ca if ca.is_file() else None)

    def report(self, record: ProgressRecord) -> bool:
        """Sends the record unless backing off; True when the API server accepted it."""
        now = self.clock()
        if now < self.retry_at:
            return False
        try:
            self._patch(json.dumps(status_patch(record)).encode())
        except Exception as exc:  # any failure: network, TLS, HTTP status, unreadable token
            self.failures += 1
            delay = min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1))
            self.retry_at = now + delay
            log.warning("progress report failed (%s); next try in %.0fs, training goes on", _describe(exc), delay)
            return False
        if self.failures:
            log.info("progress reporting works again after %d failures", self.failures)
        self.failures = 0
        self.retry_at = 0.0
        return True

    def _patch(self, body: bytes) -> None:
        headers = {"Content-Type": MERGE_PATCH, "Accept": "application/json"}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        request = urllib.request.Request(self.url, data=body, method="PATCH", headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as response:
            response.read()


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        hint = {
            403: " (the job's ServiceAccount may lack patch on rltrainingjobs/status)",
            404: " (the job is gone)",
        }.get(exc.code, "")
        return f"HTTP {exc.code} {exc.reason}{hint}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach the API server: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
