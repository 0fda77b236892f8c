"""End to end on real nodes: every row of the isolation a job's NetworkPolicies promise (README.md, "What the operator
creates"), each checked by a real TCP connection, with kube-router enforcing the policies on each node.

The job's head runs on the GPU pool's node and everything else on the other node, so the rows to and from the head
cross between nodes (each node's kube-router polices its own pods) and the rows among the rest stay on one node;
the table says which each row was.

Each probe runs in a pod (the job's own, through exec, or a client pod of no job) and connects to a pod address: a
connection is `CONNECTED`, a policy's refusal a timeout or `REFUSED` (kube-router rejects with ICMP port unreachable);
anything else (a name that did not resolve, no route) fails the test, so a broken network never passes for an
enforced policy. A control row, a client of no job reaching the server outside the job, proves that the blocked rows
are the policies' doing. The whole matrix is reported at once when a row differs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from rljob.api import constants as c
from tests.cluster.controlplane import KubectlError, wait_for
from tests.e2e import cluster as e2e
from tests.e2e.jobs import TARGET, apply, get_json, gpu_pool_nodes, job_manifest, on_gpu_pool, pods, wait_job

ALLOWED_PORT, OTHER_PORT = 8080, 8081
BLOCKED = ("TIMEOUT", "REFUSED")
SERVER = f"""
import select, socket
listeners = []
for port in ({ALLOWED_PORT}, {OTHER_PORT}):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    listeners.append(s)
print("LISTENING", flush=True)
while True:
    ready, _, _ = select.select(listeners, [], [])
    for s in ready:
        s.accept()[0].close()
"""
PROBE = """
import json, socket, sys
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=4).close()
        return "CONNECTED"
    except TimeoutError:
        return "TIMEOUT"
    except ConnectionRefusedError:
        return "REFUSED"
    except OSError as exc:
        return "ERROR " + repr(exc)
print(json.dumps([attempt(h, p) for h, p in json.loads(sys.argv[1])]))
"""


def pod_body(name: str, command: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A restricted-profile pod of no job, on the runtime image (it has python3)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "main", "image": TARGET.runtime_image, "imagePullPolicy": TARGET.pull_policy, "command": command,
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        },
    }  # fmt: skip


def start_pod(cluster: e2e.Cluster, ns: str, body: dict[str, Any]) -> str:
    """Starts the pod and returns its IP once it runs."""
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body))
    name = body["metadata"]["name"]
    return str(wait_for(lambda: (p := get_json(cluster, "pod", name, "-n", ns))["status"].get("phase") == "Running"
                        and p["status"].get("podIP"), 180, 1.0, f"pod {ns}/{name} running", ignore=(KubectlError,)))


def probe(cluster: e2e.Cluster, ns: str, pod: str, targets: list[tuple[str, int]]) -> list[str]:
    res = cluster.kubectl("exec", "-n", ns, pod, "--", "python3", "-c", PROBE, json.dumps(targets), check=False, timeout=120)
    lines = [line for line in res.stdout.splitlines() if line.startswith("[")]
    assert lines, f"probe from {ns}/{pod} gave no answer: {res.stdout[-500:]} {res.stderr[-500:]}"
    return list(json.loads(lines[-1]))


def run_rows(cluster: e2e.Cluster, rows: list[tuple[str, str, str, int, str, str]]) -> dict[int, str]:
    """Each row's result, probed with one exec per source pod."""
    by_source: dict[tuple[str, str], list[int]] = {}
    for i, (src_ns, src, *_rest) in enumerate(rows):
        by_source.setdefault((src_ns, src), []).append(i)
    seen: dict[int, str] = {}
    for (src_ns, src), indexes in by_source.items():
        results = probe(cluster, src_ns, src, [(rows[i][2], rows[i][3]) for i in indexes])
        seen.update(zip(indexes, results, strict=True))
    return seen


def pod_nodes(cluster: e2e.Cluster, namespaces: list[str]) -> dict[str, str]:
    """The node of every pod of these namespaces, by "namespace/name" and by pod IP."""
    out: dict[str, str] = {}
    for ns in namespaces:
        for p in get_json(cluster, "pods", "-n", ns)["items"]:
            node = p["spec"].get("nodeName", "")
            out[f"{ns}/{p['metadata']['name']}"] = node
            if p["status"].get("podIP"):
                out[p["status"]["podIP"]] = node
    return out


@pytest.fixture
def operator_namespace_client(cluster: e2e.Cluster, operator: str) -> Iterator[str]:
    """A client pod in the operator's namespace: where the operator reads the heads' progress from."""
    name = "netpol-scraper"
    start_pod(cluster, operator, pod_body(name, ["sleep", "3600"]))
    yield name
    cluster.kubectl("delete", "pod", name, "-n", operator, "--ignore-not-found", "--wait=false", check=False)


