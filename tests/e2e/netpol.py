"""A minimal NetworkPolicy enforcer for the e2e node: iptables + ipset, run inside the node's network namespace.

Why one of our own: the usual small enforcer, sigs.k8s.io/kube-network-policies, sends packets to user space
with nftables' ``queue`` statement, and this kernel is built without CONFIG_NFT_QUEUE (``nft add rule ... queue
num 100`` fails with "Could not process rule: No such file or directory"). Plain iptables filtering needs nothing
exotic, and one node needs no more.

What it implements (networking.k8s.io/v1 semantics, IPv4, one node):

* a pod is isolated for ingress/egress when a policy of its namespace selects it with that policy type;
* an isolated pod's traffic is allowed when some selecting policy has a rule whose peers match (``podSelector``,
  ``namespaceSelector``, both, ``ipBlock`` with ``except``; no peers = anyone) and whose ports match (numeric or
  named, ``endPort``, TCP/UDP/SCTP; no ports = any);
* replies of allowed connections pass (conntrack); traffic from the node itself to pods is not policed (kubelet's
  probes), as with most CNI plugins.

Where: ``FORWARD`` (pod to pod: the bridge hands frames to iptables with br_netfilter, after kube-proxy's DNAT, so
Service traffic is judged by its real endpoint) and ``INPUT`` for pod sources (pods to the node's own addresses,
e.g. the API server). Egress is checked first, then ingress; a verdict "allowed" RETURNs so kube-proxy's own
rules still apply. Every few seconds the whole state is recomputed and applied atomically (ipset swap +
``iptables-restore --noflush`` of our chains only).

Run: ``python -m tests.e2e.netpol --kubeconfig FILE --pod-cidr CIDR`` (tests/e2e/cluster.py starts it).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("netpol")

CHAIN_MAIN = "RLJOB-NETPOL"
PREFIX = "RLJOB-NP-"
SET_PREFIX = "rljnp-"


def kubectl_json(kubectl: str, kubeconfig: str, *args: str) -> Any:
    out = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "get", *args, "-o", "json"], check=True,
                         capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    return json.loads(out)


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector; ``{}`` matches everything, ``None`` nothing."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(policy: dict[str, Any]) -> list[str]:
    """spec.policyTypes, or its default: Ingress, plus Egress when the policy has egress rules."""
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])


@dataclass
class Pod:
    namespace: str
    name: str
    ip: str
    labels: dict[str, str]
    ports: dict[str, tuple[int, str]] = field(default_factory=dict)  # named container ports


def pods_of(items: Iterable[dict[str, Any]]) -> list[Pod]:
    out = []
    for p in items:
        ip = p.get("status", {}).get("podIP")
        if not ip or p["spec"].get("hostNetwork") or p["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        ports = {}
        for c in p["spec"].get("containers", []):
            for port in c.get("ports") or []:
                if port.get("name"):
                    ports[port["name"]] = (int(port["containerPort"]), port.get("protocol", "TCP"))
        out.append(Pod(p["metadata"]["namespace"], p["metadata"]["name"], ip, p["metadata"].get("labels") or {}, ports))
    return out


def port_matches(spec_ports: list[dict[str, Any]] | None, pod: Pod | None) -> list[str] | None:
    """iptables match fragments for a rule's ports (None: any port; [] : nothing can match)."""
    if not spec_ports:
        return None
    frags = []
    for p in spec_ports:
        proto = (p.get("protocol") or "TCP").lower()
        port = p.get("port")
        if port is None:
            frags.append(f"-p {proto}")
            continue
        if isinstance(port, str) and not port.isdigit():
            if pod is None or port not in pod.ports:
                continue  # a named port resolves per destination pod
            number, named_proto = pod.ports[port]
            if named_proto.lower() != proto:
                continue
            port = number
        end = p.get("endPort")
        frags.append(f"-p {proto} -m {proto} --dport {port}:{end}" if end else f"-p {proto} -m {proto} --dport {port}")
    return frags


