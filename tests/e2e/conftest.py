"""Fixtures for the end-to-end tests: one real node (tests/e2e/cluster.py) per session, the operator installed with
the project's Helm chart, the runtime image loaded into the node's containerd.

Every test here is marked ``e2e``. They run only with ``RLJOB_E2E=1`` (``make e2e`` sets it): they need root,
Docker, containerd, a few GB of images and several minutes. This pytest process moves into the cluster's network
namespace, so run the e2e tests in a pytest session of their own (``make e2e`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import cluster as e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "charts" / "rljob"
VERSION = next(
    line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version = ")
)
OPERATOR_IMAGE = f"rljob/operator:{VERSION}"
RUNTIME_IMAGE = f"rljob/runtime:{VERSION}-cpu"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)
            needs_cluster = bool({"cluster", "operator", "namespace"} & set(getattr(item, "fixturenames", ())))
            if needs_cluster and os.environ.get("RLJOB_E2E") != "1":
                item.add_marker(pytest.mark.skip(reason=(
                    "end-to-end test on a real node (root, Docker, containerd, ~7 GB of images; ~8 min when cached): "
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
    c = e2e.up(tmp_path_factory.mktemp("e2e-cluster"), [OPERATOR_IMAGE, RUNTIME_IMAGE])
    try:
        _report(request, f"\ne2e: binaries+images ready in {prepared:.0f}s; cluster up in {c.timings['total']}s {c.timings}")
        yield c
    finally:
        c.stop()
        e2e.delete_netns()


@pytest.fixture(scope="session")
def operator(cluster: e2e.Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """The operator, installed with the chart into rljob-system (Pod Security: restricted). Returns the namespace."""
    took = e2e.install_operator(cluster, VERSION, tmp_path_factory.mktemp("helm-home"))
    _report(request, f"e2e: operator installed with the chart in {took:.0f}s")
    return e2e.OPERATOR_NAMESPACE


@pytest.fixture(scope="session")
def checkpoint_volumes(cluster: e2e.Cluster) -> None:
    """Static hostPath PersistentVolumes (no provisioner on this node) for the jobs' checkpoint claims."""
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


def get_json(cluster: e2e.Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
