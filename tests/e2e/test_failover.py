"""End to end on a real node: the operator upgraded and replaced under a running Pong job.

While the job trains: the CRD is applied again from crds/ (the upgrade docs/operations.md prescribes, server-side
apply), the chart is upgraded to two replicas (leader election through a Lease), and the leader's pod is deleted
(SIGTERM): the standby takes the Lease over. Through all of it the job keeps its one head and its worker (the same
pods: nothing recreated, no second attempt), and the new leader is the one that acts on it: a lowered
maxRunDurationSeconds cuts the run off. The chart is set back to one replica afterwards, for the tests after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.jobs import apply, get_json, job_manifest, pods, wait_job
from tests.e2e.target import ROOT

LEASE = "rljob-operator"  # the chart's leaderElection.leaseName


def helm_upgrade(cluster: e2e.Cluster, home: Path, *values: str) -> None:
    res = e2e.helm(cluster, home, "upgrade", "rljob", str(ROOT / "charts" / "rljob"), "--namespace",
                    e2e.OPERATOR_NAMESPACE, "--reuse-values", *values, "--wait", "--timeout", "300s", timeout=360)
    assert res.returncode == 0, res.stdout + res.stderr


def leader(cluster: e2e.Cluster) -> str | None:
    """The pod whose replica holds the Lease (identities are `<pod>_<random>`)."""
    try:
        lease = get_json(cluster, "lease", LEASE, "-n", e2e.OPERATOR_NAMESPACE)
    except KubectlError:
        return None
    holder = (lease.get("spec") or {}).get("holderIdentity") or ""
    return holder.rsplit("_", 1)[0] or None


def operator_pods(cluster: e2e.Cluster) -> list[dict[str, Any]]:
    items = get_json(cluster, "pods", "-n", e2e.OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=rljob")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture
def one_replica_after(cluster: e2e.Cluster, operator: str, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "helm-home"
    yield home
    helm_upgrade(cluster, home, "--set", "replicaCount=1")


@pytest.mark.timeout(1500)
def test_the_operator_upgraded_and_replaced_under_a_running_job(
    cluster: e2e.Cluster, namespace: str, one_replica_after: Path
) -> None:
    ns, name = namespace, "failover"
    apply(cluster, ns, job_manifest(name, workers=1, iterations=None))
    started = wait_job(cluster, ns, name, lambda j: (j.get("status", {}).get("progress") or {}).get("iteration", 0) >= 2
                       and j, 600, "two iterations")
    children = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(cluster, ns, name)}
    assert sorted(children) == [f"{name}-head-1", f"{name}-workers-0"], children

    # The CRD upgrade, with the job running: what is served stays the same resource.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    # Two replicas: one leads through the Lease, one stands by.
    helm_upgrade(cluster, one_replica_after, "--set", "replicaCount=2")
    first = wait_for(lambda: (who := leader(cluster)) in {p["metadata"]["name"] for p in operator_pods(cluster)} and who,
                     180, 2.0, "a leader among the two replicas", ignore=(KubectlError,))  # fmt: skip
    # The leader stopped with SIGTERM (its pod deleted): the standby takes over.
    cluster.kubectl("delete", "pod", first, "-n", e2e.OPERATOR_NAMESPACE, "--wait=false")
    second = wait_for(lambda: (who := leader(cluster)) not in (None, first) and who, 180, 2.0, "the standby leading",
                      ignore=(KubectlError,))  # fmt: skip

    # The job went on under the new leader (which reads its progress), on the same pods: no child recreated.
    before = started["status"]["progress"]["iteration"]
    now = wait_job(cluster, ns, name, lambda j: j["status"]["progress"].get("iteration", 0) > before + 2 and j, 300,
                   "progress read by the new leader")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(cluster, ns, name)}
    assert after == children, (after, children)

    # The new leader acts on the job: a lowered time limit cuts the run off.
    since = now["status"].get("startTime") or now["metadata"]["creationTimestamp"]
    elapsed = (datetime.now(timezone.utc) - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
    limit = int(elapsed) + 60
    cluster.kubectl("patch", "rltj", name, "-n", ns, "--type=merge", "-p", f'{{"spec":{{"maxRunDurationSeconds":{limit}}}}}')
    final = wait_job(cluster, ns, name, lambda j: j.get("status", {}).get("phase") == "Failed" and j, 600,
                     "Failed (DeadlineExceeded)")
    status = final["status"]
    assert status["reason"] == "DeadlineExceeded", status
    assert status["attempts"] == 1 and not status.get("failedAttempts"), status
    heads = [p["metadata"]["name"] for p in get_json(cluster, "pods", "-n", ns)["items"]
             if p["metadata"]["name"].startswith(f"{name}-head-")]
    assert heads in ([], [f"{name}-head-1"]), heads  # never a second head
    events = get_json(cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    assert not [e for e in events if e["reason"] == "ChildrenRestored"], events
    assert second != first
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