def test_every_row_of_the_jobs_isolation_holds(
    cluster: e2e.Cluster, namespace: str, operator: str, operator_namespace_client: str
) -> None:
    if not (TARGET.external or e2e.NETWORK_POLICY_ENFORCER):
        pytest.skip(f"no NetworkPolicy enforcer on this node ({e2e.NO_ENFORCER_REASON})")
    ns, other = namespace, f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    cluster.kubectl("label", "namespace", other, "pod-security.kubernetes.io/enforce=restricted")
    server = start_pod(cluster, other, pod_body("server", ["python3", "-c", SERVER]))
    outsider_ip = start_pod(cluster, other, pod_body("outsider", ["sleep", "3600"]))
    bystander_ip = start_pod(cluster, ns, pod_body("bystander", ["sleep", "3600"]))
    assert outsider_ip and bystander_ip

    # A job that may reach the server's ALLOWED_PORT (an egress rule), its head on the GPU pool's node.
    name = "matrix"
    pool = gpu_pool_nodes(cluster)
    apply(cluster, ns, on_gpu_pool(job_manifest(name, workers=1, iterations=None, network={
        "egress": [{"cidr": f"{server}/32", "ports": [{"port": ALLOWED_PORT}]}]}), pool))
    # Progress read from the head proves its metrics port serves (the operator read it through the policy).
    wait_job(cluster, ns, name, lambda j: (j.get("status", {}).get("progress") or {}).get("iteration"), 600,
             "the operator reading the head's progress")
    head = f"{name}-head-1"
    head_ip = get_json(cluster, "pod", head, "-n", ns)["status"]["podIP"]
    worker = pods(cluster, ns, name, "worker")[0]
    worker_name, worker_ip = worker["metadata"]["name"], worker["status"]["podIP"]
    head_dns = f"{name}-head.{ns}.svc.cluster.local"

    # (from namespace, from pod, to host, to port, what the README promises, expected)
    rows: list[tuple[str, str, str, int, str, str]] = [
        (other, "outsider", server, ALLOWED_PORT, "control: a pod of no job reaches the server", "CONNECTED"),
        (ns, worker_name, head_dns, c.PORT_GCS, "the job's pods reach each other, by the head Service's DNS name", "CONNECTED"),
        (ns, head, worker_ip, c.PORT_NODE_MANAGER, "the head reaches its workers", "CONNECTED"),
        (ns, head, server, ALLOWED_PORT, "network.egress: the rule's destination and port", "CONNECTED"),
        (ns, worker_name, server, ALLOWED_PORT, "network.egress holds for every pod of the job", "CONNECTED"),
        (ns, head, server, OTHER_PORT, "network.egress: no port beyond the rule's", "BLOCKED"),
        (ns, "bystander", head_ip, c.PORT_GCS, "a pod of no job in the job's namespace: not the head", "BLOCKED"),
        (ns, "bystander", worker_ip, c.PORT_NODE_MANAGER, "... nor the workers", "BLOCKED"),
        (other, "outsider", head_ip, c.PORT_GCS, "another namespace: not the head", "BLOCKED"),
        (other, "outsider", worker_ip, c.PORT_NODE_MANAGER, "... nor the workers", "BLOCKED"),
        (operator, operator_namespace_client, head_ip, c.PORT_METRICS, "the operator's namespace: the head's metrics port", "CONNECTED"),
        (operator, operator_namespace_client, head_ip, c.PORT_GCS, "the operator's namespace: no other port of the head", "BLOCKED"),
        (operator, operator_namespace_client, worker_ip, c.PORT_NODE_MANAGER, "the operator's namespace: not the workers", "BLOCKED"),
    ]
    seen = run_rows(cluster, rows)
    nodes = pod_nodes(cluster, [ns, other, operator])
    cluster.kubectl("delete", "rltj", name, "-n", ns, "--wait=false")
    # Then, on the CPUs that job leaves (a node of 2 CPUs holds one job), a head-only job with allowInternetEgress: it
    # may reach public addresses, which a pod's address is not.
    wait_for(lambda: not pods(cluster, ns, name), 300, 2.0, f"{name}'s pods gone", ignore=(KubectlError,))
    open_job = "internet"
    apply(cluster, ns, job_manifest(open_job, workers=0, iterations=None, network={"allowInternetEgress": True}))
    wait_job(cluster, ns, open_job, lambda j: j.get("status", {}).get("phase") == "Running", 600, f"{open_job} Running")
    rows.append((ns, f"{open_job}-head-1", server, OTHER_PORT, "allowInternetEgress: public addresses only, not pods",
                 "BLOCKED"))
    rows.append((ns, f"{open_job}-head-1", f"{open_job}-head.{ns}.svc.cluster.local", c.PORT_GCS,
                 "allowInternetEgress: DNS and the job's own pods as before", "CONNECTED"))
    seen.update({len(rows) - 2 + k: v for k, v in enumerate(probe(cluster, ns, f"{open_job}-head-1",
                                                                   [(r[2], r[3]) for r in rows[-2:]]))})
    nodes.update(pod_nodes(cluster, [ns]))
    nodes[head_dns] = nodes[f"{ns}/{head}"]
    nodes[f"{open_job}-head.{ns}.svc.cluster.local"] = nodes[f"{ns}/{open_job}-head-1"]
    wrong = []
    table = []
    crossing: set[str] = set()
    for i, (src_ns, src, host, port, promise, expected) in enumerate(rows):
        got = seen[i]
        ok = got == expected if expected != "BLOCKED" else got in BLOCKED
        across = nodes[f"{src_ns}/{src}"] != nodes[host]
        crossing |= {expected} if across else set()
        table.append(f"{'ok ' if ok else 'BAD'} {src_ns}/{src} -> {host}:{port} ({'across nodes' if across else 'one node'}): "
                     f"{got} (expected {expected}: {promise})")  # fmt: skip
        wrong += [] if ok else [i]
    cluster.kubectl("delete", "rltj", open_job, "-n", ns, "--wait=false")
    assert not wrong, "\n".join(table)
    # Between nodes the policies both let through and refuse (when the cluster has the GPU pool the head went to).
    assert not pool or crossing == {"CONNECTED", "BLOCKED"}, "\n".join(table)