class Enforcer:
    def __init__(self, kubectl: str, kubeconfig: str, pod_cidr: str) -> None:
        self.kubectl, self.kubeconfig, self.pod_cidr = kubectl, kubeconfig, pod_cidr
        self.applied = ""

    def snapshot(self) -> tuple[list[Pod], dict[str, dict[str, str]], list[dict[str, Any]]]:
        pods = pods_of(kubectl_json(self.kubectl, self.kubeconfig, "pods", "-A")["items"])
        namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                      for n in kubectl_json(self.kubectl, self.kubeconfig, "namespaces")["items"]}  # fmt: skip
        policies = kubectl_json(self.kubectl, self.kubeconfig, "networkpolicies", "-A")["items"]
        return pods, namespaces, policies

    def peers(self, rule_peers: list[dict[str, Any]] | None, policy_ns: str, pods: list[Pod],
              namespaces: dict[str, dict[str, str]]) -> tuple[bool, list[str], list[str]]:  # fmt: skip
        """(anyone, pod IPs, ipset-style nets where "!" marks an except)."""
        if not rule_peers:
            return True, [], []
        ips: list[str] = []
        nets: list[str] = []
        for peer in rule_peers:
            if "ipBlock" in peer:
                block = peer["ipBlock"]
                if ipaddress.ip_network(block["cidr"], strict=False).version != 4:
                    continue
                nets.append(block["cidr"])
                nets += ["!" + e for e in block.get("except") or []]
                continue
            ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
            for pod in pods:
                in_ns = matches(ns_sel, namespaces.get(pod.namespace, {})) if ns_sel is not None else pod.namespace == policy_ns
                if in_ns and (pod_sel is None or matches(pod_sel, pod.labels)):
                    ips.append(pod.ip)
        return False, ips, nets

    def compute(self) -> tuple[list[str], dict[str, list[str]]]:
        """(iptables-restore lines for the filter table, ipsets name -> entries)."""
        pods, namespaces, policies = self.snapshot()
        sets: dict[str, list[str]] = {}
        chains: dict[str, list[str]] = {}
        main: list[str] = ["-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"]
        ingress_jumps: list[str] = []

        def peer_set(ips: list[str], nets: list[str]) -> str:
            entries = [f"{ip}/32" for ip in ips] + nets
            name = SET_PREFIX + hashlib.sha1("|".join(sorted(entries)).encode()).hexdigest()[:12]
            sets[name] = entries
            return name

        for pod in pods:
            for direction in ("Ingress", "Egress"):
                selecting = [
                    pol for pol in policies
                    if pol["metadata"]["namespace"] == pod.namespace and matches(pol["spec"].get("podSelector", {}), pod.labels)
                    and direction in policy_types(pol)
                ]  # fmt: skip
                if not selecting:
                    continue
                chain = PREFIX + hashlib.sha1(f"{direction}|{pod.namespace}|{pod.name}".encode()).hexdigest()[:12]
                rules: list[str] = []
                for pol in selecting:
                    key, peer_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
                    for rule in pol["spec"].get(key) or []:
                        anyone, ips, nets = self.peers(rule.get(peer_key), pol["metadata"]["namespace"], pods, namespaces)
                        if not anyone and not ips and not nets:
                            continue
                        # Named ports resolve on the destination: the pod itself for ingress; for egress, each peer.
                        ports = port_matches(rule.get("ports"), pod if direction == "Ingress" else None)
                        if ports == []:
                            if direction == "Egress":  # named ports: per peer pod
                                for peer in pods:
                                    if peer.ip in ips:
                                        for frag in port_matches(rule.get("ports"), peer) or []:
                                            rules.append(f"-d {peer.ip}/32 {frag} -j RETURN")
                            continue
                        where = ""
                        if not anyone:
                            where = f"-m set --match-set {peer_set(ips, nets)} {'src' if direction == 'Ingress' else 'dst'}"
                        for frag in ports or [""]:
                            rules.append(f"{where} {frag} -j RETURN".strip())
                rules.append("-j DROP")
                chains[chain] = rules
                if direction == "Egress":
                    main.append(f"-s {pod.ip}/32 -j {chain}")
                else:
                    ingress_jumps.append(f"-d {pod.ip}/32 -j {chain}")
        main += ingress_jumps
        main.append("-j RETURN")
        lines = ["*filter", f":{CHAIN_MAIN} - [0:0]"] + [f":{c} - [0:0]" for c in chains]
        lines += [f"-F {CHAIN_MAIN}"] + [f"-A {CHAIN_MAIN} {r}" for r in main]
        for c, rules in chains.items():
            lines += [f"-F {c}"] + [f"-A {c} {r}" for r in rules]
        lines.append("COMMIT")
        return lines, sets

    def apply(self) -> None:
        lines, sets = self.compute()
        text = json.dumps([lines, sorted((k, sorted(v)) for k, v in sets.items())])
        if text == self.applied:
            return
        for name, entries in sets.items():
            tmp = name[:20] + "-t"
            script = [f"create {tmp} hash:net family inet -exist", f"flush {tmp}"]
            for e in entries:
                script.append(f"add {tmp} {e[1:]} nomatch" if e.startswith("!") else f"add {tmp} {e}")
            script += [f"create {name} hash:net family inet -exist", f"swap {tmp} {name}", f"destroy {tmp}"]
            subprocess.run(["ipset", "restore"], input="\n".join(script) + "\n", text=True, check=True, capture_output=True)
        subprocess.run(["iptables-restore", "--noflush"], input="\n".join(lines) + "\n", text=True, check=True,
                       capture_output=True)  # fmt: skip
        self._hook()
        self._gc(lines, sets)
        self.applied = text
        log.info("applied: %d pod chains, %d ipsets", sum(1 for x in lines if x.startswith(f":{PREFIX}")), len(sets))

    def _hook(self) -> None:
        for chain, match in (("FORWARD", []), ("INPUT", ["-s", self.pod_cidr])):
            rule = [*match, "-m", "comment", "--comment", "rljob e2e NetworkPolicy", "-j", CHAIN_MAIN]
            if subprocess.run(["iptables", "-C", chain, *rule], capture_output=True).returncode != 0:
                subprocess.run(["iptables", "-I", chain, "1", *rule], check=True, capture_output=True)

    def _gc(self, lines: list[str], sets: dict[str, list[str]]) -> None:
        live = {x[1:].split()[0] for x in lines if x.startswith(":")}
        existing = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
        stale = [x[1:].split()[0] for x in existing.splitlines() if x.startswith(f":{PREFIX}") and x[1:].split()[0] not in live]
        for c in stale:
            subprocess.run(["iptables", "-F", c], capture_output=True)
            subprocess.run(["iptables", "-X", c], capture_output=True)
        names = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout.split()
        for n in names:
            if n.startswith(SET_PREFIX) and n not in sets:
                subprocess.run(["ipset", "destroy", n], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.netpol")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--kubectl", default="kubectl")
    p.add_argument("--pod-cidr", required=True)
    p.add_argument("--interval", type=float, default=2.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    enforcer = Enforcer(args.kubectl, args.kubeconfig, args.pod_cidr)
    while True:
        try:
            enforcer.apply()
        except Exception as e:  # keep enforcing what was applied; retry
            log.warning("sync failed: %s", getattr(e, "stderr", None) or e)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
