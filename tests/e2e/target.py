"""Where the end-to-end tests run: this machine's own two real nodes (the default, `make e2e`), or a cluster of the user's
(`make e2e REGISTRY=... KUBECONFIG=...`), to check an installation there with pushed images.

On a user's cluster nothing of this machine's nodes is reached: no images are built or imported (the nodes pull
REGISTRY/operator:VERSION and REGISTRY/runtime:VERSION-cpu, as `REGISTRY=... PUSH=1 make images` pushed them), the
checkpoint claims come from the cluster's default StorageClass, and the tests that read the node's own files skip.
What such a cluster needs: a default StorageClass, a network plugin that enforces NetworkPolicies, about 4 free CPUs
and 12 GiB, and a kubeconfig allowed to create namespaces and install the chart (or the operator already installed as
the release `rljob` in rljob-system, which is then used as it is).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import KubectlError, dump_manifest

ROOT = Path(__file__).resolve().parents[2]
VERSION = next(
    line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version = ")
)
# Read by the tests' process: make e2e sets them from REGISTRY and KUBECONFIG.
ENV_REGISTRY = "RLJOB_E2E_REGISTRY"
ENV_KUBECONFIG = "RLJOB_E2E_KUBECONFIG"
# The names hack/images.sh gives this machine's builds (besides the published ones), which the local node imports.
LOCAL_REGISTRY = "rljob"


@dataclass(frozen=True)
class Target:
    registry: str
    kubeconfig: Path | None = None  # a user's cluster; None: this machine's nodes

    @property
    def external(self) -> bool:
        return self.kubeconfig is not None

    @property
    def operator_image(self) -> str:
        return f"{self.registry}/operator:{VERSION}"

    @property
    def runtime_image(self) -> str:
        return f"{self.registry}/runtime:{VERSION}-cpu"

    @property
    def pull_policy(self) -> str:
        """The local node has the images in its containerd, and must never ask a registry; a user's nodes pull."""
        return "IfNotPresent" if self.external else "Never"

    def chart_values(self) -> dict[str, Any]:
        return {
            "image": {"repository": f"{self.registry}/operator", "tag": VERSION, "pullPolicy": self.pull_policy},
            "jobDefaults": {"image": {"repository": f"{self.registry}/runtime", "tag": f"{VERSION}-cpu"}},
            "logLevel": "debug",
        }


def target() -> Target:
    registry = os.environ.get(ENV_REGISTRY, "").rstrip("/")
    if not registry:
        return Target(LOCAL_REGISTRY)
    kubeconfig = os.environ.get(ENV_KUBECONFIG) or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return Target(registry, Path(kubeconfig.split(os.pathsep)[0]).resolve())


def tool(name: str) -> str:
    """kubectl or helm: the one on PATH (a user's), else the one `make cluster-bins` built."""
    found = shutil.which(name)
    if found:
        return found
    from tests.e2e.cluster import bin_dir

    return str(bin_dir() / name)


@dataclass
class ExternalCluster:
    """A user's cluster behind a kubeconfig, with the local node's Cluster interface the tests use."""

    kubeconfig: Path
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, input: str | Mapping[str, Any] | Sequence[Any] | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [tool("kubectl"), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        text = None if input is None else dump_manifest(input)
        res = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def stop(self) -> None:
        """Nothing to stop: the cluster is the user's."""
