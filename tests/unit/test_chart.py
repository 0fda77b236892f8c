"""The Helm chart, checked statically: its CRD, `helm lint --strict`, what `helm template` renders (restricted
pods, least-privilege RBAC, the operator's real flags), and the Grafana dashboard's queries.

What only a real API server can check (server-side dry run, install, uninstall, the RBAC rules against what the
operator calls) is in tests/integration/test_helm.py and tests/integration/test_operator_rbac.py.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rljob.api import constants as c
from tests.tooling import KUBE_VERSION, ROOT, helm_bin

CHART = ROOT / "charts" / "rljob"
DASHBOARD = CHART / "dashboards" / "rljob.json"

# Values that turn on everything optional: HA with leader election, a namespace list, the ServiceMonitor, the dashboard.
FULL_VALUES: dict[str, Any] = {
    "replicaCount": 2,
    "watch": {"namespaces": ["team-a", "team-b"]},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafana": {"dashboards": {"enabled": True}},
    "imagePullSecrets": [{"name": "regcred"}],
    "logLevel": "debug",
    "jobDefaults": {"image": {"repository": "registry.example/rljob/runtime", "tag": "0.1.0-cuda"}},
    "extraArgs": ["--progress-interval=30"],
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "full": FULL_VALUES,
    "ha-cluster-wide": {"replicaCount": 3},
    "no-metrics": {"metrics": {"enabled": False}},
}


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm-home")
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
            "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data")}


def helm(env: dict[str, str], *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    if args and args[0] == "template" and not any(str(a).startswith("--kube-version") for a in args):
        args = (*args, "--kube-version", KUBE_VERSION)
    res = subprocess.run([helm_bin(), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(map(str, args))} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(env: dict[str, str], tmp_path: Path, values: dict[str, Any], namespace: str = "rljob-system") -> list[dict[str, Any]]:
    out = helm(env, "template", "rljob", CHART, "--namespace", namespace, "-f", values_file(tmp_path, values)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def operator_cluster_roles(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in by_kind(objs, "ClusterRole") if not aggregated(r)]


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def parse_operator_args(args: list[str]) -> argparse.Namespace:
    """Parses the container's arguments with the real `rljob operator` parser: unknown flags or bad values fail."""
    from rljob.cli import operator as operator_cli

    parser = argparse.ArgumentParser(prog="rljob", exit_on_error=False)
    operator_cli.register(parser.add_subparsers(dest="command"))
    assert args[0] == "operator"
    try:
        return parser.parse_args(args)
    except SystemExit as exc:  # argparse exits on invalid choices even with exit_on_error=False
        raise AssertionError(f"`rljob {' '.join(args)}` is not a valid command line") from exc


# ── the chart's files ────────────────────────────────────────────────────────────────────────────────


def test_chart_crd_is_the_generated_one() -> None:
    generated = ROOT / "crds" / f"{c.CRD_NAME}.yaml"
    assert (CHART / "crds" / generated.name).read_bytes() == generated.read_bytes(), "run `make crd`"


def test_chart_metadata_matches_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)  # type: ignore[union-attr]
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == version == "0.1.0"
    # Full references (the registry hack/images.sh pushes to by default), tags from appVersion.
    assert values["image"]["repository"] == "ghcr.io/rljob/operator" and values["image"]["tag"] == ""
    assert values["jobDefaults"]["image"] == {"repository": c.RUNTIME_REPOSITORY, "tag": ""}
    assert values["global"] == {"imageRegistry": ""} and values["extraArgs"] == []
    assert values["watch"]["namespaces"] == [] and values["replicaCount"] == 1
    assert values["serviceMonitor"]["enabled"] is False and values["metrics"]["port"] == 8080


def images(env: dict[str, str], tmp_path: Path, values: dict[str, Any]) -> tuple[str, str]:
    """The operator's image and the jobs' default image that `values` render."""
    container = operator_container(render(env, tmp_path, values))
    return container["image"], parse_operator_args(container["args"]).default_image


