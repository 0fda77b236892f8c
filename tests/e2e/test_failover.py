"""End to end on real nodes: the operator upgraded from its previous release and replaced under a running Pong job.

The previous release (tests/e2e/releases.py: its chart, its CRD and its operator image, built from that commit) is
installed in place of this one, and the job starts under it. While the job trains: this CRD is applied from crds/
(the upgrade docs/operations.md prescribes, server-side apply), the chart is upgraded to this one with two replicas
(leader election through a Lease), and the leader's pod is deleted (SIGTERM): the standby takes the Lease over.
Through all of it the job keeps its one head and its worker (the same pods: nothing recreated, no second attempt),
and the new leader is the one that acts on it: a lowered maxRunDurationSeconds cuts the run off. This chart is set
back to one replica afterwards, for the tests after it. On a user's cluster (`make e2e REGISTRY=...`) the
installed release is the one upgraded, as there is no previous image to load.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.jobs import TARGET, apply, get_json, job_manifest, pods, wait_job
from tests.e2e.releases import PREVIOUS_RELEASE, Release, checkout, in_history
from tests.e2e.target import ROOT

LEASE = "rljob-operator"  # the chart's leaderElection.leaseName


def helm_upgrade(cluster: e2e.Cluster, home: Path, *values: str) -> None:
    """To this chart, with the tests' values (a user's cluster: its release's own values) and `values` over them."""
    home.mkdir(parents=True, exist_ok=True)
    base = ["--reuse-values"]
    if not TARGET.external:
        (home / "values.yaml").write_text(yaml.safe_dump(TARGET.chart_values()))
        base = ["-f", str(home / "values.yaml")]
    res = e2e.helm(cluster, home, "upgrade", "rljob", str(ROOT / "charts" / "rljob"), "--namespace",
                    e2e.OPERATOR_NAMESPACE, *base, *values, "--wait", "--timeout", "300s", timeout=360)
    assert res.returncode == 0, res.stdout + res.stderr


def install_previous(cluster: e2e.Cluster, home: Path, release: Release) -> None:
    """The previous release in place of this one: its CRD (server-side apply, as an upgrade would), its chart with
    its operator image; the jobs' runtime image stays this checkout's (the release's default names the same)."""
    res = e2e.helm(cluster, home, "uninstall", "rljob", "--namespace", e2e.OPERATOR_NAMESPACE, "--wait", timeout=200)
    assert res.returncode == 0, res.stdout + res.stderr
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(release.crds))
    values = TARGET.chart_values()
    values["image"] = {**values["image"], "tag": release.tag}
    (home / "previous.yaml").write_text(yaml.safe_dump(values))
    res = e2e.helm(cluster, home, "install", "rljob", str(release.chart), "--namespace", e2e.OPERATOR_NAMESPACE,
                   "-f", str(home / "previous.yaml"), "--wait", "--timeout", "240s", timeout=300)
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


def kill_operator(cluster: e2e.Cluster, pod: str) -> None:
    """SIGKILL to the operator's process, through its node's containerd; returns once the container runs again."""
    body = get_json(cluster, "pod", pod, "-n", e2e.OPERATOR_NAMESPACE)
    (status,) = body["status"]["containerStatuses"]
    node = next(n for n in cluster.nodes if n.name == body["spec"]["nodeName"])
    cluster.ctr("tasks", "kill", "-s", "SIGKILL", status["containerID"].split("://", 1)[1], node=node)

    def restarted() -> bool:
        (now,) = get_json(cluster, "pod", pod, "-n", e2e.OPERATOR_NAMESPACE)["status"]["containerStatuses"]
        return now["restartCount"] > status["restartCount"] and bool(now.get("ready"))

    wait_for(restarted, 180, 2.0, f"{pod}'s operator container restarted after SIGKILL", ignore=(KubectlError,))


@pytest.fixture
def one_replica_after(cluster: e2e.Cluster, operator: str, tmp_path: Path) -> Iterator[Path]:
    """A helm home; afterwards this chart at one replica (also after a failure under the previous release)."""
    home = tmp_path / "helm-home"
    yield home
    helm_upgrade(cluster, home, "--set", "replicaCount=1")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))


@pytest.fixture
def previous_release(cluster: e2e.Cluster, one_replica_after: Path, tmp_path: Path) -> Release | None:
    """The previous release, installed (None on a user's cluster: the installed one is upgraded)."""
    if TARGET.external:
        return None
    assert in_history(PREVIOUS_RELEASE), f"this clone lacks {PREVIOUS_RELEASE}, the previous release (a shallow clone?)"
    release = checkout(PREVIOUS_RELEASE, tmp_path / "previous")
    cluster.load_images([release.operator_image])
    install_previous(cluster, one_replica_after, release)
    return release


@pytest.mark.timeout(1800)
def test_the_operator_upgraded_and_replaced_under_a_running_job(
    cluster: e2e.Cluster, namespace: str, one_replica_after: Path, previous_release: Release | None
) -> None:
    ns, name = namespace, "failover"
    if previous_release is not None:  # the job starts under the previous release's operator
        (running,) = operator_pods(cluster)
        assert running["spec"]["containers"][0]["image"].endswith(previous_release.tag), running["spec"]["containers"]
    apply(cluster, ns, job_manifest(name, workers=1, iterations=None))
    started = wait_job(cluster, ns, name, lambda j: (j.get("status", {}).get("progress") or {}).get("iteration", 0) >= 2
                       and j, 600, "two iterations")
    children = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(cluster, ns, name)}
    assert sorted(children) == [f"{name}-head-1", f"{name}-workers-0"], children

    # The CRD upgrade, with the job running: what is served stays the same resource.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    # This chart, with two replicas: one leads through the Lease, one stands by.
    helm_upgrade(cluster, one_replica_after, "--set", "replicaCount=2")
    images = {p["spec"]["containers"][0]["image"] for p in operator_pods(cluster)}
    assert images == {TARGET.operator_image}, images
    first = wait_for(lambda: (who := leader(cluster)) in {p["metadata"]["name"] for p in operator_pods(cluster)} and who,
                     180, 2.0, "a leader among the two replicas", ignore=(KubectlError,))  # fmt: skip
    # The leader stopped with SIGTERM (its pod deleted): the standby takes over.
    cluster.kubectl("delete", "pod", first, "-n", e2e.OPERATOR_NAMESPACE, "--wait=false")
    second = wait_for(lambda: (who := leader(cluster)) not in (None, first) and who, 180, 2.0, "the standby leading",
                      ignore=(KubectlError,))  # fmt: skip

    if not TARGET.external:
        # The new leader killed outright (SIGKILL, no handover): its container restarts, and it takes the job up again.
        kill_operator(cluster, second)
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
