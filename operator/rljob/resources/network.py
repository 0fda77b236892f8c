"""NetworkPolicies standing in for a private network ("vnet"): two per job, one for every pod of the job
(the job's own pods, DNS and the egress its spec allows; nothing else, both ways) and one for the head alone:
the operator's namespace (which reads the driver's progress on port 9400) and named monitoring namespaces may
reach its metrics ports. That one is ingress only: a job's pods hold no Kubernetes credentials and never reach
the API server, so the head may send no more than the other pods. Policies add up, so two say what the five to
seven small ones before them did, with fewer objects for a burst of jobs to create and the collector to delete.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from ..api import constants as c
from ..api import names
from ..api.models import RLTrainingJob
from .context import BuildContext
from .meta import object_meta, selector_labels, type_meta
from .services import head_selector

DNS_PORT = 53
# Never reachable through network.allowInternetEgress: link-local ranges hold the clouds' instance metadata
# services (169.254.169.254 and AWS's fd00:ec2::254), which hand out the node's credentials.
METADATA_RANGES = {4: ("169.254.0.0/16",), 6: ("fe80::/10", "fd00:ec2::254/128")}
# Nor private addresses, which are no part of the internet: RFC 1918, carrier-grade NAT (RFC 6598) and IPv6
# unique local addresses (RFC 4193), where the cluster's nodes, its API server and the rest of the site live.
PRIVATE_RANGES = {4: ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"), 6: ("fc00::/7",)}


def _policy(job: RLTrainingJob, purpose: str, pod_selector: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        **type_meta(c.NETWORK_POLICY),
        "metadata": object_meta(job, names.network_policy(job.name, purpose), c.COMPONENT_NETWORK),
        "spec": {"podSelector": {"matchLabels": pod_selector}, **spec},
    }


def network_policies(job: RLTrainingJob, ctx: BuildContext) -> list[dict[str, Any]]:
    net = job.spec.network
    if not net.isolation:
        return []
    own = selector_labels(job)
    ingress_to_head = [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.operator_namespace}}}],
        "ports": _metrics_ports(),
    }]
    scrapers = [ns for ns in ctx.metrics_scrape_namespaces if ns != ctx.operator_namespace]
    if scrapers:
        # A Prometheus in its own namespace (a PodMonitor's scrapes): the same metrics ports as the operator's.
        ingress_to_head.append({
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}} for ns in scrapers],
            "ports": _metrics_ports(),
        })
    return [
        # Selecting the pods for both directions denies whatever no rule here (or in the head's policy) allows.
        _policy(job, c.NETWORK_POLICY_ISOLATION, own, {
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": own}}]}],
            "egress": [{"to": [{"podSelector": {"matchLabels": own}}]}, _dns_egress(ctx), *_extra_egress(job, ctx)],
        }),
        # Ingress only: what the head may send is the isolation policy's alone.
        _policy(job, c.NETWORK_POLICY_HEAD, head_selector(job), {
            "policyTypes": ["Ingress"],
            "ingress": ingress_to_head,
        }),
    ]


def _metrics_ports() -> list[dict[str, Any]]:
    """The head's metrics ports only: Ray's dashboard (8265) also serves its job-submission API, which runs code."""
    return [{"protocol": "TCP", "port": p} for p in (c.PORT_METRICS, c.PORT_RAY_METRICS)]


def _dns_egress(ctx: BuildContext) -> dict[str, Any]:
    ports = [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]
    if not ctx.dns_labels:
        return {"ports": ports}
    return {
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.dns_namespace}},
            "podSelector": {"matchLabels": dict(ctx.dns_labels)},
        }],
        "ports": ports,
    }


def _internet(ctx: BuildContext) -> list[dict[str, Any]]:
    """Public addresses only: everything but the metadata services, the private ranges and the cluster's own ranges.

    A job that needs a private address (a storage server, a proxy) names it in `network.egress`: egress rules add up
    in NetworkPolicy, so such a rule allows its range whatever this one leaves out.
    """
    out = []
    for version, everything in ((4, "0.0.0.0/0"), (6, "::/0")):
        own = [cidr for cidr in ctx.cluster_cidrs if ipaddress.ip_network(cidr).version == version]
        out.append({"ipBlock": {"cidr": everything, "except": [*METADATA_RANGES[version], *PRIVATE_RANGES[version], *own]}})
    return out


def _extra_egress(job: RLTrainingJob, ctx: BuildContext) -> list[dict[str, Any]]:
    net = job.spec.network
    rules: list[dict[str, Any]] = []
    if net.allow_internet_egress:
        rules.append({"to": _internet(ctx)})
    for rule in net.egress:
        block: dict[str, Any] = {"cidr": rule.cidr}
        if rule.except_:
            block["except"] = list(rule.except_)
        entry: dict[str, Any] = {"to": [{"ipBlock": block}]}
        if rule.ports:
            entry["ports"] = [{"protocol": p.protocol, "port": p.port} for p in rule.ports]
        rules.append(entry)
    return rules