@pytest.mark.parametrize(("values", "operator", "job"), [
    ({}, "ghcr.io/rljob/operator:0.1.0", "ghcr.io/rljob/runtime:0.1.0-cpu"),
    ({"image": {"tag": "1.2.3"}, "jobDefaults": {"image": {"repository": "ghcr.io/rljob/runtime", "tag": "1.2.3-cuda"}}},
     "ghcr.io/rljob/operator:1.2.3", "ghcr.io/rljob/runtime:1.2.3-cuda"),
    # global.imageRegistry replaces the registry host and keeps the path, as a mirror of the registry does ...
    ({"global": {"imageRegistry": "mirror.example.com:5000"}},
     "mirror.example.com:5000/rljob/operator:0.1.0", "mirror.example.com:5000/rljob/runtime:0.1.0-cpu"),
    ({"global": {"imageRegistry": "harbor.example.com/ghcr-cache/"}},
     "harbor.example.com/ghcr-cache/rljob/operator:0.1.0", "harbor.example.com/ghcr-cache/rljob/runtime:0.1.0-cpu"),
    ({"global": {"imageRegistry": "m.example"}, "image": {"repository": "localhost:5000/team/operator", "digest": "sha256:" + "a" * 64}},
     "m.example/team/operator@sha256:" + "a" * 64, "m.example/rljob/runtime:0.1.0-cpu"),
    # ... and is prepended to a reference without one (Docker Hub's), a whole reference given as a string included.
    ({"global": {"imageRegistry": "m.example"}, "image": {"repository": "rljob/operator"},
      "jobDefaults": {"image": "team/runtime:2-cuda"}},
     "m.example/rljob/operator:0.1.0", "m.example/team/runtime:2-cuda"),
    ({"global": {"imageRegistry": "m.example"}, "jobDefaults": {"image": "runtime:2"}},
     "m.example/rljob/operator:0.1.0", "m.example/runtime:2"),
    # What the end-to-end tests install: local names, no registry at all.
    ({"image": {"repository": "rljob/operator", "tag": "0.1.0"},
      "jobDefaults": {"image": {"repository": "rljob/runtime", "tag": "0.1.0-cpu"}}},
     "rljob/operator:0.1.0", "rljob/runtime:0.1.0-cpu"),
    ({"jobDefaults": {"image": "registry.example.com/team/runtime:0.1.0-cpu"}}, "ghcr.io/rljob/operator:0.1.0",
     "registry.example.com/team/runtime:0.1.0-cpu"),
])  # fmt: skip
def test_image_references(helm_home: dict[str, str], tmp_path: Path, values: dict[str, Any], operator: str, job: str) -> None:
    assert images(helm_home, tmp_path, values) == (operator, job)


def test_extra_args_come_last(helm_home: dict[str, str], tmp_path: Path) -> None:
    extra = ["--progress-interval=2.5", "--concurrency=4", "--namespace=team-c", "--cluster-cidr", "10.0.0.0/8"]
    container = operator_container(render(helm_home, tmp_path, {"watch": {"namespaces": ["team-a"]}, "extraArgs": extra}))
    assert container["args"][-len(extra):] == extra
    args = parse_operator_args(container["args"])
    # A flag the chart sets too takes the later value; a repeatable one adds up.
    assert (args.progress_interval, args.concurrency) == (2.5, 4)
    assert args.namespace == ["team-a", "team-c"] and args.cluster_cidr == ["10.0.0.0/8"]
    assert container["args"].count("--concurrency=16") == 1


