"""What the builders need to know beyond the job itself: facts about the operator's installation."""
from __future__ import annotations

from dataclasses import dataclass

from ..api import constants as c

# Where the cluster's DNS pods run in most distributions (kube-dns / CoreDNS).
DEFAULT_DNS_NAMESPACE = "kube-system"
DEFAULT_DNS_LABELS = (("k8s-app", "kube-dns"),)


@dataclass(frozen=True)
class BuildContext:
    default_image: str = c.DEFAULT_IMAGE
    operator_namespace: str = "rljob-system"
    # The DNS pods jobs may query (port 53). No labels: any destination on port 53, for clusters whose
    # DNS is no pod a selector can name (NodeLocal DNSCache on a link-local address, a host resolver).
    dns_namespace: str = DEFAULT_DNS_NAMESPACE
    dns_labels: tuple[tuple[str, str], ...] = DEFAULT_DNS_LABELS
    # The cluster's own ranges (pod and Service CIDRs): internet egress (network.allowInternetEgress) leaves them out.
    cluster_cidrs: tuple[str, ...] = ()
    # An admin's rule: jobs with network.isolation false are refused (Failed, NetworkIsolationRequired).
    require_isolation: bool = False
    # Namespaces whose pods (a Prometheus) may scrape the head's metrics ports, besides the operator's own.
    metrics_scrape_namespaces: tuple[str, ...] = ()
