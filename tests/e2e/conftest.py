"""Fixtures for the end-to-end tests: two real nodes (tests/e2e/cluster.py) per session, the operator installed with
the project's Helm chart, the runtime image loaded into the nodes' containerd; or a user's cluster with pushed
images (tests/e2e/target.py: `make e2e REGISTRY=... KUBECONFIG=...`).

Every test here is marked ``e2e``. They run only with ``RLJOB_E2E=1`` (``make e2e`` sets it): on this machine they
need root, Docker, containerd, a few GB of images and several minutes. This pytest process moves into the local
cluster's network namespace, so run the e2e tests in a pytest session of their own (``make test`` runs them in a
second pytest run beside the others).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e import cluster as e2e
from tests.e2e.jobs import TARGET
from tests.e2e.target import ROOT, ExternalCluster

HERE = Path(__file__).resolve().parent
CHART = ROOT / "charts" / "rljob"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_node: reads this machine's own e2e node (skipped on a user's cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)
            if TARGET.external and item.get_closest_marker("local_node"):
                item.add_marker(pytest.mark.skip(reason="reads the files of this machine's own e2e node"))
            needs_cluster = bool({"cluster", "operator", "namespace"} & set(getattr(item, "fixturenames", ())))
            if needs_cluster and os.environ.get("RLJOB_E2E") != "1":
                item.add_marker(pytest.mark.skip(reason=(
                    "end-to-end test on two real nodes (root, Docker, containerd, ~7 GB of images each; cached: minutes): "
                    "run `make e2e` (sets RLJOB_E2E=1)")))  # fmt: skip


def _report(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    print(line)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[e2e.Cluster]:
    if TARGET.kubeconfig is not None:
        external = ExternalCluster(TARGET.kubeconfig)
        version = external.kubectl("version", "-o", "yaml", timeout=60)
        _report(request, f"\ne2e: against the cluster of {TARGET.kubeconfig}, images from {TARGET.registry}\n"
                         + version.stdout.strip().replace("\n", "; "))
        yield external  # type: ignore[misc]  # the same kubectl/kubeconfig interface
        return
    t0 = time.monotonic()
    # Cached: seconds when nothing changed.
    # The images from the offline build (the debootstrap base and the wheel cache), whether or not a registry answers.
    env = {**os.environ, "IMAGE_BASE": "debootstrap"}
    for cmd in (["bash", str(ROOT / "hack" / "e2e-cluster.sh"), "bins"], ["bash", str(ROOT / "hack" / "images.sh"), "operator", "runtime"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
        if res.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}", pytrace=False)
    problems = e2e.missing_prerequisites()
    if problems:
        pytest.fail("the e2e cluster cannot start here:\n  " + "\n  ".join(problems), pytrace=False)
    prepared = time.monotonic() - t0
    c = e2e.up(tmp_path_factory.mktemp("e2e-cluster"), [TARGET.operator_image, TARGET.runtime_image])
    try:
        _report(request, f"\ne2e: binaries+images ready in {prepared:.0f}s; cluster up in {c.timings['total']}s {c.timings}")
        yield c
    finally:
        c.stop()
        e2e.delete_netns()


@pytest.fixture(scope="session")
def operator(cluster: e2e.Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """The operator, installed with the chart into rljob-system (Pod Security: restricted). Returns the namespace.

    On a user's cluster where the release is installed already, that installation is the one checked."""
    home = tmp_path_factory.mktemp("helm-home")
    if TARGET.external and e2e.operator_installed(cluster, home):
        _report(request, f"e2e: the operator installed in {e2e.OPERATOR_NAMESPACE} is the one tested")
        return e2e.OPERATOR_NAMESPACE
    took = e2e.install_operator(cluster, TARGET.chart_values(), home)
    _report(request, f"e2e: operator installed with the chart in {took:.0f}s")
    return e2e.OPERATOR_NAMESPACE


@pytest.fixture
def namespace(cluster: e2e.Cluster, operator: str) -> Iterator[str]:
    """A namespace of the test's own, deleted after it (also when it failed) before the next test starts: on a node
    of 2 CPUs, a job left running or still terminating would hold the CPUs the next test's pods need."""
    ns = f"e2e-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    yield ns
    cluster.kubectl("delete", "namespace", ns, f"{ns}-other", "--ignore-not-found", "--wait=true", "--timeout=300s",
                    timeout=330)


@pytest.fixture(scope="session")
def checkpoint_volumes(cluster: e2e.Cluster) -> None:
    """Static hostPath PersistentVolumes (no provisioner on this node) for the jobs' checkpoint claims; a user's
    cluster provisions them from its default StorageClass."""
    if TARGET.external:
        return
    pvs = []
    for i in range(6):
        path = e2e.STATE_DIR / "pv" / f"pv{i}"
        shutil.rmtree(path, ignore_errors=True)  # no checkpoint of an earlier run
        path.mkdir(parents=True)
        os.chown(path, 1000, 1000)  # hostPath ignores fsGroup; the pods run as 1000
        pvs.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"e2e-pv{i}"},
            "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(path), "type": "Directory"}},
        })  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pvs))
