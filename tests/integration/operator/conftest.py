"""Fixtures for operator tests: the generated CRD installed, and `rljob operator` running as in production."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rljob.api import constants as c
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_process import OperatorProcess

# ── The operator, as production runs it (`rljob operator` in a subprocess) ───────────────────────────


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> None:
    """The generated CRD, applied and Established."""
    from rljob.api.crd import crd_yaml

    control_plane.apply(crd_yaml())
    control_plane.wait_established(c.CRD_NAME)
    control_plane.kubectl("create", "namespace", "rljob-system", check=False)


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, crd_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator for the session; a test may kill and restart it (the chaos test does)."""
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def live_operator(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session operator, restarted if an earlier test left it dead; its log is shown when a test fails."""
    yield from operator.running_with_log()
