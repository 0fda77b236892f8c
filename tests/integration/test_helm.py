"""The Helm chart against the real API server: `helm template | kubectl apply --dry-run=server`, `helm install`
into a namespace that enforces Pod Security `restricted` (the operator pod is admitted and Running on a kwok
node; no container runs, so the image need not exist), and `helm uninstall` leaving nothing but the CRDs."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane, wait_for
from tests.tooling import ROOT

CHART = ROOT / "charts" / "rljob"
CHART_CRDS = {"rltrainingjobs.rljob.dev"}

# Just enough of the Prometheus Operator's CRD for the API server to accept a ServiceMonitor.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}


POD_MONITOR_CRD = {
    **SERVICE_MONITOR_CRD,
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        **SERVICE_MONITOR_CRD["spec"],
        "names": {"kind": "PodMonitor", "listKind": "PodMonitorList", "plural": "podmonitors", "singular": "podmonitor"},
    },
}


class Helm:
    def __init__(self, cp: ControlPlane, home: Path) -> None:
        self.cp = cp
        self.env = {
            **cp.env(), "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
        }
        self.values_dir = home
        self.kube_version = cp.raw("/version")["gitVersion"]

    def __call__(self, *args: str | Path, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        if args and args[0] == "template":
            # Offline, helm assumes the Kubernetes version it was built against (1.20 for the project's helm, built
            # without release flags), which the chart's kubeVersion refuses: render for this control plane's.
            args = (*args, "--kube-version", self.kube_version)
        cmd = [self.cp.bin("helm"), f"--kubeconfig={self.cp.kubeconfig}", *map(str, args)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(map(str, args))} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res

    def values(self, values: dict[str, Any]) -> Path:
        path = self.values_dir / f"values-{secrets.token_hex(4)}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(control_plane, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture
def service_monitor_crd(control_plane: ControlPlane) -> Iterator[None]:
    """The Prometheus Operator's ServiceMonitor and PodMonitor kinds (their CRDs, reduced)."""
    names = [crd["metadata"]["name"] for crd in (SERVICE_MONITOR_CRD, POD_MONITOR_CRD)]
    control_plane.apply([SERVICE_MONITOR_CRD, POD_MONITOR_CRD])
    control_plane.wait_established(*names)
    try:
        yield
    finally:
        control_plane.kubectl("delete", "crd", *names, "--ignore-not-found", "--wait=false", check=False)


