"""Fixtures for the integration tests: one real local control plane per test session (tests.cluster.controlplane).

Every test under tests/integration is marked ``integration``. Missing binaries are a failure, not a skip: build
them with ``make cluster-bins``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import (
    ControlPlane,
    ControlPlaneError,
    MissingBinariesError,
    find_bin_dir,
    format_timings,
    wait_for,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Hooks in a conftest see every collected item, not only this directory's.
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """The session's control plane: etcd, kube-apiserver, controller manager, scheduler and kwok with 3 CPU nodes
    and 1 GPU node (``nvidia.com/gpu: 8``)."""
    problem = None
    try:
        cp = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir=find_bin_dir())
        cp.start()
    except MissingBinariesError as e:
        problem = str(e)
    except ControlPlaneError as e:
        problem = f"the control plane did not start: {e}"
    if problem:  # failed outside the except block, so pytest shows the message alone
        pytest.fail(problem, pytrace=False)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{format_timings(cp)} (workdir {cp.workdir})")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """Path of the control plane's admin kubeconfig."""
    return control_plane.kubeconfig


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that enforces the ``restricted`` Pod Security Standard; deleted after the test."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "test"
    name = f"{base}-{secrets.token_hex(3)}"
    psa = {
        f"pod-security.kubernetes.io/{mode}": value
        for m in ("enforce", "warn", "audit")
        for mode, value in ((m, "restricted"), (f"{m}-version", "latest"))
    }
    control_plane.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": psa}})
    # Pods are only admitted once the service-account controller has made the "default" ServiceAccount.
    wait_for(
        lambda: control_plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        description=f"serviceaccount {name}/default",
    )
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