def test_values_schema_rejects_mistakes(helm_home: dict[str, str], tmp_path: Path) -> None:
    for bad in ({"logLevel": "verbose"}, {"watch": {"namespaces": ["team-*"]}}, {"replicaCount": 0}, {"metric": {}},
                {"globals": {}}, {"global": "shared"}, {"rbac": {"clusterscoped": False}},
                {"podMonitor": {"enable": True}},
                # gone with the driver's API access: an old values file that still sets them is told so
                {"jobNetwork": {"apiServerEndpoints": ["10.0.0.1:6443"]}}, {"driverPolicy": {"enabled": True}},
                {"jobNetwork": {"metricsScrapeNamespaces": ["Monitoring"]}},
                {"global": {"imageRegistry": "https://registry.example.com"}}, {"global": {"imageRegistry": 5000}},
                {"extraArgs": "--progress-interval=30"}, {"extraArgs": [30]}, {"extraArgs": [""]},
                {"jobDefaults": {"image": {"repository": ""}}}, {"jobDefaults": {"image": {"repository": "r", "digest": "x"}}},
                {"jobDefaults": {"image": ""}}):
        res = helm(helm_home, "template", "rljob", CHART, "-f", values_file(tmp_path, bad), check=False)
        assert res.returncode != 0, bad
    res = helm(helm_home, "template", "rljob", CHART, "-f",
               values_file(tmp_path, {"metrics": {"enabled": False}, "serviceMonitor": {"enabled": True}}), check=False)
    assert res.returncode != 0 and "serviceMonitor.enabled needs metrics.enabled" in res.stderr


RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """The Pod Security Standard `restricted` (latest), as far as a pod spec shows it."""
    problems = []
    pod_sc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {kinds}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        sc = container.get("securityContext") or {}
        name = container["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost, not {seccomp}")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_rendered_pods_meet_restricted(helm_home: dict[str, str], tmp_path: Path, values: str) -> None:
    objs = render(helm_home, tmp_path, VALUE_SETS[values])
    pods = [o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert pods
    for spec in pods:
        assert restricted_violations(spec) == []
        container = spec["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["runAsUser"] == 65532


def aggregated(role: dict[str, Any]) -> bool:
    """A ClusterRole for the cluster's users (aggregated into admin/edit/view), not the operator's."""
    return any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in role["metadata"].get("labels", {}))


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_rbac_has_no_wildcards_and_no_escalation(helm_home: dict[str, str], tmp_path: Path, values: str) -> None:
    objs = render(helm_home, tmp_path, VALUE_SETS[values])
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role") and not aggregated(o)]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(key) or []), (role["metadata"]["name"], rule)
            assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "deletecollection"}, rule
            # update only on the jobs' finalizers (what blockOwnerDeletion needs on strict clusters) and on the
            # leader-election Lease: no job's or child's content
            assert "update" not in rule["verbs"] or rule["resources"] in (["rltrainingjobs/finalizers"], ["leases"]), rule
            assert not {"secrets", "configmaps", "nodes"} & set(rule["resources"]), rule
    for binding in (o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["roleRef"]["name"] in {r["metadata"]["name"] for r in roles}, "bound to a role of the chart only"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rljob", "namespace": "rljob-system"}]


def operator_grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(API group, resource) → verbs, over every rule of one of the operator's roles."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("values", [*VALUE_SETS, "namespaced-only"])
def test_operator_grants_no_identity_to_jobs(helm_home: dict[str, str], tmp_path: Path, values: str) -> None:
    """Jobs hold no Kubernetes credentials: the operator creates no ServiceAccount, Role or RoleBinding for them, so it
    needs no create (nor bind/escalate) there, nor the get on the jobs' status a driver's Role would have granted. It
    lists and deletes what the previous version made (NAME-driver, NAME-progress-reporter), and patches the old head
    policies' API-server egress away: the upgrade's clean-up."""
    objs = render(helm_home, tmp_path, NAMESPACED_ONLY if values == "namespaced-only" else VALUE_SETS[values])
    roles = [r for r in [*operator_cluster_roles(objs), *by_kind(objs, "Role")] if not r["metadata"]["name"].endswith("-leader-election")]
    assert roles
    for role in roles:
        grants = operator_grants(role)
        if ("", "pods") not in grants:
            continue  # the Kueue-only ClusterRole beside namespaced Roles
        for key in (("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings")):
            assert grants.get(key) == {"list", "delete"}, (role["metadata"]["name"], key, grants.get(key))
        assert grants[("networking.k8s.io", "networkpolicies")] == {"create", "get", "list", "watch", "patch"}
        assert grants[(c.GROUP, f"{c.PLURAL}/status")] == {"patch"}
        assert not any({"bind", "escalate"} & verbs for verbs in grants.values())
        assert not {g for g, _ in grants if g == "discovery.k8s.io"}  # the API server's addresses are no concern now
    # Nothing in `default` (the `kubernetes` EndpointSlices were read for the drivers' egress).
    assert [o for o in objs if o["metadata"].get("namespace") == "default"] == []


def test_default_render(helm_home: dict[str, str], tmp_path: Path) -> None:
    objs = render(helm_home, tmp_path, {})
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    assert sorted(r["metadata"]["name"] for r in by_kind(objs, "ClusterRole") if aggregated(r)) == ["rljob-edit", "rljob-view"]
    (cluster_role,) = operator_cluster_roles(objs)
    granted = {(g, r) for rule in cluster_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("rljob.dev", "rltrainingjobs/status") in granted and ("", "namespaces") not in granted
    assert not any(g == "apiextensions.k8s.io" for g, _ in granted)  # the operator's own watches need no CRD reads
    assert not any(g == "kopf.dev" for g, _ in granted)

    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(objs)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/rljob/operator:{app_version}" and container["command"] == ["rljob"]
    args = parse_operator_args(container["args"])
    assert args.namespace == [] and not args.leader_elect
    # The job image the operator falls back on without the chart is the one the chart names.
    assert args.default_image == f"ghcr.io/rljob/runtime:{app_version}-cpu" == c.DEFAULT_IMAGE
    assert (args.metrics_port, args.health_port, args.log_level) == (8080, 8081, "info")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert not args.no_cluster_scan
    env = {e["name"]: e for e in container["env"]}
    assert env[c.ENV_OPERATOR_NAMESPACE]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    (service,) = by_kind(objs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_full_render(helm_home: dict[str, str], tmp_path: Path) -> None:
    objs = render(helm_home, tmp_path, FULL_VALUES)
    container = operator_container(objs)
    args = parse_operator_args(container["args"])
    assert args.namespace == ["team-a", "team-b"] and args.leader_elect and args.log_level == "debug"
    assert args.leader_election_id == "rljob-operator"
    assert args.default_image == "registry.example/rljob/runtime:0.1.0-cuda"
    assert args.progress_interval == 30 and container["args"][-1] == "--progress-interval=30"  # extraArgs, last
    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # the replica's identity

    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role") if not r["metadata"]["name"].endswith("-leader-election")}
    assert set(roles) == {"team-a", "team-b"}
    for ns in ("team-a", "team-b"):
        resources = {r for rule in roles[ns]["rules"] for r in rule["resources"]}
        assert {"pods", "statefulsets", "rltrainingjobs", "rltrainingjobs/status"} <= resources
        assert any(b["metadata"]["namespace"] == ns and b["roleRef"]["kind"] == "Role" for b in by_kind(objs, "RoleBinding"))
    assert operator_cluster_roles(objs) == []  # nothing cluster-wide: no CRD or Namespace watch, every namespace by name
    assert not [b for b in by_kind(objs, "ClusterRoleBinding")]

    (lease_role,) = [r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert lease_role["metadata"]["namespace"] == "rljob-system"
    assert lease_role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]}]
    (pdb,) = by_kind(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1

    (monitor,) = by_kind(objs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["spec"]["endpoints"][0]["honorLabels"] is True
    (service,) = by_kind(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    (dashboard,) = by_kind(objs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["rljob.json"]) == json.loads(DASHBOARD.read_text())


def test_ha_cluster_wide_render(helm_home: dict[str, str], tmp_path: Path) -> None:
    objs = render(helm_home, tmp_path, {"replicaCount": 3, "leaderElection": {"leaseName": "ops"}})
    args = parse_operator_args(operator_container(objs)["args"])
    assert args.leader_elect and args.leader_election_id == "ops"
    (cluster_role,) = operator_cluster_roles(objs)
    assert not [r for r in cluster_role["rules"] if "leases" in r["resources"]]  # only in its own namespace
    assert [r["metadata"]["name"] for r in by_kind(objs, "RoleBinding")].count("rljob-leader-election") == 1


def test_job_network_settings_reach_the_operator(helm_home: dict[str, str], tmp_path: Path) -> None:
    values = {"jobNetwork": {"dnsNamespace": "dns", "dnsSelector": "app=coredns,tier=node", "requireIsolation": True,
                             "clusterCIDRs": ["10.244.0.0/16", "10.96.0.0/12"]}}
    args = parse_operator_args(operator_container(render(helm_home, tmp_path, values))["args"])
    assert (args.dns_namespace, args.dns_selector, args.require_network_isolation) == ("dns", "app=coredns,tier=node", True)
    assert args.cluster_cidr == ["10.244.0.0/16", "10.96.0.0/12"]


def test_metrics_off_render(helm_home: dict[str, str], tmp_path: Path) -> None:
    objs = render(helm_home, tmp_path, {"metrics": {"enabled": False}})
    assert not by_kind(objs, "Service")
    container = operator_container(objs)
    assert parse_operator_args(container["args"]).metrics_port == 0
    assert [p["name"] for p in container["ports"]] == ["health"]


@pytest.mark.parametrize("values", [*VALUE_SETS, "namespaced-only"])
def test_helm_lint_strict(helm_home: dict[str, str], tmp_path: Path, values: str) -> None:
    chosen = NAMESPACED_ONLY if values == "namespaced-only" else VALUE_SETS[values]
    res = helm(helm_home, "lint", "--strict", CHART, "--kube-version", KUBE_VERSION, "-f", values_file(tmp_path, chosen))
    assert "0 chart(s) failed" in res.stdout and "[WARNING]" not in res.stdout and "[ERROR]" not in res.stdout, res.stdout


def test_kubernetes_130_or_later(helm_home: dict[str, str], tmp_path: Path) -> None:
    """The CRD's CEL rules (quantity(), isCIDR()) are GA from 1.30."""
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == ">=1.30.0-0"
    res = helm(helm_home, "template", "rljob", CHART, "--kube-version", "1.29.9", check=False)
    assert res.returncode != 0 and "incompatible with Kubernetes v1.29.9" in res.stderr
    helm(helm_home, "template", "rljob", CHART, "--kube-version", "1.30.0")
    helm(helm_home, "template", "rljob", CHART, "--kube-version", "1.31.0-eks-1234")  # providers' pre-release suffixes


NAMESPACED_ONLY = {"rbac": {"clusterScoped": False}, "watch": {"namespaces": ["team-a", "team-b"]}, "replicaCount": 2}


def test_no_cluster_scoped_rbac(helm_home: dict[str, str], tmp_path: Path) -> None:
    objs = render(helm_home, tmp_path, NAMESPACED_ONLY)
    # Nothing cluster-scoped (every object names its namespace), and nothing outside the release's and the
    # watched namespaces: an installer with rights there alone can install it.
    assert all(o["metadata"].get("namespace") in {"rljob-system", "team-a", "team-b"} for o in objs), \
        sorted({f"{o['kind']}/{o['metadata']['name']}" for o in objs if o["metadata"].get("namespace") is None})
    assert not {"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy"} & {o["kind"] for o in objs}
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objs, "Role")}
    assert set(roles) == {("team-a", "rljob"), ("team-b", "rljob"), ("rljob-system", "rljob-leader-election")}
    resources = {r for rule in roles[("team-a", "rljob")]["rules"] for r in rule["resources"]}
    assert {"pods", "statefulsets", "rltrainingjobs", "rltrainingjobs/status"} <= resources
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["kind"], b["roleRef"]["name"]) for b in by_kind(objs, "RoleBinding")}
    assert bindings == {("team-a", "Role", "rljob"), ("team-b", "Role", "rljob"), ("rljob-system", "Role", "rljob-leader-election")}
    args = parse_operator_args(operator_container(objs)["args"])
    assert args.no_cluster_scan and args.namespace == ["team-a", "team-b"]

    res = helm(helm_home, "template", "rljob", CHART, "-f", values_file(tmp_path, {"rbac": {"clusterScoped": False}}), check=False)
    assert res.returncode != 0 and "rbac.clusterScoped false needs watch.namespaces" in res.stderr


