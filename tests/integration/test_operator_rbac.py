"""The chart's RBAC against what the operator is seen to call.

A control plane of its own with the API server's audit log on; the chart's ServiceAccount and RBAC (from `helm
template`) applied; `rljob operator` run with the chart's arguments and a kubeconfig holding only that
ServiceAccount's token. Jobs are driven through every path that calls the API (creation of all children,
success, a failed attempt and its retry, a worker rescale, suspension, deletion after ttlSecondsAfterFinished).
Then, from the audit log:

* no request of the ServiceAccount was refused (403): the rules are enough;
* every (verb, group, resource, subresource) the chart grants was used, except the few in EXEMPT (never used) and
  OPTIONAL (used only on some runs), each with its reason: the rules are no more than needed.

The cluster-wide run also starts with a job of the previous version's shape (its driver's ServiceAccount, Role and
RoleBinding, a head policy with API-server egress), so that the upgrade clean-up's grants are used too.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rljob.api import constants as c
from rljob.api import parse_job
from rljob.resources.meta import object_meta
from tests.builders import small_job
from tests.cluster.chart import CHART, OPERATOR_NS, ChartOperator, helm_env, helm_template, token_kubeconfig, values_file
from tests.cluster.controlplane import ControlPlane, ControlPlaneError, find_bin_dir, wait_for
from tests.integration.jobs import status, wait_phase
from tests.tooling import ROOT

HOLD = "testing.rljob.io/hold"  # a finalizer of the test's, holding a child of a deleted job

Permission = tuple[str, str, str, str]  # verb, API group, resource, subresource

# Granted but never expected in the audit log, and why.
EXEMPT: dict[Permission, str] = {
    ("update", c.GROUP, c.PLURAL, "finalizers"): (
        "never called: the OwnerReferencesPermissionEnforcement admission plugin (enabled in the test control plane, "
        "as on OpenShift and other strict clusters) checks it whenever the operator creates a child whose "
        "ownerReference sets blockOwnerDeletion"
    ),
}
# Granted and used on some runs only: neither required to be used nor flagged when used.
OPTIONAL: dict[Permission, str] = {
    ("patch", "", "events", ""): (
        "the count of an event the operator posted, raised when the same event repeats on the same job: only when a "
        "transition repeats within a run"
    ),
    ("get", c.GROUP, c.PLURAL, ""): (
        "a fresh read of the job when a decision's status write conflicts (409): only when the job changed between "
        "the operator's read and its write, which a run may or may not provoke"
    ),
}


def live_pods(cp: ControlPlane, ns: str, job: str) -> set[str]:
    pods = cp.get_json("pods", "-n", ns, "-l", f"{c.LABEL_JOB}={job}")["items"]
    return {p["metadata"]["name"] for p in pods
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") not in ("Succeeded", "Failed")}


def release_hold(cp: ControlPlane, kind: str, name: str, ns: str) -> None:
    """Remove the test's finalizer only, tested at its index: the object's own controllers may drop theirs meanwhile
    (a claim's pvc-protection goes once no pod uses it), and a merge patch of the list read a moment ago would try
    to add theirs back, which the API server refuses for an object being deleted."""
    def removed() -> bool:
        finalizers = cp.get_json(kind, name, "-n", ns)["metadata"].get("finalizers") or []
        if HOLD not in finalizers:
            return True
        at = f"/metadata/finalizers/{finalizers.index(HOLD)}"
        patch = json.dumps([{"op": "test", "path": at, "value": HOLD}, {"op": "remove", "path": at}])
        return cp.kubectl("patch", kind, name, "-n", ns, "--type=json", "-p", patch, check=False).returncode == 0
    wait_for(removed, timeout=30, interval=0.2, description=f"the test's finalizer removed from {kind}/{name}")


def restricted_namespace(cp: ControlPlane, name: str) -> str:
    labels = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
    cp.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    wait_for(lambda: cp.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
             timeout=30, description=f"serviceaccount {name}/default")
    return name


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane that audits every request of the operator namespace's ServiceAccounts (metadata only)."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "userGroups": [f"system:serviceaccounts:{OPERATOR_NS}"]},
            {"level": "None"},
        ],
    }
    cp = ControlPlane(tmp_path_factory.mktemp("audited"), bin_dir=find_bin_dir(), cpu_nodes=1, gpu_nodes=0, audit_policy=policy)
    try:
        cp.start()
    except ControlPlaneError as e:
        pytest.fail(f"the audited control plane did not start: {e}", pytrace=False)
    try:
        cp.apply((ROOT / "crds" / f"{c.CRD_NAME}.yaml").read_text())
        cp.wait_established()
        cp.kubectl("create", "namespace", OPERATOR_NS)
        yield cp
    finally:
        cp.stop()


class Deployed(ChartOperator):
    """The chart's operator, and what its grants and its requests (from the audit log) say about each other."""

    def granted(self) -> set[Permission]:
        """What the chart's roles bound to the ServiceAccount allow."""
        bound = {(b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
                 for b in self.objs if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
                 if {"kind": "ServiceAccount", "name": self.service_account, "namespace": OPERATOR_NS} in b["subjects"]}
        out = set()
        for role in (o for o in self.objs if o["kind"] in ("ClusterRole", "Role")):
            if (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace")) not in bound:
                continue
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        main, _, sub = resource.partition("/")
                        out |= {(verb, group, main, sub) for verb in rule["verbs"]}
        return out

    def requests(self) -> list[dict[str, Any]]:
        """The ServiceAccount's requests on API resources (discovery of /api and /apis left out), one per request."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.cp.audit_events(self.user):
            if event.get("objectRef") and event.get("responseStatus"):
                seen[event["auditID"]] = event  # a watch has a ResponseStarted and, once closed, a ResponseComplete
        return list(seen.values())

    def check(self, expect_used: set[Permission] | None = None) -> set[Permission]:
        """No request refused; returns the permissions used. Every granted one must be used (or exempt, or optional)."""
        requests = self.requests()
        assert requests, f"no audited request of {self.user}"
        forbidden = sorted({e["responseStatus"].get("message") or f"{e['verb']} {e['requestURI']}"
                            for e in requests if e["responseStatus"].get("code") == 403})
        assert forbidden == [], "the chart's RBAC refused the operator:\n" + "\n".join(forbidden)
        used = {(e["verb"], e["objectRef"].get("apiGroup", ""), e["objectRef"]["resource"], e["objectRef"].get("subresource", ""))
                for e in requests}
        granted = self.granted()
        assert used <= granted  # (else the API server would have said 403 above)
        if expect_used is None:
            unused = granted - used - set(EXEMPT) - set(OPTIONAL)
            stale = {p for p in EXEMPT if p in used or p not in granted} | {p for p in OPTIONAL if p not in granted}
            assert stale == set(), ("EXEMPT lists permissions the operator used or the chart does not grant, or OPTIONAL "
                                    f"ones the chart does not grant: {sorted(stale)}")
        else:
            assert expect_used <= granted
            unused = expect_used - used
        assert unused == set(), f"granted by the chart but never used by the operator: {sorted(unused)}"
        # The jobs hold no credentials: the API server's own addresses are no concern of the operator's.
        assert not [e for e in requests if e["objectRef"]["resource"] == "endpointslices"]
        log = self.operator.log_path.read_text()
        assert "Forbidden" not in log and "Not enough permissions" not in log, self.operator.log_tail()
        return used


def previous_version_job(cp: ControlPlane, ns: str, name: str) -> set[str]:
    """A job as the previous version left it, made before the operator starts: its driver's ServiceAccount
    (NAME-driver), Role and RoleBinding (NAME-progress-reporter) and a head policy with API-server egress, owned by
    the job and labelled as that version labelled them. Returns them as `kind/name`."""
    cp.apply(small_job(name, ns, workers={"replicas": 1, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"}))
    job = parse_job(cp.get_json("rltj", name, "-n", ns))
    head = f"{name}-head"
    previous = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
         "metadata": object_meta(job, f"{name}-driver", c.COMPONENT_RBAC)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": object_meta(job, f"{name}-progress-reporter", c.COMPONENT_RBAC),
         "rules": [{"apiGroups": [c.GROUP], "resources": [f"{c.PLURAL}/status"], "resourceNames": [name],
                    "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": object_meta(job, f"{name}-progress-reporter", c.COMPONENT_RBAC),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-progress-reporter"},
         "subjects": [{"kind": "ServiceAccount", "name": f"{name}-driver", "namespace": ns}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": object_meta(job, head, c.COMPONENT_NETWORK),
         "spec": {"podSelector": {"matchLabels": {c.LABEL_JOB: name, c.LABEL_ROLE: c.ROLE_HEAD}},
                  "policyTypes": ["Ingress", "Egress"],
                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NS}}}],
                               "ports": [{"protocol": "TCP", "port": c.PORT_METRICS}]}],
                  "egress": [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]}},
    ]
    cp.create(previous)
    return {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in previous}


def scale_workers(cp: ControlPlane, ns: str, name: str, replicas: int) -> None:
    cp.kubectl("patch", "rltj", name, "-n", ns, "--type=merge", "-p", f'{{"spec":{{"workers":{{"replicas":{replicas}}}}}}}')


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(audited: ControlPlane, tmp_path: Path) -> None:
    cp = audited
    deployed = Deployed(cp, "rljob", {}, tmp_path)
    assert deployed.service_account == "rljob" and not any(a.startswith(("--namespace", "--leader-elect")) for a in deployed.args)
    ns = restricted_namespace(cp, "rbac-jobs")
    # "legacy": created by the previous version, its driver identity and API-server egress still there: the
    # operator lists them, deletes the identity and patches the egress out (its head is not the previous version's).
    legacy = previous_version_job(cp, ns, "legacy")
    deployed.operator.start()
    try:
        wait_for(lambda: not any(cp.kubectl("get", obj, "-n", ns, "--ignore-not-found", "-o", "name").stdout.strip()
                                 for obj in legacy if not obj.startswith("networkpolicy/")),
                 timeout=60, description="the previous version's driver identity deleted")
        wait_for(lambda: cp.get_json("networkpolicy", "legacy-head", "-n", ns)["spec"].get("policyTypes") == ["Ingress"],
                 timeout=30, description="the head policy's API-server egress taken out")
        assert not cp.get_json("networkpolicy", "legacy-head", "-n", ns)["spec"].get("egress")
        wait_phase(cp, ns, "legacy", "Running", 60)
        # "ok": every child, a rescale, success (its log kept), deletion after its TTL.
        # "retry": a failed attempt (its log kept, a new head), then suspension (pods and workers deleted).
        # "store": a checkpoint volume (no provisioner here: its head stays Pending, which is all this needs).
        cp.apply(small_job("ok", ns, ttlSecondsAfterFinished=2))
        cp.apply(small_job("retry", ns, backoffLimit=1))
        cp.apply(small_job("store", ns, checkpoint={"size": "1Gi"}))
        wait_phase(cp, ns, "ok", "Running", 60)
        wait_phase(cp, ns, "retry", "Running", 60)
        cp.kubectl("get", "persistentvolumeclaim", "store-checkpoints", "-n", ns)

        scale_workers(cp, ns, "ok", 1)
        cp.set_pod_phase(ns, "retry-head-1", "Failed", exit_code=1)
        wait_for(lambda: status(cp, ns, "ok").get("workers") == "1/1", timeout=30, description="ok rescaled to 1 worker")
        wait_for(lambda: status(cp, ns, "retry").get("attempts") == 2, timeout=30, description="retry: attempt 2")
        wait_phase(cp, ns, "retry", "Running", 30)

        cp.set_pod_phase(ns, "ok-head-1", "Succeeded", exit_code=0)
        cp.kubectl("patch", "rltj", "retry", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
        wait_phase(cp, ns, "ok", "Succeeded", 30)
        wait_phase(cp, ns, "retry", "Suspended", 30)
        wait_for(lambda: not live_pods(cp, ns, "retry"), timeout=30, description="retry's live pods deleted while suspended")
        wait_for(lambda: cp.kubectl("get", "rltj", "ok", "-n", ns, check=False).returncode != 0, timeout=30,
                 description="ok deleted after ttlSecondsAfterFinished")

        # "again" and "claim": deleted while a child lingers (a finalizer holds it: its head, or its checkpoint
        # claim), then re-created under the same name: the operator reads whose the name is, and waits.
        for name, extra, kind, child in (("again", {}, "pod", "again-head-1"),
                                         ("claim", {"checkpoint": {"size": "1Gi"}}, "persistentvolumeclaim", "claim-checkpoints")):
            cp.apply(small_job(name, ns, **extra))
            wait_for(lambda n=name: status(cp, ns, n).get("phase") in ("Initializing", "Running"), timeout=60,
                     description=f"{name}'s head created")
            held = [*(cp.get_json(kind, child, "-n", ns)["metadata"].get("finalizers") or []), HOLD]
            cp.kubectl("patch", kind, child, "-n", ns, "--type=merge", "-p", json.dumps({"metadata": {"finalizers": held}}))
            cp.kubectl("delete", "rltj", name, "-n", ns)
            cp.apply(small_job(name, ns, **extra))
            wait_for(lambda n=name, c=child: c in (status(cp, ns, n).get("message") or ""), timeout=60,
                     description=f"the re-created {name} waits for the old one's {child}")
            release_hold(cp, kind, child, ns)
    finally:
        deployed.operator.stop()

    used = deployed.check()
    assert ("get", "", "pods", "log") in used and ("patch", "apps", "statefulsets", "") in used
    assert ("delete", c.GROUP, c.PLURAL, "") in used and ("patch", c.GROUP, c.PLURAL, "status") in used
    upgrade = {(verb, group, resource, "") for verb in ("list", "delete")
               for group, resource in (("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"),
                                       ("rbac.authorization.k8s.io", "rolebindings"))}
    assert upgrade | {("patch", "networking.k8s.io", "networkpolicies", "")} <= used
    # The operator creates no identity for a job any more.
    assert not [p for p in used if p[0] == "create" and p[2] in ("serviceaccounts", "roles", "rolebindings")]


def test_namespaced_ha_rbac_is_enough(audited: ControlPlane, tmp_path: Path) -> None:
    """With `watch.namespaces` and several replicas: Roles in the watched namespace and the leader-election Lease in
    the operator's namespace, nothing cluster-wide. One replica runs; the job-related rules are the same
    template as above, so a shorter run checks that nothing is refused and that the extra rules are used."""
    cp = audited
    ns = restricted_namespace(cp, "rbac-team")
    deployed = Deployed(cp, "rljob-ns", {"replicaCount": 2, "watch": {"namespaces": [ns]}}, tmp_path)
    assert f"--namespace={ns}" in deployed.args and "--leader-elect" in deployed.args
    deployed.operator.start()
    try:
        cp.apply(small_job("one", ns, workers={"replicas": 1, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"}))
        wait_phase(cp, ns, "one", "Running", 60)
        cp.set_pod_phase(ns, "one-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, ns, "one", "Succeeded", 30)
        lease = cp.get_json("lease", "rljob-operator", "-n", OPERATOR_NS)
        assert lease["spec"]["holderIdentity"], "the operator holds the leader-election Lease"
    finally:
        deployed.operator.stop()

    expected = {
        ("get", "coordination.k8s.io", "leases", ""), ("create", "coordination.k8s.io", "leases", ""),
        ("update", "coordination.k8s.io", "leases", ""),
        ("create", "", "pods", ""), ("patch", c.GROUP, c.PLURAL, "status"),
        # the upgrade scan, in the watched namespace, when this replica starts to lead
        ("list", "", "serviceaccounts", ""), ("list", "rbac.authorization.k8s.io", "roles", ""),
        ("list", "rbac.authorization.k8s.io", "rolebindings", ""),
    }
    used = deployed.check(expect_used=expected)
    outside = {e["objectRef"].get("namespace") for e in deployed.requests()} - {None, ns, OPERATOR_NS}
    assert outside == set(), f"the namespaced operator reached into {outside}"
    assert not [e for e in deployed.requests() if e["objectRef"]["resource"] == "pods" and not e["objectRef"].get("namespace")]
    cluster_scoped = sorted({f'{e["verb"]} {e["objectRef"]["resource"]}' for e in deployed.requests()
                             if not e["objectRef"].get("namespace")})
    assert cluster_scoped == [], f"the namespaced operator made cluster-scoped requests: {cluster_scoped}"
    assert used >= expected


def test_a_namespace_admin_installs_without_cluster_rbac(audited: ControlPlane, tmp_path: Path) -> None:
    """`rbac.clusterScoped: false`: a user who is admin in two namespaces only (the operator's and the team's) installs
    the chart with `helm install --skip-crds`; the cluster admin has applied the CRD and the aggregated roles before.
    The operator, with the installed release's identity and flags, then runs a job in the team's namespace: nothing
    refused, and not one request outside those two namespaces (no CRD or Namespace watch)."""
    cp = audited
    team = restricted_namespace(cp, "rbac-own")
    # The cluster admin's part: the CRD (the fixture applied crds/) and the roles aggregated into `admin`, with which a
    # namespace admin holds, and so may grant, what the operator's Roles contain.
    cluster_part = helm_template(cp, "cluster-part", {"rbac": {"aggregatedRoles": {"namespaceAdminsRunOperators": True}}},
                                 tmp_path, "--show-only", "templates/aggregated-roles.yaml")
    assert {o["kind"] for o in cluster_part} == {"ClusterRole"}
    cp.apply(cluster_part)

    cp.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "installer", "namespace": team}})
    installer = f"system:serviceaccount:{team}:installer"
    for ns in (OPERATOR_NS, team):
        cp.create({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "installer-admin", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "installer", "namespace": team}],
        })
    for verb, what, ns in (("create", "clusterroles", None), ("create", "customresourcedefinitions", None),
                           ("list", "namespaces", None), ("list", "endpointslices", "default")):
        where = ["-n", ns] if ns else []
        res = cp.kubectl("auth", "can-i", verb, what, *where, f"--as={installer}", check=False)
        assert res.stdout.strip() == "no", f"the installer may {verb} {what}: the test would prove nothing"
    # The aggregation controller fills `admin` with the new rules shortly after they appear.
    def aggregated() -> bool:
        res = cp.kubectl("auth", "can-i", "patch", "rltrainingjobs.rljob.dev", "--subresource=status", "-n", team,
                         f"--as={installer}", check=False)
        return res.stdout.strip() == "yes"

    wait_for(aggregated, timeout=30, interval=0.5, description="admin aggregates the operator's extras")

    release = "team-ops"
    # A Lease of its own: the other tests' operators in this namespace left theirs.
    values = {"rbac": {"clusterScoped": False}, "watch": {"namespaces": [team]}, "replicaCount": 2,
              "leaderElection": {"leaseName": "team-ops"}}
    kubeconfig = token_kubeconfig(cp, team, "installer", tmp_path / "installer.kubeconfig")
    res = subprocess.run(
        [cp.bin("helm"), "install", release, str(CHART), "--namespace", OPERATOR_NS, "--skip-crds", f"--kubeconfig={kubeconfig}",
         "-f", str(values_file(tmp_path, release, values)), "--wait", "--timeout", "120s"],
        capture_output=True, text=True, env=helm_env(tmp_path), timeout=180, check=False)
    assert res.returncode == 0, f"helm install as a namespace admin failed:\n{res.stdout}\n{res.stderr}"
    assert "STATUS: deployed" in res.stdout
    assert "Roles in the watched namespaces only" in res.stdout  # NOTES.txt
    assert "443" not in res.stdout and "6443" not in res.stdout  # the jobs reach no API server: nothing to say of it

    deployed = Deployed(cp, release, values, tmp_path, apply=False)
    installed = cp.get_json("deployment", deployed.service_account, "-n", OPERATOR_NS)
    installed_args = installed["spec"]["template"]["spec"]["containers"][0]["args"]
    assert tuple(a for a in installed_args[1:] if not a.startswith(("--metrics-port", "--health-port"))) == deployed.args
    assert "--no-cluster-scan" in deployed.args and not [a for a in deployed.args if "api-server" in a]
    assert installed["status"].get("readyReplicas") == 2
    deployed.operator.start()
    try:
        ready = f"http://127.0.0.1:{deployed.operator.health_port}/readyz"
        wait_for(lambda: json.loads(urllib.request.urlopen(ready, timeout=5).read()) == {
            "ready": True, "reason": "leader election candidate"}, timeout=30, interval=0.3, description="the operator ready")
        cp.apply(small_job("own", team, workers={"replicas": 1, "cpu": "1", "memory": "2Gi", "shmSize": "512Mi"}))
        wait_phase(cp, team, "own", "Running", 60)
        cp.set_pod_phase(team, "own-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, team, "own", "Succeeded", 30)
        assert cp.get_json("lease", "team-ops", "-n", OPERATOR_NS)["spec"]["holderIdentity"]
        policies = {p["metadata"]["name"]: p["spec"] for p in cp.get_json("networkpolicies", "-n", team)["items"]}
        # The head's own policy lets the operator's namespace in and nothing more out: no API-server egress.
        assert policies["own-head"]["policyTypes"] == ["Ingress"] and not policies["own-head"].get("egress")
        assert not [o for o in cp.get_json("serviceaccounts,roles,rolebindings", "-n", team)["items"]
                    if o["metadata"].get("labels", {}).get(c.LABEL_JOB) == "own"]
    finally:
        deployed.operator.stop()

    expected = {
        ("list", c.GROUP, c.PLURAL, ""), ("watch", c.GROUP, c.PLURAL, ""), ("patch", c.GROUP, c.PLURAL, "status"),
        ("create", "", "pods", ""), ("create", "apps", "statefulsets", ""), ("list", "rbac.authorization.k8s.io", "roles", ""),
        ("get", "coordination.k8s.io", "leases", ""), ("create", "coordination.k8s.io", "leases", ""),
        ("update", "coordination.k8s.io", "leases", ""),
    }
    deployed.check(expect_used=expected)
    namespaces = {e["objectRef"].get("namespace") for e in deployed.requests()}
    assert namespaces <= {team, OPERATOR_NS}, f"the operator reached outside its namespaces: {namespaces - {team, OPERATOR_NS}}"
    assert not [r for r in deployed.granted() if r[2] in ("customresourcedefinitions", "namespaces", "endpointslices")]

    uninstall = subprocess.run([cp.bin("helm"), "uninstall", release, "--namespace", OPERATOR_NS, f"--kubeconfig={kubeconfig}", "--wait"],
                               capture_output=True, text=True, env=helm_env(tmp_path), timeout=180, check=False)
    assert uninstall.returncode == 0, uninstall.stderr