def install_chart_crds(cp: ControlPlane) -> None:
    """What `helm install` does with crds/ (the dry run cannot create them: later objects need their kinds)."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        cp.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=rljob-tests", "-f", str(path))
    cp.wait_established(*sorted(CHART_CRDS))


def test_template_passes_server_side_dry_run(
    control_plane: ControlPlane, helm: Helm, namespace: str, service_monitor_crd: None
) -> None:
    cp = control_plane
    install_chart_crds(cp)
    watched = f"{namespace}-w"
    cp.kubectl("create", "namespace", watched)
    try:
        for values in (
            {},
            {"replicaCount": 2, "watch": {"namespaces": [namespace, watched]}, "serviceMonitor": {"enabled": True},
             "grafana": {"dashboards": {"enabled": True}}},
            {"replicaCount": 2, "metrics": {"enabled": False}},
        ):
            rendered = helm("template", "dry", CHART, "--namespace", namespace, "-f", helm.values(values)).stdout
            kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
            # The operator's rules: cluster-wide, or in Roles in each watched namespace and nothing cluster-wide.
            bound = {"RoleBinding"} if values.get("watch") else {"ClusterRoleBinding"}
            assert {"Deployment", "ServiceAccount", *bound} <= kinds and not ({"ClusterRoleBinding"} - bound) & kinds
            res = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
            assert res.returncode == 0, f"values {values}:\n{res.stderr}"
            assert "(server dry run)" in res.stdout
            assert "Warning" not in res.stderr, res.stderr  # e.g. a Pod Security warning on the Deployment
        # Without cluster-scoped RBAC, with the job monitoring: nothing cluster-scoped at all.
        values = {"rbac": {"clusterScoped": False}, "watch": {"namespaces": [namespace, watched]}, "replicaCount": 2,
                  "podMonitor": {"enabled": True}, "jobNetwork": {"metricsScrapeNamespaces": ["monitoring"]}}
        rendered = helm("template", "dry", CHART, "--namespace", namespace, "-f", helm.values(values)).stdout
        kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
        assert "PodMonitor" in kinds and not {"ClusterRole", "ClusterRoleBinding"} & kinds
        res = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
        assert res.returncode == 0 and "Warning" not in res.stderr, f"values {values}:\n{res.stderr}"
        assert "podmonitor.monitoring.coreos.com/dry-rljob-jobs created (server dry run)" in res.stdout
    finally:
        cp.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def release_objects(cp: ControlPlane, namespace: str, release: str) -> dict[str, list[str]]:
    """Everything labelled with the release, in the namespace, in `default` and at cluster scope."""
    selector = f"app.kubernetes.io/instance={release}"
    found = {}
    namespaced = "deployments,replicasets,pods,services,serviceaccounts,configmaps,roles,rolebindings,poddisruptionbudgets"
    for where, args in (
        (namespace, ["-n", namespace]),
        ("default", ["-n", "default"]),
    ):
        items = cp.get_json(namespaced, *args, "-l", selector)["items"]
        found[where] = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in items)
    items = cp.get_json("clusterroles,clusterrolebindings", "-l", selector)["items"]
    found["cluster"] = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in items)
    return found


def everything_in(cp: ControlPlane, namespace: str) -> list[str]:
    kinds = cp.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    items = cp.get_json(",".join(k for k in kinds if k not in ("events", "events.events.k8s.io")), "-n", namespace)["items"]
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in items)


@pytest.mark.parametrize("mode", ["standalone", "ha-namespaced"])
def test_install_into_a_restricted_namespace_then_uninstall(
    control_plane: ControlPlane, helm: Helm, namespace: str, mode: str
) -> None:
    cp = control_plane
    ns = cp.get_json("namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    before = everything_in(cp, namespace)  # the default ServiceAccount, kube-root-ca.crt
    release = f"rljob-{secrets.token_hex(3)}"
    values: dict[str, Any] = {"grafana": {"dashboards": {"enabled": True}}}
    if mode == "ha-namespaced":
        values.update(replicaCount=2, watch={"namespaces": [namespace]})

    res = helm("install", release, CHART, "--namespace", namespace, "-f", helm.values(values), "--wait", "--timeout", "120s")
    assert "STATUS: deployed" in res.stdout
    assert "kubectl apply" in res.stdout and "examples/pong.yaml" in res.stdout  # NOTES.txt
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert f"Default runtime image for jobs: ghcr.io/rljob/runtime:{app_version}-cpu\n" in res.stdout
    for crd in CHART_CRDS:
        cp.kubectl("get", "crd", crd)

    deployment = cp.get_json("deployment", release, "-n", namespace)
    replicas = 2 if mode == "ha-namespaced" else 1
    assert deployment["status"].get("readyReplicas") == replicas
    pods = cp.get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
    assert len(pods) == replicas
    for pod in pods:  # admitted under `restricted` enforcement, scheduled on a kwok node, Running
        assert pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"].startswith("kwok-")
        assert pod["spec"]["serviceAccountName"] == release
        assert pod["spec"]["containers"][0]["args"][0] == "operator"
    events = cp.get_json("events", "-n", namespace, "--field-selector", "reason=FailedCreate")["items"]
    assert events == [], [e["message"] for e in events]

    created = release_objects(cp, namespace, release)
    assert f"Deployment/{release}" in created[namespace] and f"ConfigMap/{release}-dashboard" in created[namespace]
    assert created["default"] == []  # nothing there: no job reaches the API server, so its addresses are not read
    operator_rules = [] if mode == "ha-namespaced" else [f"ClusterRole/{release}"]  # namespaced: Roles only
    assert created["cluster"] == [*operator_rules, f"ClusterRole/{release}-edit", f"ClusterRole/{release}-view",
                                  *([f"ClusterRoleBinding/{release}"] if operator_rules else [])]
    # The default values: full references, tagged with the chart's appVersion.
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/rljob/operator:{app_version}"
    assert f"--default-image=ghcr.io/rljob/runtime:{app_version}-cpu" in container["args"]
    assert all(pod["spec"]["containers"][0]["image"] == container["image"] for pod in pods)
    deployment_probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert deployment_probe["httpGet"] == {"path": "/readyz", "port": "health", "scheme": "HTTP"}
    if mode == "ha-namespaced":
        expected = {f"Role/{release}", f"RoleBinding/{release}", f"Role/{release}-leader-election",
                    f"RoleBinding/{release}-leader-election", f"PodDisruptionBudget/{release}"}
        assert expected <= set(created[namespace])
    # No admission policy of the chart's: jobs' drivers write nothing to the API server.
    policies = cp.get_json("validatingadmissionpolicies,validatingadmissionpolicybindings", "-l", f"app.kubernetes.io/instance={release}")
    assert policies["items"] == []

    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_for(lambda: everything_in(cp, namespace) == before, timeout=60, interval=0.5,
             description=f"namespace {namespace} back to {before}")
    assert release_objects(cp, namespace, release) == {namespace: [], "default": [], "cluster": []}
    crds = {o["metadata"]["name"] for o in cp.get_json("crds")["items"]}
    assert crds >= CHART_CRDS  # helm never deletes what crds/ installed
    assert release not in [r["name"] for r in json.loads(helm("list", "--all-namespaces", "--all", "-o", "json").stdout)]


def as_user(cp: ControlPlane, user: str, *args: str, input: Any = None) -> subprocess.CompletedProcess[str]:
    """kubectl as another user (impersonated by the admin): the API server authorizes the request as that user."""
    return cp.kubectl(f"--as={user}", *args, input=input, check=False)


def bind(cp: ControlPlane, namespace: str, user: str, cluster_role: str) -> None:
    cp.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{cluster_role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })


def test_umbrella_chart_install_and_user_roles(
    control_plane: ControlPlane, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    """rljob as a dependency of a platform's chart (which hands it `global` values), installed for real; then the
    aggregated roles: a user with the built-in `edit` in a namespace creates jobs there, one with `view` only reads
    them."""
    cp = control_plane
    platform = tmp_path / "platform"
    platform.mkdir()
    (platform / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "dependencies": [{"name": "rljob", "version": "0.1.0", "repository": f"file://{CHART}"}],
    }))
    (platform / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "registry.example.com", "storageClass": "fast"},
        "rljob": {"logLevel": "debug", "extraArgs": ["--progress-interval=30", "--concurrency=4"]},
    }))
    helm("dependency", "update", platform)
    release = f"platform-{secrets.token_hex(3)}"
    res = helm("install", release, platform, "--namespace", namespace, "--wait", "--timeout", "120s")
    assert "STATUS: deployed" in res.stdout
    try:
        deployment = cp.get_json("deployment", f"{release}-rljob", "-n", namespace)
        assert deployment["status"].get("readyReplicas") == 1
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--log-level=debug" in container["args"]  # the platform's value
        # The platform's registry for both images (paths kept), and its extra flags after the chart's.
        assert container["image"] == "registry.example.com/rljob/operator:0.1.0"
        assert "--default-image=registry.example.com/rljob/runtime:0.1.0-cpu" in container["args"]
        assert container["args"][-3:] == ["--log-level=debug", "--progress-interval=30", "--concurrency=4"]
        pods = cp.get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
        assert [p["spec"]["containers"][0]["image"] for p in pods] == [container["image"]]
        cluster = release_objects(cp, namespace, release)["cluster"]
        assert {f"ClusterRole/{release}-rljob-edit", f"ClusterRole/{release}-rljob-view"} <= set(cluster)

        from tests.builders import minimal_job

        alice, bob = f"alice-{secrets.token_hex(2)}", f"bob-{secrets.token_hex(2)}"
        bind(cp, namespace, alice, "edit")
        bind(cp, namespace, bob, "view")
        job = minimal_job("by-alice")
        job["metadata"]["namespace"] = namespace
        # The aggregation controller copies the rules into edit and view shortly after the ClusterRoles appear.
        wait_for(lambda: as_user(cp, alice, "auth", "can-i", "create", "rltrainingjobs.rljob.dev", "-n", namespace).returncode == 0,
                 timeout=30, interval=0.5, description="edit aggregates rljob-edit")
        wait_for(lambda: as_user(cp, bob, "auth", "can-i", "list", "rltrainingjobs.rljob.dev", "-n", namespace).returncode == 0,
                 timeout=30, interval=0.5, description="view aggregates rljob-view")
        created = as_user(cp, alice, "create", "-f", "-", input=job)
        assert created.returncode == 0, created.stderr
        assert as_user(cp, alice, "patch", "rltj", "by-alice", "-n", namespace, "--type=merge",
                       "-p", '{"spec":{"suspend":true}}').returncode == 0
        for verb in (("get", "rltj", "by-alice"), ("get", "rltj")):
            got = as_user(cp, bob, *verb, "-n", namespace, "-o", "name")
            assert got.returncode == 0 and "rltrainingjob.rljob.dev/by-alice" in got.stdout, got.stderr
        job["metadata"]["name"] = "by-bob"
        refused = as_user(cp, bob, "create", "-f", "-", input=job)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
        refused = as_user(cp, bob, "delete", "rltj", "by-alice", "-n", namespace)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
        # Status is the operator's: not even an editor writes it.
        refused = as_user(cp, alice, "patch", "rltj", "by-alice", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", '{"status":{"phase":"Succeeded"}}')
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
        assert as_user(cp, alice, "delete", "rltj", "by-alice", "-n", namespace).returncode == 0
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    assert release_objects(cp, namespace, release)["cluster"] == []


def test_helm_env_is_isolated(helm: Helm) -> None:
    """helm must not read or write the developer's own config or cache."""
    for key in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        assert helm.env[key].startswith(str(helm.values_dir)), key
    assert os.environ.get("HOME") != helm.env["HOME"]