def test_aggregated_user_roles(helm_home: dict[str, str], tmp_path: Path) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render(helm_home, tmp_path, {}), "ClusterRole") if aggregated(r)}
    edit, view = roles["rljob-edit"], roles["rljob-view"]
    agg = {k: v for k, v in edit["metadata"]["labels"].items() if k.startswith("rbac.")}
    assert agg == {"rbac.authorization.k8s.io/aggregate-to-admin": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true"}
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith("rbac.")} == {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}

    def grants(role: dict[str, Any]) -> set[tuple[str, str]]:
        return {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]
                if rule["apiGroups"] == [c.GROUP]}

    assert {("rltrainingjobs", v) for v in ("create", "delete", "patch", "update", "get", "list", "watch")} <= grants(edit)
    # The status stays the operator's: users read it.
    assert not {g for g in grants(edit) if g[0] == "rltrainingjobs/status" and g[1] not in ("get", "list", "watch")}
    # `kubectl scale` for those who may edit a job, as the built-in roles have it for Deployments.
    assert {("rltrainingjobs/scale", v) for v in ("get", "patch", "update")} <= grants(edit)
    assert grants(view) == {(r, v) for r in ("rltrainingjobs", "rltrainingjobs/status", "rltrainingjobs/scale")
                            for v in ("get", "list", "watch")}
    bindings = [b for b in render(helm_home, tmp_path, {}) if b["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert not [b for b in bindings if b["roleRef"]["name"] in roles]  # bound by the built-in roles' aggregation only

    assert "rljob-namespace-operator" not in roles  # widens every namespace admin: only when asked for
    on = render(helm_home, tmp_path, {"rbac": {"aggregatedRoles": {"namespaceAdminsRunOperators": True}}})
    (delegate,) = [r for r in by_kind(on, "ClusterRole") if r["metadata"]["name"] == "rljob-namespace-operator"]
    assert {k for k in delegate["metadata"]["labels"] if k.startswith("rbac.")} == {"rbac.authorization.k8s.io/aggregate-to-admin"}
    assert {(r, v) for rule in delegate["rules"] for r in rule["resources"] for v in rule["verbs"]} == {
        ("rltrainingjobs/status", "get"), ("rltrainingjobs/status", "patch"), ("rltrainingjobs/finalizers", "update"),
        ("events", "create"), ("events", "patch"), ("leases", "create"), ("leases", "get"), ("leases", "update")}

    off = render(helm_home, tmp_path, {"rbac": {"aggregatedRoles": {"enabled": False}}})
    assert [r for r in by_kind(off, "ClusterRole") if aggregated(r)] == []
    assert [r for r in by_kind(render(helm_home, tmp_path, NAMESPACED_ONLY), "ClusterRole")] == []  # cluster-scoped: off


def test_pod_monitor_scrapes_the_job_heads(helm_home: dict[str, str], tmp_path: Path) -> None:
    from rljob import resources
    from rljob.api import parse_job
    from tests.builders import minimal_job

    assert by_kind(render(helm_home, tmp_path, {}), "PodMonitor") == []
    values = {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
              "jobNetwork": {"metricsScrapeNamespaces": ["monitoring"]}}
    objs = render(helm_home, tmp_path, values)
    (monitor,) = by_kind(objs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # The selector finds exactly the head pods the operator builds, on their metrics ports (by name).
    body = minimal_job()
    body["metadata"]["uid"] = "uid-1"
    built = resources.build(parse_job(body), resources.BuildContext(), attempt=1, coordination_deadline="2026-01-01T00:00:00Z")
    pods = {o["metadata"]["labels"][c.LABEL_ROLE]: o for o in built if o["kind"] == "Pod"}
    workers = next(o for o in built if o["kind"] == "StatefulSet")["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    assert selector <= pods[c.ROLE_HEAD]["metadata"]["labels"].items()
    assert not selector <= workers["metadata"]["labels"].items()
    head_ports = {p["name"]: p["containerPort"] for p in pods[c.ROLE_HEAD]["spec"]["containers"][0]["ports"]}
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert {head_ports[e["port"]] for e in endpoints} == {c.PORT_METRICS, c.PORT_RAY_METRICS}
    for e in endpoints:
        assert {"sourceLabels": ["__meta_kubernetes_pod_label_rljob_dev_job"], "targetLabel": "rltrainingjob"} in e["relabelings"]
    args = parse_operator_args(operator_container(objs)["args"])
    assert args.metrics_scrape_namespace == ["monitoring"]

    (monitor,) = by_kind(render(helm_home, tmp_path, {**values, **NAMESPACED_ONLY}), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def umbrella_chart(root: Path, rljob_values: dict[str, Any]) -> Path:
    """A platform's own chart with rljob as a dependency (file://), and values for both."""
    chart = root / "platform"
    chart.mkdir()
    (chart / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "dependencies": [{"name": "rljob", "version": "0.1.0", "repository": f"file://{CHART}"}],
    }))
    (chart / "values.yaml").write_text(yaml.safe_dump({"global": {"imageRegistry": "registry.example.com"},
                                                       "rljob": rljob_values}))
    return chart


def test_as_a_dependency_of_an_umbrella_chart(helm_home: dict[str, str], tmp_path: Path) -> None:
    """Helm hands every subchart the parent's `global` values: the schema must take them (and nothing else unknown)."""
    chart = umbrella_chart(tmp_path, {"watch": {"namespaces": ["team-a"]}})
    helm(helm_home, "dependency", "update", chart)
    assert (chart / "charts" / "rljob-0.1.0.tgz").exists()
    out = helm(helm_home, "template", "platform", chart, "--namespace", "platform").stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    args = parse_operator_args(operator_container(objs)["args"])
    assert args.namespace == ["team-a"]
    # The platform's global.imageRegistry replaces the registry of both images.
    assert operator_container(objs)["image"] == "registry.example.com/rljob/operator:0.1.0"
    assert args.default_image == "registry.example.com/rljob/runtime:0.1.0-cpu"

    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"rljob": {"replicas": 2}}))
    res = helm(helm_home, "template", "platform", chart, "-f", bad, check=False)
    assert res.returncode != 0 and "replicas" in res.stderr


