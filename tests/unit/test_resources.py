"""Pure builders: every child a job becomes, checked field by field where it matters."""
from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from rljob import resources
from rljob.api import constants as c
from rljob.resources import BuildContext
from rljob.resources.network import METADATA_RANGES, PRIVATE_RANGES
from tests.builders import parsed_job

CTX = BuildContext(default_image="img:1", operator_namespace="ops")


def by_kind(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def test_every_child_is_owned_labeled_and_named_deterministically() -> None:
    objs = resources.build(parsed_job(), CTX, attempt=3, coordination_deadline="2026-01-01T00:00:00Z")
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)
    assert names == sorted([
        "NetworkPolicy/demo-isolation", "NetworkPolicy/demo-head",
        "Service/demo-head", "StatefulSet/demo-workers", "Pod/demo-head-3",
    ])
    for o in objs:
        meta = o["metadata"]
        assert meta["namespace"] == "ns1"
        assert meta["ownerReferences"] == [{
            "apiVersion": c.API_VERSION, "kind": c.KIND, "name": "demo", "uid": "u1",
            "controller": True, "blockOwnerDeletion": True,
        }]
        for key in (c.LABEL_APP_NAME, c.LABEL_APP_INSTANCE, c.LABEL_APP_COMPONENT, c.LABEL_APP_MANAGED_BY, c.LABEL_JOB):
            assert key in meta["labels"], (o["kind"], key)
        assert meta["labels"][c.LABEL_CONTROLLER_UID] == "u1"
    workers = next(o for o in objs if o["kind"] == "StatefulSet")
    assert workers["spec"]["template"]["metadata"]["labels"][c.LABEL_CONTROLLER_UID] == "u1"  # worker pods too
    assert c.LABEL_CONTROLLER_UID not in workers["spec"]["selector"]["matchLabels"]
    assert resources.build(parsed_job(), CTX, 3, "x") == resources.build(parsed_job(), CTX, 3, "x")
    # No Kubernetes identity of the job's own: its pods hold no credentials.
    assert not {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & {o["kind"] for o in objs}


def test_render_without_uid_has_no_owner_reference() -> None:
    objs = resources.build(parsed_job(uid=None), CTX)
    assert all("ownerReferences" not in o["metadata"] for o in objs)
    assert all(c.LABEL_CONTROLLER_UID not in o["metadata"]["labels"] for o in objs)


def _assert_restricted(pod_spec: dict[str, Any]) -> None:
    psc = pod_spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for ctr in pod_spec["containers"]:
        sc = ctr["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
    allowed = {"configMap", "emptyDir", "persistentVolumeClaim", "projected", "secret", "downwardAPI"}
    for vol in pod_spec.get("volumes", []):
        assert set(vol) - {"name"} <= allowed, vol


def test_head_pod() -> None:
    j = parsed_job(head={"gpus": 2, "cpu": "8", "memory": "32Gi", "shmSize": "4Gi"}, workers={"replicas": 3},
            env=[{"name": "FOO", "value": "bar"}], checkpoint={"size": "5Gi"})
    pod = resources.head_pod(j, CTX, 2, "2026-01-01T00:10:00Z")
    spec = pod["spec"]
    _assert_restricted(spec)
    assert spec["restartPolicy"] == "Never"
    # No credentials: the namespace's default ServiceAccount, its token not mounted (the operator reads progress over HTTP).
    assert "serviceAccountName" not in spec and "serviceAccount" not in spec
    assert spec["automountServiceAccountToken"] is False
    ctr = spec["containers"][0]
    assert ctr["image"] == "img:1" and ctr["command"] == ["rljob", "pod", "head"]
    assert ctr["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", c.GPU_RESOURCE: "2"}
    assert ctr["resources"]["requests"] == ctr["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env[c.ENV_GPUS] == "2" and env[c.ENV_CPU] == "8" and env[c.ENV_SHM_BYTES] == str(4 * 2**30)
    assert env[c.ENV_EXPECTED_WORKERS] == "3" and env[c.ENV_ATTEMPT] == "2"
    assert env[c.ENV_COORDINATION_DEADLINE] == "2026-01-01T00:10:00Z"
    assert env["FOO"] == "bar" and "NVIDIA_VISIBLE_DEVICES" not in env
    assert json.loads(env[c.ENV_JOB_SPEC])["head"]["gpus"] == 2
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert vols["checkpoints"]["persistentVolumeClaim"] == {"claimName": "demo-checkpoints"}
    mounts = {m["mountPath"] for m in ctr["volumeMounts"]}
    assert {c.SHM_MOUNT, c.CHECKPOINT_MOUNT, c.TMP_MOUNT} <= mounts
    assert {p["containerPort"] for p in ctr["ports"]} == {c.PORT_GCS, c.PORT_DASHBOARD, c.PORT_CLIENT, c.PORT_METRICS, c.PORT_RAY_METRICS}
    assert pod["metadata"]["labels"][c.LABEL_ATTEMPT] == "2"


def test_cpu_head_hides_gpus_and_job_image_wins() -> None:
    pod = resources.head_pod(parsed_job(image="mine:2"), CTX, 1, "")
    ctr = pod["spec"]["containers"][0]
    assert ctr["image"] == "mine:2"
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in ctr["env"]
    assert c.GPU_RESOURCE not in ctr["resources"]["limits"]


def test_script_source_is_mounted_read_only() -> None:
    j = parsed_job(entrypoint={"script": "train.py", "args": ["--x", "1"]}, source={"configMap": {"name": "src"}})
    pod = resources.head_pod(j, CTX, 1, "")
    assert {"name": "source", "configMap": {"name": "src"}} in pod["spec"]["volumes"]
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "source")
    assert mount == {"name": "source", "mountPath": c.SOURCE_MOUNT, "readOnly": True}


def test_workers_statefulset_and_services() -> None:
    j = parsed_job(workers={"replicas": 4, "cpu": "3", "nodeSelector": {"pool": "cpu"},
                     "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]})
    sts = resources.workers_statefulset(j, CTX)
    spec = sts["spec"]
    assert spec["replicas"] == 4 and spec["podManagementPolicy"] == "Parallel"
    assert "serviceName" not in spec  # workers are dialled by pod IP, never by a per-worker DNS name
    tmpl = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
    _assert_restricted(tmpl["spec"])
    assert tmpl["spec"]["automountServiceAccountToken"] is False
    assert tmpl["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert tmpl["spec"]["tolerations"] == [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]
    ctr = tmpl["spec"]["containers"][0]
    assert ctr["command"] == ["rljob", "pod", "worker"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env[c.ENV_HEAD_ADDRESS] == "demo-head" and env[c.ENV_CPU] == "3"
    kinds = by_kind(resources.static_children(j, CTX))
    svc = {s["metadata"]["name"]: s["spec"] for s in kinds["Service"]}
    assert set(svc) == {"demo-head"}
    # Headless: no cluster IP to allocate, and workers resolve the head before it is ready.
    assert svc["demo-head"]["clusterIP"] == "None" and svc["demo-head"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in svc["demo-head"]["ports"]} == {
        "gcs": 6379, "dashboard": 8265, "client": 10001, "ray-metrics": 8080, "metrics": 9400}
    assert svc["demo-head"]["selector"] == {c.LABEL_JOB: "demo", c.LABEL_ROLE: c.ROLE_HEAD}


def _policies(j: Any, ctx: BuildContext = CTX) -> dict[str, dict[str, Any]]:
    policies = by_kind(resources.static_children(j, ctx)).get("NetworkPolicy", [])
    return {p["metadata"]["name"].removeprefix("demo-"): p["spec"] for p in policies}


def test_network_policies_isolate_the_job() -> None:
    pol = _policies(parsed_job())
    assert set(pol) == {"isolation", "head"}
    own = {"matchLabels": {c.LABEL_JOB: "demo"}}
    iso = pol["isolation"]
    # Every pod of the job, both directions: whatever no rule allows is denied.
    assert iso["podSelector"] == own and iso["policyTypes"] == ["Ingress", "Egress"]
    assert iso["ingress"] == [{"from": [{"podSelector": own}]}]
    intra, dns = iso["egress"]  # nothing more unless the spec allows it
    assert intra == {"to": [{"podSelector": own}]}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]  # the DNS pods, nothing else
    head = pol["head"]
    assert head["podSelector"]["matchLabels"] == {c.LABEL_JOB: "demo", c.LABEL_ROLE: c.ROLE_HEAD}
    (op,) = head["ingress"]
    assert op["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    assert {p["port"] for p in op["ports"]} == {c.PORT_METRICS, c.PORT_RAY_METRICS}  # not the dashboard's job API
    # Ingress only: the head sends what the isolation policy allows every pod, no more (no API server).
    assert head["policyTypes"] == ["Ingress"] and "egress" not in head


def test_a_monitoring_namespace_may_scrape_the_metrics_ports_only() -> None:
    ctx = BuildContext(operator_namespace="ops", metrics_scrape_namespaces=("monitoring", "ops", "prom-2"))
    operator, scrape = _policies(parsed_job(), ctx)["head"]["ingress"]
    assert operator["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    # The operator's namespace already has its own rule; it is not repeated here.
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                              for ns in ("monitoring", "prom-2")]
    assert sorted(p["port"] for p in scrape["ports"]) == sorted([c.PORT_METRICS, c.PORT_RAY_METRICS])
    assert c.PORT_DASHBOARD not in {p["port"] for p in scrape["ports"]}  # Ray's job-submission API stays closed


def test_no_scrape_rule_unless_a_monitoring_namespace_is_named() -> None:
    assert len(_policies(parsed_job())["head"]["ingress"]) == 1
    assert len(_policies(parsed_job(), BuildContext(operator_namespace="ops", metrics_scrape_namespaces=("ops",)))["head"]["ingress"]) == 1
    assert _policies(parsed_job(network={"isolation": False}), BuildContext(metrics_scrape_namespaces=("monitoring",))) == {}


def test_dns_where_no_selector_names_it() -> None:
    dns = _policies(parsed_job(), BuildContext(dns_labels=()))["isolation"]["egress"][1]
    assert "to" not in dns and {p["port"] for p in dns["ports"]} == {53}


def test_egress_allow_list_and_internet_switch() -> None:
    pol = _policies(parsed_job(network={"allowInternetEgress": True, "egress": [
        {"cidr": "10.20.0.0/16", "except": ["10.20.1.0/24"], "ports": [{"port": 3128}]}]}))
    egress = pol["isolation"]["egress"][2:]  # after the job's own pods and DNS
    assert egress[0]["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]}},
        {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128", "fc00::/7"]}}]
    assert egress[1] == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.1.0/24"]}}],
                         "ports": [{"protocol": "TCP", "port": 3128}]}


def test_internet_egress_leaves_out_the_clusters_own_ranges() -> None:
    ctx = BuildContext(cluster_cidrs=("10.244.0.0/16", "10.96.0.0/12", "fd00:10:244::/56"))
    to = _policies(parsed_job(network={"allowInternetEgress": True}), ctx)["isolation"]["egress"][2]["to"]
    assert to[0]["ipBlock"]["except"][-2:] == ["10.244.0.0/16", "10.96.0.0/12"]
    assert to[1]["ipBlock"]["except"][-1:] == ["fd00:10:244::/56"]


@pytest.mark.parametrize("address", [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.1.1", "100.64.0.1", "100.127.255.254",
    "169.254.169.254", "fc00::1", "fd12:3456::1", "fd00:ec2::254", "fe80::1",
])
def test_internet_egress_reaches_no_private_or_metadata_address(address: str) -> None:
    """Whatever CIDRs the rule's except lists, the address must fall in one of them (and in its block's range)."""
    ip = ipaddress.ip_address(address)
    (rule,) = _policies(parsed_job(network={"allowInternetEgress": True}))["isolation"]["egress"][2:]
    (block,) = [t["ipBlock"] for t in rule["to"] if ipaddress.ip_network(t["ipBlock"]["cidr"]).version == ip.version]
    assert ip in ipaddress.ip_network(block["cidr"])
    assert any(ip in ipaddress.ip_network(cidr) for cidr in block["except"]), f"{address} is reachable"
    assert set(PRIVATE_RANGES[ip.version]) | set(METADATA_RANGES[ip.version]) <= set(block["except"])


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888"])
def test_internet_egress_still_reaches_public_addresses(address: str) -> None:
    ip = ipaddress.ip_address(address)
    (rule,) = _policies(parsed_job(network={"allowInternetEgress": True}))["isolation"]["egress"][2:]
    (block,) = [t["ipBlock"] for t in rule["to"] if ipaddress.ip_network(t["ipBlock"]["cidr"]).version == ip.version]
    assert ip in ipaddress.ip_network(block["cidr"])
    assert not any(ip in ipaddress.ip_network(cidr) for cidr in block["except"]), f"{address} is left out"


def test_an_egress_rule_still_reaches_a_private_range() -> None:
    """Egress rules add up: a private range left out of allowInternetEgress is allowed by a rule that names it."""
    pol = _policies(parsed_job(network={"allowInternetEgress": True, "egress": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443}]}]}))
    internet, private = pol["isolation"]["egress"][2:]
    assert "10.0.0.0/8" in internet["to"][0]["ipBlock"]["except"]
    assert private == {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    assert "egress" not in pol["head"]  # and the head's policy takes nothing away (policies only allow)


def test_isolation_off_means_no_policies() -> None:
    assert _policies(parsed_job(network={"isolation": False})) == {}


@pytest.mark.parametrize("ckpt, expected", [
    (None, {"emptyDir": {}}),
    ({"claimName": "mine"}, {"persistentVolumeClaim": {"claimName": "mine"}}),
])
def test_checkpoint_volume_without_operator_claim(ckpt: Any, expected: dict[str, Any]) -> None:
    j = parsed_job(checkpoint=ckpt) if ckpt else parsed_job()
    vol = next(v for v in resources.head_pod(j, CTX, 1, "")["spec"]["volumes"] if v["name"] == "checkpoints")
    assert {k: v for k, v in vol.items() if k != "name"} == expected
    assert "PersistentVolumeClaim" not in by_kind(resources.static_children(j, CTX))


def test_created_claim() -> None:
    j = parsed_job(checkpoint={"size": "3Gi", "storageClassName": "fast"})
    claim = by_kind(resources.static_children(j, CTX))["PersistentVolumeClaim"][0]
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}}, "storageClassName": "fast"}


def test_longest_name_keeps_every_child_name_valid() -> None:
    name = "a" * c.MAX_JOB_NAME_LENGTH
    objs = resources.build(parsed_job(name=name, workers={"replicas": 512}), CTX, attempt=100)
    for o in objs:
        assert len(o["metadata"]["name"]) <= 63
    # StatefulSet pods: "<sts>-<ordinal>" and the revision label "<sts>-<10-char hash>" stay within 63.
    sts = next(o for o in objs if o["kind"] == "StatefulSet")["metadata"]["name"]
    assert len(f"{sts}-511") <= 63 and len(f"{sts}-abcdefghij") <= 63


def test_workers_get_pip_packages_but_not_the_spec() -> None:
    j = parsed_job(pipPackages=["gymnasium[other]==1.2.2"], network={"allowInternetEgress": True})
    env = {e["name"]: e.get("value") for e in resources.workers_statefulset(j, CTX)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env[c.ENV_PIP_PACKAGES]) == ["gymnasium[other]==1.2.2"]
    assert c.ENV_JOB_SPEC not in env
    scaled = parsed_job(pipPackages=["x"], network={"allowInternetEgress": True}, workers={"replicas": 9})
    same = parsed_job(pipPackages=["x"], network={"allowInternetEgress": True}, workers={"replicas": 1})
    # Scaling changes replicas only, never the pod template (no rolling restart of the workers).
    assert resources.workers_statefulset(scaled, CTX)["spec"]["template"] == resources.workers_statefulset(same, CTX)["spec"]["template"]
