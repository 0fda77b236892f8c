"""NetworkPolicies standing in for a private network ("vnet"): each purpose is its own small policy,
so `kubectl get netpol` reads as a list of what is allowed.
"""
from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from .context import BuildContext
from .meta import object_meta, selector_labels
from .services import head_selector

DNS_PORT = 53
API_SERVER_FALLBACK_PORTS = (443, 6443)


def _policy(job: RLTrainingJob, purpose: str, pod_selector: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(job, names.network_policy(job.name, purpose), c.COMPONENT_NETWORK),
        "spec": {"podSelector": {"matchLabels": pod_selector}, **spec},
    }


def network_policies(job: RLTrainingJob, ctx: BuildContext) -> list[dict[str, Any]]:
    net = job.spec.network
    if not net.isolation:
        return []
    own = selector_labels(job)
    out = [
        _policy(job, "default-deny", own, {"policyTypes": ["Ingress", "Egress"]}),
        _policy(
            job, "allow-intra-job", own,
            {
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": own}}]}],
                "egress": [{"to": [{"podSelector": {"matchLabels": own}}]}],
            },
        ),
        # Any destination on port 53: clusters differ in where DNS lives (kube-dns pods, NodeLocal DNS).
        _policy(
            job, "allow-dns", own,
            {
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}],
            },
        ),
        _policy(
            job, "allow-operator", head_selector(job),
            {
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.operator_namespace}}}
                        ],
                        "ports": [
                            {"protocol": "TCP", "port": p}
                            for p in (c.PORT_DASHBOARD, c.PORT_METRICS, c.PORT_RAY_METRICS)
                        ],
                    }
                ],
            },
        ),
        _policy(job, "allow-apiserver", head_selector(job), {"policyTypes": ["Egress"], "egress": _api_server_egress(ctx)}),
    ]
    extra = _extra_egress(job)
    if extra:
        out.append(_policy(job, "allow-egress", own, {"policyTypes": ["Egress"], "egress": extra}))
    return out


def _api_server_egress(ctx: BuildContext) -> list[dict[str, Any]]:
    """The driver patches status.progress: it must reach the API server, and nothing else by this rule."""
    if ctx.api_server:
        return [
            {"to": [{"ipBlock": {"cidr": ep.cidr}}], "ports": [{"protocol": "TCP", "port": ep.port}]}
            for ep in ctx.api_server
        ]
    return [{"ports": [{"protocol": "TCP", "port": p} for p in API_SERVER_FALLBACK_PORTS]}]


def _extra_egress(job: RLTrainingJob) -> list[dict[str, Any]]:
    net = job.spec.network
    rules: list[dict[str, Any]] = []
    if net.allow_internet_egress:
        rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]})
    for rule in net.egress:
        block: dict[str, Any] = {"cidr": rule.cidr}
        if rule.except_:
            block["except"] = list(rule.except_)
        entry: dict[str, Any] = {"to": [{"ipBlock": block}]}
        if rule.ports:
            entry["ports"] = [{"protocol": p.protocol, "port": p.port} for p in rule.ports]
        rules.append(entry)
    return rules