# ── the Grafana dashboard ────────────────────────────────────────────────────────────────────────────


def defined_metric_names() -> set[str]:
    """Every sample name the operator exposes: rljob.api.metrics' definitions, checked against what its metrics module
    emits in tests/unit/test_operator_metrics.py."""
    from rljob.api import metrics as m

    names = {name for d in m.exported_by(m.Source.OPERATOR) for name in d.samples()}
    assert {"rljob_jobs", "rljob_job_info", "rljob_cluster_ready_seconds_bucket", "rljob_reconcile_errors_total"} <= names
    return names


def dashboard_exprs() -> list[str]:
    def walk(node: Any) -> list[str]:
        if isinstance(node, dict):
            return ([node["expr"]] if isinstance(node.get("expr"), str) else []) + [e for v in node.values() for e in walk(v)]
        if isinstance(node, list):
            return [e for v in node for e in walk(v)]
        return []

    board = json.loads(DASHBOARD.read_text())
    variables = [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    return walk(board["panels"]) + variables


def test_dashboard_queries_only_metrics_the_operator_defines() -> None:
    defined = defined_metric_names()
    exprs = dashboard_exprs()
    used: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\brljob_[a-zA-Z0-9_:]+", expr))
        assert names, f"no rljob metric in {expr!r}"
        assert names <= defined, f"{expr!r} uses {sorted(names - defined)}, which the operator does not export (rljob.api.metrics)"
        used |= names
    assert {
        "rljob_jobs", "rljob_job_info", "rljob_job_episode_return_mean", "rljob_job_env_steps_per_second",
        "rljob_job_env_steps_total", "rljob_job_training_iterations_total", "rljob_cluster_ready_seconds_bucket",
        "rljob_reconcile_errors_total", "rljob_reconcile_duration_seconds_bucket",
    } <= used


def test_dashboard_pickers_list_jobs_that_have_not_reported_yet() -> None:
    """The namespace and job pickers read rljob_job_info, which the operator exports for every job it knows; a
    progress metric would leave out jobs still starting (and every job when only the driver were scraped)."""
    board = json.loads(DASHBOARD.read_text())
    pickers = {v["name"]: v["definition"] for v in board["templating"]["list"] if v.get("definition")}
    assert pickers and all(d.startswith("label_values(rljob_job_info") for d in pickers.values()), pickers


def test_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["refId"] for t in panel["targets"])
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    quantiles = [e for e in dashboard_exprs() if "histogram_quantile" in e]
    assert quantiles and all("sum by (le" in e and "_bucket[" in e for e in quantiles)


