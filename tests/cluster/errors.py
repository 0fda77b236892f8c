"""The errors of the test cluster, in a module of their own so that every other module of the package can raise
them without importing the control plane."""

from __future__ import annotations

import subprocess

__all__ = ["ControlPlaneError", "KubectlError", "MissingBinariesError"]


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a component died."""


class MissingBinariesError(ControlPlaneError):
    """The Kubernetes binaries have not been built."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd[1:] if not str(a).startswith(("--kubeconfig=", "--cache-dir=")))
        return f"kubectl {cmd} exited with {self.returncode}: {(self.stderr or '').strip()}"
