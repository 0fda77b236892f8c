"""The e2e node's NetworkPolicy enforcer (tests/e2e/netpol.py), its rule computation alone: no cluster, no root.

The enforcement itself is tested for real by test_pong.py::test_network_policies_are_enforced.
"""

from __future__ import annotations

from typing import Any

from rljob import resources
from rljob.api import parse_job
from rljob.resources import ApiServerEndpoint, BuildContext
from tests.e2e.netpol import Enforcer, matches, pods_of, policy_types, port_matches
from tests.jobs import minimal_job


def pod(ns: str, name: str, ip: str, labels: dict[str, str], ports: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"containers": [{"ports": [{"name": k, "containerPort": v} for k, v in (ports or {}).items()]}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


class FakeEnforcer(Enforcer):
    def __init__(self, pods: list[dict[str, Any]], namespaces: dict[str, dict[str, str]], policies: list[dict[str, Any]]) -> None:
        super().__init__("kubectl", "kubeconfig", "10.244.0.0/24")
        self._snap = (pods_of(pods), namespaces, policies)

    def snapshot(self) -> Any:
        return self._snap


def test_label_selectors() -> None:
    assert matches({}, {"a": "1"})
    assert not matches(None, {"a": "1"})
    assert matches({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"})
    assert not matches({"matchLabels": {"a": "1"}}, {"a": "2"})
    assert matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, {"a": "3"})
    assert not matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"})
    assert matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""})
    assert not matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""})


def test_policy_types_default() -> None:
    assert policy_types({"spec": {}}) == ["Ingress"]
    assert policy_types({"spec": {"egress": [{}]}}) == ["Ingress", "Egress"]
    assert policy_types({"spec": {"policyTypes": ["Egress"]}}) == ["Egress"]


def test_ports() -> None:
    assert port_matches(None, None) is None
    assert port_matches([{"port": 53, "protocol": "UDP"}], None) == ["-p udp -m udp --dport 53"]
    assert port_matches([{"port": 8000, "endPort": 8010}], None) == ["-p tcp -m tcp --dport 8000:8010"]
    p = pods_of([pod("ns", "h", "10.0.0.2", {}, {"gcs": 6379})])[0]
    assert port_matches([{"port": "gcs"}], p) == ["-p tcp -m tcp --dport 6379"]
    assert port_matches([{"port": "gcs"}], None) == []


def test_the_job_policies_isolate_its_pods() -> None:
    body = minimal_job("pong", workers={"replicas": 1})
    body["metadata"]["uid"] = "u1"
    job = parse_job(body)
    ctx = BuildContext(operator_namespace="rljob-system", api_server=(ApiServerEndpoint("10.250.0.1/32", 6443),))
    policies = [dict(p, metadata={**p["metadata"], "namespace": "ns1"}) for p in resources.network_policies(job, ctx)]
    head_labels = resources.head_pod(job, ctx, 1, "")["metadata"]["labels"]
    worker_labels = resources.workers_statefulset(job, ctx)["spec"]["template"]["metadata"]["labels"]
    enforcer = FakeEnforcer(
        [
            pod("ns1", "pong-head-1", "10.244.0.4", head_labels),
            pod("ns1", "pong-workers-0", "10.244.0.5", worker_labels),
            pod("other", "intruder", "10.244.0.9", {"app": "x"}),
            pod("rljob-system", "operator", "10.244.0.3", {"app": "rljob"}),
            pod("kube-system", "coredns", "10.244.0.10", {"k8s-app": "kube-dns"}),
            pod("kube-system", "metrics-server", "10.244.0.11", {"k8s-app": "metrics-server"}),
        ],
        {"ns1": {"kubernetes.io/metadata.name": "ns1"}, "other": {"kubernetes.io/metadata.name": "other"},
         "rljob-system": {"kubernetes.io/metadata.name": "rljob-system"},
         "kube-system": {"kubernetes.io/metadata.name": "kube-system"}},
        policies,
    )  # fmt: skip
    lines, sets = enforcer.compute()
    text = "\n".join(lines)
    # Both job pods are isolated both ways; the pods of other namespaces are not.
    assert text.count("-A RLJOB-NETPOL -s 10.244.0.4/32 -j RLJOB-NP-") == 1
    assert text.count("-A RLJOB-NETPOL -d 10.244.0.4/32 -j RLJOB-NP-") == 1
    assert text.count("-A RLJOB-NETPOL -d 10.244.0.5/32 -j RLJOB-NP-") == 1
    assert "10.244.0.9/32 -j" not in text and "10.244.0.3/32 -j" not in text
    # Replies pass first; each pod chain ends in DROP.
    assert lines[lines.index("-F RLJOB-NETPOL") + 1].endswith("--ctstate ESTABLISHED,RELATED -j RETURN")
    assert text.count("-j DROP") == 4
    # Intra-job peers are the two job pods only; the operator's namespace may reach the head's metrics ports.
    assert sorted(["10.244.0.4/32", "10.244.0.5/32"]) in [sorted(v) for v in sets.values()]
    assert ["10.244.0.3/32"] in sets.values()
    assert not any("10.244.0.9/32" in v for v in sets.values())
    # DNS on 53 to the cluster's DNS pods only, the API server only at its endpoint.
    dns_set = next(name for name, members in sets.items() if members == ["10.244.0.10/32"])
    assert f"--match-set {dns_set} dst -p udp -m udp --dport 53 -j RETURN" in text
    assert not any("10.244.0.11/32" in v for v in sets.values())
    assert ["10.250.0.1/32"] in sets.values() and "--dport 6443 -j RETURN" in text