def test_operator_pod_gets_no_service_links(helm_home: dict[str, str], tmp_path: Path) -> None:
    """A Service named <release>-metrics would inject RLJOB_METRICS_PORT=tcp://... into the operator."""
    deployment = by_kind(render(helm_home, tmp_path, {}), "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_operator_survives_a_service_link_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from rljob.cli import build_parser

    monkeypatch.setenv("RLJOB_METRICS_PORT", "tcp://10.96.3.4:8080")
    assert build_parser().parse_args(["operator"]).metrics_port == 8080


def test_kueue(helm_home: dict[str, str], tmp_path: Path) -> None:
    """kueue.enabled: the operator admits queued jobs through Workloads, with exactly the rights that takes."""
    objs = render(helm_home, tmp_path, {"kueue": {"enabled": True}})
    assert parse_operator_args(operator_container(objs)["args"]).kueue
    (role,) = operator_cluster_roles(objs)
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules[("kueue.x-k8s.io", "workloads")] == {"create", "delete", "get", "list", "patch", "watch"}
    assert rules[("kueue.x-k8s.io", "workloads/status")] == {"patch"}
    assert rules[("kueue.x-k8s.io", "resourceflavors")] == {"get"}

    namespaced = render(helm_home, tmp_path, {"kueue": {"enabled": True}, "watch": {"namespaces": ["team-a"]}})
    (team_role,) = [r for r in by_kind(namespaced, "Role") if r["metadata"]["namespace"] == "team-a"]
    assert any("workloads" in rule["resources"] for rule in team_role["rules"])

    off = render(helm_home, tmp_path, {})
    assert not parse_operator_args(operator_container(off)["args"]).kueue
    assert not any(g == "kueue.x-k8s.io" for r in by_kind(off, "ClusterRole") for rule in r["rules"] for g in rule["apiGroups"])

    res = helm(helm_home, "template", "rljob", CHART, "-f", values_file(tmp_path, {**NAMESPACED_ONLY, "kueue": {"enabled": True}}),
               check=False)
    assert res.returncode != 0 and "kueue.enabled needs rbac.clusterScoped" in res.stderr
